// headwise/kernels/flash.hpp — the tiled online-softmax (flash) kernel: prefill.
//
//   q [B, Hq, Nq, Dk]  k [B, Hkv, Nk, Dk] (rows or key blocks)  v [B, Hkv, Nk, Dv]
//   out [B, Hq, Nq, Dv]  lse [B, Hq, Nq, 1] (optional); rules: score_rules.hpp
//
// Task = (batch, kv head, chunk of the GQA group's heads, tile of bq query rows): the
// chunk's rows form one tall tile (heads·bq ≤ 256 rows, the heads interleaved row by
// row: task_rows), so each K/V tile is packed once and reused by all of them while it
// sits in L2. Per task, three passes:
//   1. load: Q rows scaled (by log2 e too: the softmax runs in log2 units), O and the
//      softmax states zeroed; pruned heads (head_scale 0) written as zeros at once;
//   2. per key tile of bc keys: skip it if no row sees a key; pack K into panels
//      (from rows by W×W transposes, from key blocks by plain loads) and V into dense
//      rows; per micro-tile of tile_rows rows: S = Q·Kᵀ, rules and mask (only where
//      the tile is partly visible, and only up to the rows' last visible key), online
//      softmax (online_softmax.hpp), O = alpha·O + P·V (flash_tiles.hpp);
//   3. store: out = O · head_scale / l in out's type, lse; a row left with a NaN or
//      ±inf (non-finite inputs, options.hpp) is recomputed by the plain kernel's row
//      (finish_kernel_row).
// Memory traffic: K/V are read once per task from L2/L3, Nq/bq · group/heads times
// in all; at d 128 a K/V tile of bc = 128 keys is 128 KiB, so each micro-tile streams
// it from L2: at the FMA peak, ~1/3 of Zen 4's L2 bandwidth with AVX-512's 12-row
// micro-tiles, ~2/3 of Zen 3's with AVX2's 6 rows (the AVX2 tile alone ran as fast
// from L2 as from L1 there). FLOPs: 4·Nq·Nk_visible·d per head, all in the two
// register tiles; the softmax adds ~20 vector ops per W scores, exp dominating.
// Measured (one thread, docs/benchmarks.md): 72–85% of the FMA peak on the README's
// shapes on Zen 4 (AVX-512), 67–81% on Zen 3 (AVX2), causal ones on their visible
// FLOPs. Where the time goes (perf record, one thread, kernel samples), Zen 4: H8 N1024
// d128 — Q·Kᵀ tile 45%, P·V tile 44%, softmax and masks 6%, K/V packing 5%; causal H1
// N16384 d64 — 42%, 40%, 11%, 7%; the tiles themselves run at ~94% of the FMA peak.
// Zen 3, AVX2: 38%, 40%, 10%, 4% and 38%, 39%, 17%, 5%.
// bfloat16 q/k/v on the avx512_bf16 path run the same passes on vdpbf16ps tiles
// (flash_bf16_tiles.hpp): Q, K and V held as bf16 pairs, S scaled in fp32, P rounded to
// bf16 for P·V. Measured (Zen 4, one thread, one run): 1.79× the fp32 kernel on H8 N1024
// d64/d128 and 1.89× causal N2048 d128, 64–74% of the vdpbf16ps peak (2.0× the FMA peak):
// the softmax, unchanged, now takes a larger share. Other 16-bit inputs are widened
// on load (q rows, K/V packing) into the fp32 tiles; int8 K/V rows are widened and
// multiplied by their scale while packing (quantize.hpp), so the tiles never see int8.
// Scratch per worker (workspace.hpp): the tall tile's Q and O, one packed K and V
// tile, one S micro-tile; 203 KiB at d 64, 399 KiB at d 128 (float, AVX2 tiles).
// Independent of Nk.
// Determinism: a task owns its output rows and its arithmetic does not depend on the
// worker, so any thread count gives the same bits. Tasks run last query tile first:
// under a causal mask those cost most, so dynamic scheduling ends on short tasks.
// Per-path header (kernels/paths.hpp): no include guard, namespace headwise::<path>.
#ifndef HEADWISE_ISA_NS
#error "headwise/kernels/* is internal: include <headwise/headwise.hpp>"
#endif

