// headwise/kernels/dispatch.hpp — one copy of the SIMD kernels per instruction set,
// and the switch that picks one at run time (the public side is isa.hpp).
//
// Header-only and flag-free: the per-path headers (simd/pack.hpp … kernels/decode.hpp,
// listed in kernels/paths.hpp) carry no include guard and are included here once per
// path, each time inside namespace headwise::<path> and, on x86, under a target
// pragma that lets the compiler emit that path's instructions:
//   isa_baseline  no pragma: SSE2 on x86-64 (4 floats, 16 registers, no FMA)
//   isa_avx2      avx2, fma, f16c (8 floats, 16 registers)
//   isa_avx512    avx512f/bw/vl/dq + the above (16 floats, 32 registers)
//   isa_avx512_bf16  avx512bf16 + the above: only calls with bfloat16 q/k/v come here
//                 (the flash kernel's vdpbf16ps tiles, kernels/flash_bf16_tiles.hpp);
//                 with_kernel_path sends every other call to isa_avx512
// The namespaces keep the copies apart (their template instances have different
// names, so the linker never merges an AVX-512 body into the SSE2 path); a call
// crosses from the caller's default target into a path only through
// kernel_path<...>::flash/decode, after isa.hpp checked that the CPU runs it.
// Everything those headers use from elsewhere (the standard library, score_rules,
// parallel_for, key_blocks, the plain kernel's settle_row) is included above the
// first pragma, so no function outside headwise::isa_* is ever compiled for a wider
// target than the caller's.
//
// Without dispatch (HEADWISE_NO_DISPATCH, non-x86, other compilers) the same headers
// are included once, as isa_baseline, on xsimd's widest arch for the build's flags.
//
// Adding a path: a namespace and target string below, a simd_isa value and its CPU
// test in isa.hpp, the register width in simd/x86_pack.hpp, and a case in
// with_kernel_path.
#pragma once

#ifndef HEADWISE_INTERNAL
#error "headwise/kernels/* is internal: include <headwise/headwise.hpp>"
#endif

// What the per-path headers use, included before any target pragma.
#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

#include "headwise/detail/cpu_features.hpp"
#include "headwise/detail/integer.hpp"
#include "headwise/detail/kernel_call.hpp"
#include "headwise/detail/parallel.hpp"
#include "headwise/detail/score_rules.hpp"
#include "headwise/isa.hpp"
#include "headwise/kernels/merge_row.hpp"
#include "headwise/kernels/plain.hpp"
#include "headwise/key_view.hpp"
#include "headwise/storage.hpp"
#include "headwise/tensor.hpp"
#include "headwise/workspace.hpp"

#if defined(HEADWISE_X86_DISPATCH)
#include <immintrin.h>  // GCC and Clang declare every intrinsic whatever the flags
#else
#include "headwise/simd/xsimd_shim.hpp"
#include <xsimd/xsimd.hpp>
#if defined(__SSE2__) || defined(__AVX__)
#include <immintrin.h>
#endif
#endif

/// Fully unrolls the short fixed-trip loops of register tiles (loops over rows,
/// keys or packs of one tile). GCC fully unrolls them at -O3 but not at -O2,
/// where the accumulator arrays then live in memory and the decode kernel ran 2×
/// slower; the pragma makes the speed independent of the user's -O level.
#define HEADWISE_UNROLL _Pragma("GCC unroll 16")

/// For every helper that takes or returns a SIMD register by value (simd/*.hpp), and
/// the few whose call would force a tile's accumulators through memory. A path's
/// register-valued function must never be an out-of-line call: GCC 12 at -O2 with
/// -fsanitize=undefined emitted exp2_nonpositive<vec<float>> (AVX2) out of line with
/// a vzeroupper between computing its ymm0 result and the ret, so the upper half of
/// every exponential was zero and the flash and decode kernels answered wrongly.
#define HEADWISE_ALWAYS_INLINE inline __attribute__((always_inline))

// GCC 12's _mm512_undefined_* initialise a register from itself, which -Wuninitialized
// reports at every AVX-512 intrinsic that uses one (extracts, shuffles, reductions),
// located in avx512fintrin.h but inlined into these paths: a false positive, silenced
// for the paths' code only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#if defined(HEADWISE_X86_DISPATCH)
#if defined(__clang__)
#define HEADWISE_TARGET_BEGIN(targets) \
  _Pragma(HEADWISE_STRINGIFY(clang attribute push(__attribute__((target(targets))), apply_to = function)))
#define HEADWISE_TARGET_END _Pragma("clang attribute pop")
#else
#define HEADWISE_TARGET_BEGIN(targets) _Pragma("GCC push_options") _Pragma(HEADWISE_STRINGIFY(GCC target(targets)))
#define HEADWISE_TARGET_END _Pragma("GCC pop_options")
#endif
#define HEADWISE_STRINGIFY(x) #x
#define HEADWISE_TARGETS_AVX2 "avx,avx2,fma,f16c"
#define HEADWISE_TARGETS_AVX512 "avx,avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq"
#define HEADWISE_TARGETS_AVX512_BF16 "avx,avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512bf16"

