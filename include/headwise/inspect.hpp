// headwise/inspect.hpp — looking inside attention: exact probabilities on demand
// and per-head statistics, without ever holding N×N for every head.
//
//   q [B, Hq, Nq, Dk]   k [B, Hkv, Nk, Dk]   opt: the options of the attention() call
//   attention_probabilities(q, k, opt, b, h, r0, r1) → [r1 − r0 × Nk] rows of head (b, h)
//   head_probabilities(q, k, opt, b, h)               → the whole [Nq × Nk] of one head
//   layer_probabilities(q, k, opt, b)                 → that for every head (asked for only)
//   attention_statistics(q, k, opt, stats_opt)        → one head_statistics per (b, h)
//   k: rows, key blocks or a key_view (key_view.hpp), read in place
//
// Probabilities come from the fast pass: attention() writes the LSE of every row
// (options.lse), and p_ij = exp(s_ij − lse_i) needs only the logits of the rows
// asked for, recomputed with the same score_rules (same masks, ALiBi, softcap,
// scale) by the plain kernel's own row_logits (kernels/plain.hpp). A block costs
// 2·rows·Nvis·Dk FLOPs and rows·Nk memory; for one head of 4096 tokens at Dk = 128
// that is 4.3 GFLOP and 64 MiB, against B·Hq times that for the eager N×N route.
// The LSE is stored as float, so p carries its rounding, a relative |lse|·2^-24,
// even when the compute type is double (statistics use their own LSE instead).
//
// Statistics stream: each task takes a block of 64 query rows of one head, holds
// one Nk-long row buffer per worker, computes the row's exact softmax (own max and
// sum, as the kernels do) and folds it into sums. Memory is O(Nk) per worker plus
// one Nk vector of column sums per task; partial sums are reduced in task order,
// so the statistics are bitwise identical for any thread count.
//
// Definitions (per row i with at least one visible key; every mean is over those
// rows, counted in head_statistics::rows). A key is visible when options.hpp
// allows it and its logit is not -inf; n_i counts them. The causal alignment puts
// query i at key position pos_i = i + off (off = 0 for causal top_left, Nk − Nq
// otherwise: the diagonal of options.hpp).
//   entropy             H_i = −Σ p log p (nats)
//   normalised entropy  H_i / log n_i, in [0, 1]; 0 when n_i = 1 (one key is
//                       attended with certainty: the limit of a focused row)
//   max probability     max_j p_ij
//   received            column sums Σ_i p_ij over all rows (H2O's eviction score)
//   sink share          Σ_{j < sink_tokens} p_ij
//   previous token      p_i,(pos_i − 1), averaged over the rows where key pos_i − 1
//                       exists (0 <= pos_i − 1 < Nk); counted in previous_rows
//   distance            Σ_j p_ij |pos_i − j|, in keys
// With token ids (one per key position, Nk of them), as interpretability tools
// score heads; the rows are those whose position holds a token (0 <= pos_i < Nk)
// and which have a target, counted in duplicate_rows / induction_rows:
//   duplicate token     Σ p_ij over earlier positions j < pos_i with tokens[j] == tokens[pos_i]
//   induction           Σ p_i,(j+1) over j with j + 1 < pos_i and tokens[j] == tokens[pos_i]
//                       (the token that followed an earlier copy of the current one)
// A pruned head (head_scale 0) has no visible key: rows = 0 and every figure is 0,
// as its LSE is -inf and its probabilities are zero.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

#include "headwise/detail/internal_begin.hpp"

#include "headwise/detail/checks.hpp"
#include "headwise/detail/integer.hpp"
#include "headwise/detail/parallel.hpp"
#include "headwise/detail/score_rules.hpp"
#include "headwise/kernels/plain.hpp"
#include "headwise/key_view.hpp"
#include "headwise/options.hpp"
#include "headwise/tensor.hpp"

#include "headwise/detail/internal_end.hpp"

namespace headwise {

/// A dense row-major block of attention probabilities of head (batch, head):
/// rows first_row .. first_row + rows − 1 of the query axis, all cols = Nk keys.
template <class T>
struct probability_matrix {
  std::size_t batch = 0, head = 0, first_row = 0, rows = 0, cols = 0;
  std::vector<T> values;