namespace headwise::HEADWISE_ISA_NS::kernels::flash {

/// Tile sizes of one call.
struct tiling {
  std::size_t bq = 0;     // query rows per head per task
  std::size_t heads = 0;  // query heads per task (a chunk of the GQA group)
  std::size_t bc = 0;     // keys per tile, a multiple of kb
  std::size_t kb = 0;     // keys per packed panel (tile_vectors · pack width)
  std::size_t dk = 0, dv_pad = 0;
  std::size_t rows() const { return bq * heads; }
};

/// Tile sizes for elements of elem_bytes and pack width W: 256 rows per task (bounds
/// O for MQA), as bq 256 of one head or 128 of each of two or more heads of a GQA
/// group. Each K/V tile is packed once per task: at bq 128 for one head the packing
/// took ~10% of causal H1 N16384 d64, and bq 256 ran 2–6% faster there and on H8 N1024
/// d64 (Zen 4, AVX-512 and AVX2, A/B in one process);
/// the K and V tile within 128 KiB and bc 128 keys for every pack width: the rows'
/// softmax steps and O rescales per tile halve against 64 keys (Zen 4 AVX-512: ~3%
/// faster; Zen 3 AVX2: 2–9% on H8 N1024 d64/d128, causal N2048 and N16384, and GQA
/// N512; 256 keys gained nothing more there, 32 lost 9–13%; A/Bs in one process).
inline tiling make_tiling(std::size_t elem_bytes, std::size_t W, std::size_t Nq, std::size_t group,
                          std::size_t Dk, std::size_t Dv) {
  constexpr std::size_t max_rows = 256, max_keys = 128, kv_tile_bytes = 128 * 1024;
  tiling t;
  const std::size_t heads = std::max<std::size_t>(1, std::min<std::size_t>(group, 2));
  t.bq = std::max<std::size_t>(1, std::min(max_rows / heads, Nq));
  t.heads = std::max<std::size_t>(1, std::min(group, max_rows / t.bq));
  t.kb = tile_vectors * W;
  t.dk = Dk;
  t.dv_pad = detail::round_up(Dv, W);
  const std::size_t fit = kv_tile_bytes / ((Dk + t.dv_pad) * elem_bytes) / t.kb * t.kb;
  t.bc = detail::round_up(std::clamp<std::size_t>(fit, std::max<std::size_t>(t.kb, 16), max_keys), t.kb);
  return t;
}

/// One worker's scratch, carved from its workspace buffer; E is the element of the
/// Q, K and V buffers (T, or bf16 pairs).
template <class T, class E = T>
struct scratch {
  E* q;                     // tall Q tile
  T* o;                     // tall O tile
  E *k, *v;                 // packed K and V
  T* s;                     // one S micro-tile
  E *tmp, *p;               // transposes; P rounded to bf16 (bf16 pairs only)
  softmax_row<T>* state;    // per tall-tile row
  std::size_t* extent;      // per query row: the current key tile's keys it needs
  std::size_t active[256];  // the task's unpruned heads

