// headwise/kernels/decode_tiles.hpp — the register tiles of the decode kernel.
//
//   score_blocks<P, R>: s[r][j] = q_r · k_j, K in key blocks: q[r][d] broadcast against
//                       W keys, even and odd coordinates in two accumulator sets
//   score_rows<P, R, KT>: the same with K in rows: R × KT dot products, one horizontal
//                       sum (reduce_add_rows) per W of them
//   pv_rows<P, R>:      o[r] += Σ_j p[r][j] · v_j, in strips of R rows × 4/2/1 packs
//                       held in registers over groups of decode_pv_keys V rows
// Register budget: 4 rows × 4 keys = 16 score accumulators with 32 registers (one
// 16-lane reduce_add_rows), 4 × 3 with 16 (12 + 3 K + 1 q); P·V 4 × 4 packs with 32,
// 4 × 2 with 16. The tiles read each K/V row once for all R rows, and pin loaded K/V
// vectors in registers (pin_loads) so GCC does not fold one load into every FMA.
// Why each choice, with the measurements: docs/decode-notes.md.
// Per-path header (kernels/paths.hpp): no include guard, namespace headwise::<path>.
#ifndef HEADWISE_ISA_NS
#error "headwise/kernels/* is internal: include <headwise/headwise.hpp>"
#endif

