// bench/ab/flags_ab.cpp — the same kernels built with the build's ISA flags and with
// none, alternating in one process: what a user who passes no -m flag loses to the
// runtime dispatch (issue: the no-flags build must stay within 10% of -march=native).
//   flags_ab [rounds]   prints the median GFLOP/s of each side per shape and the ratio
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

extern "C" const char* flags_ab_path_native();
extern "C" const char* flags_ab_path_noflags();
extern "C" double flags_ab_run_native(int shape, int reps);
extern "C" double flags_ab_run_noflags(int shape, int reps);

int main(int argc, char** argv) {
  const int rounds = argc > 1 ? std::atoi(argv[1]) : 7;
  const char* names[] = {"S1 H8 N1024 d64", "S2 H8 N1024 d128", "S3 causal H8 N2048 d128", "decode Hq32/8 KV4096 d128"};
  const int reps[] = {4, 3, 2, 200};
  std::printf("paths: build flags %s, no flags %s; 1 thread, median of %d alternating rounds\n",
              flags_ab_path_native(), flags_ab_path_noflags(), rounds);
  std::printf("%-28s %12s %12s %10s\n", "shape", "flags GF/s", "no-flags", "no/flags");
  for (int s = 0; s < 4; ++s) {
    std::vector<double> a, b;
    for (int r = 0; r < rounds; ++r) {
      if (r % 2 == 0) a.push_back(flags_ab_run_native(s, reps[s])), b.push_back(flags_ab_run_noflags(s, reps[s]));
      else b.push_back(flags_ab_run_noflags(s, reps[s])), a.push_back(flags_ab_run_native(s, reps[s]));
    }
    std::sort(a.begin(), a.end());
    std::sort(b.begin(), b.end());
    const double ma = a[a.size() / 2], mb = b[b.size() / 2];
    std::printf("%-28s %12.1f %12.1f %10.3f\n", names[s], ma, mb, mb / ma);
  }
}
