// headwise/isa.hpp — which SIMD path the kernels run, chosen at run time.
//
// On x86-64 with GCC or Clang, every build carries a copy of the kernels per
// instruction set, each compiled through target attributes (no -m flag needed), and
// the widest one the CPU and OS support runs:
//   avx512_bf16  avx512 + AVX512-BF16: bfloat16 q/k/v run Q·Kᵀ and P·V on vdpbf16ps
//             (two bf16 products summed into each fp32 lane); every other type runs
//             the avx512 kernels
//   avx512    AVX-512 F + BW + VL + DQ (x86-64-v4): 16 floats per register, 32 registers
//   avx2      AVX2 + FMA + F16C (x86-64-v3): 8 floats, 16 registers
//   baseline  SSE2, which every x86-64 CPU has: 4 floats, no FMA
// Elsewhere (AArch64, other compilers), or when HEADWISE_NO_DISPATCH is defined,
// there is one path, `baseline`: xsimd's widest arch for the compiler's flags
// (NEON on AArch64; AVX-512 under -march=native on such a CPU).
//
// The choice can be narrowed, never widened:
//   the environment variable HEADWISE_ISA=avx2 (or baseline, avx512, avx512_bf16), read once;
//   attention_options::isa per call (an unavailable path is a headwise::error).
#pragma once

#include <cstdlib>
#include <cstring>
#include <vector>

#include "headwise/detail/internal_begin.hpp"

#include "headwise/detail/checks_base.hpp"
#include "headwise/detail/cpu_features.hpp"

#include "headwise/detail/internal_end.hpp"

#if !defined(HEADWISE_NO_DISPATCH) && (defined(__x86_64__) || defined(__i386__)) && \
    (defined(__GNUC__) || defined(__clang__))
#define HEADWISE_X86_DISPATCH 1
#endif

namespace headwise {

enum class simd_isa : unsigned char {
  automatic,  ///< the widest available path (after HEADWISE_ISA)
  baseline,   ///< SSE2 on x86-64; without dispatch, the build's own arch
  avx2,       ///< AVX2 + FMA + F16C
  avx512,     ///< AVX-512 F + BW + VL + DQ
  avx512_bf16,  ///< avx512 + AVX512-BF16 (bfloat16 inputs on vdpbf16ps)
};

/// The path's name as HEADWISE_ISA spells it: "baseline", "avx2", "avx512"; for
/// baseline, the instruction set it stands for ("sse2", "neon", ...) when asked
/// through simd_path().
inline const char* isa_name(simd_isa isa) noexcept {
  switch (isa) {
    case simd_isa::automatic: return "automatic";
    case simd_isa::baseline: return "baseline";
    case simd_isa::avx2: return "avx2";
    case simd_isa::avx512: return "avx512";
    case simd_isa::avx512_bf16: return "avx512_bf16";
  }
  return "unknown";
}

namespace detail {

/// Whether this CPU (and OS) can run a path compiled into this build.
inline bool cpu_runs(simd_isa isa) {
#if defined(HEADWISE_X86_DISPATCH)
  const cpu_features& f = this_cpu().features;
  switch (isa) {
    case simd_isa::baseline: return true;
    case simd_isa::avx2: return f.avx2 && f.fma && f.f16c;
    case simd_isa::avx512: return f.avx2 && f.fma && f.f16c && f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq;
    case simd_isa::avx512_bf16: return cpu_runs(simd_isa::avx512) && f.avx512bf16;
    case simd_isa::automatic: return true;
  }
  return false;
#else
  return isa == simd_isa::baseline || isa == simd_isa::automatic;
#endif
}

/// HEADWISE_ISA parsed: automatic when unset or empty.
inline simd_isa isa_from_environment() {
  const char* s = std::getenv("HEADWISE_ISA");
  simd_isa parsed = simd_isa::automatic;
  for (simd_isa isa : {simd_isa::baseline, simd_isa::avx2, simd_isa::avx512, simd_isa::avx512_bf16})
    if (s != nullptr && std::strcmp(s, isa_name(isa)) == 0) parsed = isa;
  check_isa_environment(s, parsed != simd_isa::automatic);
  return parsed;
}

/// The widest path this CPU runs, capped by HEADWISE_ISA; read once.
inline simd_isa default_isa() {
  static const simd_isa chosen = [] {
    const simd_isa cap = isa_from_environment();
    simd_isa best = simd_isa::baseline;
    for (simd_isa isa : {simd_isa::avx2, simd_isa::avx512, simd_isa::avx512_bf16})
      if (cpu_runs(isa) && (cap == simd_isa::automatic || isa <= cap)) best = isa;
    return best;
  }();
  return chosen;
}

/// What `baseline` stands for in this build.
inline const char* baseline_name() noexcept {
#if defined(HEADWISE_X86_DISPATCH)
  return "sse2";
#elif defined(__AVX512BW__)
  return "avx512";
#elif defined(__AVX2__) && defined(__FMA__)
  return "avx2";
#elif defined(__AVX__)
  return "avx";
#elif defined(__SSE2__)
  return "sse2";
#elif defined(__ARM_NEON)
  return "neon";
#else
  return "scalar";
#endif
}

}  // namespace detail

/// Every path this CPU and build can run, narrowest first (tests loop over it).
inline std::vector<simd_isa> available_isas() {
  std::vector<simd_isa> out;
  for (simd_isa isa : {simd_isa::baseline, simd_isa::avx2, simd_isa::avx512, simd_isa::avx512_bf16})
    if (detail::cpu_runs(isa)) out.push_back(isa);
  return out;
}

/// The path attention() runs by default: "avx512", "avx2", or the baseline's
/// instruction set ("sse2", "neon", ...).
inline const char* simd_path() {
  const simd_isa isa = detail::default_isa();
  return isa == simd_isa::baseline ? detail::baseline_name() : isa_name(isa);
}

}  // namespace headwise
