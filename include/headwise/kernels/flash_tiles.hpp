// headwise/kernels/flash_tiles.hpp — packing and the two register-blocked
// micro-kernels of the flash kernel.
//
//   pack_k_panels: K rows j0..j0+n → panels [n_pad / KB][Dk][KB] (key-minor), zero padded
//   pack_v_rows:   V rows j0..j0+n → [n][Dv_pad], zero padded to the pack width
//   score_tile<P, MR>:     S[MR][n_pad]  = Qs[MR][Dk] · Kᵀ        (Qs pre-scaled)
// The backward (flash_backward.hpp) reuses all four: K and V as panels and rows, and
// accumulate_tile for Pᵀ·dO, dSᵀ·Q and dS·K.
//   accumulate_tile<P, MR>: O[MR][Dv_pad] = alpha ⊙ O + P[MR][n] · V[n][Dv_pad]
// KB = tile_vectors · W keys per panel (W = pack width: 8 floats on AVX2).
//
// Register block (AVX2 + FMA, 16 ymm registers of W = 8 floats): both kernels
// keep MR × NR = 6 × 2 accumulators, plus NR = 2 vector loads (K panel / V row)
// and 1 broadcast (q or p) = 15 registers. Zen 4/5 and Haswell..Golden Cove issue
// 2 FMAs per cycle with 4–5 cycles latency, so ≥ 8–10 independent accumulators
// are needed to keep both ports busy: 12 leaves slack. Per step of the reduction
// loop: 12 FMAs (6 cycles at 2/cycle) against 2 vector loads + 6 broadcast loads,
// within the 2–3 loads/cycle of these cores. With AVX-512's 32 zmm registers the
// block is 12 × 2 (24 accumulators + 3 = 27 registers): 24 FMAs per 2 loads + 12
// broadcasts. Measured on a Xeon with two 512-bit FMA units (flash, H8 N1024 d128,
// one thread, one session): MR 6: 130, MR 8: 143, MR 12: 159 GFLOP/s (66% of the
// AVX-512 FMA peak; the AVX2 build reached 91 on the same core). The same code
// instantiated with P = T (the scalar path) keeps MR × 2 scalar accumulators.
// The tile loops carry HEADWISE_UNROLL: at -O2 GCC 12 left them rolled, the
// accumulators in memory, and prefill ran at 44 instead of 95 GFLOP/s (H8 N1024 d128,
// Zen 4, one process).
//
// Why pack: the K tile is read once per MR-row block (Bq·group / MR times per
// tile), so transposing it once into contiguous KB-wide panels turns every read
// into a streaming vector load; V rows are copied into a dense buffer for the
// same reason. Packing is where the storage type S is converted to the
// compute type (convert_row: vector widening of half/bfloat16/int8 via
// simd/convert.hpp, int8 rows times their scale).
#ifndef HEADWISE_ISA_NS
#error "headwise/kernels/* is internal: include <headwise/headwise.hpp>"
#endif

