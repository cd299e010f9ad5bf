// headwise/diagnostics.hpp — verdicts on heads: collapse, redundancy, roles.
//
//   q [B, Hq, Nq, Dk]   k [B, Hkv, Nk, Dk]   opt: the options of the attention() call
//   stats: attention_statistics(q, k, opt, …) (inspect.hpp), one per (b, h)
//   detect_collapse(stats, c)          → one collapse_verdict per (b, h)
//   head_roles(stats, threshold)       → previous-token / duplicate-token / induction flags
//   head_redundancy(q, k, opt)         → [Hq × Hq] Jensen–Shannon divergence, in bits
//                                        (k in rows or in key blocks)
//   prunable_heads(redundancy, stats)  → heads to prune, most redundant first
//
// Collapse: a head is collapsed when its rows are nearly one-hot on average
// (mean normalised entropy below entropy_threshold: low entropy), or when one key
// takes more than key_share_threshold of all its attention (a dominant key, the
// attention-sink failure). The two are reported apart: a previous-token head has
// low entropy and is still useful; the verdict says which rule fired.
//
// Redundancy: two heads look at the same input the same way when their rows are
// close as distributions. For every row i and pair (a, b),
//   JS_i = ½ KL(p_a ‖ m) + ½ KL(p_b ‖ m), m = ½ (p_a + p_b), in bits (0 … 1),
// averaged over the rows (of every batch) where both heads see a key; a pair with
// no such row gets 1, the bound, and never counts as a duplicate. One streaming
// pass: a task is a block of 32 query rows of one batch; a worker holds the rows
// of all Hq heads and their logs (2 × [Hq × Nk] scratch), never N×N. Cost per
// row: Hq·Nvis·Dk FLOPs for the logits, Hq·Nk logarithms of p and ½·Hq²·Nk of
// the pair means.
//
// Pruning rule: walk the near-duplicate pairs (JS < max_js) from the most
// similar; when both heads of a pair are still kept, prune the one with the higher
// mean normalised entropy (the blurrier copy; on a tie, the higher index) and
// record its twin. A pair with a head already pruned prunes nothing: the other
// head stays as the representative of the group.
//
// Roles follow the detectors of interpretability tools (TransformerLens
// detect_head): a head is previous-token / duplicate-token / induction when that
// score of inspect.hpp exceeds the threshold (default 0.5: most of its attention).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <type_traits>
#include <utility>
#include <vector>

#include "headwise/detail/internal_begin.hpp"

#include "headwise/detail/parallel.hpp"
#include "headwise/detail/score_rules.hpp"
#include "headwise/inspect.hpp"

#include "headwise/detail/internal_end.hpp"

