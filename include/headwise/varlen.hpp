// headwise/varlen.hpp — attention over a batch of sequences of different lengths:
// packed (FlashAttention's varlen), padded with per-sequence lengths, or in pages.
//
//   attention_varlen(q, k, v, out, batch, options)
//   attention_varlen(q, kv_pages, out, batch, options)
//
//   q, out, options.lse  packed [1, H, total_q, ·] with batch.cu_seqlens_q (B + 1
//                        offsets), or [B, H, Nq, ·]: sequence b's queries are rows
//                        cu_seqlens_q[b] .. cu_seqlens_q[b + 1], or batch entry b
//   k, v                 packed [1, Hkv, total_k, ·] with batch.cu_seqlens_k, or
//                        [B, Hkv, Nk, ·]: sequence b's keys start at row
//                        cu_seqlens_k[b], or at batch entry b's row 0
//   kv_pages             a paged_kv_view (paged_view.hpp): sequence b's keys are the
//                        rows of its block-table row, in order
//   keys used            batch.seqused_k[b] when given (required with pages), else
//                        cu_seqlens_k[b + 1] − cu_seqlens_k[b], else Nk
// Semantics: sequence b is the attention() call on its own queries and keys, with its
// own Nq_b and Nk_b: causal bottom_right puts its last query on its last key, and the
// window, sinks, ALiBi, softcap and head_scale apply as options.hpp says. It is also
// what runs: one kernel_call per sequence (batch-1 views, each sequence's own rules),
// so no FLOP is spent on padding, no sequence reads another's keys, and each
// sequence's output equals attention() on it alone, bit for bit. The calls whose Nq_b
// and group choose decode (attention.hpp's runs_decode) run as one split-KV run, the
// others as one flash run; each run is one parallel_for over every sequence's tasks,
// so one long sequence spreads over all workers while short ones fill in, and the
// results are bitwise identical for every thread count. A sequence with no queries
// costs nothing; one with no keys writes zeros and LSE −inf.
// int8 K/V (quantize.hpp): options.k_scale / v_scale shaped and packed as k, or with
// pages the view's k_scale_pages / v_scale_pages, paged as the rows.
// Masks (additive, boolean) are per-call tensors, so attention_varlen takes none (an
// error). The per-sequence calls live in the workspace (options.scratch or the
// thread's own), so a serving loop allocates nothing after its first steps.
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>
#include <type_traits>

#include "headwise/detail/internal_begin.hpp"

#include "headwise/attention.hpp"
#include "headwise/detail/checks_varlen.hpp"
#include "headwise/key_view.hpp"
#include "headwise/paged_view.hpp"
#include "headwise/tensor.hpp"
#include "headwise/workspace.hpp"

#include "headwise/detail/internal_end.hpp"

