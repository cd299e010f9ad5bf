// headwise/kernels/decode.hpp — split-KV decode: few queries against a long KV cache.
//
//   q [B, Hq, Nq, Dk] (float|double)   k [B, Hkv, Nk, Dk], v [B, Hkv, Nk, Dv] (S = T, half,
//   bfloat16)   out [B, Hq, Nq, Dv]   lse [B, Hq, Nq, 1] (optional)
//
// Why this shape of kernel. A decode step does ~2 flops per byte of K/V it must
// stream from DRAM (Hq 32, Hkv 8, d 128, Nk 32768: 256 MiB of fp32 K/V, 537 MFLOP),
// so it is bound by memory, and by how well the arithmetic overlaps the stream:
// at G = 4 query rows per K/V row a key costs 64 AVX-512 FMAs (≈ 9 ns) against
// ≈ 34 ns of DRAM time for its 1 KiB of fp32 (17 ns for fp16). The measurements
// behind each choice below, and the alternatives that lost, are in
// docs/decode-notes.md.
//   - GQA: a task is (batch, kv head, chunk) and computes every query row of the
//     group at once, G = (Hq/Hkv)·Nq rows: each K/V row comes from DRAM once and is
//     reused from L1 for the G rows, instead of Hq/Hkv times by per-head kernels.
//   - Split-KV: the keys are cut into chunks of decode_chunk_keys (fixed, never from
//     the thread count, so every thread count gives the same bits). B·Hkv·chunks
//     tasks keep both cores busy at B = 1. Chunks that no row can see do not exist.
//   - Per chunk, online-softmax blocks of decode_block_keys keys (16 KiB of K+V):
//     pass 1 scores s = (scale·q)·k for the G rows in register tiles (4 rows × 4
//     keys on AVX-512, 4 × 3 with 16 registers; one horizontal sum per W dot
//     products) and requests every line of the K and V rows decode_prefetch_keys
//     ahead (the hardware prefetchers alone leave this access pattern 1.2–1.6×
//     slower); masks (score_rules); the online-softmax step (online_softmax.hpp),
//     whose rare alpha != 1 rescales O; pass 2 O += P·V in strips of R rows × 4
//     packs (2 with 16 registers) held in registers over groups of decode_pv_keys
//     V rows. The tiles keep their loaded vectors in registers (pin_loads).
//   - The chunk's partial (O/l, lse) goes to a scratch buffer, B·Hq·Nq·chunks·(Dv+1)
//     values, 0.4% of the K/V bytes at the shape above. A second parallel pass folds
//     each row's partials in chunk order with detail::merge_row (merge.hpp, the code
//     of the public merge_states), then applies head_scale.
// Bytes per step ≈ B·Hkv·Nk_visible·(Dk + Dv)·sizeof(S) + 2·B·Hq·Nq·chunks·(Dv+1)·4.
// K and V are widened on load (simd/convert.hpp); scores and sums are fp32 (or
// double for double K/V). Masks, softcap, ALiBi and window come from score_rules;
// a pruned head (head_scale 0) is never computed: zeros and LSE −inf. K/V in 2 MiB
// pages (kv_cache's kv_buffer) avoid page walks that cost up to 2× on a VM.
// Where it stands (Zen 5 VM, 1 thread, Nk 32768): fp32 ~70% of the DRAM read row,
// fp16 1.8× fp32. The tiles run near their FMA bound in L1 (~50 cycles a key), and
// from DRAM a step takes about the DRAM time plus that compute: overlapping the two
// better is the open problem.
#pragma once

#ifndef HEADWISE_INTERNAL
#error "headwise/kernels/* is internal: include <headwise/headwise.hpp>"
#endif

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "headwise/detail/aligned_allocator.hpp"
#include "headwise/detail/parallel.hpp"
#include "headwise/detail/score_rules.hpp"
#include "headwise/kernels/online_softmax.hpp"
#include "headwise/merge.hpp"
#include "headwise/simd/convert.hpp"
#include "headwise/simd/exp.hpp"
#include "headwise/simd/pack.hpp"
#include "headwise/tensor.hpp"

