// headwise/kernels/decode.hpp — split-KV decode: few query rows against a long KV cache.
//
//   q [B, Hq, Nq, Dk] (float|double)  k [B, Hkv, Nk, Dk] (rows, key blocks or pages)
//   v [B, Hkv, Nk, Dv] (S = T, half, bfloat16, int8)  out [B, Hq, Nq, Dv]  lse [B, Hq, Nq, 1]
//
// A decode step does ~2 FLOPs per byte of K/V it streams from DRAM (Hq 32, Hkv 8, d 128,
// Nk 32768: 256 MiB of fp32 K/V against 537 MFLOP), so it is bound by memory and by
// how well the arithmetic hides under the stream: at G = 4 query rows per K/V row a key
// costs 64 AVX-512 FMAs (~9 ns) against ~34 ns of DRAM time for its 1 KiB of fp32.
//   - A task is (batch, kv head, chunk of chunk_keys keys) and computes every query
//     row of the GQA group, G = group·Nq rows, so each K/V row leaves DRAM once.
//     Chunks are fixed in size (never from the thread count: the same bits on any
//     thread count) and only exist where some row sees a key; B·Hkv·chunks tasks keep
//     both cores busy at B = 1.
//   - Per task, for up to rows_per_sweep rows at a time: 1. load the scaled q rows and
//     mark the blocks some row sees; 2. score every key of the chunk (decode_tiles.hpp),
//     K read as one sequential stream; 3. masks and one softmax step over the chunk
//     (its exact max: O is never rescaled); 4. O = P·V, V read as one stream; 5. store
//     the chunk's partial (O/l, lse). Both streams are requested from memory as the
//     core's stream_plan says (decode_stream.hpp).
//   - 6. A second parallel pass folds each row's partials in chunk order with
//     merge_row (the arithmetic of merge_states) into the first partial, then applies
//     head_scale and stores it in out's type; a row left with a NaN or ±inf (non-finite
//     inputs, options.hpp) is recomputed by the plain kernel's row (finish_kernel_row).
// bfloat16 q/k/v with K in rows run the scores and P·V on vdpbf16ps on the avx512_bf16
// path (decode_bf16_tiles.hpp): q and P as bf16 pairs, V interleaved in registers.
// Measured (Zen 4, one thread, B1 Hq32 Hkv8 d128): 1.33–1.37× the widened bf16 step with
// K/V in cache (KV 512–4096); at KV 32768 both are near 1.4× fp32, bound by how little
// of the DRAM stream the shorter arithmetic still hides (docs/decode-notes.md).
// int8 K/V (quantize.hpp) widen in the fp32 tiles (vpmovsxbd + vcvtdq2ps); scores take
// each key's K scale and weights each key's V scale in the softmax step. Measured (Zen
// 4, B1 Hq32 Hkv8 d128, KV 32768): 1.01× the fp16 step on one thread, 1.10× on two,
// at 29 % of DRAM bandwidth: both are bound by the tiles' work per key (their horizontal
// sums and loads more than their FMAs: docs/benchmarks.md), not by bytes.
// Bytes per step ≈ B·Hkv·Nk_visible·(Dk + Dv)·sizeof(S) + 2·B·Hq·Nq·chunks·(Dv+1)·sizeof(T):
// the partials are 0.4% of the K/V bytes at the shape above. Measured (Zen 4, one
// thread, KV 32768, key blocks): fp32 steps at 91% of the DRAM read bandwidth.
// K/V in pages (paged_view.hpp; attention_varlen) are read in place: a block is the
// largest power of two dividing the page, so none crosses one, and a task takes a
// chunk of all kv heads (up to 32 rows) and reads each page head by head, front to
// back (chunk_partial_wide). Measured (Zen 4, 16 sequences of 128–32768 keys, fp16,
// pages shuffled in the pool): 0.82× the contiguous step with 128-key pages, 0.55×
// with 16-key ones, where a bare read of 32 KiB runs in random order runs at 0.57× a
// sequential one (serving_bench.cpp's BM_dram_read_runs).
// Scratch (workspace.hpp): per worker the sweep's q rows and scores (at most 32 rows ×
// 1024 keys, 128 KiB, in L2); shared the partials and the chunk list.
// Why each choice, with the measurements and the alternatives that lost:
// docs/decode-notes.md.
// Per-path header (kernels/paths.hpp): no include guard, namespace headwise::<path>.
#ifndef HEADWISE_ISA_NS
#error "headwise/kernels/* is internal: include <headwise/headwise.hpp>"
#endif