  scratch(detail::scratch_carver& c, const tiling& t)
      : q(c.take<E>(t.rows() * t.dk)),
        o(c.take<T>(t.rows() * t.dv_pad)),
        k(c.take<E>(t.bc * t.dk)),
        v(c.take<E>(t.bc * t.dv_pad)),
        s(c.take<T>(tile_rows * t.bc)),
        tmp(c.take<E>(t.kb * t.dk)),  // kb >= W rows for pack_k_panels
        p(c.take<E>(std::is_same_v<E, T> ? 0 : tile_rows * t.bc / 2)),
        state(c.take<softmax_row<T>>(t.rows())),
        extent(c.take<std::size_t>(t.bq)) {}
};

/// Bytes of scratch one worker uses (independent of Nk).
template <class T, class E = T>
std::size_t scratch_bytes(const tiling& t) {
  return detail::scratch_bytes_of<scratch<T, E>>(t);
}

/// One task's coordinates and rows.
struct task_rows {
  std::size_t b, hk, i0, i1, nq;  // batch, kv head, query rows [i0, i1)
  std::size_t heads, rows;        // unpruned heads, heads · nq rows of the tall tile
  /// Tall-tile row r: query row i0 + r / heads of active head r % heads. Heads
  /// interleaved, a micro-tile spans MR / heads query rows and never two heads' ends,
  /// so on a causal diagonal its rows' last keys lie closer together than in head-major
  /// order: GQA 32/8 causal N512 computes 1% fewer Q·Kᵀ and 2% fewer P·V FLOPs at
  /// AVX-512's 12 rows, 1% each at AVX2's 6 (Zen 3: within ±2%, the same bits).
  std::size_t query(std::size_t r) const { return i0 + r / heads; }
  std::size_t slot(std::size_t r) const { return r % heads; }
};

/// Pass 1: the task's unpruned heads into w.active (pruned ones get zeros and LSE
/// −inf now), their Q rows scaled into w.q (bf16 pairs: as given), O and the softmax
/// states reset.
template <class T, class S, class Q, class O, class E>
std::size_t load_rows(const detail::kernel_call<T, S, Q, O>& c, const tiling& tl, task_rows& t, std::size_t h_begin,
                      std::size_t h_end, T q_scale, scratch<T, E>& w) {
  std::size_t n_active = 0;
  for (std::size_t h = h_begin; h < h_end; ++h) {
    if (c.rules.head_multiplier(h) != T(0)) {
      w.active[n_active++] = h;
      continue;
    }
    for (std::size_t i = t.i0; i < t.i1; ++i) {
      std::fill(c.out.row(t.b, h, i), c.out.row(t.b, h, i) + c.out.dim(), detail::convert_element<O>(T(0)));
      if (c.lse.is_set()) c.lse(t.b, h, i, 0) = -std::numeric_limits<float>::infinity();
    }
  }
  t.heads = n_active;
  t.rows = n_active * t.nq;
  const std::size_t Dk = tl.dk;
  for (std::size_t r = 0; r < t.rows; ++r) {
    const Q* q_row = c.q.row(t.b, w.active[t.slot(r)], t.query(r));
#if HEADWISE_PATH_AVX512_BF16
    if constexpr (!std::is_same_v<E, T>) bf16::load_pair_row(q_row, c.q.dim(), w.q + r * Dk);
    if constexpr (std::is_same_v<E, T>)
#endif
      for (std::size_t d = 0; d < Dk; ++d) w.q[r * Dk + d] = static_cast<T>(q_row[d]) * q_scale;
    std::fill(w.o + r * tl.dv_pad, w.o + (r + 1) * tl.dv_pad, T(0));
    w.state[r] = softmax_row<T>{};
  }
  return n_active;
}

/// Pass 2 for one key tile [j0, j0 + n): which rows see which of its keys (w.extent),
/// then packing and the micro-tiles. Returns at once if no row sees a key.
template <class P, class T, class S, class Q, class O, class E>
void key_tile(const detail::kernel_call<T, S, Q, O>& c, const tiling& tl, const task_rows& t, std::int64_t j0,
              std::size_t n, [[maybe_unused]] T q_scale, scratch<T, E>& w) {
  const key_view<const S>& k = c.k;
  const value_view<const S>& v = c.v;
  const detail::score_rules<T>& rules = c.rules;
  [[maybe_unused]] constexpr bool pairs = !std::is_same_v<E, T>;  // bf16 pairs on vdpbf16ps
  constexpr std::size_t MR = tile_rows;
  const detail::key_range tile{j0, j0 + std::int64_t(n)};
  bool full = true, any = false;
  for (std::size_t i = t.i0; i < t.i1; ++i) {  // extent: the tile's leading keys row i needs
    const detail::row_ranges rr = rules.ranges(std::int64_t(i));
    const std::int64_t seen = rr.count_in(tile);
    w.extent[i - t.i0] = seen == 0 ? 0 : std::size_t(std::min(rr.hull().end, tile.end) - j0);
    full = full && seen == std::int64_t(n);
    any = any || seen > 0;
  }
  if (!any) return;
#if HEADWISE_PATH_AVX512_BF16
  if constexpr (pairs) {
    bf16::pack_k_panels(k, t.b, t.hk, std::size_t(j0), n, detail::round_up(n, tl.kb), w.k, w.tmp);
    bf16::pack_v_pairs(v, t.b, t.hk, std::size_t(j0), n, tl.dv_pad, w.v);
  }
  if constexpr (!pairs)
#endif
  {
    pack_k_panels<P>(k, t.b, t.hk, std::size_t(j0), n, detail::round_up(n, tl.kb), tl.kb, w.k, w.tmp, c.k_scale);
    pack_v_rows<P>(v, t.b, t.hk, std::size_t(j0), n, tl.dv_pad, w.v, c.v_scale);
  }

  const bool elementwise = rules.has_elementwise();
  for (std::size_t r0 = 0; r0 < t.rows; r0 += MR) {
    const std::size_t mr = std::min(MR, t.rows - r0);
    // Keys this micro-tile needs: all of a full tile, else up to its rows' furthest
    // visible key (the diagonal under causal), none if no row sees one.
    std::size_t nb = n;
    if (!full) {
      nb = 0;
      for (std::size_t r = r0; r < r0 + mr; ++r) nb = std::max(nb, w.extent[t.query(r) - t.i0]);
      if (nb == 0) continue;
    }
    const std::size_t nb_pad = detail::round_up(nb, tl.kb);
    T alpha[MR];
    for_row_tiles<MR>(mr, [&](auto rows_c, std::size_t r) {
      constexpr std::size_t R = decltype(rows_c)::value;
#if HEADWISE_PATH_AVX512_BF16
      if constexpr (pairs)
        bf16::score_tile<R>(w.q + (r0 + r) * tl.dk, tl.dk, tl.dk, w.k, nb_pad, q_scale, w.s + r * tl.bc, tl.bc);
      if constexpr (!pairs)
#endif
        score_tile<P, R>(w.q + (r0 + r) * tl.dk, tl.dk, tl.dk, w.k, nb_pad, w.s + r * tl.bc, tl.bc);
    });
    for (std::size_t r = 0; r < mr; ++r) {
      T* s_row = w.s + r * tl.bc;
      std::fill(s_row + nb, s_row + nb_pad, -std::numeric_limits<T>::infinity());
      const std::size_t h = w.active[t.slot(r0 + r)];
      const std::int64_t i = std::int64_t(t.query(r0 + r));
      if (elementwise) {
        rules.apply_elementwise(t.b, h, i, j0, nb, s_row);
        softmax_row<T>::to_log2(s_row, nb);
      }
      if (!full) rules.hide_invisible(rules.ranges(i), j0, nb, s_row);
      alpha[r] = w.state[r0 + r].template absorb<P>(s_row, nb_pad);
#if HEADWISE_PATH_AVX512_BF16
      if constexpr (pairs) bf16::round_row(s_row, nb_pad, w.p + r * tl.bc / 2);
#endif
    }
    for_row_tiles<MR>(mr, [&](auto rows_c, std::size_t r) {
      constexpr std::size_t R = decltype(rows_c)::value;
#if HEADWISE_PATH_AVX512_BF16
      if constexpr (pairs)
        bf16::accumulate_tile<R>(w.p + r * tl.bc / 2, tl.bc / 2, alpha + r, w.v, tl.dv_pad, (nb + 1) / 2,
                                 w.o + (r0 + r) * tl.dv_pad, tl.dv_pad);
      if constexpr (!pairs)
#endif
        accumulate_tile<P, R>(w.s + r * tl.bc, tl.bc, alpha + r, w.v, tl.dv_pad, nb, w.o + (r0 + r) * tl.dv_pad,
                              tl.dv_pad);
    });
  }
}

/// Pass 3: out = O · head_scale / l and the LSE of each row of the tall tile. A row
/// is scaled in packs while o·0 sums to NaN if a value is not finite; a finite row of
/// out's own type is copied out, any other goes through finish_kernel_row (which
/// converts it, or recomputes a non-finite row). With the scalar test and copy of
/// finish_kernel_row for every row, the pass took 5% of GQA causal N512 d128 (Zen 4).
template <class P, class T, class S, class Q, class O, class E>
void store_rows(const detail::kernel_call<T, S, Q, O>& c, const tiling& tl, const task_rows& t, scratch<T, E>& w) {
  using Ops = simd::ops<P>;
  constexpr std::size_t W = Ops::width;
  const std::size_t Dv = c.out.dim();
  for (std::size_t r = 0; r < t.rows; ++r) {
    const std::size_t h = w.active[t.slot(r)], i = t.query(r);
    const P f(w.state[r].out_scale(c.rules.head_multiplier(h)));
    T* o = w.o + r * tl.dv_pad;
    P poison(T(0));
    for (std::size_t d = 0; d < tl.dv_pad; d += W) {  // columns past Dv are zeros
      const P x = Ops::load(o + d) * f;
      Ops::store(o + d, x);
      poison = Ops::fma(x, P(T(0)), poison);
    }
    if (c.lse.is_set()) c.lse(t.b, h, i, 0) = w.state[r].lse();
    if constexpr (std::is_same_v<O, T>) {
      if (!std::isnan(Ops::reduce_add(poison))) {
        std::memcpy(c.out.row(t.b, h, i), o, Dv * sizeof(T));
        continue;
      }
    }
    headwise::kernels::plain::finish_kernel_row(c, t.b, h, i, o);  // converts; a NaN or ±inf: options.hpp's rules
  }
}

/// One call's tiles and tasks, planned before any task runs.
template <class T>
struct call_plan {
  tiling tl;
  std::size_t n_qt = 0, n_hc = 0, tasks = 0;
  T q_scale = 1;
};

template <class P, class T, class S, class Q, class O>
call_plan<T> plan_call(const detail::kernel_call<T, S, Q, O>& c) {
  constexpr std::size_t W = simd::ops<P>::width;
  call_plan<T> p;
  p.tl = make_tiling(sizeof(T), W, c.q.seq(), c.group(), c.q.dim(), c.v.dim());
  if (bf16_tiles<P, Q>) p.tl.dk = detail::ceil_div(p.tl.dk, std::size_t(2));  // tiling::dk counts pairs
  p.n_qt = detail::ceil_div(c.q.seq(), p.tl.bq);
  p.n_hc = detail::ceil_div(c.group(), p.tl.heads);
  p.tasks = c.q.batch() * c.k.heads() * p.n_hc * p.n_qt;
  p.q_scale = softmax_row<T>::q_scale(c.rules.scale, c.rules.has_elementwise());
  return p;
}

/// Task `task` of a call: its last query tile first (under a causal mask those cost
/// most, so dynamic scheduling ends on short tasks).
template <class P, class T, class S, class Q, class O>
void run_task(const detail::kernel_call<T, S, Q, O>& c, const call_plan<T>& p, std::size_t task, unsigned worker) {
  constexpr bool pairs = bf16_tiles<P, Q>;  // Q, K and V buffers of bf16 pairs
  using E = std::conditional_t<pairs, std::uint32_t, T>;
  const tiling& tl = p.tl;
  const std::size_t Nq = c.q.seq(), group = c.group();
  const std::size_t qt = p.n_qt - 1 - task % p.n_qt, hc = task / p.n_qt % p.n_hc;
  task_rows t;
  t.hk = task / (p.n_qt * p.n_hc) % c.k.heads();
  t.b = task / (p.n_qt * p.n_hc * c.k.heads());
  t.i0 = qt * tl.bq;
  t.i1 = std::min(Nq, t.i0 + tl.bq);
  t.nq = t.i1 - t.i0;
  detail::scratch_carver carver(detail::workspace_access::worker(c.scratch, worker));
  scratch<T, E> w(carver, tl);
  const std::size_t h_begin = t.hk * group + hc * tl.heads, h_end = std::min((t.hk + 1) * group, h_begin + tl.heads);
  if (load_rows(c, tl, t, h_begin, h_end, p.q_scale, w) == 0) return;
  const detail::key_range hull = c.rules.tile_hull(std::int64_t(t.i0), std::int64_t(t.i1));
  for (std::int64_t j0 = hull.begin; j0 < hull.end; j0 += std::int64_t(tl.bc))
    key_tile<P>(c, tl, t, j0, std::size_t(std::min<std::int64_t>(std::int64_t(tl.bc), hull.end - j0)), p.q_scale, w);
  store_rows<P>(c, tl, t, w);
}

/// Every task of every call in one parallel_for: the calls' plans and task offsets
/// sit in the workspace's shared buffer, the calls with most query rows first, so a
/// long sequence's tasks start early and the short ones fill in at the end.
template <class P, class T, class S, class Q, class O>
void run(detail::kernel_calls<T, S, Q, O> calls) {
  if (calls.empty()) return;
  constexpr bool pairs = bf16_tiles<P, Q>;
  using E = std::conditional_t<pairs, std::uint32_t, T>;
  const detail::kernel_call<T, S, Q, O>& c0 = calls[0];
  const std::size_t n = calls.size();
  auto carve = [&](detail::scratch_carver& c, call_plan<T>*& plans, std::size_t*& order, std::size_t*& first) {
    plans = c.take<call_plan<T>>(n);
    order = c.take<std::size_t>(n);
    first = c.take<std::size_t>(n + 1);
  };
  call_plan<T>* plans;
  std::size_t *order, *first;
  detail::scratch_carver count;
  carve(count, plans, order, first);
  detail::scratch_carver shared(detail::workspace_access::shared(c0.scratch, count.bytes()));
  carve(shared, plans, order, first);
  std::size_t bytes = 0;
  for (std::size_t i = 0; i < n; ++i) {
    plans[i] = plan_call<P>(calls[i]);
    bytes = std::max(bytes, scratch_bytes<T, E>(plans[i].tl));
    order[i] = i;
  }
  std::sort(order, order + n, [&](std::size_t a, std::size_t b) {  // not stable_sort: it allocates
    return calls[a].q.seq() != calls[b].q.seq() ? calls[a].q.seq() > calls[b].q.seq() : a < b;
  });
  first[0] = 0;
  for (std::size_t i = 0; i < n; ++i) first[i + 1] = first[i] + plans[order[i]].tasks;
  const unsigned workers = detail::resolve_threads(c0.threads, first[n]);
  detail::workspace_access::reserve_workers(c0.scratch, workers, bytes);
  detail::parallel_for(first[n], workers, [&](std::size_t task, unsigned worker) {
    const std::size_t i = std::size_t(std::upper_bound(first, first + n + 1, task) - first) - 1;
    run_task<P>(calls[order[i]], plans[order[i]], task - first[i], worker);
  });
}

}  // namespace headwise::HEADWISE_ISA_NS::kernels::flash