namespace headwise::kernels {

/// Keys per split-KV task: 32 tasks per (batch, kv head) at Nk 32768 balance two
/// threads; the partial (O, lse) written and re-read per chunk, G·(Dv+1)·4·2 B =
/// 4 KiB at G = 4, d = 128, is 1/256 of the chunk's 1 MiB of fp32 K/V.
inline constexpr std::size_t decode_chunk_keys = 1024;

/// Keys per group of the P·V pass: the R·2-pack accumulator strip runs over 8 V rows
/// (4 KiB in fp32 at d 128) before moving on, so V is read nearly in address order.
/// Whole-block strips (column by column) measured 5-10% slower.
inline constexpr std::size_t decode_pv_keys = 8;

/// K+V bytes per online-softmax block. The block in use and the look-ahead window
/// (half a block, decode_prefetch_keys) must sit in L1 together: 16 + 8 KiB. The
/// budget is in bytes, not keys, because the lines in flight are what matters: 32
/// keys suit fp16 at d 128 (512 B a key), but 32 fp32 keys (32 KiB, + 16 KiB ahead)
/// filled Zen 5's 48 KiB L1, and 16 fp32 keys ran 13-19% faster at Nk 32768 there
/// (AVX-512, B 1/2/4, steps of both builds alternating in one process), with
/// 4-8 KiB ahead the best distance for both storage types. On Zen 3 (32 KiB L1) a
/// whole 32 KiB fp32 block ahead evicted lines before their use (16 keys ahead ran
/// ~13% faster). 64-key fp16 blocks measured ~10% slower than 32 on Zen 5.
inline constexpr std::size_t decode_block_bytes = 16384;

/// Keys per online-softmax step inside a chunk for K+V rows of row_bytes: as many as
/// fit decode_block_bytes, whole P·V groups, 8 to 32 (fp32 d 128: 16, fp16 d 128: 32).
inline constexpr std::size_t decode_block_keys(std::size_t row_bytes) {
  const std::size_t keys = decode_block_bytes / std::max<std::size_t>(row_bytes, 1);
  return std::clamp<std::size_t>(keys / decode_pv_keys * decode_pv_keys, decode_pv_keys, 4 * decode_pv_keys);
}

/// How far ahead the score pass requests K and V rows, in keys: half a block (8 KiB
/// at most; without this look-ahead fp32 d 128 ran 1.45× slower on Zen 5 AVX-512).
inline constexpr std::size_t decode_prefetch_keys(std::size_t block_keys) { return block_keys / 2; }

/// attention() with kernel_mode::automatic takes this kernel when it holds. The cost
/// grows with G = group·Nq, the query rows per K/V row. Measured against flash, one
/// thread, d 128, ms decode/flash (G in brackets):
///   Hq 32 Hkv 8, Nk 4096: Nq 1 (4) 1.2/3.2, Nq 4 (16) 3.9/5.4, Nq 8 (32) 7.2/8.7, Nq 16 (64) 13.7/14.0
///   Hq 32 Hkv 8, Nk  512: Nq 4 (16) 0.49/0.54, Nq 8 (32) 1.02/1.02, Nq 16 (64) 2.0/1.9
///   Hq 8 Hkv 8,  Nk 4096: Nq 16 (16) 4.6/6.5, Nq 32 (32) 8.9/9.8
///   Hq 32 Hkv 4, Nk 4096: Nq 4 (32) 4.3/5.0, Nq 8 (64) 8.4/7.8
/// so decode up to G = 32 (a tie at short KV). One query token always decodes:
/// split-KV is its only parallelism when B·Hkv is small.
inline bool decode_preferred(std::size_t nq, std::size_t group) { return nq == 1 || nq * group <= 32; }

namespace decode_impl {

/// Keys per score tile of R = 4, 2 or 1 rows. 16 registers: 4 × 3 (12 accumulators
/// + 3 K + 1 q = 16), 2 × 4, 1 × 8. AVX-512 (32 registers): R × 16/R = 16
/// accumulators, which fill exactly one 16-lane reduce_add_rows (4 × 3 left a
/// quarter of it summing zeros; measured in L2, B1 Nk 512: fp16 5% faster, fp32
/// 2% slower; DRAM-bound rows alike).
template <std::size_t R>
inline constexpr std::size_t decode_score_keys = simd::vector_registers >= 32 ? 16 / R : (R == 4 ? 3 : 8 / R);

template <class P>
using value_t = typename simd::ops<P>::value_type;

/// Whether the tiles pin their loaded K, q and V vectors in registers
/// (ops::keep_in_register). GCC 12 otherwise folds a plain load into every FMA that
/// uses it: the AVX-512 4 × 4 score tile issued 32 loads per 16 FMAs and P·V 20 (the
/// 2 loads a cycle then bound both). Pinned, fp32 decode steps with K/V in cache ran
/// 18-20% faster on Zen 5 (B1: Nk 128 in L2 and Nk 512 in L3, AVX-512 and AVX2
/// builds alternating in one process); from DRAM (Nk 4096, 32768) within noise. A
/// widening load (half, bfloat16) is not folded; pinning it measured no gain on
/// AVX-512 and 4% loss on AVX2 (12 accumulators + 3 K + q fill its 16 registers).
template <class P, class S>
inline constexpr bool pin_loads = std::is_same_v<S, value_t<P>>;

/// Requests the K and V rows of the keys decode_prefetch_keys ahead of the ones
/// being scored, every 64-byte line, in key order (see docs/decode-notes.md).
template <class S>
struct row_prefetch {
  const S* k = nullptr;
  const S* v = nullptr;
  std::ptrdiff_t k_stride = 0, v_stride = 0;
  std::size_t rows = 0, k_bytes = 0, v_bytes = 0;  // rows that exist ahead; bytes per row