namespace headwise {

struct collapse_options {
  double entropy_threshold = 0.1;    ///< mean normalised entropy below this: low entropy
  double key_share_threshold = 0.5;  ///< one key taking more than this share: dominant key
};

struct collapse_verdict {
  std::size_t batch = 0, head = 0;
  bool low_entropy = false;
  bool dominant_key = false;
  std::size_t key = 0;     ///< the key receiving the most attention
  double key_share = 0;    ///< its share of the head's attention
  bool collapsed() const { return low_entropy || dominant_key; }
};

inline std::vector<collapse_verdict> detect_collapse(const std::vector<head_statistics>& stats,
                                                     const collapse_options& c = {}) {
  std::vector<collapse_verdict> out;
  out.reserve(stats.size());
  for (const head_statistics& st : stats) {
    const auto [key, share] = st.top_key();
    out.push_back({st.batch, st.head, st.rows > 0 && st.mean_normalized_entropy < c.entropy_threshold,
                   share > c.key_share_threshold, key, share});
  }
  return out;
}

struct head_role {
  std::size_t batch = 0, head = 0;
  bool previous_token = false, duplicate_token = false, induction = false;
};

inline std::vector<head_role> head_roles(const std::vector<head_statistics>& stats,
                                         double threshold = 0.5) {
  std::vector<head_role> out;
  out.reserve(stats.size());
  for (const head_statistics& st : stats)
    out.push_back({st.batch, st.head, st.previous_rows > 0 && st.previous_token > threshold,
                   st.duplicate_rows > 0 && st.duplicate_token > threshold,
                   st.induction_rows > 0 && st.induction > threshold});
  return out;
}

/// Mean pairwise Jensen–Shannon divergence between the query heads.
struct redundancy_report {
  std::size_t heads = 0;
  std::vector<double> js;          ///< [heads × heads], bits, symmetric, 0 on the diagonal
  std::vector<std::size_t> rows;   ///< rows compared per pair
  double operator()(std::size_t a, std::size_t b) const { return js[a * heads + b]; }
};

namespace detail {

/// JS divergence (bits) of two probability rows of length n, given their
/// logarithms (computed once per head and row: one log per key and pair remains).
/// Clamped at 0: rounding may take a sum of non-negative terms a hair below it.
template <class T>
double js_divergence(const T* p, const double* log_p, const T* q, const double* log_q, std::size_t n) {
  double kl = 0;
  for (std::size_t j = 0; j < n; ++j) {
    const double a = double(p[j]), b = double(q[j]);
    if (!(a > 0 || b > 0)) continue;
    const double log_m = std::log(0.5 * (a + b));
    if (a > 0) kl += a * (log_p[j] - log_m);
    if (b > 0) kl += b * (log_q[j] - log_m);
  }
  return std::max(0.0, 0.5 * kl / std::log(2.0));
}

}  // namespace detail

template <class TQ, class K, std::enable_if_t<detail::is_key_argument<K>, int> = 0>
redundancy_report head_redundancy(const tensor_view<TQ>& q, const K& k_arg, const attention_options& opt) {
  using T = std::remove_const_t<TQ>;
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "q must hold float or double (the compute type)");
  const detail::key_view_of<K> k(k_arg);
  detail::check_scores("head_redundancy", q, k, opt);
  const std::size_t B = q.batch(), Hq = q.heads(), Nq = q.seq(), Nk = k.seq();
  redundancy_report rep{Hq, std::vector<double>(Hq * Hq, 0.0), std::vector<std::size_t>(Hq * Hq, 0)};
  constexpr std::size_t rows_per_task = 32;
  const std::size_t blocks = detail::ceil_div(Nq, rows_per_task), tasks = B * blocks;
  if (Nk > 0 && tasks > 0) {
    const detail::score_rules<T> rules(opt, Nq, Nk, q.dim());
    const tensor_view<const T> cq = q;
    const unsigned workers = detail::resolve_threads(opt.threads, tasks);
    std::vector<std::vector<T>> scratch(workers, std::vector<T>(Hq * Nk));        // rows of all heads
    std::vector<std::vector<double>> logs(workers, std::vector<double>(Hq * Nk));  // their logarithms
    std::vector<std::vector<double>> js_sum(tasks, std::vector<double>(Hq * Hq, 0.0));
    std::vector<std::vector<std::size_t>> count(tasks, std::vector<std::size_t>(Hq * Hq, 0));
    detail::parallel_for(tasks, workers, [&](std::size_t task, unsigned w) {
      const std::size_t b = task / blocks, blk = task % blocks;
      T* rows = scratch[w].data();
      double* log_rows = logs[w].data();
      std::vector<char> seen(Hq);
      for (std::size_t i = blk * rows_per_task; i < std::min(Nq, (blk + 1) * rows_per_task); ++i) {
        for (std::size_t h = 0; h < Hq; ++h) {
          T* p = rows + h * Nk;
          detail::all_logits(cq, k, rules, opt.k_scale, b, h, i, p);
          const T lse = detail::row_lse(p, Nk);
          seen[h] = lse != -std::numeric_limits<T>::infinity();
          detail::exponentiate(p, Nk, lse);
          for (std::size_t j = 0; j < Nk; ++j) log_rows[h * Nk + j] = p[j] > 0 ? std::log(double(p[j])) : 0.0;
        }
        for (std::size_t a = 0; a < Hq; ++a)
          for (std::size_t c = a + 1; c < Hq; ++c)
            if (seen[a] && seen[c]) {
              js_sum[task][a * Hq + c] += detail::js_divergence(rows + a * Nk, log_rows + a * Nk, rows + c * Nk,
                                                                log_rows + c * Nk, Nk);
              ++count[task][a * Hq + c];
            }
      }
    });
    for (std::size_t task = 0; task < tasks; ++task)
      for (std::size_t e = 0; e < Hq * Hq; ++e) rep.js[e] += js_sum[task][e], rep.rows[e] += count[task][e];
  }
  for (std::size_t a = 0; a < Hq; ++a)
    for (std::size_t c = a + 1; c < Hq; ++c) {
      const std::size_t e = a * Hq + c;
      rep.js[e] = rep.rows[e] ? rep.js[e] / double(rep.rows[e]) : 1.0;
      rep.js[c * Hq + a] = rep.js[e];
      rep.rows[c * Hq + a] = rep.rows[e];
    }
  return rep;
}

struct prunable_head {
  std::size_t head = 0;  ///< the head to prune
  std::size_t twin = 0;  ///< the kept head it duplicates
  double js = 0;         ///< their divergence, bits
};

/// Heads to prune, most redundant first (rule in the header comment). stats may
/// hold several batches: a head's entropy is the row-weighted mean over them.
inline std::vector<prunable_head> prunable_heads(const redundancy_report& rep,
                                                 const std::vector<head_statistics>& stats,
                                                 double max_js = 0.05) {
  const std::size_t H = rep.heads;
  detail::check_statistics_heads("prunable_heads", stats, H);
  std::vector<double> entropy(H, 0.0), rows(H, 0.0);
  for (const head_statistics& st : stats) {
    entropy[st.head] += st.mean_normalized_entropy * double(st.rows);
    rows[st.head] += double(st.rows);
  }
  for (std::size_t h = 0; h < H; ++h) entropy[h] = rows[h] > 0 ? entropy[h] / rows[h] : 0.0;

  std::vector<std::pair<std::size_t, std::size_t>> pairs;
  for (std::size_t a = 0; a < H; ++a)
    for (std::size_t b = a + 1; b < H; ++b)
      if (rep(a, b) < max_js) pairs.emplace_back(a, b);
  std::stable_sort(pairs.begin(), pairs.end(),
                   [&](const auto& x, const auto& y) { return rep(x.first, x.second) < rep(y.first, y.second); });
  std::vector<char> pruned(H, 0);
  std::vector<prunable_head> out;
  for (const auto& [a, b] : pairs) {
    if (pruned[a] || pruned[b]) continue;
    const bool drop_a = entropy[a] > entropy[b];  // tie: drop b, the higher index
    const std::size_t drop = drop_a ? a : b, keep = drop_a ? b : a;
    pruned[drop] = 1;
    out.push_back({drop, keep, rep(a, b)});
  }
  return out;
}

}  // namespace headwise