namespace headwise::HEADWISE_ISA_NS::kernels::decode {

/// Keys per split-KV task: 32 tasks per (batch, kv head) at Nk 32768; the partial
/// written and re-read per chunk (4 KiB at G 4, d 128) is 1/256 of its fp32 K/V.
inline constexpr std::size_t chunk_keys = 1024;

/// Query rows per sweep over a chunk: the sweep's scores stay in L2 (128 KiB at most).
inline constexpr std::size_t rows_per_sweep = 32;

/// Keys per block of a sweep, for K/V rows of row_bytes: 16 KiB of rows (reused from
/// L1 by every row tile), whole P·V groups, 8 to 32 keys (d 128 fp32: 32); whole key
/// blocks when K comes in them. Blocks no row sees are skipped.
constexpr std::size_t block_keys(std::size_t row_bytes, bool key_blocks) {
  const std::size_t keys = std::clamp<std::size_t>(16384 / std::max<std::size_t>(row_bytes, 1) / decode_pv_keys *
                                                       decode_pv_keys,
                                                   decode_pv_keys, 4 * decode_pv_keys);
  return key_blocks ? detail::round_up(keys, key_block_keys) : keys;
}

/// Elements between the score rows of a sweep: a chunk and one pack. A compile-time
/// constant, so the P·V tile addresses its rows of probabilities by fixed offsets
/// (as a field of the plan it cost the tile four stack reloads per key: fp16 steps
/// 5–8% slower on Zen 4).
template <class P>
inline constexpr std::size_t score_stride = chunk_keys + simd::ops<P>::width;

/// Keys [begin, end) of one chunk that at least one query row can see.
struct chunk_span {
  std::int64_t begin, end;
};

/// What every task of a call shares: sizes, the chunk list, the active rows, and the
/// partials, carved from the workspace's shared buffer.
template <class T>
struct call_plan {
  std::size_t G = 0, group = 0, Dk = 0, Dv = 0, block = 0, blocks = 0, pass_rows = 0;
  std::size_t ahead = 0, touch = 0, chunks = 0;
  std::size_t wide_heads = 0;  // paged K/V: kv heads per task (0: one, and sweeps within it)
  stream_plan stream{};
  bool blocked = false, paged = false;
  T q_scale = 1;
  chunk_span* chunk = nullptr;  // [ceil(Nk / chunk_keys)]: the visible chunks, `chunks` of them
  std::size_t* active = nullptr;    // [Hkv][G]: row g = hh·Nq + i of each unpruned head hh
  std::size_t* n_active = nullptr;  // [Hkv]
  T* part_o = nullptr;              // [B·Hkv·chunks][G][Dv]
  T* part_lse = nullptr;            // [B·Hkv·chunks][G]

  template <class Call>
  void carve(detail::scratch_carver& c, const Call& call) {
    const std::size_t B = call.q.batch(), Hkv = call.k.heads();
    const std::size_t max_chunks = detail::ceil_div(call.k.seq(), chunk_keys), tasks = B * Hkv * max_chunks;
    chunk = c.take<chunk_span>(max_chunks);
    active = c.take<std::size_t>(Hkv * G);
    n_active = c.take<std::size_t>(Hkv);
    part_o = c.take<T>(tasks * G * Dv);
    part_lse = c.take<T>(tasks * G);
  }
};

/// Words per q row of the pair tiles: whole registers of 16 pairs.
constexpr std::size_t q_pair_words(std::size_t Dk) { return detail::round_up(detail::ceil_div(Dk, std::size_t(2)), std::size_t(16)); }

/// One worker's scratch: a sweep's scaled q rows and scores, and which blocks of the
/// chunk some row of the sweep sees; with pair tiles, q rows and P as bf16 pairs.
template <class T>
struct sweep_scratch {
  T *qs = nullptr, *s = nullptr;
  char* visible = nullptr;
  std::uint32_t *q_pairs = nullptr, *p_pairs = nullptr;
  T *k_scale = nullptr, *v_scale = nullptr;  // int8 K/V: the chunk's scales of one kv head, 0 past it
  sweep_scratch() = default;
  sweep_scratch(detail::scratch_carver& c, const call_plan<T>& p, std::size_t lds, bool pairs, bool int8)
      : qs(c.take<T>(p.pass_rows * p.Dk)),
        s(c.take<T>(p.pass_rows * lds)),
        visible(c.take<char>(p.blocks)),
        q_pairs(c.take<std::uint32_t>(pairs ? p.pass_rows * q_pair_words(p.Dk) : 0)),
        p_pairs(c.take<std::uint32_t>(pairs ? p.pass_rows * lds / 2 : 0)),
        k_scale(c.take<T>(int8 ? lds : 0)),
        v_scale(c.take<T>(int8 ? lds : 0)) {}

