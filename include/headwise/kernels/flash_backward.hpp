// headwise/kernels/flash_backward.hpp — the flash attention backward (FlashAttention-2
// style): gradients of q, k and v, recomputing P tile by tile from the forward's LSE.
//
//   q [B, Hq, Nq, Dk]  k [B, Hkv, Nk, Dk]  v [B, Hkv, Nk, Dv]
//   out, dout [B, Hq, Nq, Dv]  lse [B, Hq, Nq, 1] (natural log, float)
//   → dq [B, Hq, Nq, Dk]  dk [B, Hkv, Nk, Dk]  dv [B, Hkv, Nk, Dv]
//
// The forward it differentiates (options.hpp), per row i of head h, key j:
//   s_ij = rules(scale · q_i·k_j)    p_ij = exp(s_ij − lse_i)    out_i = hs_h · Σ_j p_ij v_j
// With dA_i = hs_h · dout_i (the gradient of the unscaled average) and
// D_i = Σ_d dout_id · out_id (= dA_i · out_i / hs_h):
//   dv_j += Σ_i p_ij dA_i                    (Pᵀ·dA)
//   dp_ij = dA_i · v_j                       (dA·Vᵀ)
//   ds_ij = p_ij (dp_ij − D_i) · g_ij        g = 1 − tanh²(raw/c) under softcap c, else 1
//   dq_i += scale · Σ_j ds_ij k_j            (dS·K)
//   dk_j += scale · Σ_i ds_ij q_i            (dSᵀ·Q)
// The masks, ALiBi and the structural rules have no parameters: no gradient flows
// into them; a hidden key has p = 0 and so ds = 0.
//
// Task = (batch, kv head): the task owns dk and dv of its kv head and dq of the
// group's query heads, so every gradient element is summed by one task in one fixed
// order: no atomics on the data, and the same bits for any thread count. When the
// B·Hkv tasks do not share the workers evenly (MQA at batch 1), each key tile is a
// task of its own: it owns its dk and dv, and adds to a block's dq only once the
// previous tile has (a wavefront: tile j trails tile j − 1 by a block). Every element
// is summed in the same order with no work done twice (10 N²d FLOPs; cutting a kv
// head into parts of rows and tiles that recompute where they meet costs 12 at two
// parts, a split into dq tasks and dk/dv tasks 14), and the bits stay the same.
// Measured (Zen 3, AVX2, MQA Hq 8 Hkv 1 d 128, B 1, two threads): 1.86–1.96× one
// thread, 1.28–1.34× the dq and dk/dv split (scripts/kernel-ab --shapes backward).
// Per kv head: for each key tile of bc keys, K and V packed as panels (score_tile's
// operand) and K as dense rows (dS·K's), dk and dv accumulators zeroed; for each
// block of bq query rows (shared by the group's heads: the visibility extents are
// computed once per block and tile), for each unpruned head:
//   1. load: Q rows scaled as the forward does (softmax_row::q_scale), dA = hs·dout,
//      D and the LSE in log2 units (+inf for a row with no visible key, so p = 0);
//   2. S = Q·Kᵀ and dP = dA·Vᵀ (score_tile), only up to the block's last visible key;
//   3. per row: the rules (as the forward: softcap, its derivative g, bias, masks),
//      p = 2^(s − lse₂), ds = p·(dP − D)·g, in place over S and dP;
//   4. P and dS transposed by W×W blocks; dv += Pᵀ·dA, dk += dSᵀ·Q, dq_part = dS·K
//      (accumulate_tile), dq += scale·dq_part.
// FLOPs: 10·Nq·Nk·d (d = Dk = Dv) in the five products S, dP, dv, dk, dq (2 each:
// FlashAttention's 2.5× the forward's 4), all in the forward's register tiles, plus
// ~8 vector ops per score (exp, subtraction, two products, two transposes).
// Memory: O(N·d) in the gradients; scratch per worker bounded by the tiles: 3 K/V
// copies and 2 accumulators of bc rows, the Q/dA/dq blocks of bq rows, 5 score tiles
// of bq × bc (593 KiB at d 128, 377 at d 64; float), independent of N. Key tiles as
// tasks add one shared counter per tile: 8 bytes per 128 keys and kv head.
// Per-path header (kernels/paths.hpp): no include guard, namespace headwise::<path>.
#ifndef HEADWISE_ISA_NS
#error "headwise/kernels/* is internal: include <headwise/headwise.hpp>"
#endif

