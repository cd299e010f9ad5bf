// headwise/kernels/decode_bf16_tiles.hpp — the decode kernel's register tiles for
// bfloat16 q/k/v with K in rows, on AVX512-BF16 (the avx512_bf16 path only).
//
//   decode_scores<R, KT>: s[r][j] = scale · q_r · k_j. q rows are bf16 pairs (as
//                         given, zero past Dk); a K row is already pairs, so one
//                         vdpbf16ps covers 32 coordinates of one key for one row.
//                         R × KT accumulators share one horizontal sum, as in the
//                         fp32 score_rows (decode_tiles.hpp).
//   decode_pv<R>:         o[r] += Σ_j p[r][j] · v_j with P rounded to bf16 key pairs
//                         (p_j, p_j+1). V rows j and j+1 are interleaved in registers
//                         (two loads, one vpermt2w per 16 columns), so the cache is
//                         read in place, in its own layout.
// Work per key at d 128, 4 query rows: 16 vdpbf16ps for the scores and 16 for P·V,
// plus 4 loads and 4 permutes, against 64 + 64 FMAs and 16 widenings (2 ops each)
// when the same rows are widened to fp32 (decode_tiles.hpp).
// Accuracy is FlashAttention's recipe, as in the flash tiles (flash_bf16_tiles.hpp):
// exact bf16 products summed in fp32, S scaled in fp32, P rounded to bf16 for P·V
// only while l sums the fp32 P.
// Per-path header (kernels/paths.hpp): no include guard, namespace headwise::<path>.
#ifndef HEADWISE_ISA_NS
#error "headwise/kernels/* is internal: include <headwise/headwise.hpp>"
#endif

#if HEADWISE_PATH_AVX512_BF16