  const T* row(std::size_t r) const { return values.data() + r * cols; }
  T operator()(std::size_t r, std::size_t c) const { return values[r * cols + c]; }
};

struct statistics_options {
  /// k in "share of attention on the first k keys" (attention sinks).
  std::size_t sink_tokens = 4;
  /// Token id of every key position (Nk entries); empty = no token scores.
  span<const std::int32_t> tokens;
  /// Worker threads; 0 = options.threads of the call (whose 0 means all cores).
  unsigned threads = 0;
};

/// Statistics of one (batch, query head); see the header comment for definitions.
struct head_statistics {
  std::size_t batch = 0, head = 0;
  std::size_t rows = 0;  ///< rows with a visible key: every mean is over these
  double mean_entropy = 0;
  double mean_normalized_entropy = 0;
  double mean_max_probability = 0;
  double sink_share = 0;
  double previous_token = 0;
  std::size_t previous_rows = 0;
  double mean_distance = 0;
  double duplicate_token = 0;
  std::size_t duplicate_rows = 0;
  double induction = 0;
  std::size_t induction_rows = 0;
  std::vector<double> received;  ///< Nk column sums

  /// The key that receives the most attention and its share of all attention.
  std::pair<std::size_t, double> top_key() const {
    if (rows == 0 || received.empty()) return {0, 0.0};
    const auto it = std::max_element(received.begin(), received.end());
    return {std::size_t(it - received.begin()), *it / double(rows)};
  }
};

namespace detail {

/// Logits of query row (b, h, i) for all Nk keys: s[j] for a visible key, -inf
/// for a hidden one. Hidden keys cost nothing; a pruned head has none visible.
/// k_scale: options.k_scale, for int8 K.
template <class T, class S>
void all_logits(const tensor_view<const T>& q, const key_view<const S>& k, const score_rules<T>& rules,
                const tensor_view<const float>& k_scale, std::size_t b, std::size_t h, std::size_t i, T* s) {
  std::fill(s, s + rules.Nk, -std::numeric_limits<T>::infinity());
  if (rules.head_multiplier(h) != T(0)) kernels::plain::row_logits(q, k, rules, b, h, i, s, value_view<const float>(k_scale));
}

/// Natural-log LSE of a logit row; -inf when no key is visible.
template <class T>
T row_lse(const T* s, std::size_t n) {
  const T m = *std::max_element(s, s + n);
  if (m == -std::numeric_limits<T>::infinity()) return m;
  T l = 0;
  for (std::size_t j = 0; j < n; ++j) l += std::exp(s[j] - m);
  return m + std::log(l);
}

/// s[j] ← exp(s[j] − lse) in place; an empty row (lse = -inf) becomes zeros.
template <class T>
void exponentiate(T* s, std::size_t n, T lse) {
  const bool empty = lse == -std::numeric_limits<T>::infinity();
  for (std::size_t j = 0; j < n; ++j) s[j] = empty ? T(0) : std::exp(s[j] - lse);
}

/// A task sums its rows into a head_statistics; the per-row means are the sums
/// over `rows`, the detector scores the sums over their own row counts.
using stat_sum = double head_statistics::*;
using stat_count = std::size_t head_statistics::*;
constexpr stat_sum row_means[] = {&head_statistics::mean_entropy, &head_statistics::mean_normalized_entropy,
                                  &head_statistics::mean_max_probability, &head_statistics::sink_share,
                                  &head_statistics::mean_distance};
constexpr std::pair<stat_sum, stat_count> scores[] = {
    {&head_statistics::previous_token, &head_statistics::previous_rows},
    {&head_statistics::duplicate_token, &head_statistics::duplicate_rows},
    {&head_statistics::induction, &head_statistics::induction_rows}};

/// Adds the sums of one task into the head's.
inline void add_sums(head_statistics& st, const head_statistics& part) {
  st.rows += part.rows;
  for (stat_sum m : row_means) st.*m += part.*m;
  for (const auto& [sum, count] : scores) st.*sum += part.*sum, st.*count += part.*count;
  for (std::size_t j = 0; j < part.received.size(); ++j) st.received[j] += part.received[j];
}

/// Turns sums into means.
inline void finish_means(head_statistics& st) {
  for (stat_sum m : row_means) st.*m /= st.rows ? double(st.rows) : 1.0;
  for (const auto& [sum, count] : scores) st.*sum /= st.*count ? double(st.*count) : 1.0;
}

/// Folds the probability row p (n_visible keys visible) of the query at key
/// position pos into the sums.
template <class T>
void accumulate_row(head_statistics& acc, const T* p, std::size_t Nk, std::int64_t pos,
                    std::size_t n_visible, const statistics_options& so) {
  double entropy = 0, max_p = 0, sink = 0, distance = 0;
  for (std::size_t j = 0; j < Nk; ++j) {
    const double pj = double(p[j]);
    if (pj > 0) entropy -= pj * std::log(pj);
    max_p = std::max(max_p, pj);
    if (j < so.sink_tokens) sink += pj;
    distance += pj * double(std::llabs(pos - std::int64_t(j)));
    acc.received[j] += pj;
  }
  ++acc.rows;
  acc.mean_entropy += entropy;
  acc.mean_normalized_entropy += n_visible > 1 ? entropy / std::log(double(n_visible)) : 0.0;
  acc.mean_max_probability += max_p;
  acc.sink_share += sink;
  acc.mean_distance += distance;
  if (pos >= 1 && pos - 1 < std::int64_t(Nk)) {
    acc.previous_token += double(p[pos - 1]);
    ++acc.previous_rows;
  }
  if (so.tokens.empty() || pos < 0 || pos >= std::int64_t(Nk)) return;
  const std::int32_t token = so.tokens[std::size_t(pos)];
  double duplicate = 0, induction = 0;
  bool has_duplicate = false, has_induction = false;
  for (std::int64_t j = 0; j < pos; ++j) {
    if (so.tokens[std::size_t(j)] != token) continue;
    has_duplicate = true;
    duplicate += double(p[j]);
    if (j + 1 < pos) {
      has_induction = true;
      induction += double(p[j + 1]);
    }
  }
  if (has_duplicate) acc.duplicate_token += duplicate, ++acc.duplicate_rows;
  if (has_induction) acc.induction += induction, ++acc.induction_rows;
}

/// attention_probabilities, errors naming `where` (the public function called).
template <class TQ, class S>
probability_matrix<std::remove_const_t<TQ>> probabilities(const char* where, const tensor_view<TQ>& q,
                                                          const key_view<const S>& k, const attention_options& opt,
                                                          std::size_t batch, std::size_t head,
                                                          std::size_t row_begin, std::size_t row_end) {
  using T = std::remove_const_t<TQ>;
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "q must hold float or double (the compute type)");
  check_probabilities(where, q, k, opt, batch, head, row_begin, row_end);
  const std::size_t Nk = k.seq(), rows = row_end - row_begin;

