// headwise/simd/x86_reduce.hpp — horizontal operations written with x86 intrinsics,
// shared by both vector packs (x86_pack.hpp, xsimd_pack.hpp) where the generic way
// (store to the stack, loop) is measurably slower in the decode kernel's inner loop:
//   sum_rows_16 / sum_rows_8: lane i = Σ lanes of rows[i] (decode's score tile reduces
//     16 accumulators at once: 15 shuffles + 15 adds instead of 16 × 4-step trees)
//   store_rows_16<R>: the 16 lanes as R rows of 16/R values (R = 1, 2, 4), straight
//     from the register: through a stack copy, the 16-byte reloads of the 64-byte
//     store stalled on Zen 5 (fp16 step in L2 ~6% of its samples)
//   max_lane_8: the largest of 8 floats, 3 shuffle + max rounds
// Each is compiled only on the paths whose instructions it uses. P converts to the
// register type (__m512 / __m256) implicitly. Always inlined: called out of line,
// sum_rows_16 forced decode's 16 accumulators through memory and the decode step ran
// 1.5× slower (KV 4096, Zen 4).
//
// Per-path header (kernels/paths.hpp): no include guard, namespace headwise::<path>.
#if !defined(HEADWISE_INTERNAL) || !defined(HEADWISE_ISA_NS)
#error "headwise/simd/* is internal: include <headwise/headwise.hpp>"
#endif

namespace headwise::HEADWISE_ISA_NS::simd::x86 {

#if HEADWISE_PATH_AVX512
template <class P>
HEADWISE_ALWAYS_INLINE __m512 sum_rows_16(const P* rows) {
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
  const __m512 z0 = _mm512_add_ps(_mm512_shuffle_ps(w[0], w[1], 0x88), _mm512_shuffle_ps(w[0], w[1], 0xDD));
  const __m512 z1 = _mm512_add_ps(_mm512_shuffle_ps(w[2], w[3], 0x88), _mm512_shuffle_ps(w[2], w[3], 0xDD));
  const __m512 r = _mm512_add_ps(_mm512_shuffle_ps(z0, z1, 0x88), _mm512_shuffle_ps(z0, z1, 0xDD));
  // 4. row i sits at element 4·(i mod 4) + i / 4
  const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  return _mm512_permutexvar_ps(order, r);
}

template <std::size_t R>
HEADWISE_ALWAYS_INLINE void store_rows_16(__m512 v, float* dst, std::size_t ld) {
  static_assert(R == 1 || R == 2 || R == 4);
  if constexpr (R == 1) {
    _mm512_storeu_ps(dst, v);
  } else if constexpr (R == 2) {
    _mm256_storeu_ps(dst, _mm512_castps512_ps256(v));
    _mm256_storeu_ps(dst + ld, _mm512_castps512_ps256(_mm512_shuffle_f32x4(v, v, 0xEE)));
  } else {
    _mm_storeu_ps(dst, _mm512_castps512_ps128(v));
    _mm_storeu_ps(dst + ld, _mm512_extractf32x4_ps(v, 1));
    _mm_storeu_ps(dst + 2 * ld, _mm512_extractf32x4_ps(v, 2));
    _mm_storeu_ps(dst + 3 * ld, _mm512_extractf32x4_ps(v, 3));
  }
}
#endif

#if HEADWISE_PATH_AVX
template <class P>
HEADWISE_ALWAYS_INLINE __m256 sum_rows_8(const P* rows) {
  // hadd pairs twice: t0 = [Σ0 Σ1 Σ2 Σ3 | Σ0 Σ1 Σ2 Σ3] over each row's low and high
  // 128-bit halves, t1 the same for rows 4–7; then the halves are added.
  const __m256 a = _mm256_hadd_ps(rows[0], rows[1]), b = _mm256_hadd_ps(rows[2], rows[3]);
  const __m256 c = _mm256_hadd_ps(rows[4], rows[5]), d = _mm256_hadd_ps(rows[6], rows[7]);
  const __m256 t0 = _mm256_hadd_ps(a, b), t1 = _mm256_hadd_ps(c, d);
  return _mm256_add_ps(_mm256_permute2f128_ps(t0, t1, 0x20), _mm256_permute2f128_ps(t0, t1, 0x31));
}

HEADWISE_ALWAYS_INLINE float max_lane_8(__m256 x) {
  __m256 m = _mm256_max_ps(x, _mm256_permute2f128_ps(x, x, 1));
  m = _mm256_max_ps(m, _mm256_permute_ps(m, 0x4E));
  m = _mm256_max_ps(m, _mm256_permute_ps(m, 0xB1));
  return _mm256_cvtss_f32(m);
}
#endif

}  // namespace headwise::HEADWISE_ISA_NS::simd::x86
