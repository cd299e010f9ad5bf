// tests/variants.hpp — the ways attention() can run one problem: the K/V storage
// types the kernels take, and a variant (kernel mode, scalar build or SIMD path,
// threads). Shared by the kernel harness (kernel_harness.hpp) and the fuzz target
// (fuzz/), so it uses no test framework.
#pragma once

#include <initializer_list>
#include <string>
#include <vector>

#include <headwise/headwise.hpp>

namespace hwtest {

using namespace headwise;

/// K/V storage: q is double for f64, float for f32, f16, bf16 and i8 (int8 with one
/// scale per row, quantize.hpp); f16_qkv and bf16_qkv hold q in that 16-bit type too
/// (out float).
enum class kv_type { f32, f64, f16, bf16, f16_qkv, bf16_qkv, i8 };

inline const char* kv_name(kv_type t) {
  static const char* names[] = {"f32", "f64", "f16", "bf16", "f16qkv", "bf16qkv", "i8"};
  return names[int(t)];
}

inline const char* mode_name(kernel_mode m) {
  static const char* names[] = {"automatic", "plain", "flash", "decode"};
  return names[int(m)];
}

/// One way to run attention(): kernel mode, scalar build or SIMD path, threads.
struct variant {
  kernel_mode mode = kernel_mode::automatic;
  bool scalar = false;
  simd_isa isa = simd_isa::automatic;
  unsigned threads = 1;

  void apply(attention_options& opt) const {
    opt.kernel = mode, opt.force_scalar = scalar, opt.isa = isa, opt.threads = threads;
  }
  bool same_path(const variant& o) const { return mode == o.mode && scalar == o.scalar && isa == o.isa; }
  std::string name() const {
    return std::string(mode_name(mode)) + " " + (scalar ? "scalar" : isa_name(isa)) + " " +
           std::to_string(threads) + (threads == 1 ? " thread" : " threads");
  }
};

inline const std::vector<kernel_mode>& every_kernel_mode() {
  static const std::vector<kernel_mode> modes = {kernel_mode::automatic, kernel_mode::plain,
                                                 kernel_mode::flash, kernel_mode::decode};
  return modes;
}

/// Each mode × (scalar, every available SIMD path) × threads, threads innermost. The
/// avx512_bf16 path only when bf16_inputs (it runs the avx512 kernels for the rest).
inline std::vector<variant> every_variant(const std::vector<kernel_mode>& modes = every_kernel_mode(),
                                          std::initializer_list<unsigned> threads = {1, 2, 3},
                                          bool bf16_inputs = false) {
  std::vector<variant> out;
  for (kernel_mode m : modes) {
    std::vector<variant> paths = {{m, true, simd_isa::automatic}};
    for (simd_isa isa : available_isas())
      if (bf16_inputs || isa != simd_isa::avx512_bf16) paths.push_back({m, false, isa});
    for (variant v : paths)
      for (unsigned t : threads) out.push_back({v.mode, v.scalar, v.isa, t});
  }
  return out;
}

}  // namespace hwtest