  probability_matrix<T> pm{batch, head, row_begin, rows, Nk, std::vector<T>(rows * Nk)};
  if (rows == 0 || Nk == 0) return pm;
  const score_rules<T> rules(opt, q.seq(), Nk, q.dim());
  const tensor_view<const T> cq = q;
  const std::size_t rows_per_task = 16, tasks = ceil_div(rows, rows_per_task);
  parallel_for(tasks, resolve_threads(opt.threads, tasks), [&](std::size_t t, unsigned) {
    for (std::size_t r = t * rows_per_task; r < std::min(rows, (t + 1) * rows_per_task); ++r) {
      T* p = pm.values.data() + r * Nk;
      const std::size_t i = row_begin + r;
      all_logits(cq, k, rules, opt.k_scale, batch, head, i, p);
      exponentiate(p, Nk, static_cast<T>(opt.lse(batch, head, i, 0)));
    }
  });
  return pm;
}

}  // namespace detail

/// Probabilities of query rows [row_begin, row_end) of head (batch, head), exact
/// from the LSE that attention() wrote to opt.lse with these same options.
template <class TQ, class K, std::enable_if_t<detail::is_key_argument<K>, int> = 0>
probability_matrix<std::remove_const_t<TQ>> attention_probabilities(const tensor_view<TQ>& q, const K& k,
                                                                     const attention_options& opt,
                                                                     std::size_t batch, std::size_t head,
                                                                     std::size_t row_begin, std::size_t row_end) {
  return detail::probabilities("attention_probabilities", q, detail::key_view_of<K>(k), opt, batch, head,
                               row_begin, row_end);
}

