// headwise/kernels/flash_bf16_tiles.hpp — the flash kernel's packing and register
// tiles for bfloat16 q/k/v on AVX512-BF16 (the avx512_bf16 path only).
//
// vdpbf16ps multiplies the bf16 pairs of two registers and adds both products of
// each pair to one fp32 lane: 32 multiplies per instruction where vfmadd231ps does
// 16. Both operands therefore hold pairs along the reduction axis, one pair per
// 32-bit word (element 2i in the low half):
//   Q rows    [rows][dp]          coordinate pairs (d, d+1), dp = ⌈Dk/2⌉; as given,
//                                 unscaled: the scale multiplies the fp32 scores
//   K panels  [n_pad/KB][dp][KB]  word (d, c) = the pair (k[c][2d], k[c][2d+1])
//   P rows    [MR][n_pad/2]       key pairs (j, j+1), P rounded to bf16 (RNE)
//   V pairs   [⌈n/2⌉][dv_pad]     word (j, col) = (v[2j][col], v[2j+1][col])
// Odd Dk, odd n and the columns past Dv are zero, so they add nothing.
// The register blocks are the fp32 tiles' (flash_tiles.hpp): MR × 2 accumulators of
// 16 lanes, 2 loads and 1 broadcast per step; a step now covers 2 coordinates (2 keys
// in P·V), so each tile needs half the steps.
// Accuracy (FlashAttention's recipe): products of bf16 values are exact in fp32 and
// summed in fp32; S is scaled in fp32; only P is rounded, to bf16 (relative 2^-9),
// while l sums the unrounded fp32 P. The test checks the error against a naive pipeline
// in the same precision (tests/bf16_test.cpp).
// Packing: K rows are already pairs, so a K tile is a 16×16 transpose of 32-bit words
// (simd/transpose.hpp, on the words' bits); key blocks interleave two coordinates'
// rows; V rows are interleaved two keys at a time (widen, shift, or: 4 ops per 16
// words). Per task that is O(n·(Dk + Dv)), against O(rows·n·(Dk + Dv)) multiplies.
// Per-path header (kernels/paths.hpp): no include guard, namespace headwise::<path>.
#ifndef HEADWISE_ISA_NS
#error "headwise/kernels/* is internal: include <headwise/headwise.hpp>"
#endif

namespace headwise::HEADWISE_ISA_NS::kernels {

/// Whether calls with q of type Q (q, k and v share it) and pack P run the vdpbf16ps
/// tiles, this header's in flash and decode_bf16_tiles.hpp's in decode: bfloat16 on the
/// avx512_bf16 path, vector packs only (the scalar build widens, as elsewhere).
template <class P, class Q>
inline constexpr bool bf16_tiles = HEADWISE_PATH_AVX512_BF16 && std::is_same_v<Q, bfloat16> && !std::is_arithmetic_v<P>;

}  // namespace headwise::HEADWISE_ISA_NS::kernels

#if HEADWISE_PATH_AVX512_BF16

namespace headwise::HEADWISE_ISA_NS::kernels::bf16 {

using word = std::uint32_t;  // one bf16 pair
inline constexpr std::size_t W = 16;          // words (keys or columns) per register
inline constexpr std::size_t KB = tile_vectors * W;  // keys per K panel

HEADWISE_ALWAYS_INLINE __m512bh as_pairs(__m512i x) noexcept { return (__m512bh)x; }

HEADWISE_ALWAYS_INLINE __m512i broadcast_word(const word* p) noexcept {
  word w;
  std::memcpy(&w, p, sizeof w);
  return _mm512_set1_epi32(static_cast<int>(w));
}

/// 16 words (lo[c], hi[c]) from 16 bf16 of lo and 16 of hi (hi null: zeros); m masks
/// the columns read.
HEADWISE_ALWAYS_INLINE __m512i interleave(const bfloat16* lo, const bfloat16* hi, __mmask16 m) noexcept {
  const __m512i a = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, lo));
  if (hi == nullptr) return a;
  return _mm512_or_si512(a, _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, hi)), 16));
}

/// A Q or K row of Dk bf16 → dp words, zero past Dk.
inline void load_pair_row(const bfloat16* q, std::size_t Dk, word* dst) {
  const std::size_t dp = detail::ceil_div(Dk, std::size_t(2));
  dst[dp - 1] = 0;
  std::memcpy(dst, q, Dk * sizeof(bfloat16));
}