// Path: baseline (SSE2, the x86-64 ABI's own).
#define HEADWISE_ISA_NS isa_baseline
#define HEADWISE_ISA_ID ::headwise::simd_isa::baseline
#define HEADWISE_ISA_INDEX 0
#define HEADWISE_PATH_BYTES 16
#define HEADWISE_PATH_AVX 0
#define HEADWISE_PATH_AVX2 0
#define HEADWISE_PATH_AVX512 0
#define HEADWISE_PATH_AVX512_BF16 0
#include "headwise/kernels/paths.hpp"
#include "headwise/kernels/path_end.hpp"

// Path: AVX2 + FMA + F16C.
HEADWISE_TARGET_BEGIN(HEADWISE_TARGETS_AVX2)
#define HEADWISE_ISA_NS isa_avx2
#define HEADWISE_ISA_ID ::headwise::simd_isa::avx2
#define HEADWISE_ISA_INDEX 1
#define HEADWISE_PATH_BYTES 32
#define HEADWISE_PATH_AVX 1
#define HEADWISE_PATH_AVX2 1
#define HEADWISE_PATH_AVX512 0
#define HEADWISE_PATH_AVX512_BF16 0
#include "headwise/kernels/paths.hpp"
#include "headwise/kernels/path_end.hpp"
HEADWISE_TARGET_END

// Path: AVX-512 F + BW + VL + DQ.
HEADWISE_TARGET_BEGIN(HEADWISE_TARGETS_AVX512)
#define HEADWISE_ISA_NS isa_avx512
#define HEADWISE_ISA_ID ::headwise::simd_isa::avx512
#define HEADWISE_ISA_INDEX 2
#define HEADWISE_PATH_BYTES 64
#define HEADWISE_PATH_AVX 1
#define HEADWISE_PATH_AVX2 1
#define HEADWISE_PATH_AVX512 1
#define HEADWISE_PATH_AVX512_BF16 0
#include "headwise/kernels/paths.hpp"
#include "headwise/kernels/path_end.hpp"
HEADWISE_TARGET_END

// Path: AVX-512 + AVX512-BF16 (bfloat16 inputs only).
HEADWISE_TARGET_BEGIN(HEADWISE_TARGETS_AVX512_BF16)
#define HEADWISE_ISA_NS isa_avx512_bf16
#define HEADWISE_ISA_ID ::headwise::simd_isa::avx512_bf16
#define HEADWISE_ISA_INDEX 3
#define HEADWISE_PATH_BYTES 64
#define HEADWISE_PATH_AVX 1
#define HEADWISE_PATH_AVX2 1
#define HEADWISE_PATH_AVX512 1
#define HEADWISE_PATH_AVX512_BF16 1
#include "headwise/kernels/paths.hpp"
#include "headwise/kernels/path_end.hpp"
HEADWISE_TARGET_END

#else  // one path: xsimd's arch for the build's flags

#define HEADWISE_ISA_NS isa_baseline
#define HEADWISE_ISA_ID ::headwise::simd_isa::baseline
#define HEADWISE_ISA_INDEX 0
#define HEADWISE_PATH_BYTES 0
#if defined(__AVX__)
#define HEADWISE_PATH_AVX 1
#else
#define HEADWISE_PATH_AVX 0
#endif
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define HEADWISE_PATH_AVX2 1
#else
#define HEADWISE_PATH_AVX2 0
#endif
#if defined(__AVX512F__) && defined(__AVX512BW__) && !defined(HEADWISE_NO_AVX512)
#define HEADWISE_PATH_AVX512 1
#else
#define HEADWISE_PATH_AVX512 0
#endif
#define HEADWISE_PATH_AVX512_BF16 0
#include "headwise/kernels/paths.hpp"
#include "headwise/kernels/path_end.hpp"

#endif

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

namespace headwise::detail {

/// Calls fn(path, pack) with the kernel_path of `isa` (already resolved and checked
/// by resolve_isa) and, as a null pointer of its type, the pack the kernels compute
/// with: the path's vector of T, or T itself on the baseline path when `scalar`
/// (options.force_scalar: the 1-wide build of the same kernels). Q is q's type.
template <class T, class Q, class Fn>
void with_kernel_path(simd_isa isa, bool scalar, Fn&& fn) {
  auto vector = [&](auto path) { fn(path, static_cast<typename decltype(path)::template vector_pack<T>*>(nullptr)); };
  if (scalar) return fn(isa_baseline::kernel_path{}, static_cast<T*>(nullptr));
#if defined(HEADWISE_X86_DISPATCH)
  switch (isa) {
    case simd_isa::avx512_bf16:
      if constexpr (std::is_same_v<Q, bfloat16>) return vector(isa_avx512_bf16::kernel_path{});
      return vector(isa_avx512::kernel_path{});
    case simd_isa::avx512: return vector(isa_avx512::kernel_path{});
    case simd_isa::avx2: return vector(isa_avx2::kernel_path{});
    default: break;
  }
#endif
  (void)isa;
  vector(isa_baseline::kernel_path{});
}

}  // namespace headwise::detail
