// headwise/detail/checks_varlen.hpp — the argument rules of attention_varlen
// (varlen.hpp): every view, the offsets and lengths, the block table, the options,
// and aliasing, all checked before anything is written. Returns the per-sequence
// lengths the call then runs with.
#pragma once

#ifndef HEADWISE_INTERNAL
#error "headwise/detail/* is internal: include <headwise/headwise.hpp>"
#endif

#include <cstddef>
#include <cstdint>

#include "headwise/detail/checks.hpp"
#include "headwise/detail/integer.hpp"
#include "headwise/options.hpp"
#include "headwise/paged_view.hpp"
#include "headwise/tensor.hpp"

namespace headwise::detail {

/// Queries and keys of each sequence of a checked varlen_batch.
struct varlen_lengths {
  std::size_t batch = 0, nq = 0, nk = 0;  // B; Nq and Nk of batched (unpacked) views
  varlen_batch lens;

  std::size_t queries(std::size_t b) const {
    return lens.cu_seqlens_q.empty() ? nq : std::size_t(lens.cu_seqlens_q[b + 1] - lens.cu_seqlens_q[b]);
  }
  std::size_t keys(std::size_t b) const {
    if (!lens.seqused_k.empty()) return std::size_t(lens.seqused_k[b]);
    return lens.cu_seqlens_k.empty() ? nk : std::size_t(lens.cu_seqlens_k[b + 1] - lens.cu_seqlens_k[b]);
  }
};

/// Offsets: B + 1 of them, from 0, non-decreasing, ending at `total` (the token
/// axis they index).
inline void check_offsets(const char* where, const char* name, span<const std::int32_t> cu, std::size_t B,
                          std::size_t total, const char* axis) {
  if (cu.size() != B + 1) fail(where, name, ".size() must be the batch plus one (expected ", B + 1, ", got ", cu.size(), ")");
  if (cu.data() == nullptr) fail(where, name, ": data is null");
  if (cu[0] != 0) fail(where, name, "[0] must be 0 (got ", cu[0], ")");
  for (std::size_t b = 0; b < B; ++b)
    if (cu[b + 1] < cu[b]) fail(where, name, " must not decrease (", name, "[", b + 1, "] = ", cu[b + 1], " < ", cu[b], ")");
  if (std::size_t(cu[B]) != total)
    fail(where, name, "[B] must equal ", axis, " (expected ", total, ", got ", cu[B], ")");
}

/// What both forms share: the options (no masks), q/out/lse and their layout, the
/// offsets of q, seqused_k against each sequence's available keys; returns the
/// lengths. e gets q's and the LSE's extents for the alias checks that follow.
template <class TQ, class TO, class Avail>
varlen_lengths check_varlen_common(const char* where, const tensor_view<TQ>& q, const tensor_view<TO>& out,
                                   std::size_t kv_heads, std::size_t dk, std::size_t dv, std::size_t kv_batch,
                                   const varlen_batch& batch, const attention_options& opt, bool paged,
                                   score_extents& e, Avail&& available) {
  if (opt.additive_mask.is_set() || opt.boolean_mask.is_set())
    fail(where, "options.additive_mask and options.boolean_mask must be unset: masks are per call, "
                "attention_varlen takes none");
  e = check_score_views(where, q, tensor_view<const TQ>(nullptr, 0, kv_heads, 0, dk, 0, 0, 0));
  varlen_lengths L;
  L.lens = batch;
  const bool packed_q = !batch.cu_seqlens_q.empty();
  if (packed_q) {
    if (batch.cu_seqlens_q.size() < 1) fail(where, "batch.cu_seqlens_q must hold B + 1 offsets");
    L.batch = batch.cu_seqlens_q.size() - 1;
    expect_equal(where, "q.batch() must be 1 with batch.cu_seqlens_q (q packed)", std::size_t(1), q.batch());
    check_offsets(where, "batch.cu_seqlens_q", batch.cu_seqlens_q, L.batch, q.seq(), "q.seq()");
  } else {
    L.batch = q.batch();
    L.nq = q.seq();
  }
  if (!packed_q && !batch.cu_seqlens_k.empty())
    expect_equal(where, "batch.cu_seqlens_k.size() must be q.batch() + 1", L.batch + 1, batch.cu_seqlens_k.size());
  if (batch.cu_seqlens_k.empty() && !paged)
    expect_equal(where, "k.batch() must equal the batch (B sequences) when K/V are not packed", L.batch, kv_batch);
  if (paged && batch.seqused_k.empty()) fail(where, "batch.seqused_k must be given with K/V in pages");
  if (paged && !batch.cu_seqlens_k.empty()) fail(where, "batch.cu_seqlens_k must be empty with K/V in pages");
  if (!batch.seqused_k.empty()) {
    expect_equal(where, "batch.seqused_k.size() must equal the batch", L.batch, batch.seqused_k.size());
    if (batch.seqused_k.data() == nullptr) fail(where, "batch.seqused_k: data is null");
  }
  // The score rules on q with a stand-in k of the right heads and Dk (no masks to size).
  check_score_rules(where, q, tensor_view<const TQ>(nullptr, q.batch(), kv_heads, 0, dk, 0, 0, 0), opt, e);
  if (dv == 0) fail(where, "v.dim() (Dv) must be >= 1 (got 0)");
  expect_equal(where, "out.dim() must equal v.dim() (Dv)", dv, out.dim());
  expect_equal(where, "out.heads() must equal q.heads()", q.heads(), out.heads());
  expect_equal(where, "out.seq() must equal q.seq()", q.seq(), out.seq());
  expect_equal(where, "out.batch() must equal q.batch()", q.batch(), out.batch());
  for (std::size_t b = 0; b < L.batch; ++b) {
    const std::size_t have = available(b);
    if (!batch.seqused_k.empty()) {
      const std::int32_t used = batch.seqused_k[b];
      if (used < 0 || std::size_t(used) > have)
        fail(where, "batch.seqused_k[", b, "] must lie in [0, ", have, "], the keys sequence ", b, " has (got ", used,
             ")");
    }
  }
  check_isa_available(where, opt.isa);
  return L;
}

/// Aliasing: out and the LSE must not overlap each other, themselves or anything the
/// call reads (q, K, V or the pools, per-head parameters, offsets, lengths, table).
template <class TO>
void check_varlen_aliasing(const char* where, score_extents& e, extent ek, extent ev, const tensor_view<TO>& out,
                           const varlen_batch& batch, span<const std::int32_t> table,
                           span<const std::int32_t> seq_ids) {
  e.k = ek;
  const extent eo = check_view(where, "out", out);
  check_value_rules(where, e, {ev, eo}, out);
  for (const auto& [s, name] :
       {std::pair{batch.cu_seqlens_q, "batch.cu_seqlens_q"}, std::pair{batch.cu_seqlens_k, "batch.cu_seqlens_k"},
        std::pair{batch.seqused_k, "batch.seqused_k"}, std::pair{table, "the block table"},
        std::pair{seq_ids, "the paged view's seq_ids"}}) {
    const extent in = span_extent(where, name, s);
    if (eo.overlaps(in)) fail(where, "out overlaps the memory of ", name, "; outputs must not alias inputs");
    if (e.lse.overlaps(in)) fail(where, "options.lse overlaps the memory of ", name, "; outputs must not alias inputs");
  }
}

/// attention_varlen with K/V as tensor_views.
template <class TQ, class TK, class TV, class TO>
varlen_lengths check_varlen(const char* where, const tensor_view<TQ>& q, const tensor_view<TK>& k,
                            const tensor_view<TV>& v, const tensor_view<TO>& out, const varlen_batch& batch,
                            const attention_options& opt) {
  const extent ek = check_view(where, "k", k), ev = check_view(where, "v", v);
  expect_equal(where, "k.dim() must equal q.dim() (Dk)", q.dim(), k.dim());
  expect_equal(where, "v.heads() must equal k.heads()", k.heads(), v.heads());
  expect_equal(where, "v.seq() must equal k.seq()", k.seq(), v.seq());
  expect_equal(where, "v.batch() must equal k.batch()", k.batch(), v.batch());
  const bool packed_k = !batch.cu_seqlens_k.empty();
  if (packed_k) {
    expect_equal(where, "k.batch() must be 1 with batch.cu_seqlens_k (K/V packed)", std::size_t(1), k.batch());
    const std::size_t B = batch.cu_seqlens_q.empty() ? q.batch() : batch.cu_seqlens_q.size() - 1;
    check_offsets(where, "batch.cu_seqlens_k", batch.cu_seqlens_k, B, k.seq(), "k.seq()");
  }
  score_extents e;
  const varlen_lengths L = check_varlen_common(
      where, q, out, k.heads(), k.dim(), v.dim(), k.batch(), batch, opt, false, e, [&](std::size_t b) {
        return packed_k ? std::size_t(batch.cu_seqlens_k[b + 1] - batch.cu_seqlens_k[b]) : k.seq();
      });
  e.k_scale = check_kv_scale<TK>(where, "options.k_scale", opt.k_scale, k.batch(), k.heads(), k.seq());
  e.v_scale = check_kv_scale<TV>(where, "options.v_scale", opt.v_scale, v.batch(), v.heads(), v.seq());
  check_varlen_aliasing(where, e, ek, ev, out, batch, {}, {});
  return L;
}

/// attention_varlen with K/V in pages: the pools agree, the page size is a multiple
/// of 16, seq_ids name table rows, and every page a sequence uses is in the pool.
template <class TQ, class TS, class TO>
varlen_lengths check_varlen_paged(const char* where, const tensor_view<TQ>& q, const paged_kv_view<TS>& kv,
                                  const tensor_view<TO>& out, const varlen_batch& batch,
                                  const attention_options& opt) {
  const extent ek = check_view(where, "kv.k_pages", kv.k_pages), ev = check_view(where, "kv.v_pages", kv.v_pages);
  const std::size_t pages = kv.k_pages.batch(), ps = kv.page_size();
  expect_equal(where, "kv.k_pages.dim() must equal q.dim() (Dk)", q.dim(), kv.k_pages.dim());
  expect_equal(where, "kv.v_pages.batch() (pages) must equal kv.k_pages.batch()", pages, kv.v_pages.batch());
  expect_equal(where, "kv.v_pages.heads() must equal kv.k_pages.heads()", kv.heads(), kv.v_pages.heads());
  expect_equal(where, "kv.v_pages.seq() (page size) must equal kv.k_pages.seq()", ps, kv.v_pages.seq());
  if (ps == 0 || ps % 16 != 0)
    fail(where, "the page size (kv.k_pages.seq()) must be a positive multiple of 16 (got ", ps, ")");
  if (!kv.block_table.empty() && kv.block_table.data() == nullptr) fail(where, "kv.block_table: data is null");
  if (kv.pages_per_seq == 0 ? !kv.block_table.empty() : kv.block_table.size() % kv.pages_per_seq != 0)
    fail(where, "kv.block_table.size() must be a multiple of kv.pages_per_seq (got ", kv.block_table.size(), " and ",
         kv.pages_per_seq, ")");
  const std::size_t B = batch.cu_seqlens_q.empty() ? q.batch() : batch.cu_seqlens_q.size() - 1;
  if (!kv.seq_ids.empty()) {
    expect_equal(where, "kv.seq_ids.size() must equal the batch", B, kv.seq_ids.size());
    for (std::size_t b = 0; b < B; ++b)
      if (kv.seq_ids[b] < 0 || std::size_t(kv.seq_ids[b]) >= kv.table_rows())
        fail(where, "kv.seq_ids[", b, "] must name a row of the block table, in [0, ", kv.table_rows(), ") (got ",
             kv.seq_ids[b], ")");
  } else if (kv.table_rows() < B && kv.pages_per_seq > 0) {
    fail(where, "the block table must have a row per sequence (expected ", B, ", got ", kv.table_rows(), ")");
  }
  score_extents e;
  const varlen_lengths L = check_varlen_common(where, q, out, kv.heads(), kv.k_pages.dim(), kv.v_pages.dim(), 0,
                                               batch, opt, true, e, [&](std::size_t) {
                                                 return kv.table_rows() > 0 ? kv.pages_per_seq * ps : std::size_t(0);
                                               });
  for (std::size_t b = 0; b < L.batch; ++b) {
    const std::size_t used = detail::ceil_div(L.keys(b), ps);
    const std::int32_t* row = used ? kv.pages_of(b) : nullptr;
    for (std::size_t p = 0; p < used; ++p)
      if (row[p] < 0 || std::size_t(row[p]) >= pages)
        fail(where, "page ", p, " of sequence ", b, " is ", row[p], ", outside the pool's [0, ", pages, ")");
  }
  if (opt.k_scale.is_set() || opt.v_scale.is_set())
    fail(where, "options.k_scale and v_scale must be unset with K/V in pages: int8 scales come in the view's "
                "k_scale_pages and v_scale_pages");
  e.k_scale = check_kv_scale<TS>(where, "kv.k_scale_pages", kv.k_scale_pages, pages, kv.heads(), ps);
  e.v_scale = check_kv_scale<TS>(where, "kv.v_scale_pages", kv.v_scale_pages, pages, kv.heads(), ps);
  check_varlen_aliasing(where, e, ek, ev, out, batch, kv.block_table, kv.seq_ids);
  return L;
}

}  // namespace headwise::detail