/// K rows [j0, j0 + n) → panels (file comment); keys n..n_pad zero. Rows go W at a
/// time into tmp (W·dp words), then through 16×16 word transposes.
template <class Rows>  // tensor_view or paged_rows_view of bfloat16
void pack_k_panels(const Rows& k, std::size_t b, std::size_t hk, std::size_t j0, std::size_t n, std::size_t n_pad,
                   word* dst, word* tmp) {
  using F = simd::vector_pack<float>;
  const std::size_t Dk = k.dim(), dp = detail::ceil_div(Dk, std::size_t(2));
  for (std::size_t c0 = 0; c0 < n_pad; c0 += W) {
    for (std::size_t r = 0; r < W; ++r) {
      word* row = tmp + r * dp;
      if (c0 + r < n)
        load_pair_row(k.row(b, hk, j0 + c0 + r), Dk, row);
      else
        std::fill(row, row + dp, word(0));
    }
    word* panel = dst + (c0 / KB) * dp * KB + c0 % KB;
    std::size_t d = 0;
    for (; d + W <= dp; d += W)
      simd::transpose_block<F>(reinterpret_cast<const float*>(tmp + d), dp, reinterpret_cast<float*>(panel + d * KB),
                               KB);
    for (; d < dp; ++d)
      for (std::size_t r = 0; r < W; ++r) panel[d * KB + r] = tmp[r * dp + d];
  }
}

/// The same panels from K in key blocks (coordinate d of 16 keys side by side): 16
/// keys of one block are two coordinates' rows interleaved; others word by word.
inline void pack_k_panels(const key_blocks_view<const bfloat16>& k, std::size_t b, std::size_t hk, std::size_t j0,
                          std::size_t n, std::size_t n_pad, word* dst) {
  constexpr std::size_t KBK = key_block_keys;
  const std::size_t Dk = k.dim(), dp = detail::ceil_div(Dk, std::size_t(2));
  for (std::size_t c0 = 0; c0 < n_pad; c0 += W) {
    word* panel = dst + (c0 / KB) * dp * KB + c0 % KB;
    const std::size_t j = j0 + c0, lane = j % KBK;
    if (c0 + W <= n && lane == 0 && KBK == W) {
      const bfloat16* block = k.block(b, hk, j / KBK);
      for (std::size_t d = 0; d < dp; ++d)
        _mm512_storeu_si512(panel + d * KB,
                            interleave(block + 2 * d * KBK, 2 * d + 1 < Dk ? block + (2 * d + 1) * KBK : nullptr,
                                       0xffff));
      continue;
    }
    for (std::size_t d = 0; d < dp; ++d)
      for (std::size_t r = 0; r < W; ++r) {
        word w = 0;
        if (c0 + r < n) {
          w = k(b, hk, j + r, 2 * d).bits;
          if (2 * d + 1 < Dk) w |= word(k(b, hk, j + r, 2 * d + 1).bits) << 16;
        }
        panel[d * KB + r] = w;
      }
  }
}

inline void pack_k_panels(const key_view<const bfloat16>& k, std::size_t b, std::size_t hk, std::size_t j0,
                          std::size_t n, std::size_t n_pad, word* dst, word* tmp) {
  if (k.blocked()) return pack_k_panels(k.blocks(), b, hk, j0, n, n_pad, dst);
  if (k.paged()) return pack_k_panels(k.pages(), b, hk, j0, n, n_pad, dst, tmp);
  pack_k_panels(k.rows(), b, hk, j0, n, n_pad, dst, tmp);
}

/// V rows [j0, j0 + n) → ⌈n/2⌉ rows of key pairs, dv_pad words each, zero past Dv.
inline void pack_v_pairs(const value_view<const bfloat16>& v, std::size_t b, std::size_t hk, std::size_t j0,
                         std::size_t n, std::size_t dv_pad, word* dst) {
  const std::size_t Dv = v.dim();
  for (std::size_t j = 0; j < n; j += 2) {
    const bfloat16* lo = v.row(b, hk, j0 + j);
    const bfloat16* hi = j + 1 < n ? v.row(b, hk, j0 + j + 1) : nullptr;
    word* out = dst + j / 2 * dv_pad;
    for (std::size_t col = 0; col < dv_pad; col += W) {
      const std::size_t left = col < Dv ? std::min(W, Dv - col) : 0;
      const auto m = static_cast<__mmask16>((1u << left) - 1u);
      _mm512_storeu_si512(out + col, interleave(lo + col, hi == nullptr ? nullptr : hi + col, m));
    }
  }
}