namespace headwise::HEADWISE_ISA_NS::kernels::bf16 {

/// Keys per group of decode_pv: 16 bf16 V rows of d 128 are the 4 KiB that the fp32
/// P·V reads per group (decode_pv_keys rows of fp32).
inline constexpr std::size_t decode_pv_pair_keys = 2 * kernels::decode::decode_pv_keys;

/// A register's bf16 lanes, opaque to the compiler, so a loaded K or V vector is not
/// re-read from memory by every vdpbf16ps that uses it (decode_tiles.hpp's pin_loads).
HEADWISE_ALWAYS_INLINE __m512i keep_in_register(__m512i x) noexcept {
  __asm__("" : "+v"(x));
  return x;
}

/// The mask of the first min(count, 32) bf16 of a register.
constexpr __mmask32 first_bf16(std::size_t count) {
  return count >= 32 ? ~__mmask32(0) : static_cast<__mmask32>((std::uint64_t(1) << count) - 1u);
}

/// s[r·lds + j] = scale · q_r · k_j for R rows of q words (stride ldq words: whole
/// registers, zero from Dk on) and the n keys k_j = k0 + j·ks of dk bf16. R·KT = 16.
template <std::size_t R, std::size_t KT, class Prefetch>
inline void decode_scores(const word* q, std::size_t ldq, const bfloat16* k0, std::ptrdiff_t ks, std::size_t n,
                          std::size_t dk, float scale, float* s, std::size_t lds, const Prefetch& pf) {
  using P = simd::vector_pack<float>;
  using O = simd::ops<P>;
  constexpr std::size_t NA = R * KT;
  static_assert(NA == O::width, "the tile's sums fill one register");
  for (std::size_t j = 0; j < n; j += KT) {
    const bfloat16* k[KT];
    HEADWISE_UNROLL
    for (std::size_t t = 0; t < KT; ++t) k[t] = k0 + std::ptrdiff_t(std::min(j + t, n - 1)) * ks;
    pf(j, j + KT);
    P acc[NA];
    HEADWISE_UNROLL
    for (P& a : acc) a = P(_mm512_setzero_ps());
    for (std::size_t d = 0; d < dk; d += 2 * W) {
      const __mmask32 m = first_bf16(dk - d);
      __m512i kv[KT];
      HEADWISE_UNROLL
      for (std::size_t t = 0; t < KT; ++t) kv[t] = keep_in_register(_mm512_maskz_loadu_epi16(m, k[t] + d));
      HEADWISE_UNROLL
      for (std::size_t r = 0; r < R; ++r) {
        const __m512i qv = keep_in_register(_mm512_loadu_si512(q + r * ldq + d / 2));
        HEADWISE_UNROLL
        for (std::size_t t = 0; t < KT; ++t)
          acc[r * KT + t] = _mm512_dpbf16_ps(acc[r * KT + t].v, as_pairs(qv), as_pairs(kv[t]));
      }
    }
    const P sums = O::reduce_add_rows(acc) * P(scale);
    if (j + KT <= n) {
      O::template store_rows<R>(sums, s + j, lds);
    } else {
      alignas(64) float tail[NA];
      O::store(tail, sums);
      for (std::size_t r = 0; r < R; ++r)
        for (std::size_t t = 0; t < n - j; ++t) s[r * lds + j + t] = tail[r * KT + t];
    }
  }
}

/// o[r·ldo + col ..] += Σ_j p[r][j]·v_j[col ..] for R rows and NC·16 columns from col
/// (masked at dv), over n keys from v0; p holds key pairs (word j/2, ldp words per row).
template <std::size_t R, std::size_t NC>
inline void decode_pv_strip(const word* p, std::size_t ldp, const bfloat16* v0, std::ptrdiff_t vs, std::size_t n,
                            std::size_t col, std::size_t dv, float* o, std::size_t ldo) {
  static_assert(NC % 2 == 0, "a strip is whole pairs of registers: 32 columns per V load");
  // Word c of the even register pairs element c of the first row with element c of
  // the second (vpermt2w indices: 0–31 the first source, 32–63 the second).
  alignas(64) static constexpr std::uint16_t interleave_lo[32] = {
      0, 32, 1, 33, 2,  34, 3,  35, 4,  36, 5,  37, 6,  38, 7,  39,
      8, 40, 9, 41, 10, 42, 11, 43, 12, 44, 13, 45, 14, 46, 15, 47};
  alignas(64) static constexpr std::uint16_t interleave_hi[32] = {
      16, 48, 17, 49, 18, 50, 19, 51, 20, 52, 21, 53, 22, 54, 23, 55,
      24, 56, 25, 57, 26, 58, 27, 59, 28, 60, 29, 61, 30, 62, 31, 63};
  const __m512i ilo = _mm512_load_si512(interleave_lo), ihi = _mm512_load_si512(interleave_hi);
  const std::size_t cols = dv - col;
  __mmask32 vm[NC / 2];  // the V columns of each load
  __mmask16 om[NC];      // the o columns of each register
  HEADWISE_UNROLL
  for (std::size_t u = 0; u < NC / 2; ++u) {
    vm[u] = 2 * u * W < cols ? first_bf16(cols - 2 * u * W) : 0;
    om[2 * u] = static_cast<__mmask16>(vm[u]);
    om[2 * u + 1] = static_cast<__mmask16>(vm[u] >> 16);
  }
  __m512 acc[R][NC];
  HEADWISE_UNROLL
  for (std::size_t r = 0; r < R; ++r)
    HEADWISE_UNROLL
    for (std::size_t c = 0; c < NC; ++c) acc[r][c] = _mm512_maskz_loadu_ps(om[c], o + r * ldo + col + c * W);
  for (std::size_t j = 0; j < n; j += 2) {
    const bfloat16* lo = v0 + std::ptrdiff_t(j) * vs + col;
    __m512i vv[NC];
    HEADWISE_UNROLL
    for (std::size_t u = 0; u < NC / 2; ++u) {
      const __m512i a = _mm512_maskz_loadu_epi16(vm[u], lo + 2 * u * W);
      const __m512i b = _mm512_maskz_loadu_epi16(j + 1 < n ? vm[u] : 0, lo + vs + 2 * u * W);
      vv[2 * u] = keep_in_register(_mm512_permutex2var_epi16(a, ilo, b));
      vv[2 * u + 1] = keep_in_register(_mm512_permutex2var_epi16(a, ihi, b));
    }
    HEADWISE_UNROLL
    for (std::size_t r = 0; r < R; ++r) {
      const __m512bh pb = as_pairs(broadcast_word(p + r * ldp + j / 2));
      HEADWISE_UNROLL
      for (std::size_t c = 0; c < NC; ++c) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], pb, as_pairs(vv[c]));
    }
  }
  HEADWISE_UNROLL
  for (std::size_t r = 0; r < R; ++r)
    HEADWISE_UNROLL
    for (std::size_t c = 0; c < NC; ++c) _mm512_mask_storeu_ps(o + r * ldo + col + c * W, om[c], acc[r][c]);
}

/// o[r·ldo ..] += Σ_j p[r][j]·v_j over n keys (n even unless the chunk ends there) for
/// R rows: groups of decode_pv_pair_keys keys, each over all of dv in strips of 64
/// and then 32 columns (the last masked). pf(j, j + g) runs at the start of each group.
template <std::size_t R, class Prefetch>
inline void decode_pv(const word* p, std::size_t ldp, const bfloat16* v0, std::ptrdiff_t vs, std::size_t n,
                      std::size_t dv, float* o, std::size_t ldo, const Prefetch& pf) {
  for (std::size_t j0 = 0; j0 < n; j0 += decode_pv_pair_keys) {
    const std::size_t g = std::min(decode_pv_pair_keys, n - j0);
    const bfloat16* vg = v0 + std::ptrdiff_t(j0) * vs;
    const word* pg = p + j0 / 2;
    pf(j0, j0 + g);
    std::size_t col = 0;
    for (; col + 4 * W <= dv; col += 4 * W) decode_pv_strip<R, 4>(pg, ldp, vg, vs, g, col, dv, o, ldo);
    for (; col < dv; col += 2 * W) decode_pv_strip<R, 2>(pg, ldp, vg, vs, g, col, dv, o, ldo);
  }
}

}  // namespace headwise::HEADWISE_ISA_NS::kernels::bf16

#endif  // HEADWISE_PATH_AVX512_BF16
