// headwise/simd/xsimd_pack.hpp — the vector pack of builds without dispatch:
// xsimd::batch<T, arch> on the widest arch the compiler's flags enable (AVX-512 F +
// BW, AVX2 + FMA, AVX2, AVX, SSE*, NEON ...), and ops<xsimd::batch>. Define
// HEADWISE_NO_AVX512 to stay on AVX2 in an AVX-512 build. When no SIMD ISA is
// enabled at all, vector_pack<T> is T and everything runs 1-wide.
//
// On the Xeon these notes were measured on, AVX-512 doubles the FMA peak (241 vs
// 131 GFLOP/s on one core); Zen 4 issues its 512-bit FMAs as two halves, so there
// the gain is the wider loads and fewer instructions, not the peak.
// Differences between xsimd versions live in simd/xsimd_shim.hpp.
//
// Per-path header (kernels/paths.hpp): no include guard, namespace headwise::<path>.
#if !defined(HEADWISE_INTERNAL) || !defined(HEADWISE_ISA_NS)
#error "headwise/simd/* is internal: include <headwise/headwise.hpp>"
#endif

namespace headwise::HEADWISE_ISA_NS::simd {

#if defined(XSIMD_NO_SUPPORTED_ARCHITECTURE)
template <class T>
using vector_pack = T;
#else
#if HEADWISE_PATH_AVX512
using arch = xsimd::avx512bw;
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

template <class T>
using vector_pack = xsimd::batch<T, arch>;

template <class T, class A>
struct ops<xsimd::batch<T, A>> {
  using value_type = T;
  using pack = xsimd::batch<T, A>;
  using bits = xsimd::batch<bits_of<T>, A>;
  static constexpr std::size_t width = pack::size;
  static constexpr bool is_float = std::is_same_v<T, float>;

  static pack load(const T* p) { return pack::load_unaligned(p); }
  static void store(T* p, const pack& x) { x.store_unaligned(p); }
  static pack load_partial(const T* p, std::size_t n, T fill) { return load_partial_lanes<pack>(p, n, fill); }
  static pack fma(const pack& a, const pack& b, const pack& c) { return xsimd::fma(a, b, c); }
  /// Makes x an opaque register value (see x86_pack.hpp).
  static void keep_in_register(pack& x) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    typename pack::register_type r = x;
    __asm__("" : "+v"(r));
    x = r;
#endif
  }
  static pack max(const pack& a, const pack& b) { return xsimd::max(a, b); }
  static T reduce_add(const pack& x) { return headwise::simd::xsimd_shim::reduce_add(x); }
  /// Lane i of the result is the sum of the lanes of rows[i], for i < width.
  static pack reduce_add_rows(const pack* rows) {
#if HEADWISE_PATH_AVX512
    // xsimd's AVX-512 float haddp puts rows 2–5 and 10–13 in the wrong lanes (8.1, 13.2).
    if constexpr (is_float && width == 16) return x86::sum_rows_16(rows);
#endif
    return headwise::simd::xsimd_shim::reduce_add_rows(rows);
  }
  /// Stores the lanes of x as R rows of width/R consecutive values.
  template <std::size_t R>
  static void store_rows(const pack& x, T* dst, std::size_t ld) {
    static_assert(width % R == 0);
#if HEADWISE_PATH_AVX512
    if constexpr (is_float && width == 16 && (R == 1 || R == 2 || R == 4)) {
      x86::store_rows_16<R>(x, dst, ld);
      return;
    }
#endif
    constexpr std::size_t per_row = width / R;
    alignas(64) T tmp[width];
    x.store_aligned(tmp);
    for (std::size_t i = 0; i < R; ++i) std::memcpy(dst + i * ld, tmp + i * per_row, per_row * sizeof(T));
  }
  static T reduce_max(const pack& x) {
#if HEADWISE_PATH_AVX512
    if constexpr (is_float && width == 16) return _mm512_reduce_max_ps(x);
    if constexpr (!is_float && width == 8) return _mm512_reduce_max_pd(x);
#endif
#if HEADWISE_PATH_AVX
    if constexpr (is_float && width == 8) return x86::max_lane_8(x);
#endif
    return headwise::simd::xsimd_shim::reduce_max(x);
  }
  static pack select_less(const pack& x, const pack& bound, const pack& if_less, const pack& otherwise) {
    return xsimd::select(x < bound, if_less, otherwise);
  }
  static pack select_greater(const pack& x, const pack& bound, const pack& if_greater, const pack& otherwise) {
    return xsimd::select(x > bound, if_greater, otherwise);
  }
  static bits to_bits(const pack& x) { return headwise::simd::xsimd_shim::bitwise_cast<bits_of<T>>(x); }
  static pack from_bits(const bits& b) { return headwise::simd::xsimd_shim::bitwise_cast<T>(b); }
  static bits shift_left(const bits& b, int n) { return b << n; }
};
#endif

inline constexpr std::size_t vector_registers = HEADWISE_PATH_AVX512 ? 32 : 16;

/// Number of lanes of the vector path for T (1 without SIMD).
template <class T>
inline constexpr std::size_t vector_width = ops<vector_pack<T>>::width;

}  // namespace headwise::HEADWISE_ISA_NS::simd
