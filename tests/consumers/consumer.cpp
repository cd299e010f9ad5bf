// A downstream program: includes the umbrella and Eigen (through headwise::eigen) and runs one
// attention call, exactly as a user of an installed or fetched headwise would. It checks
// its result itself: every output must be 1 (V is all ones); CTest passes the test only
// when "consumer ok" is printed (tests/consumers/CMakeLists.txt).
#include <Eigen/Core>
#include <headwise/headwise.hpp>

#include <cmath>
#include <cstdio>
#include <vector>

int main() {
  std::vector<float> q(2 * 8, 0.5f), k(3 * 8, 0.25f), v(3 * 4, 1.0f), out(2 * 4, 0.f);
  headwise::attention(headwise::bshd(q.data(), 1, 2, 1, 8), headwise::bshd(k.data(), 1, 3, 1, 8),
                      headwise::bshd(v.data(), 1, 3, 1, 4), headwise::bshd(out.data(), 1, 2, 1, 4));
  for (float x : out)
    if (std::fabs(x - 1.0f) > 1e-6f) {
      std::fprintf(stderr, "consumer: output %g, expected 1\n", double(x));
      return 1;
    }
  std::puts("consumer ok");
  return 0;
}
