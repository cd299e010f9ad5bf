// headwise/detail/checks.hpp — argument validation for every public entry.
//
// Checks run before any output is written. Each failure throws headwise::error
// naming the function, the argument, what was expected and what was given. Every
// public function calls its check up front; the checks live here, but for four
// neighbours: detail/checks_views.hpp (one view or span alone), detail/checks_base.hpp
// (fail and the checks of tensor.hpp and of HEADWISE_ISA, which this header's own
// includes need), detail/checks_eigen.hpp (the Eigen component: eigen.hpp, lora.hpp,
// mha.hpp, optim.hpp) and detail/checks_io.hpp (safetensors.hpp).
// Beyond the shape rules of options.hpp, a view is rejected when its data is
// null while it has elements, when a stride is negative, when its last reachable
// element's offset or its byte extent overflows std::ptrdiff_t or runs past the end
// of the address space, and (for outputs) when two of its elements share memory or
// it overlaps an input (q, k, v, a mask, the ALiBi slopes, the head scales). A view
// with no elements (a size 0, whatever its strides) passes all of these. The enums of
// the options must hold one of their values (an integer cast to one may not).
// Order, for attention(): each view alone (pointer, strides, sizes >= 1), then
// whether the four views agree on the sizes they share, then the options against
// that agreed shape, then aliasing. Agreement comes before the options so that
// a slip in one view (most often heads and seq swapped: bshd() and bhsd() take
// them in opposite orders) is named on that view, not on a mask or on another
// view that was checked against it; when two views disagree, the one that the
// rest of the call contradicts is named (check_pair).
#pragma once

#ifndef HEADWISE_INTERNAL
#error "headwise/detail/* is internal: include <headwise/headwise.hpp>"
#endif

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <sstream>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include "headwise/detail/checks_base.hpp"
#include "headwise/detail/checks_views.hpp"
#include "headwise/isa.hpp"
#include "headwise/options.hpp"
#include "headwise/storage.hpp"
#include "headwise/key_view.hpp"
#include "headwise/tensor.hpp"