  /// The same scratch seen from sweep row a on (one kv head's rows of a wide task);
  /// `visible` is shared.
  sweep_scratch rows_from(std::size_t a, std::size_t Dk, std::size_t lds) const {
    sweep_scratch r = *this;
    r.qs += a * Dk, r.s += a * lds;
    if (q_pairs) r.q_pairs += a * q_pair_words(Dk), r.p_pairs += a * lds / 2;
    return r;
  }
};

/// The call's sizes and stream plan (carve() then takes its shared arrays). With K/V
/// in pages, a block is the largest power of two that divides the page (so no block
/// crosses one, and chunk starts, multiples of 1024, stay block starts), and the
/// stream is requested block by block (no page touches: a page of the cache is not
/// a page of memory).
template <class T, class S, class Q, class O>
call_plan<T> make_plan(const detail::kernel_call<T, S, Q, O>& c) {
  call_plan<T> p;
  p.group = c.group();
  p.G = p.group * c.q.seq();
  p.Dk = c.q.dim();
  p.Dv = c.v.dim();
  p.blocked = c.k.blocked();
  p.paged = c.k.paged();
  p.block = block_keys(std::max(p.Dk, p.Dv) * sizeof(S), p.blocked);
  p.stream = decode_stream_plan(detail::this_cpu_core());
  if (p.paged) {
    const std::size_t page = c.k.pages().page_size();
    std::size_t pow2 = 1;
    while (2 * pow2 <= p.block) pow2 *= 2;
    p.block = std::min(pow2, page & (~page + 1));
    p.stream.touch_pages = false;
    if (p.G <= rows_per_sweep) p.wide_heads = std::min(c.k.heads(), rows_per_sweep / p.G);
  }
  p.blocks = detail::ceil_div(chunk_keys, p.block);
  p.pass_rows = p.wide_heads ? p.wide_heads * p.G : std::min(p.G, rows_per_sweep);
  p.ahead = p.stream.ahead_rows(std::max(p.Dk, p.Dv) * sizeof(S));
  p.touch = p.ahead + decode_touch_rows;
  p.q_scale = softmax_row<T>::q_scale(c.rules.scale, c.rules.has_elementwise());
  return p;
}

/// After carve(): the chunks some row sees, and each kv head's unpruned rows.
template <class T, class S, class Q, class O>
void find_chunks(const detail::kernel_call<T, S, Q, O>& c, call_plan<T>& p) {
  const detail::score_rules<T>& rules = c.rules;
  const auto C = std::int64_t(chunk_keys);
  p.chunks = 0;
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
    if (s.begin < s.end) p.chunk[p.chunks++] = s;
  }
  for (std::size_t hk = 0; hk < c.k.heads(); ++hk) {
    p.n_active[hk] = 0;
    for (std::size_t g = 0; g < p.G; ++g)
      if (rules.head_multiplier(hk * p.group + g / c.q.seq()) != T(0)) p.active[hk * p.G + p.n_active[hk]++] = g;
  }
}

/// One task's chunk: its key span (starting on a key block when K is blocked, on a
/// block of the plan when paged: keys before the first visible one are hidden like
/// any other) and its K/V stream; k_at/v_at give the rows of a block that starts j
/// keys in (a block never crosses a page).
template <class S>
struct chunk_task {
  std::size_t b, hk, n;
  std::int64_t begin;
  chunk_stream<S> stream;
  const key_view<const S>* paged_k;    // null unless K/V are in pages
  const value_view<const S>* paged_v;

  const S* k_at(std::size_t j) const {
    return paged_k ? paged_k->pages().row(b, hk, std::size_t(begin) + j) : stream.k + std::ptrdiff_t(j) * stream.k_stride;
  }
  const S* v_at(std::size_t j) const {
    return paged_v ? paged_v->pages().row(b, hk, std::size_t(begin) + j) : stream.v + std::ptrdiff_t(j) * stream.v_stride;
  }
};

