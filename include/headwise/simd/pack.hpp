// headwise/simd/pack.hpp — the thin layer between kernels and xsimd.
//
//   ops<P>: the operations a kernel needs on a "pack" P of value_type T, where P is
//   either xsimd::batch<T, arch> (vector path) or plain T (the 1-wide scalar path).
//   Kernels are written once against ops<P>; force_scalar instantiates them with
//   P = T, as Eigen treats a scalar as a packet of size 1.
//
// Arch: the widest of AVX-512 (F + BW), AVX2+FMA, AVX2, AVX, SSE*, NEON that the
// compiler enables (-march=native, or -mavx512f -mavx512bw ...); define
// HEADWISE_NO_AVX512 to stay on AVX2 in an AVX-512 build. vector_registers tells
// the kernels how many registers their blocks may use (32 zmm, else 16): see
// kernels/micro_tiles.hpp. On the Xeon these notes were measured on, AVX-512
// doubles the FMA peak (241 vs 131 GFLOP/s on one core); Zen 4 issues its
// 512-bit FMAs as two halves, so there the gain is the wider loads and fewer
// instructions, not the peak. When no SIMD ISA is enabled at all, vector_pack<T>
// is T and everything runs 1-wide.
//
// xsimd 8.1 shims live here and nowhere else: 8.1 spells the horizontal sum
// `hadd` (later `reduce_add`), has no `reduce_max`, and its AVX-512 float `haddp`
// returns rows 2–5 and 10–13 in the wrong lanes (tests/pack_test.cpp), so
// reduce_add_rows has its own AVX-512 float version.
#pragma once

#ifndef HEADWISE_INTERNAL
#error "headwise/simd/* is internal: include <headwise/headwise.hpp>"
#endif

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include <xsimd/xsimd.hpp>

#if defined(__AVX__)
#include <immintrin.h>
#endif

/// Fully unrolls the short fixed-trip loops of register tiles (loops over rows,
/// keys or packs of one tile). GCC fully unrolls them at -O3 but not at -O2,
/// where the accumulator arrays then live in memory and the decode kernel ran 2×
/// slower; the pragma makes the speed independent of the user's -O level.
#define HEADWISE_UNROLL _Pragma("GCC unroll 16")

namespace headwise::simd {

#if defined(XSIMD_NO_SUPPORTED_ARCHITECTURE)
#define HEADWISE_SIMD_NONE 1
#elif XSIMD_WITH_AVX512BW && !defined(HEADWISE_NO_AVX512)
using arch = xsimd::avx512bw;
#define HEADWISE_SIMD_AVX512 1
#elif XSIMD_WITH_FMA3_AVX2
using arch = xsimd::fma3<xsimd::avx2>;
#elif XSIMD_WITH_AVX2
using arch = xsimd::avx2;
#elif XSIMD_WITH_FMA3_AVX
using arch = xsimd::fma3<xsimd::avx>;
#elif XSIMD_WITH_AVX
using arch = xsimd::avx;
#else
using arch = xsimd::default_arch;  // SSE2..SSE4.2 or NEON
#endif

#if defined(HEADWISE_SIMD_NONE)
template <class T>
using vector_pack = T;
#else
template <class T>
using vector_pack = xsimd::batch<T, arch>;
#endif

/// Vector registers the chosen arch has: the kernels size their register blocks by it.
#if defined(HEADWISE_SIMD_AVX512)
inline constexpr std::size_t vector_registers = 32;
#else
inline constexpr std::size_t vector_registers = 16;
#endif

/// Unsigned integer of the same width as T (bit manipulation in exp).
template <class T>
using bits_of = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;

template <class P>
struct ops;

/// The 1-wide pack: P is the scalar itself.
template <class T>
struct scalar_ops {
  using value_type = T;
  using bits = bits_of<T>;
  static constexpr std::size_t width = 1;