  /// Prefetches rows [j0, j1) of the look-ahead window (those that exist).
  void operator()(std::size_t j0, std::size_t j1) const {
    for (std::size_t j = j0; j < std::min(j1, rows); ++j) {
      lines(k + std::ptrdiff_t(j) * k_stride, k_bytes);
      lines(v + std::ptrdiff_t(j) * v_stride, v_bytes);
    }
  }

  /// Every cache line that [row, row + bytes) touches, also when row is not line aligned.
  static void lines(const S* row, std::size_t bytes) {
    const auto first = reinterpret_cast<std::uintptr_t>(row);
    const std::uintptr_t end = first + bytes;
    for (std::uintptr_t a = first & ~std::uintptr_t(63); a < end; a += 64)
      simd::prefetch(reinterpret_cast<const void*>(a));
  }
};

/// s[r·lds + j] = q_r · k_j for R query rows (stride ldq) and the n keys k_j = k0 + j·ks.
/// Tiles of R rows × KT keys keep R·KT accumulators (4 × 3 = 12 chains: with 8 the
/// FMA latency showed and this pass ran at 54% of peak instead of 93%); every W of
/// them share one horizontal sum (reduce_add_rows). pf(j, j + KT) runs once per tile.
template <class P, std::size_t R, std::size_t KT, class S>
inline void score_rows(const value_t<P>* q, std::size_t ldq, const S* k0, std::ptrdiff_t ks, std::size_t n,
                       std::size_t dk, value_t<P>* s, std::size_t lds, const row_prefetch<S>& pf) {
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
        if constexpr (pin_loads<P, S>) O::keep_in_register(qv);
        HEADWISE_UNROLL
        for (std::size_t t = 0; t < KT; ++t) acc[r * KT + t] = O::fma(qv, kv[t], acc[r * KT + t]);
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
/// With 32 registers the strips are 4 packs wide first: fp16 B1/B4 Nk 32768 ran
/// 1–4% faster than with pairs (6 of 6 paired runs, AVX-512 Xeon).
template <class P, std::size_t R, class S>
inline void pv_rows(const value_t<P>* p, std::size_t ldp, const S* v0, std::ptrdiff_t v_stride,
                    std::size_t n, std::size_t dv, value_t<P>* o, std::size_t ldo) {
  using T = value_t<P>;
  constexpr std::size_t W = simd::ops<P>::width;
  for (std::size_t j0 = 0; j0 < n; j0 += decode_pv_keys) {
    const std::size_t g = std::min(decode_pv_keys, n - j0);
    const S* vg = v0 + std::ptrdiff_t(j0) * v_stride;
    const T* pg = p + j0;
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

/// Keys [begin, end) of one chunk that at least one query row can see.
struct chunk_span {
  std::int64_t begin, end;
};

template <class T>
std::vector<chunk_span> visible_chunks(const detail::score_rules<T>& rules) {
  std::vector<chunk_span> chunks;
  const auto C = static_cast<std::int64_t>(decode_chunk_keys);
  for (std::int64_t c0 = 0; c0 < rules.Nk; c0 += C) {
    const std::int64_t c1 = std::min(rules.Nk, c0 + C);
    chunk_span s{c1, c0};
    for (std::int64_t i = 0; i < rules.Nq; ++i) {
      const detail::row_ranges rr = rules.ranges(i);
      for (const detail::key_range& r : {rr.sinks, rr.band}) {
        const std::int64_t lo = std::max(r.begin, c0), hi = std::min(r.end, c1);
        if (lo < hi) s = {std::min(s.begin, lo), std::max(s.end, hi)};
      }
    }
    if (s.begin < s.end) chunks.push_back(s);
  }
  return chunks;
}

template <class P, class T, class S>
void run(const tensor_view<const T>& q, const tensor_view<const S>& k, const tensor_view<const S>& v,
         const tensor_view<T>& out, const tensor_view<float>& lse, const detail::score_rules<T>& rules,
         unsigned threads) {
  using O = simd::ops<P>;
  constexpr std::size_t W = O::width;
  constexpr T neg_inf = -std::numeric_limits<T>::infinity();
  const std::size_t B = q.batch(), Hq = q.heads(), Hkv = k.heads(), Nq = q.seq();
  const std::size_t Dk = q.dim(), Dv = v.dim(), group = Hq / Hkv, G = group * Nq;
  const std::vector<chunk_span> chunks = visible_chunks(rules);
  const std::size_t block_keys = decode_block_keys((Dk + Dv) * sizeof(S));
  const std::size_t nc = chunks.size(), lds = block_keys + W;
  const bool elementwise = rules.has_elementwise();
  const T q_scale = softmax_row<T>::q_scale(rules.scale, elementwise);

  // Active rows a of each kv head: g = hh·Nq + i for the unpruned heads hh of its group.
  std::vector<std::vector<std::size_t>> active(Hkv);
  for (std::size_t hk = 0; hk < Hkv; ++hk)
    for (std::size_t g = 0; g < G; ++g)
      if (rules.head_multiplier(hk * group + g / Nq) != T(0)) active[hk].push_back(g);

  // q, scores and partial O start on cache lines: a 64-byte AVX-512 load from a
  // 16-byte-aligned std::vector splits two lines (L2-resident fp16 step ~6% slower).
  detail::cache_line_vector<T> part_o(B * Hkv * nc * G * Dv);
  std::vector<T> part_lse(B * Hkv * nc * G);
  const std::size_t tasks = B * Hkv * nc;
  const unsigned workers = detail::resolve_threads(threads, tasks);
  struct scratch {
    detail::cache_line_vector<T> qs, s;
    std::vector<T> alpha;
    std::vector<softmax_row<T>> state;
  };
  std::vector<scratch> pool(workers);
  for (scratch& w : pool)
    w = {detail::cache_line_vector<T>(G * Dk), detail::cache_line_vector<T>(G * lds), std::vector<T>(G),
         std::vector<softmax_row<T>>(G)};

  detail::parallel_for(tasks, workers, [&](std::size_t task, unsigned w) {
    const std::size_t ci = task % nc, hk = task / nc % Hkv, b = task / (nc * Hkv);
    const std::vector<std::size_t>& rows = active[hk];
    const std::size_t A = rows.size();
    if (A == 0) return;
    T* qs = pool[w].qs.data();
    T* s = pool[w].s.data();
    T* alpha = pool[w].alpha.data();
    softmax_row<T>* state = pool[w].state.data();
    T* o_part = part_o.data() + task * G * Dv;
    T* lse_part = part_lse.data() + task * G;
    const chunk_span cs = chunks[ci];

    // q rows pre-multiplied by the scale, and by log2 e (the online softmax works in
    // log2 units) unless the element-wise rules need natural logits first.
    for (std::size_t a = 0; a < A; ++a) {
      const T* q_row = q.row(b, hk * group + rows[a] / Nq, rows[a] % Nq);
      for (std::size_t d = 0; d < Dk; ++d) qs[a * Dk + d] = q_row[d] * q_scale;
      state[a] = softmax_row<T>{};
    }
    std::fill(o_part, o_part + A * Dv, T(0));

    for (std::int64_t k0 = cs.begin; k0 < cs.end; k0 += std::int64_t(block_keys)) {
      const std::size_t n = std::size_t(std::min<std::int64_t>(cs.end - k0, block_keys));
      const std::size_t npad = (n + W - 1) / W * W;
      auto local = [&](std::int64_t key) { return std::size_t(std::clamp<std::int64_t>(key - k0, 0, std::int64_t(n))); };
      bool any_visible = false;
      for (std::size_t a = 0; a < A; ++a) {
        const detail::row_ranges rr = rules.ranges(std::int64_t(rows[a] % Nq));
        any_visible |= local(rr.sinks.begin) < local(rr.sinks.end) || local(rr.band.begin) < local(rr.band.end);
      }
      if (!any_visible) continue;  // e.g. the gap between sinks and window

      // pass 1: scores, R rows at a time over the whole block. The first row tile
      // also requests the rows decode_prefetch_keys ahead, line by line; the first
      // line of each 4 KiB page of the look-ahead window is requested at once, which
      // starts its page walk early.
      const S* k_blk = k.row(b, hk, std::size_t(k0));
      const S* v0 = v.row(b, hk, std::size_t(k0));
      const std::ptrdiff_t ks = k.seq_stride(), vs = v.seq_stride();
      const auto ahead = std::int64_t(decode_prefetch_keys(block_keys));
      const auto page_rows = std::max<std::int64_t>(1, 4096 / std::max<std::int64_t>(1, ks * std::int64_t(sizeof(S))));
      for (std::int64_t j = k0 + ahead; j < std::min(rules.Nk, k0 + 2 * ahead); j += page_rows) {
        simd::prefetch(k.row(b, hk, std::size_t(j)));
        simd::prefetch(v.row(b, hk, std::size_t(j)));
      }
      row_prefetch<S> pf{k_blk + ahead * ks, v0 + ahead * vs, ks, vs,
                         std::size_t(std::clamp<std::int64_t>(cs.end - (k0 + ahead), 0, std::int64_t(n))),
                         Dk * sizeof(S), Dv * sizeof(S)};
      {
        std::size_t a = 0;
        for (; a + 4 <= A; a += 4, pf.rows = 0)
          score_rows<P, 4, decode_score_keys<4>>(qs + a * Dk, Dk, k_blk, ks, n, Dk, s + a * lds, lds, pf);
        for (; a + 2 <= A; a += 2, pf.rows = 0)
          score_rows<P, 2, decode_score_keys<2>>(qs + a * Dk, Dk, k_blk, ks, n, Dk, s + a * lds, lds, pf);
        for (; a < A; ++a, pf.rows = 0)
          score_rows<P, 1, decode_score_keys<1>>(qs + a * Dk, Dk, k_blk, ks, n, Dk, s + a * lds, lds, pf);
      }

      // masks, then the online softmax step of each row (alpha rescales its O).
      for (std::size_t a = 0; a < A; ++a) {
        const std::size_t h = hk * group + rows[a] / Nq;
        const auto i = std::int64_t(rows[a] % Nq);
        T* s_row = s + a * lds;
        if (elementwise) {
          rules.apply_elementwise(b, h, i, k0, n, s_row);
          softmax_row<T>::to_log2(s_row, n);
        }
        detail::score_rules<T>::hide_invisible(rules.ranges(i), k0, n, s_row);
        std::fill(s_row + n, s_row + npad, neg_inf);
        alpha[a] = state[a].template absorb<P>(s_row, npad);
      }

      // pass 2: O = alpha·O + P·V, R rows at a time.
      for (std::size_t a = 0; a < A; ++a)
        if (alpha[a] != T(1))
          for (std::size_t d = 0; d < Dv; ++d) o_part[a * Dv + d] *= alpha[a];
      std::size_t a = 0;
      for (; a + 4 <= A; a += 4) pv_rows<P, 4>(s + a * lds, lds, v0, vs, n, Dv, o_part + a * Dv, Dv);
      for (; a + 2 <= A; a += 2) pv_rows<P, 2>(s + a * lds, lds, v0, vs, n, Dv, o_part + a * Dv, Dv);
      for (; a < A; ++a) pv_rows<P, 1>(s + a * lds, lds, v0, vs, n, Dv, o_part + a * Dv, Dv);
    }

    // the chunk's partial: normalised O and its natural-log LSE (kept in T for the merge).
    for (std::size_t a = 0; a < A; ++a) {
      const T scale = state[a].out_scale(T(1));
      for (std::size_t d = 0; d < Dv; ++d) o_part[a * Dv + d] *= scale;
      lse_part[a] = state[a].log_sum();
    }
  });

  // merge: fold each row's chunk partials in chunk order, then apply head_scale.
  const unsigned merge_workers = detail::resolve_threads(threads, B * Hkv);
  detail::parallel_for(B * Hkv, merge_workers, [&](std::size_t task, unsigned) {
    const std::size_t b = task / Hkv, hk = task % Hkv;
    const std::vector<std::size_t>& rows = active[hk];
    for (std::size_t g = 0, a = 0; g < G; ++g) {
      const std::size_t h = hk * group + g / Nq, i = g % Nq;
      T* out_row = out.row(b, h, i);
      T row_lse = neg_inf;
      if (nc > 0 && a < rows.size() && rows[a] == g) {
        const T* o_part = part_o.data() + task * nc * G * Dv + a * Dv;
        const T* lse_part = part_lse.data() + task * nc * G + a;
        std::copy(o_part, o_part + Dv, out_row);
        row_lse = lse_part[0];
        for (std::size_t c = 1; c < nc; ++c)
          row_lse = detail::merge_row<T>(out_row, row_lse, o_part + c * G * Dv, lse_part[c * G], out_row, Dv);
        const T mult = rules.head_multiplier(h);
        for (std::size_t d = 0; d < Dv; ++d) out_row[d] *= mult;
        ++a;
      } else {
        std::fill(out_row, out_row + Dv, T(0));
      }
      if (!lse.empty()) lse(b, h, i, 0) = static_cast<float>(row_lse);
    }
  });
}

}  // namespace decode_impl

/// Split-KV decode; force_scalar runs the same code 1-wide (simd/pack.hpp).
template <class T, class S>
void decode_attention(const tensor_view<const T>& q, const tensor_view<const S>& k,
                      const tensor_view<const S>& v, const tensor_view<T>& out, const tensor_view<float>& lse,
                      const detail::score_rules<T>& rules, unsigned threads, bool force_scalar) {
  if (force_scalar)
    decode_impl::run<T>(q, k, v, out, lse, rules, threads);
  else
    decode_impl::run<simd::vector_pack<T>>(q, k, v, out, lse, rules, threads);
}

}  // namespace headwise::kernels