template <class T, class S, class Q, class O>
chunk_task<S> make_chunk_task(const detail::kernel_call<T, S, Q, O>& c, const call_plan<T>& p, std::size_t task) {
  const std::size_t ci = task % p.chunks, hk = task / p.chunks % c.k.heads(), b = task / (p.chunks * c.k.heads());
  const auto align = std::int64_t(p.blocked ? key_block_keys : p.paged ? p.block : 1);
  const std::int64_t begin = p.chunk[ci].begin / align * align;
  const std::size_t n = std::size_t(p.chunk[ci].end - begin);
  if (p.paged)
    return {b, hk, n, begin,
            chunk_stream<S>{nullptr, nullptr, c.k.pages().seq_stride(), c.v.seq_stride(), n, p.Dk * sizeof(S),
                            p.Dv * sizeof(S)},
            &c.k, &c.v};
  // K elements per key in the stream: the rows, or the keys of contiguous blocks.
  const std::ptrdiff_t ks = p.blocked ? std::ptrdiff_t(p.Dk) : c.k.rows().seq_stride();
  const S* k0 = p.blocked ? c.k.blocks().block(b, hk, std::size_t(begin) / key_block_keys)
                          : c.k.rows().row(b, hk, std::size_t(begin));
  return {b, hk, n, begin,
          chunk_stream<S>{k0, c.v.row(b, hk, std::size_t(begin)), ks, c.v.seq_stride(), n, p.Dk * sizeof(S),
                          p.Dv * sizeof(S)},
          nullptr, nullptr};
}

/// Step 1: the sweep's q rows, scaled (by log2 e too unless element-wise rules need
/// natural logits first; pair tiles take them unscaled, as bf16 pairs), and the blocks
/// of the chunk that some row sees.
template <bool Pairs, class T, class S, class Q, class O>
void load_queries(const detail::kernel_call<T, S, Q, O>& c, const call_plan<T>& p, const chunk_task<S>& t,
                  const std::size_t* rows, std::size_t A, sweep_scratch<T>& w, bool clear_visible = true) {
  const std::size_t Nq = c.q.seq();
  const std::int64_t end = t.begin + std::int64_t(t.n);
  if (clear_visible) std::fill(w.visible, w.visible + p.blocks, char(0));
  for (std::size_t a = 0; a < A; ++a) {
    const std::size_t g = rows[a];
    const Q* q_row = c.q.row(t.b, t.hk * p.group + g / Nq, g % Nq);
#if HEADWISE_PATH_AVX512_BF16
    if constexpr (Pairs) {
      std::uint32_t* pairs = w.q_pairs + a * q_pair_words(p.Dk);
      std::fill(pairs, pairs + q_pair_words(p.Dk), 0u);
      bf16::load_pair_row(q_row, p.Dk, pairs);
    }
    if constexpr (!Pairs)
#endif
      for (std::size_t d = 0; d < p.Dk; ++d) w.qs[a * p.Dk + d] = static_cast<T>(q_row[d]) * p.q_scale;
    const detail::row_ranges rr = c.rules.ranges(std::int64_t(g % Nq));
    for (const detail::key_range& r : {rr.sinks, rr.band}) {
      const std::int64_t lo = std::max(r.begin, t.begin) - t.begin, hi = std::min(r.end, end) - t.begin;
      if (lo < hi)
        std::fill(w.visible + std::size_t(lo) / p.block, w.visible + std::size_t(hi - 1) / p.block + 1, char(1));
    }
  }
}

/// Step 2: the scores of the chunk's keys for the sweep's A rows, block by block, all
/// rows over a block before the next (K leaves DRAM once). Each block touches a line
/// per page `touch` rows on, and its first row tile requests the stream `ahead` rows
/// on. Blocks no row sees are skipped and their scores hidden.
template <class P, bool Blocked, bool Pairs, class T, class S>
void score_block(const call_plan<T>& p, const chunk_task<S>& t, std::size_t A, sweep_scratch<T>& w, std::size_t j0) {
  constexpr std::size_t lds = score_stride<P>;
  const std::size_t Dk = p.Dk, nb = std::min(p.block, t.n - j0);
  if (p.stream.touch_pages) t.stream.touch_pages(j0 + p.touch, j0 + p.touch + nb);
  const S* kb = t.k_at(j0);
  if constexpr (Blocked) {
    // Read front to back, key blocks need no requests of their own (on Zen 4 they
    // made steps 1.25-1.4× slower); a plan's look-ahead still runs.
    for_row_tiles<4>(A, [&](auto rows_c, std::size_t a) {
      auto pf = [&](std::size_t j, std::size_t j_end) {
        if (a == 0 && p.ahead > 0) t.stream.request(j0 + j + p.ahead, j0 + j_end + p.ahead);
      };
      score_blocks<P, decltype(rows_c)::value>(w.qs + a * Dk, Dk, kb, nb, Dk, w.s + a * lds + j0, lds, pf);
    });
  } else {
    for_row_tiles<4>(A, [&](auto rows_c, std::size_t a) {
      constexpr std::size_t R = decltype(rows_c)::value;
      auto pf = [&](std::size_t j, std::size_t j_end) {
        if (a != 0) return;
        if (t.paged_k)  // within the block: the next one may sit on another page
          t.stream.rows(kb, t.stream.k_stride, t.stream.k_bytes, std::min(j + p.ahead, nb),
                        std::min(j_end + p.ahead, nb));
        else
          t.stream.request(j0 + j + p.ahead, j0 + j_end + p.ahead);
      };
#if HEADWISE_PATH_AVX512_BF16
      if constexpr (Pairs)
        bf16::decode_scores<R, decode_score_keys<R>>(w.q_pairs + a * q_pair_words(Dk), q_pair_words(Dk), kb,
                                                     t.stream.k_stride, nb, Dk, p.q_scale, w.s + a * lds + j0, lds,
                                                     pf);
      if constexpr (!Pairs)
#endif
        score_rows<P, R, decode_score_keys<R>>(w.qs + a * Dk, Dk, kb, t.stream.k_stride, nb, Dk,
                                               w.s + a * lds + j0, lds, pf);
    });
  }
}