/// The whole [Nq × Nk] probability matrix of one head: for small cases (plots, tests).
template <class TQ, class K, std::enable_if_t<detail::is_key_argument<K>, int> = 0>
probability_matrix<std::remove_const_t<TQ>> head_probabilities(const tensor_view<TQ>& q, const K& k,
                                                                const attention_options& opt,
                                                                std::size_t batch, std::size_t head) {
  return detail::probabilities("head_probabilities", q, detail::key_view_of<K>(k), opt, batch, head, 0, q.seq());
}

/// Every head's [Nq × Nk] matrix for one batch entry: Hq·Nq·Nk values, what a
/// layer heatmap (heatmap.hpp heads_html) draws. Only when asked for.
template <class TQ, class K, std::enable_if_t<detail::is_key_argument<K>, int> = 0>
std::vector<probability_matrix<std::remove_const_t<TQ>>> layer_probabilities(const tensor_view<TQ>& q, const K& k,
                                                                             const attention_options& opt,
                                                                             std::size_t batch) {
  std::vector<probability_matrix<std::remove_const_t<TQ>>> heads;
  for (std::size_t h = 0; h < q.heads(); ++h)
    heads.push_back(
        detail::probabilities("layer_probabilities", q, detail::key_view_of<K>(k), opt, batch, h, 0, q.seq()));
  return heads;
}

/// Streaming statistics of every (batch, query head), indexed b · Hq + h.
template <class TQ, class K, std::enable_if_t<detail::is_key_argument<K>, int> = 0>
std::vector<head_statistics> attention_statistics(const tensor_view<TQ>& q, const K& k_arg,
                                                  const attention_options& opt,
                                                  const statistics_options& so = {}) {
  using T = std::remove_const_t<TQ>;
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "q must hold float or double (the compute type)");
  constexpr const char* where = "attention_statistics";
  const detail::key_view_of<K> k(k_arg);
  detail::check_statistics(where, q, k, opt, so.tokens);

  const std::size_t B = q.batch(), Hq = q.heads(), Nq = q.seq(), Nk = k.seq();
  std::vector<head_statistics> stats(B * Hq);
  for (std::size_t t = 0; t < stats.size(); ++t) {
    stats[t].batch = t / Hq;
    stats[t].head = t % Hq;
    stats[t].received.assign(Nk, 0.0);
  }
  if (Nq == 0 || Nk == 0) return stats;

  const detail::score_rules<T> rules(opt, Nq, Nk, q.dim());
  const tensor_view<const T> cq = q;
  constexpr std::size_t rows_per_task = 64;
  const std::size_t blocks = detail::ceil_div(Nq, rows_per_task), tasks = B * Hq * blocks;
  const unsigned workers = detail::resolve_threads(so.threads ? so.threads : opt.threads, tasks);
  std::vector<std::vector<T>> row_buffer(workers, std::vector<T>(Nk));
  std::vector<head_statistics> sums(tasks);

  detail::parallel_for(tasks, workers, [&](std::size_t task, unsigned w) {
    const std::size_t bh = task / blocks, blk = task % blocks, b = bh / Hq, h = bh % Hq;
    head_statistics& acc = sums[task];
    acc.received.assign(Nk, 0.0);
    T* p = row_buffer[w].data();
    for (std::size_t i = blk * rows_per_task; i < std::min(Nq, (blk + 1) * rows_per_task); ++i) {
      detail::all_logits(cq, k, rules, opt.k_scale, b, h, i, p);
      const auto n_visible = std::size_t(
          std::count_if(p, p + Nk, [](T s) { return s != -std::numeric_limits<T>::infinity(); }));
      if (n_visible == 0) continue;
      detail::exponentiate(p, Nk, detail::row_lse(p, Nk));
      detail::accumulate_row(acc, p, Nk, std::int64_t(i) + rules.off, n_visible, so);
    }
  });

  for (std::size_t task = 0; task < tasks; ++task) detail::add_sums(stats[task / blocks], sums[task]);
  for (head_statistics& st : stats) detail::finish_means(st);
  return stats;
}

}  // namespace headwise
