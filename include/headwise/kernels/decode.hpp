// headwise/kernels/decode.hpp — split-KV decode: few queries against a long KV cache.
//
//   q [B, Hq, Nq, Dk] (float|double)   k [B, Hkv, Nk, Dk], v [B, Hkv, Nk, Dv] (S = T, half,
//   bfloat16)   out [B, Hq, Nq, Dv]   lse [B, Hq, Nq, 1] (optional)
//   k in rows (tensor_view) or in key blocks (key_blocks_view, key_blocks.hpp)
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
//   - Per chunk (for up to decode_rows_per_pass rows at a time) three steps, so
//     the chunk's K and then its V are each read as one sequential stream:
//     pass 1 scores s = (scale·q)·k of every key for the G rows, in register tiles
//     (4 rows × 4 keys on AVX-512, 4 × 3 with 16 registers; one horizontal sum per
//     W dot products) over blocks of decode_block_keys K rows that the row tiles
//     share from L1; masks (score_rules) and one softmax step per row over the whole
//     chunk (online_softmax.hpp; the chunk's exact max, so O is never rescaled);
//     pass 2 O = P·V in strips of R rows × 4 packs (2 with 16 registers) held in
//     registers over groups of decode_pv_keys V rows. Both passes request every
//     line of their stream as a stream_plan chosen per core says (decode_stream.hpp): by default
//     (measured on Zen 5 and a Xeon) 3 KiB ahead of the row they read (the end of
//     pass 1 requests the start of pass 2), plus one line per 4 KiB page
//     decode_touch_rows further on, which starts the hardware's streaming early
//     (without the touches this order ran ~25% slower than the interleaved K/V
//     blocks it replaced, with them 25-28% faster); on Zen 4 each tile's own
//     lines, in address order, just before it reads them.
//     The tiles keep their loaded vectors in registers (pin_loads).
//     With K in key blocks pass 1 runs score_blocks instead: q[r][d] broadcast
//     against 16 keys, no horizontal sums, each block read front to back and so
//     without requests of its own (a plan's look-ahead still runs); chunks start on
//     a block. On Zen 4 (KV 32768, one thread) steps ran 13-20 % faster than with K
//     in rows, fp32 at 91 % of the DRAM read bandwidth (docs/benchmarks.md).
//   - The chunk's partial (O/l, lse) goes to a scratch buffer, B·Hq·Nq·chunks·(Dv+1)
//     values, 0.4% of the K/V bytes at the shape above. A second parallel pass folds
//     each row's partials in chunk order with detail::merge_row (merge.hpp, the code
//     of the public merge_states), then applies head_scale.
// Bytes per step ≈ B·Hkv·Nk_visible·(Dk + Dv)·sizeof(S) + 2·B·Hq·Nq·chunks·(Dv+1)·4.
// K and V are widened on load (simd/convert.hpp); scores and sums are fp32 (or
// double for double K/V). Masks, softcap, ALiBi and window come from score_rules;
// a pruned head (head_scale 0) is never computed: zeros and LSE −inf. K/V in 2 MiB
// pages (kv_cache's kv_buffer) avoid page walks that cost up to 2× on a VM.
// Where it stands: docs/decode-notes.md and docs/benchmarks.md.
#ifndef HEADWISE_ISA_NS
#error "headwise/kernels/* is internal: include <headwise/headwise.hpp>"
#endif

