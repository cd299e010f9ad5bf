// bench/ab/flags_ab_step.cpp — one side of flags_ab: prefill and decode steps through
// the public attention(), compiled once with the build's flags (-march=native in the
// release preset) and once with -march=x86-64 (no ISA flag: the runtime dispatch
// alone picks the path), each in its own namespace (-Dheadwise=<ns>, -DAB_SIDE=<name>)
// so both live in one process.
#include <chrono>
#include <cstddef>
#include <vector>

#include <headwise/headwise.hpp>

#ifndef AB_SIDE
#error "compile with -DAB_SIDE=<name>"
#endif
#define AB_CAT2(a, b) a##b
#define AB_CAT(a, b) AB_CAT2(a, b)

/// The path this side runs.
extern "C" const char* AB_CAT(flags_ab_path_, AB_SIDE)() { return headwise::simd_path(); }

/// GFLOP/s of `reps` calls on shape s: 0 S1 H8 N1024 d64, 1 S2 H8 N1024 d128,
/// 2 S3 causal H8 N2048 d128, 3 decode B1 Hq32 Hkv8 KV4096 d128 (one token); 1 thread.
extern "C" double AB_CAT(flags_ab_run_, AB_SIDE)(int s, int reps) {
  using namespace headwise;
  std::size_t H = 8, Hkv = 8, Nq = 1024, Nk = 1024, D = s == 0 ? 64 : 128;
  attention_options opt;
  opt.threads = 1;
  if (s == 2) Nq = Nk = 2048, opt.causal = causal_mode::top_left;
  if (s == 3) H = 32, Nq = 1, Nk = 4096, opt.causal = causal_mode::bottom_right;
  std::vector<float> q(H * Nq * D), k(Hkv * Nk * D), v(k.size()), o(q.size());
  for (std::size_t i = 0; i < q.size(); ++i) q[i] = float(i * 7919 % 1000) * 1e-3f;
  for (std::size_t i = 0; i < k.size(); ++i) k[i] = float(i * 104729 % 1000) * 1e-3f, v[i] = k[i];
  const auto t0 = std::chrono::steady_clock::now();
  for (int r = 0; r < reps; ++r) attention(bhsd(q, 1, H, Nq, D), bhsd(k, 1, Hkv, Nk, D), bhsd(v, 1, Hkv, Nk, D),
                                           bhsd(o, 1, H, Nq, D), opt);
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double pairs = s == 2 ? double(Nq) * double(Nq + 1) / 2 : double(Nq) * double(Nk);
  return 4.0 * double(H) * pairs * double(D) * reps / sec * 1e-9;
}