  static T load(const T* p) { return *p; }
  static void store(T* p, T x) { *p = x; }
  /// Loads n < width elements (never for width 1, kept for a uniform interface).
  static T load_partial(const T* p, std::size_t n, T fill) { return n ? *p : fill; }
  static T fma(T a, T b, T c) { return a * b + c; }
  static void keep_in_register(T&) {}
  static T max(T a, T b) { return a < b ? b : a; }
  static T reduce_add(T x) { return x; }
  static T reduce_max(T x) { return x; }
  static T select_less(T x, T bound, T if_less, T otherwise) { return x < bound ? if_less : otherwise; }
  static T select_greater(T x, T bound, T if_greater, T otherwise) {
    return x > bound ? if_greater : otherwise;
  }
  static bits to_bits(T x) {
    bits b;
    std::memcpy(&b, &x, sizeof b);
    return b;
  }
  static T from_bits(bits b) {
    T x;
    std::memcpy(&x, &b, sizeof x);
    return x;
  }
  static bits shift_left(bits b, int n) { return b << n; }
};

template <>
struct ops<float> : scalar_ops<float> {};
template <>
struct ops<double> : scalar_ops<double> {};

#if !defined(HEADWISE_SIMD_NONE)
template <class T, class A>
struct ops<xsimd::batch<T, A>> {
  using value_type = T;
  using pack = xsimd::batch<T, A>;
  using bits = xsimd::batch<bits_of<T>, A>;
  static constexpr std::size_t width = pack::size;

  static pack load(const T* p) { return pack::load_unaligned(p); }
  static void store(T* p, const pack& x) { x.store_unaligned(p); }
  /// Loads p[0..n) for n < width, lanes n.. get `fill`; reads nothing past p + n.
  static pack load_partial(const T* p, std::size_t n, T fill) {
    alignas(64) T tmp[width];
    for (std::size_t i = 0; i < width; ++i) tmp[i] = i < n ? p[i] : fill;
    return pack::load_aligned(tmp);
  }
  static pack fma(const pack& a, const pack& b, const pack& c) { return xsimd::fma(a, b, c); }
  /// Makes x an opaque register value, so the compiler cannot re-read it from memory.
  /// A vector loaded once for several FMAs of a register tile is otherwise folded by
  /// GCC into each FMA as a memory operand: decode's 4 × 4 score tile issued 32 loads
  /// per 16 FMAs and ran load-bound (kernels/decode.hpp).
  static void keep_in_register(pack& x) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    typename pack::register_type r = x;
    __asm__("" : "+v"(r));
    x = r;
#endif
  }
  static pack max(const pack& a, const pack& b) { return xsimd::max(a, b); }
  static T reduce_add(const pack& x) { return xsimd::hadd(x); }  // xsimd >= 9: reduce_add
  /// Lane i of the result is the sum of the lanes of rows[i], for i < width.
  static pack reduce_add_rows(const pack* rows) {
#if defined(__AVX512F__)
    if constexpr (std::is_same_v<T, float> && width == 16) {
      // 1. pairs of rows: the halves of each row folded, row 2k in the low and
      //    row 2k+1 in the high 256 bits (8 partial sums each)
      __m512 v[8];
      for (int k = 0; k < 8; ++k) {
        const __m512 a = rows[2 * k], b = rows[2 * k + 1];
        v[k] = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x44), _mm512_shuffle_f32x4(a, b, 0xEE));
      }
      // 2. 128-bit lane L of w[m] holds 4 partial sums of row 4m + L
      __m512 w[4];
      for (int m = 0; m < 4; ++m)
        w[m] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * m], v[2 * m + 1], 0x88),
                             _mm512_shuffle_f32x4(v[2 * m], v[2 * m + 1], 0xDD));
      // 3. within each lane L: element e becomes the total of row 4e + L
      const __m512 z0 =
          _mm512_add_ps(_mm512_shuffle_ps(w[0], w[1], 0x88), _mm512_shuffle_ps(w[0], w[1], 0xDD));
      const __m512 z1 =
          _mm512_add_ps(_mm512_shuffle_ps(w[2], w[3], 0x88), _mm512_shuffle_ps(w[2], w[3], 0xDD));
      const __m512 r = _mm512_add_ps(_mm512_shuffle_ps(z0, z1, 0x88), _mm512_shuffle_ps(z0, z1, 0xDD));
      // 4. row i sits at element 4·(i mod 4) + i / 4
      const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
      return _mm512_permutexvar_ps(order, r);
    }