namespace headwise::HEADWISE_ISA_NS::kernels {

/// Keys per split-KV task: 32 tasks per (batch, kv head) at Nk 32768 balance two
/// threads; the partial (O, lse) written and re-read per chunk, G·(Dv+1)·4·2 B =
/// 4 KiB at G = 4, d = 128, is 1/256 of the chunk's 1 MiB of fp32 K/V.
inline constexpr std::size_t decode_chunk_keys = 1024;

/// Keys per group of the P·V pass: the R·2-pack accumulator strip runs over 8 V rows
/// (4 KiB in fp32 at d 128) before moving on, so V is read nearly in address order.
/// Whole-block strips (column by column) measured 5-10% slower.
inline constexpr std::size_t decode_pv_keys = 8;

/// Bytes of K (or V) rows per block of a chunk's passes: the block's K rows are
/// reused from L1 by every row tile when G > 4, and blocks are the unit in which keys
/// no row sees are skipped.
inline constexpr std::size_t decode_block_bytes = 16384;

/// Keys per block for K/V rows of row_bytes: whole P·V groups, 8 to 32 (d 128: 32).
inline constexpr std::size_t decode_block_keys(std::size_t row_bytes) {
  const std::size_t keys = decode_block_bytes / std::max<std::size_t>(row_bytes, 1);
  return std::clamp<std::size_t>(keys / decode_pv_keys * decode_pv_keys, decode_pv_keys, 4 * decode_pv_keys);
}

/// Query rows per sweep over a chunk: the sweep's scores for the whole chunk stay in
/// L2 (32 · 1024 · 4 B = 128 KiB at most; 16 KiB at G = 4).
inline constexpr std::size_t decode_rows_per_pass = 32;


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

/// Whether the tiles pin their loaded K and V vectors in registers
/// (ops::keep_in_register). GCC 12 otherwise folds a plain load into every FMA that
/// uses it: the AVX-512 4 × 4 score tile issued 32 loads per 16 FMAs and P·V 20 (the
/// 2 loads a cycle then bound both). Pinned, fp32 decode steps with K/V in cache ran
/// 18-20% faster on Zen 5 (B1: Nk 128 in L2 and Nk 512 in L3, AVX-512 and AVX2
/// builds alternating in one process); from DRAM (Nk 4096, 32768) within noise. A
/// widening load (half, bfloat16) is not folded; pinning it measured no gain on
/// AVX-512 and 4% loss on AVX2 (12 accumulators + 3 K + q fill its 16 registers).
/// The score tile's q vector is a plain float load for every S and is always
/// pinned: with fp16 K, unpinned, GCC read each q vector once per key (16 q loads
/// + 4 K per 16 FMAs); pinned, fp16 steps in L3 ran ~8% faster (Zen 5).
template <class P, class S>
inline constexpr bool pin_loads = std::is_same_v<S, value_t<P>>;

/// s[r·lds + j] = q_r · k_j for R query rows (stride ldq) and keys j < n of K in
/// key blocks (key_blocks.hpp) from block k0 on; stores whole blocks, so up to
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

/// K given as rows (tensor_view) or as key blocks (key_blocks_view).
template <class KV>
inline constexpr bool is_key_blocks = false;
template <class S>
inline constexpr bool is_key_blocks<key_blocks_view<const S>> = true;

template <class P, class T, class S, class KV>
void run(const tensor_view<const T>& q, const KV& k, const tensor_view<const S>& v, const tensor_view<T>& out,
         const tensor_view<float>& lse, const detail::score_rules<T>& rules, unsigned threads) {
  constexpr bool blocked = is_key_blocks<KV>;
  using O = simd::ops<P>;
  constexpr std::size_t W = O::width;
  constexpr T neg_inf = -std::numeric_limits<T>::infinity();
  const std::size_t B = q.batch(), Hq = q.heads(), Hkv = k.heads(), Nq = q.seq();
  const std::size_t Dk = q.dim(), Dv = v.dim(), group = Hq / Hkv, G = group * Nq;
  const std::vector<chunk_span> chunks = visible_chunks(rules);
  // Blocks of whole key blocks when K comes in them.
  const std::size_t row_block_keys = decode_block_keys(std::max(Dk, Dv) * sizeof(S));
  const std::size_t block_keys =
      blocked ? (row_block_keys + key_block_keys - 1) / key_block_keys * key_block_keys : row_block_keys;
  const stream_plan plan = decode_stream_plan(detail::this_cpu_core());
  const std::size_t ahead = plan.ahead_rows(std::max(Dk, Dv) * sizeof(S)), touch = ahead + decode_touch_rows;
  const std::size_t nc = chunks.size(), lds = decode_chunk_keys + W;
  const std::size_t blocks = (decode_chunk_keys + block_keys - 1) / block_keys;
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
  const std::size_t tasks = B * Hkv * nc, pass_rows = std::min(G, decode_rows_per_pass);
  const unsigned workers = detail::resolve_threads(threads, tasks);
  struct scratch {
    detail::cache_line_vector<T> qs, s;
    std::vector<char> visible;  // per block of block_keys keys: does any row of the sweep see a key in it
  };
  std::vector<scratch> pool(workers);
  for (scratch& w : pool)
    w = {detail::cache_line_vector<T>(pass_rows * Dk), detail::cache_line_vector<T>(pass_rows * lds),
         std::vector<char>(blocks)};

  detail::parallel_for(tasks, workers, [&](std::size_t task, unsigned w) {
    const std::size_t ci = task % nc, hk = task / nc % Hkv, b = task / (nc * Hkv);
    const std::vector<std::size_t>& rows = active[hk];
    T* qs = pool[w].qs.data();
    T* s = pool[w].s.data();
    char* visible = pool[w].visible.data();
    // Key blocks are read whole: the span starts on one (the keys before its first
    // visible one are hidden like any invisible key).
    constexpr auto block = std::int64_t(key_block_keys);
    const chunk_span cs = {blocked ? chunks[ci].begin / block * block : chunks[ci].begin, chunks[ci].end};
    const std::size_t n = std::size_t(cs.end - cs.begin), npad = (n + W - 1) / W * W;
    const S* k0;
    std::ptrdiff_t ks;  // K elements per key: the stream's rows (contiguous in key blocks)
    if constexpr (blocked) {
      k0 = k.block(b, hk, std::size_t(cs.begin) / key_block_keys);
      ks = std::ptrdiff_t(Dk);
    } else {
      k0 = k.row(b, hk, std::size_t(cs.begin));
      ks = k.seq_stride();
    }
    const S* v0 = v.row(b, hk, std::size_t(cs.begin));
    const std::ptrdiff_t vs = v.seq_stride();
    const chunk_stream<S> stream{k0, v0, ks, vs, n, Dk * sizeof(S), Dv * sizeof(S)};

    // At most decode_rows_per_pass rows per sweep over the chunk (one sweep when G <= 32).
    for (std::size_t a0 = 0; a0 < rows.size(); a0 += pass_rows) {
      const std::size_t A = std::min(pass_rows, rows.size() - a0);
      T* o_part = part_o.data() + task * G * Dv + a0 * Dv;
      T* lse_part = part_lse.data() + task * G + a0;

      // q rows pre-multiplied by the scale, and by log2 e (the online softmax works in
      // log2 units) unless the element-wise rules need natural logits first; the
      // blocks that some row sees (e.g. not the gap between sinks and window).
      std::fill(visible, visible + blocks, char(0));
      for (std::size_t a = 0; a < A; ++a) {
        const std::size_t g = rows[a0 + a];
        const T* q_row = q.row(b, hk * group + g / Nq, g % Nq);
        for (std::size_t d = 0; d < Dk; ++d) qs[a * Dk + d] = q_row[d] * q_scale;
        const detail::row_ranges rr = rules.ranges(std::int64_t(g % Nq));
        for (const detail::key_range& r : {rr.sinks, rr.band}) {
          const std::int64_t lo = std::max(r.begin, cs.begin) - cs.begin, hi = std::min(r.end, cs.end) - cs.begin;
          if (lo < hi)
            std::fill(visible + std::size_t(lo) / block_keys, visible + std::size_t(hi - 1) / block_keys + 1, char(1));
        }
      }

      // pass 1: scores of the chunk, blocks of block_keys keys, R rows at a time over
      // a block (so K is read from DRAM once for all rows). Each block touches a line
      // per page of the stream `touch` rows on, and its first row tile requests the
      // stream `ahead` rows on, line by line. Blocks no row sees are skipped and hidden.
      for (std::size_t j0 = 0; j0 < n; j0 += block_keys) {
        const std::size_t nb = std::min(block_keys, n - j0);
        if (!visible[j0 / block_keys]) {
          for (std::size_t a = 0; a < A; ++a) std::fill(s + a * lds + j0, s + a * lds + j0 + nb, neg_inf);
          continue;
        }
        if (plan.touch_pages) stream.touch_pages(j0 + touch, j0 + touch + nb);
        bool first = true;
        auto pf = [&](std::size_t j, std::size_t j_end) {
          if (first) stream.request(j0 + j + ahead, j0 + j_end + ahead);
        };
        const S* kb = k0 + std::ptrdiff_t(j0) * ks;
        std::size_t a = 0;
        if constexpr (blocked) {
          // Read front to back, key blocks need no requests of their own (on Zen 4 they
          // made steps 1.25-1.4× slower); a plan's look-ahead still runs.
          auto pf_ahead = [&](std::size_t j, std::size_t j_end) {
            if (ahead > 0) pf(j, j_end);
          };
          for (; a + 4 <= A; a += 4, first = false)
            score_blocks<P, 4>(qs + a * Dk, Dk, kb, nb, Dk, s + a * lds + j0, lds, pf_ahead);
          for (; a + 2 <= A; a += 2, first = false)
            score_blocks<P, 2>(qs + a * Dk, Dk, kb, nb, Dk, s + a * lds + j0, lds, pf_ahead);
          for (; a < A; ++a, first = false)
            score_blocks<P, 1>(qs + a * Dk, Dk, kb, nb, Dk, s + a * lds + j0, lds, pf_ahead);
        }
        for (; a + 4 <= A; a += 4, first = false)
          score_rows<P, 4, decode_score_keys<4>>(qs + a * Dk, Dk, kb, ks, nb, Dk, s + a * lds + j0, lds, pf);
        for (; a + 2 <= A; a += 2, first = false)
          score_rows<P, 2, decode_score_keys<2>>(qs + a * Dk, Dk, kb, ks, nb, Dk, s + a * lds + j0, lds, pf);
        for (; a < A; ++a, first = false)
          score_rows<P, 1, decode_score_keys<1>>(qs + a * Dk, Dk, kb, ks, nb, Dk, s + a * lds + j0, lds, pf);
      }

      // masks, then one softmax step per row over the whole chunk: its exact max, so
      // no rescaling of O; s becomes the probabilities.
      softmax_row<T> state[decode_rows_per_pass];
      for (std::size_t a = 0; a < A; ++a) {
        const std::size_t g = rows[a0 + a], h = hk * group + g / Nq;
        const auto i = std::int64_t(g % Nq);
        T* s_row = s + a * lds;
        if (elementwise) {
          rules.apply_elementwise(b, h, i, cs.begin, n, s_row);
          softmax_row<T>::to_log2(s_row, n);
        }
        detail::score_rules<T>::hide_invisible(rules.ranges(i), cs.begin, n, s_row);
        std::fill(s_row + n, s_row + npad, neg_inf);
        state[a].template absorb<P>(s_row, npad);
      }

      // pass 2: O = P·V, R rows at a time over blocks of block_keys keys, with the
      // stream's touches and requests as in pass 1; blocks no row sees are skipped.
      // (One generic-lambda sweep shared by both passes ran fp16 5-8% slower, GCC 12.)
      std::fill(o_part, o_part + A * Dv, T(0));
      for (std::size_t j0 = 0; j0 < n; j0 += block_keys) {
        const std::size_t nb = std::min(block_keys, n - j0);
        if (!visible[j0 / block_keys]) continue;
        if (plan.touch_pages) stream.touch_pages(n + j0 + touch, n + j0 + touch + nb);
        bool first = true;
        auto pf = [&](std::size_t j, std::size_t j_end) {
          if (first) stream.request(n + j0 + j + ahead, n + j0 + j_end + ahead);
        };
        const S* vb = v0 + std::ptrdiff_t(j0) * vs;
        std::size_t a = 0;
        for (; a + 4 <= A; a += 4, first = false)
          pv_rows<P, 4>(s + a * lds + j0, lds, vb, vs, nb, Dv, o_part + a * Dv, Dv, pf);
        for (; a + 2 <= A; a += 2, first = false)
          pv_rows<P, 2>(s + a * lds + j0, lds, vb, vs, nb, Dv, o_part + a * Dv, Dv, pf);
        for (; a < A; ++a, first = false)
          pv_rows<P, 1>(s + a * lds + j0, lds, vb, vs, nb, Dv, o_part + a * Dv, Dv, pf);
      }

      // the chunk's partial: normalised O and its natural-log LSE (kept in T for the merge).
      for (std::size_t a = 0; a < A; ++a) {
        const T scale = state[a].out_scale(T(1));
        for (std::size_t d = 0; d < Dv; ++d) o_part[a * Dv + d] *= scale;
        lse_part[a] = state[a].log_sum();
      }
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

}  // namespace headwise::HEADWISE_ISA_NS::kernels