namespace headwise::HEADWISE_ISA_NS::kernels {

/// MR: query rows per micro-tile: 6 for 16 registers, 12 for AVX-512's 32 (see above).
inline constexpr std::size_t tile_rows = simd::vector_registers >= 32 ? 12 : 6;
inline constexpr std::size_t tile_vectors = 2;  // NR: packs per micro-tile row

/// Converts one stored row of n elements to the compute type and zero-fills
/// dst[n..n_pad): W at a time with the widening loads of simd/convert.hpp (F16C
/// for half); for same-type rows one masked tail load writes the tail and the
/// padding together when the padding has room for a whole pack.
/// An int8 row (quantize.hpp) is also multiplied by its scale: dequantized here, once.
template <class P, class T, class S>
void convert_row(const S* src, std::size_t n, std::size_t n_pad, T* dst, [[maybe_unused]] T scale = T(1)) {
  using O = simd::ops<P>;
  constexpr std::size_t W = O::width;
  std::size_t i = 0;
  if constexpr (is_storage_int8<S>) {
    const P sv(scale);
    for (; i + W <= n; i += W) O::store(dst + i, simd::load_as<P>(src + i) * sv);
    for (; i < n; ++i) dst[i] = simd::widen<T>(src[i]) * scale;
  }
  for (; i + W <= n; i += W) O::store(dst + i, simd::load_as<P>(src + i));
  if constexpr (std::is_same_v<S, T>) {
    if (i < n && i + W <= n_pad) {
      O::store(dst + i, O::load_partial(src + i, n - i, T(0)));
      i += W;
    }
  }
  for (; i < n; ++i) dst[i] = simd::widen<T>(src[i]);
  for (; i < n_pad; ++i) dst[i] = T(0);
}

/// K rows [j0, j0 + n) of (b, hk) → panels of kb keys: dst[p][d][c] = k[j0 + p·kb + c][d];
/// keys n..n_pad are zero. Rows are converted W at a time into tmp (W·Dk
/// elements), then moved by W×W register transposes (simd/transpose.hpp).
template <class P, class T, class Rows>
void pack_k_panels(const Rows& k, std::size_t b, std::size_t hk, std::size_t j0, std::size_t n, std::size_t n_pad,
                   std::size_t kb, T* dst, T* tmp, const value_view<const float>& scale = {}) {
  using S = typename Rows::value_type;
  constexpr std::size_t W = simd::ops<P>::width;
  const std::size_t dk = k.dim();
  for (std::size_t c0 = 0; c0 < n_pad; c0 += W) {
    for (std::size_t r = 0; r < W; ++r) {
      T* row = tmp + r * dk;
      if (c0 + r < n)
        convert_row<P>(k.row(b, hk, j0 + c0 + r), dk, dk, row, detail::row_scale<T, S>(scale, b, hk, j0 + c0 + r));
      else
        std::fill(row, row + dk, T(0));
    }
    T* panel = dst + (c0 / kb) * dk * kb + c0 % kb;
    std::size_t d = 0;
    for (; d + W <= dk; d += W) simd::transpose_block<P>(tmp + d, dk, panel + d * kb, kb);
    for (; d < dk; ++d)
      for (std::size_t r = 0; r < W; ++r) panel[d * kb + r] = tmp[r * dk + d];
  }
}

/// The same panels from K in key blocks, which already hold coordinate d of 16
/// consecutive keys side by side: W keys within one block are one (widening) load
/// per coordinate, no transpose; W keys across a block boundary, or past n, go
/// element by element.
template <class P, class T, class S>
void pack_k_panels(const key_blocks_view<const S>& k, std::size_t b, std::size_t hk, std::size_t j0,
                   std::size_t n, std::size_t n_pad, std::size_t kb, T* dst, const value_view<const float>& scale) {
  using O = simd::ops<P>;
  constexpr std::size_t W = O::width, KB = key_block_keys;
  const std::size_t dk = k.dim();
  for (std::size_t c0 = 0; c0 < n_pad; c0 += W) {
    T* panel = dst + (c0 / kb) * dk * kb + c0 % kb;
    const std::size_t j = j0 + c0, lane = j % KB;
    const S* block = k.block(b, hk, j / KB) + lane;
    alignas(64) T scales[W];  // each key's (int8), else ones
    for (std::size_t r = 0; r < W; ++r) scales[r] = c0 + r < n ? detail::row_scale<T, S>(scale, b, hk, j + r) : T(0);
    if (c0 + W <= n && lane + W <= KB) {
      if constexpr (is_storage_int8<S>) {
        const P sv = O::load(scales);
        for (std::size_t d = 0; d < dk; ++d) O::store(panel + d * kb, simd::load_as<P>(block + d * KB) * sv);
      } else {
        for (std::size_t d = 0; d < dk; ++d) O::store(panel + d * kb, simd::load_as<P>(block + d * KB));
      }
      continue;
    }
    for (std::size_t d = 0; d < dk; ++d)
      for (std::size_t r = 0; r < W; ++r)
        panel[d * kb + r] = c0 + r < n ? simd::widen<T>(k(b, hk, j + r, d)) * scales[r] : T(0);
  }
}

/// K keys [j0, j0 + n) in either layout → panels (above).
/// scale: each key's, for int8 K (unset otherwise).
template <class P, class T, class S>
void pack_k_panels(const key_view<const S>& k, std::size_t b, std::size_t hk, std::size_t j0, std::size_t n,
                   std::size_t n_pad, std::size_t kb, T* dst, T* tmp, const value_view<const float>& scale = {}) {
  if (k.blocked()) return pack_k_panels<P>(k.blocks(), b, hk, j0, n, n_pad, kb, dst, scale);
  if (k.paged()) return pack_k_panels<P>(k.pages(), b, hk, j0, n, n_pad, kb, dst, tmp, scale);
  pack_k_panels<P>(k.rows(), b, hk, j0, n, n_pad, kb, dst, tmp, scale);
}

/// V rows [j0, j0 + n) of (b, hk) → dst[c][0..dv_pad), zero past Dv; int8 rows times
/// their scale.
template <class P, class T, class Rows>  // tensor_view or value_view
void pack_v_rows(const Rows& v, std::size_t b, std::size_t hk, std::size_t j0, std::size_t n,
                 std::size_t dv_pad, T* dst, const value_view<const float>& scale = {}) {
  using S = typename Rows::value_type;
  const std::size_t dv = v.dim();
  for (std::size_t c = 0; c < n; ++c)
    convert_row<P>(v.row(b, hk, j0 + c), dv, dv_pad, dst + c * dv_pad, detail::row_scale<T, S>(scale, b, hk, j0 + c));
}

/// s[r][0..n_pad) = Σ_d q[r][d] · K[d][·] for MR query rows (row stride q_stride >= dk)
/// over n_pad / KB packed panels; s has row stride s_stride. The backward also calls
/// it for dP = dO·Vᵀ (dO rows, V packed as panels, dk = Dv).
template <class P, std::size_t MR, class T>
void score_tile(const T* q, std::size_t q_stride, std::size_t dk, const T* panels, std::size_t n_pad, T* s,
                std::size_t s_stride) {
  using O = simd::ops<P>;
  constexpr std::size_t W = O::width, NR = tile_vectors, KB = NR * W;
  for (std::size_t p0 = 0; p0 < n_pad; p0 += KB) {
    const T* kp = panels + p0 * dk;
    P acc[MR][NR];
    HEADWISE_UNROLL
    for (std::size_t r = 0; r < MR; ++r)
      HEADWISE_UNROLL
      for (std::size_t c = 0; c < NR; ++c) acc[r][c] = P(T(0));
    for (std::size_t d = 0; d < dk; ++d) {
      P kv[NR];
      HEADWISE_UNROLL
      for (std::size_t c = 0; c < NR; ++c) kv[c] = O::load(kp + d * KB + c * W);
      HEADWISE_UNROLL
      for (std::size_t r = 0; r < MR; ++r) {
        const P qb(q[r * q_stride + d]);
        HEADWISE_UNROLL
        for (std::size_t c = 0; c < NR; ++c) acc[r][c] = O::fma(qb, kv[c], acc[r][c]);
      }
    }
    HEADWISE_UNROLL
    for (std::size_t r = 0; r < MR; ++r)
      HEADWISE_UNROLL
      for (std::size_t c = 0; c < NR; ++c) O::store(s + r * s_stride + p0 + c * W, acc[r][c]);
  }
}

/// One column block of NC packs: o[r][col..] = alpha[r]·o[r][col..] + Σ_j p[r][j]·v[j][col..].
template <class P, std::size_t MR, std::size_t NC, class T>
void accumulate_columns(const T* p, std::size_t p_stride, const T* alpha, const T* v, std::size_t v_stride,
                        std::size_t n, T* o, std::size_t o_stride, std::size_t col) {
  using O = simd::ops<P>;
  constexpr std::size_t W = O::width;
  P acc[MR][NC];
  HEADWISE_UNROLL
  for (std::size_t r = 0; r < MR; ++r) {
    const P a(alpha[r]);
    HEADWISE_UNROLL
    for (std::size_t c = 0; c < NC; ++c) acc[r][c] = O::load(o + r * o_stride + col + c * W) * a;
  }
  for (std::size_t j = 0; j < n; ++j) {
    P vv[NC];
    HEADWISE_UNROLL
    for (std::size_t c = 0; c < NC; ++c) vv[c] = O::load(v + j * v_stride + col + c * W);
    HEADWISE_UNROLL
    for (std::size_t r = 0; r < MR; ++r) {
      const P pb(p[r * p_stride + j]);
      HEADWISE_UNROLL
      for (std::size_t c = 0; c < NC; ++c) acc[r][c] = O::fma(pb, vv[c], acc[r][c]);
    }
  }
  HEADWISE_UNROLL
  for (std::size_t r = 0; r < MR; ++r)
    HEADWISE_UNROLL
    for (std::size_t c = 0; c < NC; ++c) O::store(o + r * o_stride + col + c * W, acc[r][c]);
}

/// O[MR][dv_pad] = alpha ⊙ O + P[MR][n] · V[n][dv_pad]; dv_pad is a multiple of W.
template <class P, std::size_t MR, class T>
void accumulate_tile(const T* p, std::size_t p_stride, const T* alpha, const T* v, std::size_t dv_pad,
                     std::size_t n, T* o, std::size_t o_stride) {
  constexpr std::size_t W = simd::ops<P>::width, NR = tile_vectors;
  std::size_t col = 0;
  for (; col + NR * W <= dv_pad; col += NR * W)
    accumulate_columns<P, MR, NR>(p, p_stride, alpha, v, dv_pad, n, o, o_stride, col);
  for (; col < dv_pad; col += W)
    accumulate_columns<P, MR, 1>(p, p_stride, alpha, v, dv_pad, n, o, o_stride, col);
}

}  // namespace headwise::HEADWISE_ISA_NS::kernels