namespace headwise::HEADWISE_ISA_NS::kernels::flash_backward {

struct tiling {
  std::size_t bq = 0;  // query rows per block, a multiple of the pack width
  std::size_t bc = 0;  // keys per tile, a multiple of kb
  std::size_t kb = 0;  // keys per packed panel
  std::size_t dk = 0, dv = 0, dk_pad = 0, dv_pad = 0;
};

/// bq 64 rows: the three accumulate_tile products reduce over them (dv, dk), so the
/// accumulators are loaded and stored once per 64 FMA steps; bc 128 keys: each row
/// block's Q, dA and D are loaded, and its dq added, once per key tile, which cost
/// 9% of H8 N1024 d128 at 64 keys (Zen 3, AVX2: 128 keys ran 1.03–1.12× faster on
/// scripts/kernel-ab's backward shapes, 1.02–1.05× at d 64; 256 keys gained at most
/// 1–7% more, in one order only, and 128 query rows nothing). Working set at d 128
/// (K and V panels, K rows, dk, dv, the row blocks, 5 score tiles): ~0.6 MiB.
inline tiling make_tiling(std::size_t W, std::size_t Dk, std::size_t Dv) {
  tiling t;
  t.kb = tile_vectors * W;
  t.bq = detail::round_up(64, W);
  t.bc = detail::round_up(std::max<std::size_t>(128, t.kb), t.kb);
  t.dk = Dk, t.dv = Dv;
  t.dk_pad = detail::round_up(Dk, W);
  t.dv_pad = detail::round_up(Dv, W);
  return t;
}

template <class T>
struct scratch {
  T *k_panels, *v_panels, *k_rows, *dk, *dv;  // one key tile
  T *q, *da, *dq;                             // one row block
  T *s, *dp, *g, *pt, *dst;                   // S/P, dP/dS, softcap slopes, Pᵀ, dSᵀ
  T *tmp, *lse2, *delta, *ones;
  std::size_t* extent;  // per row of the block: the key tile's leading keys it needs