/// Scores of a block no row sees: −inf for the sweep's A rows.
template <class P, class T>
void hide_block(const call_plan<T>& p, std::size_t n, std::size_t A, sweep_scratch<T>& w, std::size_t j0) {
  constexpr std::size_t lds = score_stride<P>;
  const std::size_t nb = std::min(p.block, n - j0);
  for (std::size_t a = 0; a < A; ++a)
    std::fill(w.s + a * lds + j0, w.s + a * lds + j0 + nb, -std::numeric_limits<T>::infinity());
}

template <class P, bool Blocked, bool Pairs, class T, class S>
void score_chunk(const call_plan<T>& p, const chunk_task<S>& t, std::size_t A, sweep_scratch<T>& w) {
  for (std::size_t j0 = 0; j0 < t.n; j0 += p.block) {
    if (w.visible[j0 / p.block])
      score_block<P, Blocked, Pairs>(p, t, A, w, j0);
    else
      hide_block<P>(p, t.n, A, w, j0);
  }
}

/// dst[0..n) = the chunk's scales (int8 K or V), run by run (a page, or the whole
/// chunk); dst[n..npad) = 0.
template <class T, class S>
void gather_scales(const value_view<const float>& scale, const chunk_task<S>& t, std::size_t npad, T* dst) {
  for (std::size_t j = 0, run; j < t.n; j += run) {
    const std::size_t s0 = std::size_t(t.begin) + j;
    run = std::min(t.n - j, scale.paged() ? scale.pages().contiguous_rows(s0) : t.n - j);
    const float* src = scale.row(t.b, t.hk, s0);
    const std::ptrdiff_t stride = scale.seq_stride();
    if (stride == 1)
      std::copy(src, src + run, dst + j);
    else
      for (std::size_t r = 0; r < run; ++r) dst[j + r] = T(src[std::ptrdiff_t(r) * stride]);
  }
  std::fill(dst + t.n, dst + npad, T(0));
}

/// x[0..n) *= y[0..n), n a multiple of the pack width.
template <class P, class T>
HEADWISE_ALWAYS_INLINE void multiply_rows(T* x, const T* y, std::size_t n) {
  using O = simd::ops<P>;
  for (std::size_t j = 0; j < n; j += O::width) O::store(x + j, O::load(x + j) * O::load(y + j));
}

/// Step 3: masks, then one softmax step per row over the whole chunk; the scores
/// become probabilities (with pair tiles also rounded to bf16 pairs for P·V). int8
/// K/V: each score is first multiplied by its key's K scale, and each probability,
/// after the softmax sums took it, by its V scale, so P·V sums p·scale·v_int.
template <class P, bool Pairs, class T, class S, class Q, class O>
void softmax_chunk(const detail::kernel_call<T, S, Q, O>& c, const call_plan<T>& p, const chunk_task<S>& t,
                   const std::size_t* rows, std::size_t A, sweep_scratch<T>& w, softmax_row<T>* state) {
  constexpr std::size_t W = simd::ops<P>::width;
  const std::size_t Nq = c.q.seq(), npad = detail::round_up(t.n, Pairs ? 2 * W : W);
  const bool elementwise = c.rules.has_elementwise();
  if constexpr (is_storage_int8<S>) {
    gather_scales(c.k_scale, t, npad, w.k_scale);
    gather_scales(c.v_scale, t, npad, w.v_scale);
  }
  for (std::size_t a = 0; a < A; ++a) {
    const std::size_t g = rows[a], h = t.hk * p.group + g / Nq;
    const auto i = std::int64_t(g % Nq);
    T* s_row = w.s + a * score_stride<P>;
    if constexpr (is_storage_int8<S>) multiply_rows<P>(s_row, w.k_scale, npad);
    if (elementwise) {
      c.rules.apply_elementwise(t.b, h, i, t.begin, t.n, s_row);
      softmax_row<T>::to_log2(s_row, t.n);
    }
    detail::score_rules<T>::hide_invisible(c.rules.ranges(i), t.begin, t.n, s_row);
    std::fill(s_row + t.n, s_row + npad, -std::numeric_limits<T>::infinity());
    state[a] = softmax_row<T>{};
    state[a].template absorb<P>(s_row, npad);
    if constexpr (is_storage_int8<S>) multiply_rows<P>(s_row, w.v_scale, npad);
#if HEADWISE_PATH_AVX512_BF16
    if constexpr (Pairs) bf16::round_row(s_row, npad, w.p_pairs + a * score_stride<P> / 2);
#endif
  }
}