namespace headwise::detail {

/// Memory a call reads (q, k, masks, per-head parameters) and the LSE it writes,
/// for alias checks.
struct score_extents {
  extent q, k, additive, boolean, alibi_slopes, head_scale, lse, k_scale, v_scale;
};

/// options.k_scale or v_scale against int8 storage: required, [B, Hkv, Nk, 1], when
/// the storage is int8; unset otherwise. Returns its extent.
template <class S>
extent check_kv_scale(const char* where, const char* name, const tensor_view<const float>& scale, std::size_t B,
                      std::size_t Hkv, std::size_t Nk) {
  if constexpr (!is_storage_int8<std::remove_const_t<S>>) {
    if (scale.is_set()) fail(where, name, " is for int8 K/V only; leave it unset");
    return {};
  } else {
    if (!scale.is_set()) fail(where, "int8 K/V need ", name, ": one fp32 scale per (token, kv head), [B, Hkv, Nk, 1]");
    const extent e = check_view(where, name, scale);
    check_broadcast(where, name, scale, B, Hkv, Nk, 1, false, kv_scale_axes);
    return e;
  }
}

/// An option of enum type E must hold one of its values first..last: a cast integer
/// (causal_mode(220)) is an error, not a mode.
template <class E>
void check_enum(const char* where, const char* name, const char* type, E value, E last) {
  const auto v = static_cast<std::underlying_type_t<E>>(value);
  bool bad = v > static_cast<decltype(v)>(last);
  if constexpr (std::is_signed_v<decltype(v)>) bad = bad || v < 0;
  if (bad) fail(where, name, " is not a ", type, " value (got ", +v, ")");
}

/// options.causal, options.kernel and options.isa hold values of their enums.
inline void check_option_enums(const char* where, const attention_options& opt) {
  check_enum(where, "options.causal", "causal_mode", opt.causal, causal_mode::bottom_right);
  check_enum(where, "options.kernel", "kernel_mode", opt.kernel, kernel_mode::decode);
  check_enum(where, "options.isa", "simd_isa", opt.isa, simd_isa::avx512_bf16);
}

/// q and k alone: pointers, strides, Hq, Hkv and Dk >= 1.
template <class TQ, class K>
score_extents check_score_views(const char* where, const tensor_view<TQ>& q, const K& k) {
  score_extents e;
  e.q = check_view(where, "q", q);
  e.k = check_view(where, "k", k);
  if (q.heads() == 0) fail(where, "q.heads() must be >= 1 (got 0)");
  if (k.heads() == 0) fail(where, "k.heads() must be >= 1 (got 0)");
  if (q.dim() == 0) fail(where, "q.dim() (Dk) must be >= 1 (got 0)");
  return e;
}

/// q against k, every option, the masks and the LSE view; fills e's mask and LSE extents.
template <class TQ, class K>
void check_score_rules(const char* where, const tensor_view<TQ>& q, const K& k,
                       const attention_options& opt, score_extents& e) {
  expect_equal(where, "k.batch() must equal q.batch()", q.batch(), k.batch());
  expect_equal(where, "k.dim() must equal q.dim() (Dk)", q.dim(), k.dim());
  if (q.heads() % k.heads() != 0)
    fail(where, "q.heads() (Hq) must be a multiple of k.heads() (Hkv) (expected a multiple of ",
         k.heads(), ", got ", q.heads(), ")");

  const std::size_t B = q.batch(), Hq = q.heads(), Nq = q.seq(), Nk = k.seq();
  check_option_enums(where, opt);
  if (opt.scale && !std::isfinite(*opt.scale))
    fail(where, "options.scale must be finite (got ", *opt.scale, ")");
  if (!(std::isfinite(opt.softcap) && opt.softcap >= 0))
    fail(where, "options.softcap must be finite and >= 0 (got ", opt.softcap, ")");
  if (opt.window_left && *opt.window_left < 0)
    fail(where, "options.window_left must be >= 0 or unset (got ", *opt.window_left, ")");
  if (opt.window_right && *opt.window_right < 0)
    fail(where, "options.window_right must be >= 0 or unset (got ", *opt.window_right, ")");
  for (const auto& [values, name, memory] :
       {std::tuple{opt.alibi_slopes, "options.alibi_slopes", &e.alibi_slopes},
        std::tuple{opt.head_scale, "options.head_scale", &e.head_scale}}) {
    if (values.empty()) continue;
    if (values.size() != Hq)
      fail(where, name, ".size() must equal q.heads() (expected ", Hq, ", got ", values.size(), ")");
    if (values.data() == nullptr) fail(where, name, ": data is null");
    *memory = span_extent(where, name, values);
    for (std::size_t h = 0; h < Hq; ++h)
      if (!std::isfinite(values[h])) fail(where, name, "[", h, "] must be finite (got ", values[h], ")");
  }
  if (opt.additive_mask.is_set()) {
    e.additive = check_view(where, "options.additive_mask", opt.additive_mask);
    check_broadcast(where, "options.additive_mask", opt.additive_mask, B, Hq, Nq, Nk, true, mask_axes);
  }
  if (opt.boolean_mask.is_set()) {
    e.boolean = check_view(where, "options.boolean_mask", opt.boolean_mask);
    check_broadcast(where, "options.boolean_mask", opt.boolean_mask, B, Hq, Nq, Nk, true, mask_axes);
  }
  if (opt.lse.is_set()) {
    e.lse = check_view(where, "options.lse", opt.lse);
    check_broadcast(where, "options.lse", opt.lse, B, Hq, Nq, 1, false, lse_axes);
    check_no_self_overlap(where, "options.lse", opt.lse);
  }
}

/// The rules of options.hpp that concern the scores: q and k shapes, every
/// option, the masks and the LSE view. Inspection (which has no v or out) and
/// key-block attention() use it whole; check_attention splits it around the
/// agreement of the four views.
template <class TQ, class K>
score_extents check_scores(const char* where, const tensor_view<TQ>& q, const K& k,
                           const attention_options& opt) {
  score_extents e = check_score_views(where, q, k);
  check_score_rules(where, q, k, opt, e);
  e.k_scale = check_kv_scale<typename K::element_type>(where, "options.k_scale", opt.k_scale, q.batch(), k.heads(),
                                                       k.seq());
  return e;
}

/// attention_probabilities and its kin (inspect.hpp): the score rules, the LSE the
/// forward wrote, the head and the row range of the block asked for.
template <class TQ, class K>
void check_probabilities(const char* where, const tensor_view<TQ>& q, const K& k, const attention_options& opt,
                         std::size_t batch, std::size_t head, std::size_t row_begin, std::size_t row_end) {
  check_scores(where, q, k, opt);
  if (!opt.lse.is_set())
    fail(where, "options.lse must hold the LSE written by attention() with these options (got none)");
  if (batch >= q.batch()) fail(where, "batch must be < q.batch() (expected < ", q.batch(), ", got ", batch, ")");
  if (head >= q.heads()) fail(where, "head must be < q.heads() (expected < ", q.heads(), ", got ", head, ")");
  if (row_begin > row_end || row_end > q.seq())
    fail(where, "rows must satisfy row_begin <= row_end <= q.seq() (expected <= ", q.seq(), ", got [", row_begin,
         ", ", row_end, "))");
  checked_product(where, "the probability block", {row_end - row_begin, k.seq()});
}

/// attention_statistics (inspect.hpp): the score rules, and the token ids when given,
/// one per key.
template <class TQ, class K, class Tokens>
void check_statistics(const char* where, const tensor_view<TQ>& q, const K& k, const attention_options& opt,
                      const Tokens& tokens) {
  check_scores(where, q, k, opt);
  if (tokens.empty()) return;
  expect_equal(where, "statistics_options.tokens.size() must equal k.seq() (Nk)", k.seq(), tokens.size());
  if (tokens.data() == nullptr) fail(where, "statistics_options.tokens: data is null");
}

/// prunable_heads (diagnostics.hpp): every statistic names a head of the report.
template <class Stats>
void check_statistics_heads(const char* where, const Stats& stats, std::size_t heads) {
  for (const auto& st : stats)
    if (st.head >= heads) fail(where, "stats[].head must be < ", heads, " (got ", st.head, ")");
}

/// kv_cache's constructor: at least one kv head and one coordinate of K and of V.
inline void check_kv_cache_shape(std::size_t kv_heads, std::size_t key_dim, std::size_t value_dim) {
  if (kv_heads == 0) fail("kv_cache", "kv_heads must be >= 1 (got 0)");
  if (key_dim == 0) fail("kv_cache", "key_dim must be >= 1 (got 0)");
  if (value_dim == 0) fail("kv_cache", "value_dim must be >= 1 (got 0)");
}

/// kv_cache::append: valid views of the cache's batch, heads and dims, n = k.seq()
/// tokens for both, and room for them beside the `size` held.
template <class K, class V>
void check_kv_append(const tensor_view<K>& k, const tensor_view<V>& v, std::size_t batch, std::size_t heads,
                     std::size_t dk, std::size_t dv, std::size_t size, std::size_t capacity) {
  constexpr const char* where = "kv_cache::append";
  check_view(where, "k", k);
  check_view(where, "v", v);
  check_broadcast(where, "k", k, batch, heads, k.seq(), dk, false);
  check_broadcast(where, "v", v, batch, heads, k.seq(), dv, false);
  if (k.seq() > capacity - size)
    fail(where, "appending ", k.seq(), " tokens exceeds the capacity (size ", size, ", capacity ", capacity, ")");
}

/// paged_kv_cache's constructor: every size >= 1, page_size a multiple of
/// key_block_keys, and page numbers, slot ids and lengths that fit the int32 of the
/// block table and of lengths().
inline void check_paged_kv_cache_shape(std::size_t num_pages, std::size_t kv_heads, std::size_t page_size,
                                       std::size_t key_dim, std::size_t value_dim, std::size_t max_sequences,
                                       std::size_t max_pages_per_seq) {
  constexpr const char* where = "paged_kv_cache";
  constexpr std::size_t int32_max = std::size_t(std::numeric_limits<std::int32_t>::max());
  const std::pair<const char*, std::size_t> sizes[] = {
      {"num_pages", num_pages}, {"kv_heads", kv_heads},           {"key_dim", key_dim},
      {"value_dim", value_dim}, {"max_sequences", max_sequences}, {"max_pages_per_seq", max_pages_per_seq}};
  for (const auto& [name, size] : sizes)
    if (size == 0) fail(where, name, " must be >= 1 (got 0)");
  if (page_size == 0 || page_size % key_block_keys != 0)
    fail(where, "page_size must be a positive multiple of key_block_keys (", key_block_keys, ") (got ",
         page_size, ")");
  if (num_pages > int32_max)
    fail(where, "num_pages must be <= ", int32_max, " (int32 page numbers; got ", num_pages, ")");
  if (max_sequences > int32_max)
    fail(where, "max_sequences must be <= ", int32_max, " (int32 slot ids; got ", max_sequences, ")");
  std::size_t tokens = 0;
  if (__builtin_mul_overflow(page_size, max_pages_per_seq, &tokens) || tokens > int32_max)
    fail(where, "page_size · max_pages_per_seq must be <= ", int32_max, " (int32 lengths; got ", page_size,
         " · ", max_pages_per_seq, ")");
}

/// paged_kv_cache::append, the arguments alone: k [1, Hkv, total, Dk] and
/// v [1, Hkv, total, Dv] valid views, and cu_tokens one longer than seqs, from 0 to
/// total, non-decreasing. The ids and the pages are checked against the cache's state.
template <class K, class V>
void check_paged_append(const tensor_view<K>& k, const tensor_view<V>& v, std::size_t heads, std::size_t dk,
                        std::size_t dv, span<const std::int32_t> seqs, span<const std::int32_t> cu_tokens) {
  constexpr const char* where = "paged_kv_cache::append";
  check_view(where, "k", k);
  check_view(where, "v", v);
  check_broadcast(where, "k", k, 1, heads, k.seq(), dk, false, {"B", "Hkv", "N", "Dk"});
  check_broadcast(where, "v", v, 1, heads, k.seq(), dv, false, {"B", "Hkv", "N", "Dv"});
  if (!seqs.empty() && seqs.data() == nullptr) fail(where, "seqs: data is null");
  expect_equal(where, "cu_tokens.size() must equal seqs.size() + 1", seqs.size() + 1, cu_tokens.size());
  if (cu_tokens.data() == nullptr) fail(where, "cu_tokens: data is null");
  if (cu_tokens[0] != 0) fail(where, "cu_tokens[0] must be 0 (got ", cu_tokens[0], ")");
  for (std::size_t i = 1; i < cu_tokens.size(); ++i)
    if (cu_tokens[i] < cu_tokens[i - 1])
      fail(where, "cu_tokens must be non-decreasing (cu_tokens[", i - 1, "] = ", cu_tokens[i - 1],
           ", cu_tokens[", i, "] = ", cu_tokens[i], ")");
  const std::int32_t total = cu_tokens[seqs.size()];
  if (std::size_t(total) != k.seq())
    fail(where, "cu_tokens[seqs.size()] must equal k.seq(), the tokens given (expected ", k.seq(), ", got ",
         total, ")");
}

/// One candidate (heads, seq) of a pair of views (q and out, or k and v) against
/// the rest of a call: the rules it breaks, and the sizes it shares with the
/// other pair (only a hint: Hq = Hkv in MHA, Nq = Nk in self-attention).
struct fit {
  int conflicts = 0, matches = 0;
};

/// Heads and seq that views a and b must share. When they differ, the rest of
/// the call decides which view to name: the one breaking more rules; for heads
/// and seq swapped, failing that, the one sharing fewer sizes with the other
/// pair. With no evidence either way a swap names both views, anything else b,
/// as a and its pair are the references of every other message.
template <class Fit>
void check_pair(const char* where, const char* a, std::size_t a_heads, std::size_t a_seq, const char* b,
                std::size_t b_heads, std::size_t b_seq, const char* heads_name, const char* seq_name,
                Fit fit_of) {
  if (a_heads == b_heads && a_seq == b_seq) return;
  const fit fa = fit_of(a_heads, a_seq), fb = fit_of(b_heads, b_seq);
  const bool swapped = a_heads == b_seq && a_seq == b_heads;
  const bool blame_a =
      fa.conflicts > fb.conflicts || (fa.conflicts == fb.conflicts && swapped && fa.matches < fb.matches);
  const bool decided = fa.conflicts != fb.conflicts || (swapped && fa.matches != fb.matches);
  const char* bad = blame_a ? a : b;
  const char* good = blame_a ? b : a;
  const std::size_t bad_heads = blame_a ? a_heads : b_heads, bad_seq = blame_a ? a_seq : b_seq;
  const std::size_t good_heads = blame_a ? b_heads : a_heads, good_seq = blame_a ? b_seq : a_seq;
  const char* layouts = "; bshd() takes (data, batch, seq, heads, dim), bhsd() (data, batch, heads, seq, dim)";
  if (swapped && !decided)
    fail(where, a, " and ", b, " disagree on heads and seq (", a, " has heads=", a_heads, ", seq=", a_seq, "; ", b,
         " has heads=", b_heads, ", seq=", b_seq, "): one of them has the two swapped", layouts);
  if (swapped)
    fail(where, bad, ".heads() and ", bad, ".seq() look swapped (expected ", heads_name, "=", good_heads, ", ",
         seq_name, "=", good_seq, " as in ", good, ", got heads=", bad_heads, ", seq=", bad_seq, ")", layouts);
  if (bad_heads != good_heads)
    fail(where, bad, ".heads() must equal ", good, ".heads() (", heads_name, ") (expected ", good_heads, ", got ",
         bad_heads, ")");
  fail(where, bad, ".seq() must equal ", good, ".seq() (", seq_name, ") (expected ", good_seq, ", got ", bad_seq,
       ")");
}

/// The heads and seq q and out share (Hq, Nq), and k and v (Hkv, Nk), judged by
/// each other and by the options when given. A pair's sizes count as evidence only
/// when its two views agree.
template <class TQ, class TV, class TO>
void check_pairs(const char* where, const tensor_view<TQ>& q, std::size_t k_heads, std::size_t k_seq,
                 const tensor_view<TV>& v, const tensor_view<TO>& out, const attention_options* opt) {
  const bool kv_agree = k_heads == v.heads() && k_seq == v.seq();
  const bool qo_agree = q.heads() == out.heads() && q.seq() == out.seq();
  check_pair(where, "q", q.heads(), q.seq(), "out", out.heads(), out.seq(), "Hq", "Nq",
             [&](std::size_t h, std::size_t n) {
               fit f;
               if (kv_agree) {
                 f.conflicts += k_heads != 0 && h % k_heads != 0;  // Hq must be a multiple of Hkv
                 f.matches += int(h == k_heads) + int(n == k_seq);
               }
               if (!opt) return f;
               for (const span<const float>& per_head : {opt->alibi_slopes, opt->head_scale})
                 f.conflicts += !per_head.empty() && per_head.size() != h;
               auto rows_of = [&](const auto& m, bool broadcasts) {
                 if (!m.is_set()) return;
                 f.conflicts += m.heads() != h && !(broadcasts && m.heads() == 1);
                 f.conflicts += m.seq() != n;
               };
               rows_of(opt->additive_mask, true);
               rows_of(opt->boolean_mask, true);
               rows_of(opt->lse, false);
               return f;
             });
  check_pair(where, "k", k_heads, k_seq, "v", v.heads(), v.seq(), "Hkv", "Nk", [&](std::size_t h, std::size_t n) {
    fit f;
    if (qo_agree) {
      f.conflicts += h != 0 && q.heads() % h != 0;
      f.matches += int(h == q.heads()) + int(n == q.seq());
    }
    if (opt) {
      f.conflicts += opt->additive_mask.is_set() && opt->additive_mask.dim() != n;
      f.conflicts += opt->boolean_mask.is_set() && opt->boolean_mask.dim() != n;
    }
    return f;
  });
}

/// The batch all four views share: the value most of them hold (q's on a tie);
/// the first view holding another is named.
inline void check_batch(const char* where, const std::array<std::pair<const char*, std::size_t>, 4>& views) {
  std::size_t want = views[0].second, votes = 0;
  for (const auto& [name, b] : views) {
    std::size_t n = 0;
    for (const auto& other : views) n += other.second == b;
    if (n > votes) want = b, votes = n;
  }
  for (const auto& [name, b] : views)
    if (b != want)
      fail(where, name, ".batch() must equal the batch of the other views (expected ", want, ", got ", b, ")");
}

/// v and out alone: pointers, strides, Dv >= 1.
template <class TV, class TO>
std::pair<extent, extent> check_value_views(const char* where, const tensor_view<TV>& v,
                                            const tensor_view<TO>& out) {
  const extent ev = check_view(where, "v", v), eo = check_view(where, "out", out);
  if (v.dim() == 0) fail(where, "v.dim() (Dv) must be >= 1 (got 0)");
  return {ev, eo};
}

/// Aliasing: out must not overlap itself, an input or the LSE, nor the LSE an input;
/// the inputs are every view and span the call reads.
template <class TO>
void check_value_rules(const char* where, const score_extents& e, const std::pair<extent, extent>& value_extents,
                       const tensor_view<TO>& out) {
  const auto& [ev, eo] = value_extents;
  check_no_self_overlap(where, "out", out);
  const std::pair<extent, const char*> inputs[] = {{e.q, "q"},
                                                   {e.k, "k"},
                                                   {ev, "v"},
                                                   {e.additive, "options.additive_mask"},
                                                   {e.boolean, "options.boolean_mask"},
                                                   {e.alibi_slopes, "options.alibi_slopes"},
                                                   {e.head_scale, "options.head_scale"},
                                                   {e.k_scale, "options.k_scale"},
                                                   {e.v_scale, "options.v_scale"}};
  for (const auto& [output, output_name] : {std::pair{eo, "out"}, std::pair{e.lse, "options.lse"}})
    for (const auto& [in, name] : inputs)
      if (output.overlaps(in))
        fail(where, output_name, " overlaps the memory of ", name, "; outputs must not alias inputs");
  if (eo.overlaps(e.lse)) fail(where, "options.lse overlaps the memory of out");
}

/// options.isa: automatic, or a simd_isa value whose path this CPU and build run.
inline void check_isa_available(const char* fn, simd_isa requested) {
  check_enum(fn, "options.isa", "simd_isa", requested, simd_isa::avx512_bf16);
  if (requested == simd_isa::automatic) return;
  if (!cpu_runs(requested))
    fail(fn, "options.isa = ", isa_name(requested), " is not available on this CPU or build (available up to ",
         isa_name(default_isa()), ")");
}

/// The path a call runs: options.isa once checked, or the default for automatic.
inline simd_isa resolve_isa(simd_isa requested, const char* fn) {
  check_isa_available(fn, requested);
  return requested == simd_isa::automatic ? default_isa() : requested;
}

/// All the rules of options.hpp for attention(q, k, v, out, options), in the
/// order of the header comment.
template <class TQ, class K, class TV, class TO>
void check_attention(const char* where, const tensor_view<TQ>& q, const K& k,
                     const tensor_view<TV>& v, const tensor_view<TO>& out,
                     const attention_options& opt) {
  score_extents e = check_score_views(where, q, k);
  const auto value_extents = check_value_views(where, v, out);
  check_batch(where, {{{"q", q.batch()}, {"k", k.batch()}, {"v", v.batch()}, {"out", out.batch()}}});
  check_pairs(where, q, k.heads(), k.seq(), v, out, &opt);
  expect_equal(where, "k.dim() must equal q.dim() (Dk)", q.dim(), k.dim());
  expect_equal(where, "out.dim() must equal v.dim() (Dv)", v.dim(), out.dim());
  check_score_rules(where, q, k, opt, e);
  e.k_scale = check_kv_scale<typename K::element_type>(where, "options.k_scale", opt.k_scale, k.batch(), k.heads(),
                                                       k.seq());
  e.v_scale = check_kv_scale<TV>(where, "options.v_scale", opt.v_scale, v.batch(), v.heads(), v.seq());
  check_value_rules(where, e, value_extents, out);
  check_isa_available(where, opt.isa);  // empty calls too: attention() returns before its kernel
}

/// attention_backward (backward.hpp): the forward's rules on (q, k, v, out, options),
/// then lse [B, Hq, Nq, 1], dout shaped like out, dq like q, dk like k, dv like v;
/// each gradient distinct in itself, from the other two and from every input.
template <class T>
void check_attention_backward(const char* where, const tensor_view<const T>& q, const tensor_view<const T>& k,
                              const tensor_view<const T>& v, const tensor_view<const T>& out,
                              const tensor_view<const float>& lse, const tensor_view<const T>& dout,
                              const tensor_view<T>& dq, const tensor_view<T>& dk, const tensor_view<T>& dv,
                              const attention_options& opt) {
  check_attention(where, q, k, v, out, opt);
  const std::size_t B = q.batch(), Hq = q.heads(), Hkv = k.heads(), Nq = q.seq(), Nk = k.seq();
  const extent e_lse = check_view(where, "lse", lse), e_dout = check_view(where, "dout", dout);
  const extent e_dq = check_view(where, "dq", dq), e_dk = check_view(where, "dk", dk),
               e_dv = check_view(where, "dv", dv);
  check_broadcast(where, "lse", lse, B, Hq, Nq, 1, false, lse_axes);
  check_broadcast(where, "dout", dout, B, Hq, Nq, v.dim(), false, {"B", "Hq", "Nq", "Dv"});
  check_broadcast(where, "dq", dq, B, Hq, Nq, q.dim(), false, {"B", "Hq", "Nq", "Dk"});
  check_broadcast(where, "dk", dk, B, Hkv, Nk, q.dim(), false, {"B", "Hkv", "Nk", "Dk"});
  check_broadcast(where, "dv", dv, B, Hkv, Nk, v.dim(), false, {"B", "Hkv", "Nk", "Dv"});
  check_no_self_overlap(where, "dq", dq);
  check_no_self_overlap(where, "dk", dk);
  check_no_self_overlap(where, "dv", dv);
  const std::pair<extent, const char*> inputs[] = {
      {check_view(where, "q", q), "q"},     {check_view(where, "k", k), "k"},
      {check_view(where, "v", v), "v"},     {check_view(where, "out", out), "out"},
      {e_lse, "lse"},                       {e_dout, "dout"},
      {opt.additive_mask.is_set() ? check_view(where, "", opt.additive_mask) : extent{}, "options.additive_mask"},
      {opt.boolean_mask.is_set() ? check_view(where, "", opt.boolean_mask) : extent{}, "options.boolean_mask"},
      {opt.alibi_slopes.empty() ? extent{} : span_extent(where, "", opt.alibi_slopes), "options.alibi_slopes"},
      {opt.head_scale.empty() ? extent{} : span_extent(where, "", opt.head_scale), "options.head_scale"}};
  const std::pair<extent, const char*> grads[] = {{e_dq, "dq"}, {e_dk, "dk"}, {e_dv, "dv"}};
  for (const auto& [eg, gname] : grads) {
    for (const auto& [ei, iname] : inputs)
      if (eg.overlaps(ei)) fail(where, gname, " overlaps the memory of ", iname, "; gradients must not alias inputs");
    for (const auto& [eo, oname] : grads)
      if (gname != oname && eg.overlaps(eo)) fail(where, gname, " overlaps the memory of ", oname);
  }
}

/// pack_key_blocks / unpack_key_blocks: one shape, valid views, no overlap; `to_blocks`
/// says which side is written.
template <class TR, class TB>
void check_key_copy(const char* where, const tensor_view<TR>& rows, const key_blocks_view<TB>& blocks,
                    bool to_blocks) {
  expect_equal(where, "rows.batch() must equal blocks.batch()", blocks.batch(), rows.batch());
  expect_equal(where, "rows.heads() must equal blocks.heads()", blocks.heads(), rows.heads());
  expect_equal(where, "rows.seq() must equal blocks.seq()", blocks.seq(), rows.seq());
  expect_equal(where, "rows.dim() must equal blocks.dim()", blocks.dim(), rows.dim());
  const extent r = check_view(where, "rows", rows), b = check_view(where, "blocks", blocks);
  if (to_blocks) {
    check_no_self_overlap(where, "blocks", blocks.storage());
    if (b.overlaps(r)) fail(where, "blocks overlaps the memory of rows");
  } else {
    check_no_self_overlap(where, "rows", rows);
    if (r.overlaps(b)) fail(where, "rows overlaps the memory of blocks");
  }
}

/// Whether a and b are the same view of the same memory (data and strides).
template <class A, class B>
bool same_view(const tensor_view<A>& a, const tensor_view<B>& b) {
  return static_cast<const void*>(a.data()) == static_cast<const void*>(b.data()) &&
         a.batch_stride() == b.batch_stride() && a.head_stride() == b.head_stride() &&
         a.seq_stride() == b.seq_stride();
}

/// merge_states (merge.hpp): every view alone; o_b, out and the LSEs shaped like
/// o_a; no overlap but out being o_a or o_b itself, and lse_out lse_a or lse_b.
template <class OA, class LA, class OB, class LB, class OO>
void check_merge_states(const tensor_view<OA>& o_a, const tensor_view<LA>& lse_a, const tensor_view<OB>& o_b,
                        const tensor_view<LB>& lse_b, const tensor_view<OO>& out,
                        const tensor_view<float>& lse_out) {
  const char* where = "merge_states";
  const extent ea = check_view(where, "o_a", o_a), eb = check_view(where, "o_b", o_b),
               ela = check_view(where, "lse_a", lse_a), elb = check_view(where, "lse_b", lse_b),
               eo = check_view(where, "out", out);
  const std::size_t B = o_a.batch(), H = o_a.heads(), N = o_a.seq(), D = o_a.dim();
  check_broadcast(where, "o_b", o_b, B, H, N, D, false);
  check_broadcast(where, "out", out, B, H, N, D, false);
  check_broadcast(where, "lse_a", lse_a, B, H, N, 1, false);
  check_broadcast(where, "lse_b", lse_b, B, H, N, 1, false);
  check_no_self_overlap(where, "out", out);
  const bool has_lse = lse_out.is_set();
  extent el;
  if (has_lse) {
    el = check_view(where, "lse_out", lse_out);
    check_broadcast(where, "lse_out", lse_out, B, H, N, 1, false);
    check_no_self_overlap(where, "lse_out", lse_out);
  }
  const bool out_in_place = same_view(out, o_a) || same_view(out, o_b);
  const bool lse_in_place = has_lse && (same_view(lse_out, lse_a) || same_view(lse_out, lse_b));
  for (const auto& [e, name] : {std::pair{ea, "o_a"}, std::pair{eb, "o_b"}}) {
    if (!out_in_place && eo.overlaps(e))
      fail(where, "out overlaps the memory of ", name, " without being the same view");
    if (el.overlaps(e)) fail(where, "lse_out overlaps the memory of ", name);
  }
  for (const auto& [e, name] : {std::pair{ela, "lse_a"}, std::pair{elb, "lse_b"}}) {
    if (eo.overlaps(e)) fail(where, "out overlaps the memory of ", name);
    if (!lse_in_place && el.overlaps(e))
      fail(where, "lse_out overlaps the memory of ", name, " without being the same view");
  }
  if (eo.overlaps(el)) fail(where, "lse_out overlaps the memory of out");
}


/// rotary_embedding (rope.hpp): base finite and > 1, scaling finite and > 0, and an
/// even head_dim >= 2 when the style rotates.
inline void check_rope_args(double base, double scaling, bool rotates, std::size_t head_dim) {
  const char* where = "rotary_embedding";
  if (!(std::isfinite(base) && base > 1)) fail(where, "rope base must be finite and > 1 (got ", base, ")");
  if (!(std::isfinite(scaling) && scaling > 0))
    fail(where, "rope scaling must be finite and > 0 (got ", scaling, ")");
  if (rotates && (head_dim == 0 || head_dim % 2 != 0))
    fail(where, "head_dim must be even and >= 2 for RoPE (got ", head_dim, ")");
}

/// heatmap_svg (heatmap.hpp): labels, when given (size > 0), one per row and one per
/// column of p.
inline void check_heatmap_labels(std::size_t query_labels, std::size_t key_labels, std::size_t rows,
                                 std::size_t cols) {
  if (query_labels != 0)
    expect_equal("heatmap_svg", "query_labels.size() must equal the rows of p", rows, query_labels);
  if (key_labels != 0)
    expect_equal("heatmap_svg", "key_labels.size() must equal the columns of p (Nk)", cols, key_labels);
}

/// heads_html (heatmap.hpp): captions, when given, one per head.
inline void check_heads_html(std::size_t heads, std::size_t captions) {
  if (captions != 0) expect_equal("heads_html", "captions.size() must equal heads.size()", heads, captions);
}

}  // namespace headwise::detail
