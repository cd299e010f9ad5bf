// headwise/kernels/flash_prefill.hpp — the tiled online-softmax (flash) kernel.
//
//   q [B, Hq, Nq, Dk]  k [B, Hkv, Nk, Dk]  v [B, Hkv, Nk, Dv]  out [B, Hq, Nq, Dv]
//   lse (optional) [B, Hq, Nq, 1]; rules: the resolved options (score_rules.hpp)
//
// Task = (batch, kv head, chunk of the GQA group's query heads, query tile of bq
// rows). The task's rows of every head in the chunk form one tall tile
// (heads·bq rows), so each K/V tile is packed once and reused by all of them
// while it sits in cache. Per key tile of bc keys:
//   1. classify from the row ranges: hidden for every row → skipped (causal and
//      window tiles cost nothing); visible for every row and no element-wise
//      rule → fast path with no per-element mask work; otherwise partial, where
//      each micro-tile (tile_rows: 6 rows, 12 on AVX-512) only computes up to
//      its rows' furthest visible key
//   2. pack K into panels (W×W register transposes) and V into dense rows
//   3. per micro-tile: S = Qs·Kᵀ (register-blocked, micro_tiles.hpp),
//      element-wise rules and structural mask (partial only), online softmax
//      (online_softmax.hpp), O = alpha·O + P·V
// After the last tile each row is normalised once: out = O · head_scale / l.
//
// Costs: 4·Nq·Nk_visible·d FLOPs per head, all in the two micro-kernels (which
// run at the FMA peak); the rest is ~20 vector ops of softmax per 8 scores
// (exp dominates: replacing it by one FMA lifts d = 64 from 76% to 87% of the
// FMA peak, d = 128 from 81% to 91%, one noisy run) and packing K/V,
// bc·(Dk + Dv) element moves per tile amortised over the tile's rows. Measured
// on AVX2 (Zen 5, 1 thread, on CPU time: the machine was shared): 65–77% of
// the FMA peak at d = 64, 78–82% at d = 128, 75–78% for causal d = 128 on its
// causal FLOPs, over several runs.
// Tile sizes: bq = 128 rows per head (halves the per-row packing cost of 64),
// at most 256 rows per task (bounds O scratch for MQA); bc = 64 keys, or fewer
// when (Dk + Dv)·bc·sizeof(T) > 64 KiB: the K and V tiles stay in L2 and each
// micro-tile streams them once (~16% of L2 bandwidth at the FMA peak). Both double
// with 64-byte packs (AVX-512): 128 keys, 128 KiB (make_flash_tiling).
// Scratch per worker (allocated once per call, flash_scratch_bytes): Q and O of
// the tall tile, one packed K and V tile, one S micro-tile — independent of Nk,
// bounded in Nq by bq: 104 KiB at d = 64, 204 KiB at d = 128 (float, AVX2
// tiles; the AVX-512 tiles' 128-key K/V tiles make d = 64 144 KiB).
// Determinism: a task owns its output rows and its arithmetic does not depend on
// the worker, so any thread count gives identical bits. Tasks are issued with
// the last query tiles first: under a causal mask they are the most expensive,
// so dynamic scheduling ends with short tasks.
#ifndef HEADWISE_ISA_NS
#error "headwise/kernels/* is internal: include <headwise/headwise.hpp>"
#endif