/// Step 4: o = P·V for the sweep's rows, block by block like step 2 (V's stream
/// positions follow K's: n + j).
template <class P, bool Pairs, class T, class S>
void pv_block(const call_plan<T>& p, const chunk_task<S>& t, std::size_t A, const sweep_scratch<T>& w, T* o,
              std::size_t j0) {
  const std::ptrdiff_t vs = t.stream.v_stride;
  const std::size_t nb = std::min(p.block, t.n - j0);
  if (p.stream.touch_pages) t.stream.touch_pages(t.n + j0 + p.touch, t.n + j0 + p.touch + nb);
  const S* vb = t.v_at(j0);
  for_row_tiles<4>(A, [&](auto rows_c, std::size_t a) {
    auto pf = [&](std::size_t j, std::size_t j_end) {
      if (a != 0) return;
      if (t.paged_v)
        t.stream.rows(vb, vs, t.stream.v_bytes, std::min(j + p.ahead, nb), std::min(j_end + p.ahead, nb));
      else
        t.stream.request(t.n + j0 + j + p.ahead, t.n + j0 + j_end + p.ahead);
    };
#if HEADWISE_PATH_AVX512_BF16
    if constexpr (Pairs)
      bf16::decode_pv<decltype(rows_c)::value>(w.p_pairs + (a * score_stride<P> + j0) / 2, score_stride<P> / 2, vb,
                                               vs, nb, p.Dv, o + a * p.Dv, p.Dv, pf);
    if constexpr (!Pairs)
#endif
      pv_rows<P, decltype(rows_c)::value>(w.s + a * score_stride<P> + j0, score_stride<P>, vb, vs, nb, p.Dv,
                                          o + a * p.Dv, p.Dv, pf);
  });
}

template <class P, bool Pairs, class T, class S>
void pv_chunk(const call_plan<T>& p, const chunk_task<S>& t, std::size_t A, const sweep_scratch<T>& w, T* o) {
  std::fill(o, o + A * p.Dv, T(0));
  for (std::size_t j0 = 0; j0 < t.n; j0 += p.block)
    if (w.visible[j0 / p.block]) pv_block<P, Pairs>(p, t, A, w, o, j0);
}

/// Step 5: the normalised partial and its natural-log LSE.
template <class T>
void store_partial(const call_plan<T>& p, const softmax_row<T>* state, std::size_t A, T* o, T* lse) {
  for (std::size_t a = 0; a < A; ++a) {
    const T scale = state[a].out_scale(T(1));
    for (std::size_t d = 0; d < p.Dv; ++d) o[a * p.Dv + d] *= scale;
    lse[a] = state[a].log_sum();
  }
}

/// One task: steps 1–5 for each sweep of at most rows_per_sweep active rows.
template <class P, bool Blocked, bool Pairs, class T, class S, class Q, class O>
void chunk_partial(const detail::kernel_call<T, S, Q, O>& c, const call_plan<T>& p, std::size_t task, sweep_scratch<T>& w) {
  const chunk_task<S> t = make_chunk_task(c, p, task);
  const std::size_t* rows = p.active + t.hk * p.G;
  for (std::size_t a0 = 0; a0 < p.n_active[t.hk]; a0 += p.pass_rows) {
    const std::size_t A = std::min(p.pass_rows, p.n_active[t.hk] - a0);
    T* o = p.part_o + (task * p.G + a0) * p.Dv;
    softmax_row<T> state[rows_per_sweep];
    load_queries<Pairs>(c, p, t, rows + a0, A, w);
    score_chunk<P, Blocked, Pairs>(p, t, A, w);
    softmax_chunk<P, Pairs>(c, p, t, rows + a0, A, w, state);
    pv_chunk<P, Pairs>(p, t, A, w, o);
    store_partial(p, state, A, o, p.part_lse + task * p.G + a0);
  }
}