#endif
    return xsimd::haddp(rows);
  }

  /// Stores the lanes of x as R rows of width/R consecutive values: lanes
  /// [i·width/R, (i+1)·width/R) to dst + i·ld. Decode's score tile writes its reduced
  /// sums this way; through a stack copy, the 16-byte reloads of the 64-byte store
  /// stalled on Zen 5 (fp16 step in L2 ~6% of its samples).
  template <std::size_t R>
  static void store_rows(const pack& x, T* dst, std::size_t ld) {
    static_assert(width % R == 0);
    constexpr std::size_t per_row = width / R;
#if defined(__AVX512F__)
    if constexpr (std::is_same_v<T, float> && width == 16) {
      const __m512 v = x;
      if constexpr (R == 1) {
        _mm512_storeu_ps(dst, v);
      } else if constexpr (R == 2) {
        _mm256_storeu_ps(dst, _mm512_castps512_ps256(v));
        _mm256_storeu_ps(dst + ld, _mm512_castps512_ps256(_mm512_shuffle_f32x4(v, v, 0xEE)));
      } else if constexpr (R == 4) {
        _mm_storeu_ps(dst, _mm512_castps512_ps128(v));
        _mm_storeu_ps(dst + ld, _mm512_extractf32x4_ps(v, 1));
        _mm_storeu_ps(dst + 2 * ld, _mm512_extractf32x4_ps(v, 2));
        _mm_storeu_ps(dst + 3 * ld, _mm512_extractf32x4_ps(v, 3));
      }
      if constexpr (R == 1 || R == 2 || R == 4) return;
    }
#endif
    alignas(64) T tmp[width];
    x.store_aligned(tmp);
    for (std::size_t i = 0; i < R; ++i) std::memcpy(dst + i * ld, tmp + i * per_row, per_row * sizeof(T));
  }
  static T reduce_max(const pack& x) {  // absent in xsimd 8.1
#if defined(__AVX512F__)
    if constexpr (width * sizeof(T) == 64) {
      if constexpr (std::is_same_v<T, float>)
        return _mm512_reduce_max_ps(x);
      else
        return _mm512_reduce_max_pd(x);
    }
#endif
#if defined(__AVX__)
    if constexpr (std::is_same_v<T, float> && width == 8) {  // 3 shuffle + max rounds
      __m256 m = _mm256_max_ps(x, _mm256_permute2f128_ps(x, x, 1));
      m = _mm256_max_ps(m, _mm256_permute_ps(m, 0x4E));
      m = _mm256_max_ps(m, _mm256_permute_ps(m, 0xB1));
      return _mm256_cvtss_f32(m);
    }
#endif
    alignas(64) T tmp[width];
    x.store_aligned(tmp);
    T m = tmp[0];
    for (std::size_t i = 1; i < width; ++i) m = tmp[i] > m ? tmp[i] : m;
    return m;
  }
  static pack select_less(const pack& x, const pack& bound, const pack& if_less, const pack& otherwise) {
    return xsimd::select(x < bound, if_less, otherwise);
  }
  static pack select_greater(const pack& x, const pack& bound, const pack& if_greater,
                             const pack& otherwise) {
    return xsimd::select(x > bound, if_greater, otherwise);
  }
  static bits to_bits(const pack& x) { return xsimd::bitwise_cast<bits>(x); }
  static pack from_bits(const bits& b) { return xsimd::bitwise_cast<pack>(b); }
  static bits shift_left(const bits& b, int n) { return b << n; }
};
#endif

/// Requests the cache line holding p into L1. On x86 this is a volatile asm
/// statement: GCC deletes loops whose only statements are __builtin_prefetch
/// (they have no side effects), which silently removed the decode kernel's
/// look-ahead and cost 30% of its speed.
inline void prefetch(const void* p) noexcept {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  __asm__ volatile("prefetcht0 %0" : : "m"(*static_cast<const char*>(p)));
#else
  __builtin_prefetch(p, 0, 3);
#endif
}

/// Number of lanes of the vector path for T (1 without SIMD).
template <class T>
inline constexpr std::size_t vector_width = ops<vector_pack<T>>::width;

}  // namespace headwise::simd