namespace headwise::HEADWISE_ISA_NS::kernels {

/// Tile sizes of one flash call.
struct flash_tiling {
  std::size_t bq = 0;     // query rows per head per task
  std::size_t heads = 0;  // query heads per task (a chunk of the GQA group)
  std::size_t bc = 0;     // keys per tile, a multiple of kb
  std::size_t kb = 0;     // keys per packed panel (tile_vectors · pack width)
  std::size_t dk = 0, dv_pad = 0;
  std::size_t rows() const { return bq * heads; }
};

inline std::size_t round_up(std::size_t x, std::size_t m) { return (x + m - 1) / m * m; }

/// Tile sizes for element type T and pack width W (see the header comment).
inline flash_tiling make_flash_tiling(std::size_t elem_bytes, std::size_t W, std::size_t Nq,
                                      std::size_t group, std::size_t Dk, std::size_t Dv) {
  // The K/V tile budget and bc scale with the pack's bytes: 64 KiB and 64 keys for
  // 32-byte packs (AVX2), 128 KiB and 128 keys for 64-byte ones (AVX-512, where
  // kb = 32: 64 keys were only two panels; 128 keys, one thread, 7 paired runs: d 128
  // faster in 6 of 7 (~3%), causal N2048 in 5 of 7, d 64 within noise).
  const std::size_t scale = std::max<std::size_t>(1, W * elem_bytes / 32);
  constexpr std::size_t max_rows = 256;
  const std::size_t kv_tile_bytes = scale * 64 * 1024;
  flash_tiling t;
  t.bq = std::max<std::size_t>(1, std::min<std::size_t>(128, Nq));
  t.heads = std::max<std::size_t>(1, std::min(group, max_rows / t.bq));
  t.kb = tile_vectors * W;
  t.dk = Dk;
  t.dv_pad = round_up(Dv, W);
  const std::size_t fit = kv_tile_bytes / ((Dk + t.dv_pad) * elem_bytes) / t.kb * t.kb;
  t.bc = std::clamp<std::size_t>(fit, std::max<std::size_t>(t.kb, 16), scale * 64);
  t.bc = round_up(t.bc, t.kb);
  return t;
}

/// Per-worker scratch of T elements, each part aligned to 64 bytes.
template <class T>
struct flash_scratch_layout {
  static constexpr std::size_t align = 64 / sizeof(T);
  std::size_t q = 0, o = 0, k = 0, v = 0, s = 0, tmp = 0, total = 0;
  explicit flash_scratch_layout(const flash_tiling& t) {
    std::size_t at = 0;
    auto take = [&](std::size_t n) {
      const std::size_t here = at;
      at += round_up(n, align);
      return here;
    };
    q = take(t.rows() * t.dk);
    o = take(t.rows() * t.dv_pad);
    k = take(t.bc * t.dk);
    v = take(t.bc * t.dv_pad);
    s = take(tile_rows * t.bc);
    tmp = take(t.kb * t.dk);  // kb >= W rows for pack_k_panels
    total = at + align;       // room to align the base pointer
  }
};

/// Bytes of scratch one worker uses: the T buffer, the softmax states and the
/// per-row key extents. Independent of Nk; bounded in Nq by bq.
template <class T>
std::size_t flash_scratch_bytes(const flash_tiling& t) {
  return flash_scratch_layout<T>(t).total * sizeof(T) + t.rows() * sizeof(softmax_row<T>) +
         t.bq * sizeof(std::size_t);
}

template <class P, class T, class TK, class TV>
void flash_prefill(const tensor_view<const T>& q, const tensor_view<const TK>& k,
                   const tensor_view<const TV>& v, const tensor_view<T>& out, const tensor_view<float>& lse,
                   const detail::score_rules<T>& rules, unsigned threads) {
  constexpr std::size_t W = simd::ops<P>::width, MR = tile_rows;
  const std::size_t B = q.batch(), Hq = q.heads(), Hkv = k.heads(), Nq = q.seq();
  const std::size_t Dk = q.dim(), Dv = v.dim(), group = Hq / Hkv;
  const flash_tiling tl = make_flash_tiling(sizeof(T), W, Nq, group, Dk, Dv);
  const flash_scratch_layout<T> lay(tl);
  const std::size_t n_qt = (Nq + tl.bq - 1) / tl.bq, n_hc = (group + tl.heads - 1) / tl.heads;
  const std::size_t tasks = B * Hkv * n_hc * n_qt;
  const unsigned workers = detail::resolve_threads(threads, tasks);

  struct workspace {
    std::vector<T> buf;
    std::vector<softmax_row<T>> state;
    std::vector<std::size_t> extent;
  };
  std::vector<workspace> ws(workers);
  for (workspace& w : ws) {
    w.buf.resize(lay.total);
    w.state.resize(tl.rows());
    w.extent.resize(tl.bq);
  }
  const T neg_inf = -std::numeric_limits<T>::infinity();
  const bool elementwise = rules.has_elementwise();
  // The softmax runs in log2 units (exp2 reduces exactly, see simd/exp.hpp).
  const T q_scale = softmax_row<T>::q_scale(rules.scale, elementwise);

  detail::parallel_for(tasks, workers, [&](std::size_t task, unsigned worker) {
    const std::size_t qt = n_qt - 1 - task % n_qt, hc = task / n_qt % n_hc;
    const std::size_t hk = task / (n_qt * n_hc) % Hkv, b = task / (n_qt * n_hc * Hkv);
    const std::size_t i0 = qt * tl.bq, i1 = std::min(Nq, i0 + tl.bq), nq = i1 - i0;
    workspace& w = ws[worker];
    T* base = w.buf.data();
    base += (lay.align - reinterpret_cast<std::uintptr_t>(base) / sizeof(T) % lay.align) % lay.align;
    T *qs = base + lay.q, *os = base + lay.o, *kp = base + lay.k, *vp = base + lay.v;
    T *ss = base + lay.s, *tmp = base + lay.tmp;

    // The chunk's heads; pruned ones (head_scale 0) get zeros and LSE -inf now.
    std::size_t active[256];
    std::size_t n_active = 0;
    const std::size_t h_begin = hk * group + hc * tl.heads;
    const std::size_t h_end = std::min(hk * group + group, h_begin + tl.heads);
    for (std::size_t h = h_begin; h < h_end; ++h) {
      if (rules.head_multiplier(h) != T(0)) {
        active[n_active++] = h;
        continue;
      }
      for (std::size_t i = i0; i < i1; ++i) {
        std::fill(out.row(b, h, i), out.row(b, h, i) + Dv, T(0));
        if (!lse.empty()) lse(b, h, i, 0) = -std::numeric_limits<float>::infinity();
      }
    }
    const std::size_t rows = n_active * nq;
    if (rows == 0) return;
    for (std::size_t r = 0; r < rows; ++r) {
      const T* q_row = q.row(b, active[r / nq], i0 + r % nq);
      for (std::size_t d = 0; d < Dk; ++d) qs[r * Dk + d] = q_row[d] * q_scale;
      std::fill(os + r * tl.dv_pad, os + (r + 1) * tl.dv_pad, T(0));
      w.state[r] = softmax_row<T>{};
    }

    const detail::key_range hull = rules.tile_hull(std::int64_t(i0), std::int64_t(i1));
    for (std::int64_t j0 = hull.begin; j0 < hull.end; j0 += std::int64_t(tl.bc)) {
      const std::size_t n = std::size_t(std::min<std::int64_t>(std::int64_t(tl.bc), hull.end - j0));
      const std::size_t n_pad = round_up(n, tl.kb);
      const detail::key_range tile{j0, j0 + std::int64_t(n)};
      bool full = true, any = false;
      for (std::size_t i = i0; i < i1; ++i) {  // extent: the tile's leading keys row i needs
        const detail::row_ranges rr = rules.ranges(std::int64_t(i));
        const std::int64_t c = rr.count_in(tile);
        w.extent[i - i0] = c == 0 ? 0 : std::size_t(std::min(rr.hull().end, tile.end) - j0);
        full = full && c == std::int64_t(n);
        any = any || c > 0;
      }
      if (!any) continue;
      pack_k_panels<P>(k, b, hk, std::size_t(j0), n, n_pad, tl.kb, kp, tmp);
      pack_v_rows<P>(v, b, hk, std::size_t(j0), n, tl.dv_pad, vp);

      for (std::size_t r0 = 0; r0 < rows; r0 += MR) {
        const std::size_t mr = std::min(MR, rows - r0);
        // Keys this micro-tile needs: all of a full tile, else up to its rows'
        // furthest visible key (the diagonal under causal), none if no row sees one.
        std::size_t nb = n;
        if (!full) {
          nb = 0;
          for (std::size_t r = r0; r < r0 + mr; ++r) nb = std::max(nb, w.extent[r % nq]);
          if (nb == 0) continue;
        }
        const std::size_t nb_pad = round_up(nb, tl.kb);
        T alpha[MR];
        for_tile_rows(mr, [&](auto rows_c, std::size_t r) {
          constexpr std::size_t R = decltype(rows_c)::value;
          score_tile<P, R>(qs + (r0 + r) * Dk, Dk, kp, nb_pad, ss + r * tl.bc, tl.bc);
        });
        for (std::size_t r = 0; r < mr; ++r) {
          T* s_row = ss + r * tl.bc;
          std::fill(s_row + nb, s_row + nb_pad, neg_inf);
          const std::size_t h = active[(r0 + r) / nq];
          const std::int64_t i = std::int64_t(i0 + (r0 + r) % nq);
          if (elementwise) {
            rules.apply_elementwise(b, h, i, j0, nb, s_row);
            softmax_row<T>::to_log2(s_row, nb);
          }
          if (!full) rules.hide_invisible(rules.ranges(i), j0, nb, s_row);
          alpha[r] = w.state[r0 + r].template absorb<P>(s_row, nb_pad);
        }
        for_tile_rows(mr, [&](auto rows_c, std::size_t r) {
          constexpr std::size_t R = decltype(rows_c)::value;
          accumulate_tile<P, R>(ss + r * tl.bc, tl.bc, alpha + r, vp, tl.dv_pad, nb, os + (r0 + r) * tl.dv_pad,
                                tl.dv_pad);
        });
      }
    }

    for (std::size_t r = 0; r < rows; ++r) {
      const std::size_t h = active[r / nq], i = i0 + r % nq;
      const T f = w.state[r].out_scale(rules.head_multiplier(h));
      T* out_row = out.row(b, h, i);
      for (std::size_t d = 0; d < Dv; ++d) out_row[d] = os[r * tl.dv_pad + d] * f;
      if (!lse.empty()) lse(b, h, i, 0) = w.state[r].lse();
    }
  });
}

}  // namespace headwise::HEADWISE_ISA_NS::kernels