/// K/V in pages: one task is a chunk of p.wide_heads kv heads, whose rows (at most
/// rows_per_sweep) share one sweep, and each page's keys are read for every head
/// before the next page: a page's heads sit one after another in the pool, so the
/// task reads each page front to back (runs of page·Hkv·D elements, not page·D: on
/// a Zen 4 VM a bare read of 4 KiB runs in random order ran at 9.4 GB/s, of 32 KiB
/// ones at 17.8, against 31 in order). Each head's rows keep their own tiles, so
/// the bits are those of one head per task. Partials land where that layout puts them.
template <class P, bool Pairs, class T, class S, class Q, class O>
void chunk_partial_wide(const detail::kernel_call<T, S, Q, O>& c, const call_plan<T>& p, std::size_t task,
                        sweep_scratch<T>& w) {
  const std::size_t Hkv = c.k.heads(), groups = detail::ceil_div(Hkv, p.wide_heads);
  const std::size_t ci = task % p.chunks, hg = task / p.chunks % groups, b = task / (p.chunks * groups);
  const std::size_t h0 = hg * p.wide_heads, nh = std::min(Hkv, h0 + p.wide_heads) - h0;
  chunk_task<S> t[rows_per_sweep];
  sweep_scratch<T> wh[rows_per_sweep];
  std::size_t A[rows_per_sweep], narrow[rows_per_sweep];
  softmax_row<T> state[rows_per_sweep];
  for (std::size_t x = 0, a0 = 0; x < nh; ++x) {
    narrow[x] = (b * Hkv + h0 + x) * p.chunks + ci;
    t[x] = make_chunk_task(c, p, narrow[x]);
    A[x] = p.n_active[h0 + x];
    wh[x] = w.rows_from(a0, p.Dk, score_stride<P>);
    load_queries<Pairs>(c, p, t[x], p.active + (h0 + x) * p.G, A[x], wh[x], x == 0);
    a0 += A[x];
  }
  // Page by page, head by head, block by block: each page front to back.
  const std::size_t n = t[0].n, page = c.k.pages().page_size(), begin = std::size_t(t[0].begin);
  auto for_page_runs = [&](auto&& fn) {
    for (std::size_t r0 = 0, r1; r0 < n; r0 = r1) {
      r1 = std::min(n, (begin + r0) / page * page + page - begin);
      for (std::size_t x = 0; x < nh; ++x)
        for (std::size_t j0 = r0; j0 < r1; j0 += p.block) fn(x, j0);
    }
  };
  for_page_runs([&](std::size_t x, std::size_t j0) {
    if (w.visible[j0 / p.block])
      score_block<P, false, Pairs>(p, t[x], A[x], wh[x], j0);
    else
      hide_block<P>(p, n, A[x], wh[x], j0);
  });
  for (std::size_t x = 0, a0 = 0; x < nh; a0 += A[x++]) {
    softmax_chunk<P, Pairs>(c, p, t[x], p.active + (h0 + x) * p.G, A[x], wh[x], state + a0);
    std::fill(p.part_o + narrow[x] * p.G * p.Dv, p.part_o + (narrow[x] * p.G + A[x]) * p.Dv, T(0));
  }
  for_page_runs([&](std::size_t x, std::size_t j0) {
    if (w.visible[j0 / p.block]) pv_block<P, Pairs>(p, t[x], A[x], wh[x], p.part_o + narrow[x] * p.G * p.Dv, j0);
  });
  for (std::size_t x = 0, a0 = 0; x < nh; a0 += A[x++])
    store_partial(p, state + a0, A[x], p.part_o + narrow[x] * p.G * p.Dv, p.part_lse + narrow[x] * p.G);
}

/// Step 6: each row's chunk partials folded in chunk order, times head_scale; rows of
/// pruned heads (and every row when no chunk is visible) get zeros and LSE −inf.
template <class T, class S, class Q, class O>
void merge_partials(const detail::kernel_call<T, S, Q, O>& c, const call_plan<T>& p, std::size_t b, std::size_t hk) {
  const std::size_t task = b * c.k.heads() + hk, nc = p.chunks, G = p.G, Dv = p.Dv, Nq = c.q.seq();
  const std::size_t* rows = p.active + hk * G;
  for (std::size_t g = 0, a = 0; g < G; ++g) {
    const std::size_t h = hk * p.group + g / Nq, i = g % Nq;
    T row_lse = -std::numeric_limits<T>::infinity();
    if (nc > 0 && a < p.n_active[hk] && rows[a] == g) {  // merged into the first chunk's partial
      T* o = p.part_o + (task * nc * G + a) * Dv;
      const T* lse = p.part_lse + task * nc * G + a;
      row_lse = lse[0];
      for (std::size_t ci = 1; ci < nc; ++ci)
        row_lse = headwise::kernels::merge_row<T>(o, row_lse, o + ci * G * Dv, lse[ci * G], o, Dv);
      const T mult = c.rules.head_multiplier(h);
      for (std::size_t d = 0; d < Dv; ++d) o[d] *= mult;
      if (c.lse.is_set()) c.lse(b, h, i, 0) = static_cast<float>(row_lse);
      headwise::kernels::plain::finish_kernel_row(c, b, h, i, o);  // a NaN or ±inf: options.hpp's rules
      ++a;
    } else {
      O* out_row = c.out.row(b, h, i);
      std::fill(out_row, out_row + Dv, detail::convert_element<O>(T(0)));
      if (c.lse.is_set()) c.lse(b, h, i, 0) = static_cast<float>(row_lse);
    }
  }
}