  scratch(detail::scratch_carver& c, const tiling& t)
      : k_panels(c.take<T>(t.bc * t.dk)),
        v_panels(c.take<T>(t.bc * t.dv)),
        k_rows(c.take<T>(t.bc * t.dk_pad)),
        dk(c.take<T>(t.bc * t.dk_pad)),
        dv(c.take<T>(t.bc * t.dv_pad)),
        q(c.take<T>(t.bq * t.dk_pad)),
        da(c.take<T>(t.bq * t.dv_pad)),
        dq(c.take<T>(t.bq * t.dk_pad)),
        s(c.take<T>(t.bq * t.bc)),
        dp(c.take<T>(t.bq * t.bc)),
        g(c.take<T>(t.bq * t.bc)),
        pt(c.take<T>(t.bc * t.bq)),
        dst(c.take<T>(t.bc * t.bq)),
        tmp(c.take<T>(t.kb * std::max(t.dk, t.dv))),
        lse2(c.take<T>(t.bq)),
        delta(c.take<T>(t.bq)),
        ones(c.take<T>(tile_rows)),
        extent(c.take<std::size_t>(t.bq)) {}
};

/// Bytes of scratch one worker uses (independent of Nq and Nk).
template <class T>
std::size_t scratch_bytes(const tiling& t) {
  return detail::scratch_bytes_of<scratch<T>>(t);
}

/// One block of rows [i0, i0 + rows) against one key tile [j0, j0 + n).
struct block {
  std::size_t b, hk, i0, rows;
  std::int64_t j0;
  std::size_t n, nb;  // keys in the tile; keys the block needs (up to its last visible one)
  bool full;          // every row sees every key of the tile
};

/// Pass 1: the block's rows of head h: scaled Q, dA = hs·dout, D and lse₂. D is
/// summed in W lanes: one scalar chain of Dv adds took 8% of H8 N1024 d128 (Zen 3).
template <class P, class T>
void load_block(const detail::backward_call<T>& c, const tiling& tl, const block& bk, std::size_t h,
                T q_scale, scratch<T>& w) {
  using O = simd::ops<P>;
  constexpr std::size_t W = O::width;
  constexpr T log2e = softmax_row<T>::log2e;
  const T hs = c.rules.head_multiplier(h);
  for (std::size_t r = 0; r < bk.rows; ++r) {
    const std::size_t i = bk.i0 + r;
    const T *q_row = c.q.row(bk.b, h, i), *do_row = c.dout.row(bk.b, h, i), *o_row = c.out.row(bk.b, h, i);
    T* qs = w.q + r * tl.dk_pad;
    T* da = w.da + r * tl.dv_pad;
    for (std::size_t d = 0; d < tl.dk; ++d) qs[d] = q_row[d] * q_scale;
    std::fill(qs + tl.dk, qs + tl.dk_pad, T(0));
    for (std::size_t d = 0; d < tl.dv; ++d) da[d] = hs * do_row[d];
    std::fill(da + tl.dv, da + tl.dv_pad, T(0));
    P delta(T(0));
    std::size_t d = 0;
    for (; d + W <= tl.dv; d += W) delta = O::fma(O::load(do_row + d), O::load(o_row + d), delta);
    if (d < tl.dv)
      delta = O::fma(O::load_partial(do_row + d, tl.dv - d, T(0)),
                     O::load_partial(o_row + d, tl.dv - d, T(0)), delta);
    const float lse = c.lse(bk.b, h, i, 0);
    w.delta[r] = O::reduce_add(delta);
    w.lse2[r] =
        lse == -std::numeric_limits<float>::infinity() ? std::numeric_limits<T>::infinity() : T(lse) * log2e;
  }
}

/// Passes 2 and 3: S and dP, then P and dS in place of them, rows [0, rows_pad).
template <class P, class T>
void scores_and_slopes(const detail::backward_call<T>& c, const tiling& tl, const block& bk, std::size_t h,
                       scratch<T>& w) {
  using O = simd::ops<P>;
  constexpr std::size_t W = O::width, MR = tile_rows;
  const detail::score_rules<T>& rules = c.rules;
  const std::size_t nb_pad = detail::round_up(bk.nb, tl.kb), stride = tl.bc;
  for_row_tiles<MR>(bk.rows, [&](auto rows_c, std::size_t r) {
    constexpr std::size_t R = decltype(rows_c)::value;
    score_tile<P, R>(w.q + r * tl.dk_pad, tl.dk_pad, tl.dk, w.k_panels, nb_pad, w.s + r * stride, stride);
    score_tile<P, R>(w.da + r * tl.dv_pad, tl.dv_pad, tl.dv, w.v_panels, nb_pad, w.dp + r * stride, stride);
  });
  const bool elementwise = rules.has_elementwise(), softcap = rules.softcap > 0;
  const T inv_c = rules.inv_softcap;
  for (std::size_t r = 0; r < bk.rows; ++r) {
    T *s_row = w.s + r * stride, *dp_row = w.dp + r * stride, *g_row = w.g + r * stride;
    const std::int64_t i = std::int64_t(bk.i0 + r);
    if (elementwise) {  // the forward's apply_elementwise, with the softcap's slope read in between
      rules.apply_softcap(bk.nb, s_row);
      if (softcap)
        for (std::size_t j = 0; j < bk.nb; ++j) g_row[j] = T(1) - (s_row[j] * inv_c) * (s_row[j] * inv_c);
      rules.apply_bias_and_masks(bk.b, h, i, bk.j0, bk.nb, s_row);
      softmax_row<T>::to_log2(s_row, bk.nb);
    }
    if (!bk.full) rules.hide_invisible(rules.ranges(i), bk.j0, bk.nb, s_row);
    std::fill(s_row + bk.nb, s_row + nb_pad, -std::numeric_limits<T>::infinity());
    if (softcap) std::fill(g_row + bk.nb, g_row + nb_pad, T(0));
    const P shift(w.lse2[r]), dd(w.delta[r]), zero(T(0));
    for (std::size_t j = 0; j < nb_pad; j += W) {
      P x = O::load(s_row + j) - shift;
      x = O::select_greater(x, zero, zero, x);  // s ≤ lse up to rounding: p ≤ 1
      const P p = simd::exp2_nonpositive<P>(x);
      P ds = p * (O::load(dp_row + j) - dd);
      if (softcap) ds = ds * O::load(g_row + j);
      O::store(s_row + j, p);
      O::store(dp_row + j, ds);
    }
  }
  const std::size_t rows_pad = detail::round_up(bk.rows, W);
  for (std::size_t r = bk.rows; r < rows_pad; ++r) {  // transposed below; never reduced over
    std::fill(w.s + r * stride, w.s + r * stride + nb_pad, T(0));
    std::fill(w.dp + r * stride, w.dp + r * stride + nb_pad, T(0));
  }
}

/// Pass 4 for dk and dv: P and dS transposed, then dv += Pᵀ·dA, dk += dSᵀ·Q.
template <class P, class T>
void accumulate_kv(const tiling& tl, const block& bk, scratch<T>& w) {
  constexpr std::size_t W = simd::ops<P>::width, MR = tile_rows;
  const std::size_t nb_pad = detail::round_up(bk.nb, tl.kb), rows_pad = detail::round_up(bk.rows, W);
  for (std::size_t r0 = 0; r0 < rows_pad; r0 += W)
    for (std::size_t c0 = 0; c0 < nb_pad; c0 += W) {
      simd::transpose_block<P>(w.s + r0 * tl.bc + c0, tl.bc, w.pt + c0 * tl.bq + r0, tl.bq);
      simd::transpose_block<P>(w.dp + r0 * tl.bc + c0, tl.bc, w.dst + c0 * tl.bq + r0, tl.bq);
    }
  for_row_tiles<MR>(bk.nb, [&](auto rows_c, std::size_t j) {
    constexpr std::size_t R = decltype(rows_c)::value;
    accumulate_tile<P, R>(w.pt + j * tl.bq, tl.bq, w.ones, w.da, tl.dv_pad, bk.rows, w.dv + j * tl.dv_pad,
                          tl.dv_pad);
    accumulate_tile<P, R>(w.dst + j * tl.bq, tl.bq, w.ones, w.q, tl.dk_pad, bk.rows, w.dk + j * tl.dk_pad,
                          tl.dk_pad);
  });
}

/// Pass 4 for dq: dq += scale·dS·K, the block's rows of head h.
template <class P, class T>
void accumulate_dq(const detail::backward_call<T>& c, const tiling& tl, const block& bk, std::size_t h,
                   scratch<T>& w) {
  constexpr std::size_t MR = tile_rows;
  std::fill(w.dq, w.dq + bk.rows * tl.dk_pad, T(0));
  for_row_tiles<MR>(bk.rows, [&](auto rows_c, std::size_t r) {
    constexpr std::size_t R = decltype(rows_c)::value;
    accumulate_tile<P, R>(w.dp + r * tl.bc, tl.bc, w.ones, w.k_rows, tl.dk_pad, bk.nb, w.dq + r * tl.dk_pad,
                          tl.dk_pad);
  });
  const T scale = c.rules.scale;
  for (std::size_t r = 0; r < bk.rows; ++r) {
    T* dq_row = c.dq.row(bk.b, h, bk.i0 + r);
    for (std::size_t d = 0; d < tl.dk; ++d) dq_row[d] += scale * w.dq[r * tl.dk_pad + d];
  }
}

/// The visibility of rows [i0, i0 + rows) in the key tile: per-row extents, the
/// keys the block needs (nb), whether every row sees every key. False if none does.
template <class T>
bool plan_block(const detail::score_rules<T>& rules, block& bk, scratch<T>& w) {
  const detail::key_range tile{bk.j0, bk.j0 + std::int64_t(bk.n)};
  bool any = false;
  bk.full = true, bk.nb = 0;
  for (std::size_t r = 0; r < bk.rows; ++r) {
    const detail::row_ranges rr = rules.ranges(std::int64_t(bk.i0 + r));
    const std::int64_t seen = rr.count_in(tile);
    w.extent[r] = seen == 0 ? 0 : std::size_t(std::min(rr.hull().end, tile.end) - bk.j0);
    bk.full = bk.full && seen == std::int64_t(bk.n);
    any = any || seen > 0;
    bk.nb = std::max(bk.nb, w.extent[r]);
  }
  if (bk.full) bk.nb = bk.n;
  return any;
}

/// dq of the query rows [i_begin, i_end) of kv head hk's group set to zero.
template <class T>
void zero_dq(const detail::backward_call<T>& c, std::size_t b, std::size_t hk, std::size_t i_begin,
             std::size_t i_end) {
  for (std::size_t h = hk * c.group(); h < (hk + 1) * c.group(); ++h)
    for (std::size_t i = i_begin; i < i_end; ++i)
      std::fill(c.dq.row(b, h, i), c.dq.row(b, h, i) + c.dq.dim(), T(0));
}

/// How far a key tile's pass over the row blocks has come when tiles run as tasks:
/// blocks [0, value) are done, their dq holding this tile's terms and every earlier one's.
using tile_progress = std::atomic<std::size_t>;

/// The key tile at j0 of kv head hk over every block of query rows, in order: K and V
/// packed once, then per block with a visible key and per unpruned head of the group,
/// the scores, dk and dv accumulated (written to c.dk, c.dv at the end) and the block's
/// dq added to c.dq (zeroed first by the tile at j0 = 0). With `before`, the previous
/// tile's progress, a block waits until that tile is done with it, so each dq row sums
/// the tiles in order, as when one task runs them all; `done` publishes this tile's.
template <class P, class T>
void key_tile(const detail::backward_call<T>& c, const tiling& tl, std::size_t b, std::size_t hk,
              std::size_t j0, T q_scale, scratch<T>& w, const tile_progress* before, tile_progress* done) {
  const std::size_t Nq = c.q.seq(), n = std::min(tl.bc, c.k.seq() - j0);
  const std::size_t group = c.group(), h0 = hk * group;
  std::fill(w.dk, w.dk + n * tl.dk_pad, T(0));
  std::fill(w.dv, w.dv + n * tl.dv_pad, T(0));
  bool packed = false;
  for (std::size_t i0 = 0, blk = 0; i0 < Nq; i0 += tl.bq, ++blk) {
    block bk{b, hk, i0, std::min(tl.bq, Nq - i0), std::int64_t(j0), n, 0, false};
    if (j0 == 0)
      zero_dq(c, b, hk, i0, i0 + bk.rows);
    else if (before != nullptr)
      detail::wait_until([&] { return before->load(std::memory_order_acquire) > blk; });
    if (plan_block(c.rules, bk, w)) {
      if (!packed) {
        pack_k_panels<P>(c.k, b, hk, j0, n, detail::round_up(n, tl.kb), tl.kb, w.k_panels, w.tmp);
        pack_k_panels<P>(c.v, b, hk, j0, n, detail::round_up(n, tl.kb), tl.kb, w.v_panels, w.tmp);
        pack_v_rows<P>(c.k, b, hk, j0, n, tl.dk_pad, w.k_rows);
        packed = true;
      }
      for (std::size_t h = h0; h < h0 + group; ++h) {
        if (c.rules.head_multiplier(h) == T(0)) continue;  // a pruned head: zero gradients, no work
        load_block<P>(c, tl, bk, h, q_scale, w);
        scores_and_slopes<P>(c, tl, bk, h, w);
        accumulate_kv<P>(tl, bk, w);
        accumulate_dq<P>(c, tl, bk, h, w);
      }
    }
    if (done != nullptr) done->store(blk + 1, std::memory_order_release);
  }
  // dk = scale · Σ ds·q, accumulated from the scaled Q rows (q_scale = scale or scale·log2 e)
  const T k_factor = q_scale != T(0) ? c.rules.scale / q_scale : T(0);
  for (std::size_t jj = 0; jj < n; ++jj) {
    T* dk_row = c.dk.row(b, hk, j0 + jj);
    T* dv_row = c.dv.row(b, hk, j0 + jj);
    for (std::size_t d = 0; d < tl.dk; ++d) dk_row[d] = k_factor * w.dk[jj * tl.dk_pad + d];
    for (std::size_t d = 0; d < tl.dv; ++d) dv_row[d] = w.dv[jj * tl.dv_pad + d];
  }
}

/// The call's tasks: whole kv heads (B·Hkv of them) when they share the workers evenly;
/// else key tiles, each following the previous tile of its kv head block by block
/// (parallel_for hands tasks out in order, so the tile it waits for is running or done).
template <class P, class T>
void run(const detail::backward_call<T>& c) {
  constexpr std::size_t W = simd::ops<P>::width;
  const std::size_t Hkv = c.k.heads(), Nq = c.q.seq(), Nk = c.k.seq(), whole = c.q.batch() * Hkv;
  const tiling tl = make_tiling(W, c.q.dim(), c.v.dim());
  const std::size_t tiles = detail::ceil_div(Nk, tl.bc);
  if (tiles == 0) {  // no keys: no dk or dv, zero dq
    for (std::size_t bh = 0; bh < whole; ++bh) zero_dq(c, bh / Hkv, bh % Hkv, 0, Nq);
    return;
  }
  const unsigned t = detail::resolve_threads(c.threads, std::numeric_limits<std::size_t>::max());
  const bool by_tile = whole % t != 0 && tiles > 1;
  const std::size_t tasks = by_tile ? whole * tiles : whole;
  const unsigned workers = detail::resolve_threads(c.threads, tasks);
  detail::workspace_access::reserve_workers(c.scratch, workers, scratch_bytes<T>(tl));
  tile_progress* progress = nullptr;
  if (by_tile) {
    void* shared = detail::workspace_access::shared(c.scratch, whole * tiles * sizeof(tile_progress));
    progress = static_cast<tile_progress*>(shared);
    for (std::size_t i = 0; i < whole * tiles; ++i) new (progress + i) tile_progress(0);
  }
  const T q_scale = softmax_row<T>::q_scale(c.rules.scale, c.rules.has_elementwise());
  detail::parallel_for(tasks, workers, [&](std::size_t task, unsigned worker) {
    detail::scratch_carver carver(detail::workspace_access::worker(c.scratch, worker));
    scratch<T> w(carver, tl);
    std::fill(w.ones, w.ones + tile_rows, T(1));
    if (!by_tile) {
      for (std::size_t j0 = 0; j0 < Nk; j0 += tl.bc)
        key_tile<P>(c, tl, task / Hkv, task % Hkv, j0, q_scale, w, nullptr, nullptr);
      return;
    }
    const std::size_t bh = task / tiles, j = task % tiles;
    tile_progress* row = progress + bh * tiles;
    key_tile<P>(c, tl, bh / Hkv, bh % Hkv, j * tl.bc, q_scale, w, j ? row + j - 1 : nullptr, row + j);
  });
}

}  // namespace headwise::HEADWISE_ISA_NS::kernels::flash_backward
