// headwise/simd/convert.hpp — load K/V storage elements widened to the compute type.
//
//   load_as<P>(const S* p): reads ops<P>::width elements of storage type S at p
//   (unaligned) and returns them as a pack P of float or double (see pack.hpp).
//     S = T            a plain load
//     S = half         vcvtph2ps (16 lanes on AVX-512, 8 or 4 with F16C; exact), else
//                      the portable bit converter of storage.hpp per lane
//     S = bfloat16     zero-extend 16 → 32 bits and shift left by 16 (exact; AVX-512,
//                      AVX2 or SSE2 integer ops), else the portable converter per lane
//     S = int8_t       sign-extend to 32 bits and convert (vpmovsxbd + vcvtdq2ps, or
//                      SSE2 unpacks and an arithmetic shift; exact); the row's scale
//                      is the kernel's to apply (quantize.hpp)
// Decode streams K and V through this once per step, so the widening must cost less
// than the memory it saves: vcvtph2ps reads 16 bytes and issues one uop where the
// fp32 load would read 32; the bf16 path is two integer uops. Both are exact, so the
// vector and portable paths agree bit for bit (tests check all 65536 patterns).
#if !defined(HEADWISE_INTERNAL) || !defined(HEADWISE_ISA_NS)
#error "headwise/simd/* is internal: include <headwise/headwise.hpp>"
#endif

namespace headwise::HEADWISE_ISA_NS::simd {

/// One element of storage S widened to T (the portable path, and the scalar pack's).
template <class T, class S>
inline T widen(const S& x) noexcept {
  return detail::convert_element<T>(x);
}

template <class P, class S>
HEADWISE_ALWAYS_INLINE P load_as(const S* p) noexcept {
  using O = ops<P>;
  using T = typename O::value_type;
  if constexpr (std::is_same_v<S, T>) {
    return O::load(p);
  } else if constexpr (O::width == 1) {
    return widen<T>(*p);
  } else {
    static_assert(std::is_same_v<T, float> && (is_storage_16<S> || is_storage_int8<S>),
                  "16-bit and int8 K/V storage widen to float only");
#if HEADWISE_PATH_AVX512
    if constexpr (is_storage_int8<S> && O::width == 16)
      return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
#endif
#if HEADWISE_PATH_AVX2
    if constexpr (is_storage_int8<S> && O::width == 8)
      return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
#endif
#if defined(__SSE2__)
    if constexpr (is_storage_int8<S> && O::width == 4) {  // each byte to the top of its lane, then shift down
      std::int32_t four;
      std::memcpy(&four, p, sizeof four);
      const __m128i b = _mm_cvtsi32_si128(four), w = _mm_unpacklo_epi8(b, b);
      return _mm_cvtepi32_ps(_mm_srai_epi32(_mm_unpacklo_epi16(w, w), 24));
    }
#endif
#if HEADWISE_PATH_AVX512
    if constexpr (std::is_same_v<S, half> && O::width == 16)
      return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    if constexpr (std::is_same_v<S, bfloat16> && O::width == 16)
      return _mm512_castsi512_ps(_mm512_slli_epi32(
          _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
#endif
#if HEADWISE_PATH_AVX2
    if constexpr (std::is_same_v<S, half> && O::width == 8)
      return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    if constexpr (std::is_same_v<S, half> && O::width == 4)
      return _mm_cvtph_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
#endif
#if HEADWISE_PATH_AVX2
    if constexpr (std::is_same_v<S, bfloat16> && O::width == 8)
      return _mm256_castsi256_ps(
          _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16));
#endif
#if defined(__SSE2__)
    if constexpr (std::is_same_v<S, bfloat16> && O::width == 4)  // (0, b) pairs = b << 16
      return _mm_castsi128_ps(
          _mm_unpacklo_epi16(_mm_setzero_si128(), _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
#endif
    alignas(64) T tmp[O::width];
    for (std::size_t i = 0; i < O::width; ++i) tmp[i] = widen<T>(p[i]);
    return P::load_aligned(tmp);
  }
}

}  // namespace headwise::HEADWISE_ISA_NS::simd