/// Every chunk task of every call in one parallel_for, then every (sequence, kv head)
/// merge in a second: a long sequence's chunks spread over all workers while the
/// short ones fill in, and each task's arithmetic is fixed by its call alone, so the
/// bits do not depend on the thread count. The plans, their chunk lists and
/// partials, and the task offsets sit in the workspace's shared buffer.
template <class P, class T, class S, class Q, class O>
void run(detail::kernel_calls<T, S, Q, O> calls) {
  if (calls.empty()) return;
  const detail::kernel_call<T, S, Q, O>& c0 = calls[0];
  const std::size_t n = calls.size();
  // With bf16 tiles, K-row tasks hold q and P as bf16 pairs; key blocks widen to fp32.
  constexpr bool pairs = bf16_tiles<P, Q>;
  call_plan<T>* plans;
  std::size_t *first, *first_merge;
  auto carve = [&](detail::scratch_carver& c, bool fill) {
    plans = c.take<call_plan<T>>(n);
    first = c.take<std::size_t>(n + 1);
    first_merge = c.take<std::size_t>(n + 1);
    for (std::size_t i = 0; i < n; ++i) {
      call_plan<T> p = make_plan(calls[i]);
      p.carve(c, calls[i]);
      if (fill) plans[i] = p;
    }
  };
  detail::scratch_carver count;
  carve(count, false);
  detail::scratch_carver shared(detail::workspace_access::shared(c0.scratch, count.bytes()));
  carve(shared, true);
  std::size_t bytes = 0;
  first[0] = first_merge[0] = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const detail::kernel_call<T, S, Q, O>& c = calls[i];
    find_chunks(c, plans[i]);
    const std::size_t kv_rows = c.q.batch() * c.k.heads();
    const std::size_t task_heads =
        plans[i].wide_heads ? c.q.batch() * detail::ceil_div(c.k.heads(), plans[i].wide_heads) : kv_rows;
    first[i + 1] = first[i] + task_heads * plans[i].chunks;
    first_merge[i + 1] = first_merge[i] + kv_rows;
    detail::scratch_carver w;
    sweep_scratch<T>(w, plans[i], score_stride<P>, pairs, is_storage_int8<S>);
    bytes = std::max(bytes, w.bytes());
  }
  auto call_of = [n](const std::size_t* offsets, std::size_t task) {
    return std::size_t(std::upper_bound(offsets, offsets + n + 1, task) - offsets) - 1;
  };
  const unsigned workers = detail::resolve_threads(c0.threads, first[n]);
  detail::workspace_access::reserve_workers(c0.scratch, workers, bytes);
  detail::parallel_for(first[n], workers, [&](std::size_t task, unsigned worker) {
    const std::size_t i = call_of(first, task);
    detail::scratch_carver carver(detail::workspace_access::worker(c0.scratch, worker));
    sweep_scratch<T> w(carver, plans[i], score_stride<P>, pairs, is_storage_int8<S>);
    if (plans[i].blocked)
      chunk_partial<P, true, false>(calls[i], plans[i], task - first[i], w);
    else if (plans[i].wide_heads)
      chunk_partial_wide<P, pairs>(calls[i], plans[i], task - first[i], w);
    else
      chunk_partial<P, false, pairs>(calls[i], plans[i], task - first[i], w);
  });
  detail::parallel_for(first_merge[n], detail::resolve_threads(c0.threads, first_merge[n]),
                       [&](std::size_t task, unsigned) {
                         const std::size_t i = call_of(first_merge, task), local = task - first_merge[i];
                         const std::size_t Hkv = calls[i].k.heads();
                         merge_partials(calls[i], plans[i], local / Hkv, local % Hkv);
                       });
}

}  // namespace headwise::HEADWISE_ISA_NS::kernels::decode