/// s[r][0..n_pad) = scale · Σ_d q[r]·k over dp word steps of n_pad / KB panels.
template <std::size_t MR>
void score_tile(const word* q, std::size_t q_stride, std::size_t dp, const word* panels, std::size_t n_pad,
                float scale, float* s, std::size_t s_stride) {
  constexpr std::size_t NR = tile_vectors;
  const __m512 f = _mm512_set1_ps(scale);
  for (std::size_t p0 = 0; p0 < n_pad; p0 += KB) {
    const word* kp = panels + p0 * dp;
    __m512 acc[MR][NR];
    HEADWISE_UNROLL
    for (std::size_t r = 0; r < MR; ++r)
      HEADWISE_UNROLL
      for (std::size_t c = 0; c < NR; ++c) acc[r][c] = _mm512_setzero_ps();
    for (std::size_t d = 0; d < dp; ++d) {
      __m512bh kv[NR];
      HEADWISE_UNROLL
      for (std::size_t c = 0; c < NR; ++c) kv[c] = as_pairs(_mm512_loadu_si512(kp + d * KB + c * W));
      HEADWISE_UNROLL
      for (std::size_t r = 0; r < MR; ++r) {
        const __m512bh qb = as_pairs(broadcast_word(q + r * q_stride + d));
        HEADWISE_UNROLL
        for (std::size_t c = 0; c < NR; ++c) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], qb, kv[c]);
      }
    }
    HEADWISE_UNROLL
    for (std::size_t r = 0; r < MR; ++r)
      HEADWISE_UNROLL
      for (std::size_t c = 0; c < NR; ++c) _mm512_storeu_ps(s + r * s_stride + p0 + c * W, _mm512_mul_ps(acc[r][c], f));
  }
}

/// p[0..n/2) = the fp32 probabilities s[0..n) rounded to bf16 pairs (n a multiple of 32).
inline void round_row(const float* s, std::size_t n, word* p) {
  for (std::size_t j = 0; j < n; j += 2 * W)
    _mm512_storeu_si512(p + j / 2, (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(s + j + W), _mm512_loadu_ps(s + j)));
}

/// One column block of NC registers: o = alpha·o + Σ_j p[r][j]·v[j] over np key pairs.
template <std::size_t MR, std::size_t NC>
void accumulate_columns(const word* p, std::size_t p_stride, const float* alpha, const word* v,
                        std::size_t v_stride, std::size_t np, float* o, std::size_t o_stride, std::size_t col) {
  __m512 acc[MR][NC];
  HEADWISE_UNROLL
  for (std::size_t r = 0; r < MR; ++r) {
    const __m512 a = _mm512_set1_ps(alpha[r]);
    HEADWISE_UNROLL
    for (std::size_t c = 0; c < NC; ++c) acc[r][c] = _mm512_mul_ps(_mm512_loadu_ps(o + r * o_stride + col + c * W), a);
  }
  for (std::size_t j = 0; j < np; ++j) {
    __m512bh vv[NC];
    HEADWISE_UNROLL
    for (std::size_t c = 0; c < NC; ++c) vv[c] = as_pairs(_mm512_loadu_si512(v + j * v_stride + col + c * W));
    HEADWISE_UNROLL
    for (std::size_t r = 0; r < MR; ++r) {
      const __m512bh pb = as_pairs(broadcast_word(p + r * p_stride + j));
      HEADWISE_UNROLL
      for (std::size_t c = 0; c < NC; ++c) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], pb, vv[c]);
    }
  }
  HEADWISE_UNROLL
  for (std::size_t r = 0; r < MR; ++r)
    HEADWISE_UNROLL
    for (std::size_t c = 0; c < NC; ++c) _mm512_storeu_ps(o + r * o_stride + col + c * W, acc[r][c]);
}

/// O[MR][dv_pad] = alpha ⊙ O + P[MR][2·np] · V over np key pairs; dv_pad a multiple of W.
template <std::size_t MR>
void accumulate_tile(const word* p, std::size_t p_stride, const float* alpha, const word* v, std::size_t dv_pad,
                     std::size_t np, float* o, std::size_t o_stride) {
  constexpr std::size_t NR = tile_vectors;
  std::size_t col = 0;
  for (; col + NR * W <= dv_pad; col += NR * W)
    accumulate_columns<MR, NR>(p, p_stride, alpha, v, dv_pad, np, o, o_stride, col);
  for (; col < dv_pad; col += W) accumulate_columns<MR, 1>(p, p_stride, alpha, v, dv_pad, np, o, o_stride, col);
}

}  // namespace headwise::HEADWISE_ISA_NS::kernels::bf16

#endif