namespace headwise::HEADWISE_ISA_NS::kernels::decode {

/// Keys per group of the P·V pass: each strip runs over 8 V rows (4 KiB of fp32 at
/// d 128) before moving on, so V is read nearly in address order.
inline constexpr std::size_t decode_pv_keys = 8;

/// Keys per score tile of R = 4, 2 or 1 rows: R × 16/R with 32 registers; 4 × 3,
/// 2 × 4, 1 × 8 with 16.
template <std::size_t R>
inline constexpr std::size_t decode_score_keys = simd::vector_registers >= 32 ? 16 / R : (R == 4 ? 3 : 8 / R);

template <class P>
using value_t = typename simd::ops<P>::value_type;

/// Whether the tiles pin loaded K and V vectors in registers (ops::keep_in_register):
/// for same-type K/V, where GCC 12 would otherwise fold a load into every FMA (the
/// 4 × 4 score tile issued 32 loads per 16 FMAs). Widening loads are not folded.
template <class P, class S>
inline constexpr bool pin_loads = std::is_same_v<S, value_t<P>>;

/// s[r·lds + j] = q_r · k_j for R query rows (stride ldq) and keys j < n of K in
/// key blocks (key_view.hpp) from block k0 on; stores whole blocks, so up to
/// round_up(n, 16) scores per row (lds must allow it). A pack of W keys keeps 2·R
/// accumulators, for even and odd coordinates (one chain per row was FMA-latency
/// bound), and broadcasts q[r][d]: no horizontal sums, and each block is read
/// front to back. Each key's score is its own lane's arithmetic (even sum + odd
/// sum), so every pack width gives the same bits. pf(j, j + 16) runs per block.
template <class P, std::size_t R, class S, class Prefetch>
inline void score_blocks(const value_t<P>* q, std::size_t ldq, const S* k0, std::size_t n, std::size_t dk,
                         value_t<P>* s, std::size_t lds, const Prefetch& pf) {
  using O = simd::ops<P>;
  using T = value_t<P>;
  constexpr std::size_t W = O::width, B = key_block_keys;
  static_assert(B % W == 0, "a key block holds whole packs");
  for (std::size_t j = 0; j < n; j += B) {
    pf(j, j + B);
    const S* kb = k0 + j * dk;
    HEADWISE_UNROLL
    for (std::size_t p = 0; p < B; p += W) {
      P acc[2][R];
      HEADWISE_UNROLL
      for (auto& a : acc)
        for (P& x : a) x = P(T(0));
      std::size_t d = 0;
      for (; d + 2 <= dk; d += 2) {
        HEADWISE_UNROLL
        for (std::size_t h = 0; h < 2; ++h) {
          P kv = simd::load_as<P>(kb + (d + h) * B + p);
          if constexpr (pin_loads<P, S>) O::keep_in_register(kv);
          HEADWISE_UNROLL
          for (std::size_t r = 0; r < R; ++r) acc[h][r] = O::fma(P(q[r * ldq + d + h]), kv, acc[h][r]);
        }
      }
      if (d < dk) {
        const P kv = simd::load_as<P>(kb + d * B + p);
        HEADWISE_UNROLL
        for (std::size_t r = 0; r < R; ++r) acc[0][r] = O::fma(P(q[r * ldq + d]), kv, acc[0][r]);
      }
      HEADWISE_UNROLL
      for (std::size_t r = 0; r < R; ++r) O::store(s + r * lds + j + p, acc[0][r] + acc[1][r]);
    }
  }
}

/// s[r·lds + j] = q_r · k_j for R query rows (stride ldq) and the n keys k_j = k0 + j·ks.
/// Tiles of R rows × KT keys keep R·KT accumulators (4 × 3 = 12 chains: with 8 the
/// FMA latency showed and this pass ran at 54% of peak instead of 93%); every W of
/// them share one horizontal sum (reduce_add_rows). pf(j, j + KT) runs once per tile.
template <class P, std::size_t R, std::size_t KT, class S, class Prefetch>
inline void score_rows(const value_t<P>* q, std::size_t ldq, const S* k0, std::ptrdiff_t ks, std::size_t n,
                       std::size_t dk, value_t<P>* s, std::size_t lds, const Prefetch& pf) {
  using O = simd::ops<P>;
  using T = value_t<P>;
  constexpr std::size_t W = O::width, NA = R * KT, NG = (NA + W - 1) / W;
  for (std::size_t j = 0; j < n; j += KT) {
    const S* k[KT];
    HEADWISE_UNROLL
    for (std::size_t t = 0; t < KT; ++t) k[t] = k0 + std::ptrdiff_t(std::min(j + t, n - 1)) * ks;
    pf(j, j + KT);
    P acc[NG * W];
    HEADWISE_UNROLL
    for (P& a : acc) a = P(T(0));
    std::size_t d = 0;
    for (; d + W <= dk; d += W) {
      P kv[KT];
      HEADWISE_UNROLL
      for (std::size_t t = 0; t < KT; ++t) {
        kv[t] = simd::load_as<P>(k[t] + d);
        if constexpr (pin_loads<P, S>) O::keep_in_register(kv[t]);
      }
      HEADWISE_UNROLL
      for (std::size_t r = 0; r < R; ++r) {
        P qv = O::load(q + r * ldq + d);
        O::keep_in_register(qv);
        HEADWISE_UNROLL
        for (std::size_t t = 0; t < KT; ++t) acc[r * KT + t] = O::fma(qv, kv[t], acc[r * KT + t]);
      }
    }
    if constexpr (NA == W && W > 1) {  // one reduced pack holds the tile's R rows of KT sums
      if (d == dk && j + KT <= n) {
        O::template store_rows<R>(O::reduce_add_rows(acc), s + j, lds);
        continue;
      }
    }
    alignas(64) T sums[NG * W];
    if constexpr (W == 1) {
      HEADWISE_UNROLL
      for (std::size_t i = 0; i < NA; ++i) sums[i] = acc[i];
    } else {
      HEADWISE_UNROLL
      for (std::size_t g = 0; g < NG; ++g) O::reduce_add_rows(acc + g * W).store_aligned(sums + g * W);
    }
    for (; d < dk; ++d)
      for (std::size_t r = 0; r < R; ++r)
        for (std::size_t t = 0; t < KT; ++t)
          sums[r * KT + t] = std::fma(q[r * ldq + d], simd::widen<T>(k[t][d]), sums[r * KT + t]);
    if (j + KT <= n) {
      HEADWISE_UNROLL
      for (std::size_t r = 0; r < R; ++r) std::memcpy(s + r * lds + j, sums + r * KT, KT * sizeof(T));
    } else {
      for (std::size_t r = 0; r < R; ++r)
        for (std::size_t t = 0; t < n - j; ++t) s[r * lds + j + t] = sums[r * KT + t];
    }
  }
}

/// o[r·ldo + d0 ..] += Σ_j p[r·ldp + j] · v_j[d0 ..] over n keys, for R rows and DT
/// packs of Dv; the R·DT accumulators stay in registers for all n keys.
template <class P, std::size_t R, std::size_t DT, class S>
inline void pv_tile(const value_t<P>* p, std::size_t ldp, const S* v0, std::ptrdiff_t v_stride,
                    std::size_t n, std::size_t d0, value_t<P>* o, std::size_t ldo) {
  using O = simd::ops<P>;
  constexpr std::size_t W = O::width;
  P acc[R][DT];
  HEADWISE_UNROLL
  for (std::size_t r = 0; r < R; ++r)
    HEADWISE_UNROLL
    for (std::size_t t = 0; t < DT; ++t) acc[r][t] = O::load(o + r * ldo + d0 + t * W);
  const S* v_row = v0 + d0;
  for (std::size_t j = 0; j < n; ++j, v_row += v_stride) {
    P vv[DT];
    HEADWISE_UNROLL
    for (std::size_t t = 0; t < DT; ++t) {
      vv[t] = simd::load_as<P>(v_row + t * W);
      if constexpr (pin_loads<P, S>) O::keep_in_register(vv[t]);
    }
    HEADWISE_UNROLL
    for (std::size_t r = 0; r < R; ++r) {
      const P pr(p[r * ldp + j]);
      HEADWISE_UNROLL
      for (std::size_t t = 0; t < DT; ++t) acc[r][t] = O::fma(pr, vv[t], acc[r][t]);
    }
  }
  HEADWISE_UNROLL
  for (std::size_t r = 0; r < R; ++r)
    HEADWISE_UNROLL
    for (std::size_t t = 0; t < DT; ++t) O::store(o + r * ldo + d0 + t * W, acc[r][t]);
}

/// o[r·ldo ..] += Σ_j p[r·ldp + j] · v_j over n keys for R rows: groups of
/// decode_pv_keys keys, each over all of Dv in pv_tile strips (pairs of packs, one
/// pack, a scalar tail), so V is read a few rows at a time, near its address order.
/// pf(j, j + g) runs at the start of each group of g keys (requests spread over its
/// keys measured no better on Zen 5: fp16 5-7% slower).
/// With 32 registers the strips are 4 packs wide first: fp16 B1/B4 Nk 32768 ran
/// 1–4% faster than with pairs (6 of 6 paired runs, AVX-512 Xeon).
template <class P, std::size_t R, class S, class Prefetch>
inline void pv_rows(const value_t<P>* p, std::size_t ldp, const S* v0, std::ptrdiff_t v_stride,
                    std::size_t n, std::size_t dv, value_t<P>* o, std::size_t ldo, const Prefetch& pf) {
  using T = value_t<P>;
  constexpr std::size_t W = simd::ops<P>::width;
  for (std::size_t j0 = 0; j0 < n; j0 += decode_pv_keys) {
    const std::size_t g = std::min(decode_pv_keys, n - j0);
    const S* vg = v0 + std::ptrdiff_t(j0) * v_stride;
    const T* pg = p + j0;
    pf(j0, j0 + g);
    std::size_t d = 0;
    if constexpr (simd::vector_registers >= 32)  // 4 rows × 4 packs = 16 accumulators
      for (; d + 4 * W <= dv; d += 4 * W) pv_tile<P, R, 4>(pg, ldp, vg, v_stride, g, d, o, ldo);
    for (; d + 2 * W <= dv; d += 2 * W) pv_tile<P, R, 2>(pg, ldp, vg, v_stride, g, d, o, ldo);
    if (d + W <= dv) pv_tile<P, R, 1>(pg, ldp, vg, v_stride, g, d, o, ldo), d += W;
    for (; d < dv; ++d)
      for (std::size_t r = 0; r < R; ++r) {
        T acc = o[r * ldo + d];
        const S* v_row = vg;
        for (std::size_t j = 0; j < g; ++j, v_row += v_stride) acc += pg[r * ldp + j] * simd::widen<T>(v_row[d]);
        o[r * ldo + d] = acc;
      }
  }
}

}  // namespace headwise::HEADWISE_ISA_NS::kernels::decode
