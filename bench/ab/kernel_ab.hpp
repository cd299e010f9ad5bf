// bench/ab/kernel_ab.hpp — the call between kernel_ab's driver and its two step
// objects: plain data, no headwise type, because each step object holds its own copy
// of the library (another revision, in another namespace) and the driver none.
#pragma once

#include <cstddef>
#include <cstdint>

/// One attention() or attention_backward() call through the public API. q [B, Hq, Nq, d]
/// and out are float; k and v [B, Hkv, Nk, d] are float, or headwise::half bits when
/// half_kv.
struct kernel_ab_call {
  bool backward;             ///< attention_backward(q, k, v, out, lse, dout) into dq, dk, dv
  bool decode;               ///< kernel_mode::decode (one query row), else kernel_mode::flash
  bool half_kv;              ///< K/V hold fp16 (decode only)
  bool key_blocks;           ///< K read as key blocks over the same bytes (decode only; Nk % 16 == 0)
  bool seq_stride_zero;      ///< K/V views of seq stride 0: every key is one L1-resident row
  int causal;                ///< 0 none, 1 top_left, 2 bottom_right
  std::int64_t window_left;  ///< < 0: no window
  std::size_t B, Hq, Hkv, Nq, Nk, d;
  unsigned threads;
  const float* q;
  const void* k;
  const void* v;
  float* out;
  float* lse;         ///< [B, Hq, Nq]: the forward writes it when not null, the backward reads it
  const float* dout;  ///< backward only, like out; dq like q, dk and dv like k and v
  float *dq, *dk, *dv;
};

// Each step object exports these two with its tree's letter (a or b) appended.
//   const char* kernel_ab_about_<t>()  the SIMD path its attention() runs, as it says so
//   const char* kernel_ab_run_<t>(const kernel_ab_call*)  nullptr, or why it did not run
extern "C" {
const char* kernel_ab_about_a();
const char* kernel_ab_about_b();
const char* kernel_ab_run_a(const kernel_ab_call* call);
const char* kernel_ab_run_b(const kernel_ab_call* call);
}
