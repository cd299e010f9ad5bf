// headwise/simd/transpose.hpp — W×W block transpose for packing K tiles.
//
//   transpose_block<P>(src, src_stride, dst, dst_stride):
//     dst[i·dst_stride + r] = src[r·src_stride + i]   for r, i < W = ops<P>::width
//
// The flash kernel stores each K tile key-minor ([d][keys], see
// kernels/flash_tiles.hpp). Done element by element that is one scalar load and
// one scalar store per element — at bc·Dk per tile it cost ~12% of the kernel at
// 64 query rows per task. In registers an 8×8 float block is 8 loads, 24
// shuffles (unpack, shuffle, 128-bit permute: 3 rounds of 8) and 8 stores, so
// ~5 ops per 8 elements instead of 16. AVX has the shuffles for 8 floats and
// 4 doubles; an AVX-512 block (16 floats, 8 doubles) is four of those blocks;
// other widths (SSE, NEON, the 1-wide scalar path) use the loop.
#if !defined(HEADWISE_INTERNAL) || !defined(HEADWISE_ISA_NS)
#error "headwise/simd/* is internal: include <headwise/headwise.hpp>"
#endif

namespace headwise::HEADWISE_ISA_NS::simd {

#if HEADWISE_PATH_AVX

/// dst[i·ds + r] = src[r·ss + i] for an AVX block: 8×8 floats.
inline void transpose_avx_block(const float* src, std::size_t src_stride, float* dst,
                                std::size_t dst_stride) {
  __m256 r[8], t[8];
  for (std::size_t i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * src_stride);
  for (std::size_t i = 0; i < 8; i += 2) {  // interleave pairs of rows
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (std::size_t i = 0; i < 8; i += 4) {  // 4×4 blocks within each 128-bit lane
    r[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
    r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
    r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  for (std::size_t i = 0; i < 4; ++i) {  // swap the 128-bit halves
    _mm256_storeu_ps(dst + i * dst_stride, _mm256_permute2f128_ps(r[i], r[i + 4], 0x20));
    _mm256_storeu_ps(dst + (i + 4) * dst_stride, _mm256_permute2f128_ps(r[i], r[i + 4], 0x31));
  }
}

/// The same for 4×4 doubles.
inline void transpose_avx_block(const double* src, std::size_t src_stride, double* dst,
                                std::size_t dst_stride) {
  __m256d r[4], t[4];
  for (std::size_t i = 0; i < 4; ++i) r[i] = _mm256_loadu_pd(src + i * src_stride);
  t[0] = _mm256_unpacklo_pd(r[0], r[1]);
  t[1] = _mm256_unpackhi_pd(r[0], r[1]);
  t[2] = _mm256_unpacklo_pd(r[2], r[3]);
  t[3] = _mm256_unpackhi_pd(r[2], r[3]);
  for (std::size_t i = 0; i < 2; ++i) {
    _mm256_storeu_pd(dst + i * dst_stride, _mm256_permute2f128_pd(t[i], t[i + 2], 0x20));
    _mm256_storeu_pd(dst + (i + 2) * dst_stride, _mm256_permute2f128_pd(t[i], t[i + 2], 0x31));
  }
}

/// The AVX block of T: 8 floats or 4 doubles on a side.
template <class T>
inline constexpr std::size_t avx_block = 32 / sizeof(T);

#endif

template <class P, class T>
void transpose_block(const T* src, std::size_t src_stride, T* dst, std::size_t dst_stride) {
  constexpr std::size_t W = ops<P>::width;
#if HEADWISE_PATH_AVX
  if constexpr ((std::is_same_v<T, float> || std::is_same_v<T, double>)&&W % avx_block<T> == 0) {
    // W = 2·A on AVX-512: block (bi, bj) of dst is the transpose of block (bj, bi) of src.
    constexpr std::size_t A = avx_block<T>;
    for (std::size_t bi = 0; bi < W; bi += A)
      for (std::size_t bj = 0; bj < W; bj += A)
        transpose_avx_block(src + bj * src_stride + bi, src_stride, dst + bi * dst_stride + bj,
                                    dst_stride);
    return;
  }
#endif
  for (std::size_t r = 0; r < W; ++r)
    for (std::size_t i = 0; i < W; ++i) dst[i * dst_stride + r] = src[r * src_stride + i];
}

}  // namespace headwise::HEADWISE_ISA_NS::simd
