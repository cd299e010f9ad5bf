// A downstream program that uses the kernels only (headwise::headwise: xsimd and
// threads, no Eigen), built with Eigen out of reach (tests/consumers/CMakeLists.txt).
// It checks its result itself (every output is 1: V is all ones) and the version
// macros against the version CMake read from the same header; CTest passes the test
// only when "kernels-only consumer ok" is printed.
#include <headwise/headwise.hpp>

#include <cmath>
#include <cstdio>
#include <vector>

#if defined(EIGEN_WORLD_VERSION)
#error "<headwise/headwise.hpp> must not include Eigen"
#endif
#if HEADWISE_VERSION != HEADWISE_VERSION_MAJOR * 10000 + HEADWISE_VERSION_MINOR * 100 + HEADWISE_VERSION_PATCH
#error "HEADWISE_VERSION disagrees with its parts"
#endif

int main() {
  if (HEADWISE_VERSION_MAJOR != HEADWISE_EXPECTED_MAJOR || HEADWISE_VERSION_MINOR != HEADWISE_EXPECTED_MINOR ||
      HEADWISE_VERSION_PATCH != HEADWISE_EXPECTED_PATCH) {
    std::fprintf(stderr, "kernels-only consumer: header version %d.%d.%d, CMake package version %d.%d.%d\n",
                 HEADWISE_VERSION_MAJOR, HEADWISE_VERSION_MINOR, HEADWISE_VERSION_PATCH, HEADWISE_EXPECTED_MAJOR,
                 HEADWISE_EXPECTED_MINOR, HEADWISE_EXPECTED_PATCH);
    return 1;
  }
  std::vector<float> q(2 * 8, 0.5f), k(3 * 8, 0.25f), v(3 * 4, 1.0f), out(2 * 4, 0.f);
  headwise::attention(headwise::bshd(q.data(), 1, 2, 1, 8), headwise::bshd(k.data(), 1, 3, 1, 8),
                      headwise::bshd(v.data(), 1, 3, 1, 4), headwise::bshd(out.data(), 1, 2, 1, 4));
  for (float x : out)
    if (std::fabs(x - 1.0f) > 1e-6f) {
      std::fprintf(stderr, "kernels-only consumer: output %g, expected 1\n", double(x));
      return 1;
    }
  std::printf("kernels-only consumer ok (headwise %d.%d.%d)\n", HEADWISE_VERSION_MAJOR, HEADWISE_VERSION_MINOR,
              HEADWISE_VERSION_PATCH);
  return 0;
}