namespace headwise {

namespace detail {

/// Batch entry b of t as a batch-1 view of its first `seq` rows.
template <class T>
tensor_view<T> batch_entry(const tensor_view<T>& t, std::size_t b, std::size_t seq) {
  return tensor_view<T>(t.data() + std::ptrdiff_t(b) * t.batch_stride(), 1, t.heads(), seq, t.dim(), t.batch_stride(),
                        t.head_stride(), t.seq_stride());
}

/// Sequence b's rows of a view of q's layout (out, lse): packed or batched.
template <class T>
tensor_view<T> query_rows(const tensor_view<T>& t, const varlen_batch& batch, std::size_t b, std::size_t nq) {
  if (!t.is_set()) return t;
  return batch.cu_seqlens_q.empty() ? batch_entry(t, b, nq) : t.seq_slice(std::size_t(batch.cu_seqlens_q[b]), nq);
}

/// One sequence's K and V as the kernels read them, with int8's scales.
template <class S>
struct sequence_kv {
  key_view<const S> k;
  value_view<const S> v;
  value_view<const float> k_scale, v_scale;
};

/// Builds one kernel_call per sequence with queries, decode calls first, in the
/// workspace's call buffer, and runs them. keys_of(b, nk) gives sequence b's
/// sequence_kv.
template <class TQ, class S, class TO, class KeysOf>
void run_varlen(const tensor_view<TQ>& q, const tensor_view<TO>& out, const varlen_lengths& lengths,
                std::size_t kv_heads, KeysOf&& keys_of, const attention_options& opt) {
  using Q = std::remove_const_t<TQ>;
  using T = compute_type<Q>;
  using call_t = kernel_call<T, S, Q, TO>;
  static_assert(std::is_trivially_destructible_v<call_t> && std::is_trivially_destructible_v<score_rules<T>>);
  workspace& ws = opt.scratch ? *opt.scratch : thread_workspace();
  const varlen_batch& batch = lengths.lens;
  const std::size_t B = lengths.batch;
  const std::size_t group = q.heads() / kv_heads;
  std::size_t n = 0, decodes = 0;
  for (std::size_t b = 0; b < B; ++b) {
    const std::size_t nq = lengths.queries(b);
    if (nq == 0) continue;
    ++n;
    decodes += runs_decode(opt, nq, group);
  }
  if (n == 0) return;
  scratch_carver count;
  count.take<call_t>(n);
  count.take<score_rules<T>>(n);
  scratch_carver carver(workspace_access::calls(ws, count.bytes()));
  call_t* calls = carver.take<call_t>(n);
  score_rules<T>* rules = carver.take<score_rules<T>>(n);
  std::size_t next_decode = 0, next_flash = decodes;
  for (std::size_t b = 0; b < B; ++b) {
    const std::size_t nq = lengths.queries(b), nk = lengths.keys(b);
    if (nq == 0) continue;
    const std::size_t i = runs_decode(opt, nq, group) ? next_decode++ : next_flash++;
    const sequence_kv<S> kv = keys_of(b, nk);
    new (rules + i) score_rules<T>(opt, nq, nk, q.dim());
    new (calls + i) call_t{query_rows(q, batch, b, nq),
                           kv.k,
                           kv.v,
                           query_rows(out, batch, b, nq),
                           query_rows(opt.lse, batch, b, nq),
                           rules[i],
                           opt.threads,
                           ws,
                           kv.k_scale,
                           kv.v_scale};
  }
  run_kernels(kernel_calls<T, S, Q, TO>(calls, n), decodes, opt);
}

}  // namespace detail

/// K/V as tensor_views: packed with batch.cu_seqlens_k, or [B, Hkv, Nk, D].
template <class TQ, class TK, class TV, class TO,
          std::enable_if_t<detail::attention_types_ok<TQ, TK, TV, TO>, int> = 0>
void attention_varlen(const tensor_view<TQ>& q, const tensor_view<TK>& k, const tensor_view<TV>& v,
                      const tensor_view<TO>& out, const varlen_batch& batch, const attention_options& opt = {}) {
  using S = std::remove_const_t<TV>;
  const detail::varlen_lengths lengths = detail::check_varlen("attention_varlen", q, k, v, out, batch, opt);
  const tensor_view<const S> ks(k), vs(v);
  detail::run_varlen<TQ, S>(q, out, lengths, k.heads(),
                            [&](std::size_t b, std::size_t nk) {
                              auto rows = [&](const auto& t) {  // sequence b's rows of a K-shaped view
                                if (!t.is_set()) return t;
                                return batch.cu_seqlens_k.empty()
                                           ? detail::batch_entry(t, b, nk)
                                           : t.seq_slice(std::size_t(batch.cu_seqlens_k[b]), nk);
                              };
                              return detail::sequence_kv<S>{rows(ks), rows(vs), rows(opt.k_scale), rows(opt.v_scale)};
                            },
                            opt);
}

/// K/V in pages: sequence b's keys are the first seqused_k[b] rows of its pages.
template <class TQ, class TS, class TO, std::enable_if_t<detail::attention_types_ok<TQ, TS, TS, TO>, int> = 0>
void attention_varlen(const tensor_view<TQ>& q, const paged_kv_view<TS>& kv, const tensor_view<TO>& out,
                      const varlen_batch& batch, const attention_options& opt = {}) {
  using S = std::remove_const_t<TS>;
  const detail::varlen_lengths lengths = detail::check_varlen_paged("attention_varlen", q, kv, out, batch, opt);
  const tensor_view<const S> kp(kv.k_pages), vp(kv.v_pages);
  detail::run_varlen<TQ, S>(q, out, lengths, kv.heads(),
                            [&](std::size_t b, std::size_t nk) {
                              const std::int32_t* table = kv.pages_of(b);
                              auto rows = [&](const auto& pool) {  // sequence b's rows of a pool
                                using E = typename std::remove_reference_t<decltype(pool)>::element_type;
                                return pool.is_set() ? paged_rows_view<E>(pool, table, 1, 0, nk)
                                                     : paged_rows_view<E>();
                              };
                              return detail::sequence_kv<S>{rows(kp), rows(vp), rows(kv.k_scale_pages),
                                                            rows(kv.v_scale_pages)};
                            },
                            opt);
}

}  // namespace headwise
