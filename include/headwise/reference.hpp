// headwise/reference.hpp — the oracle every kernel is tested against.
//
// Plain passes in the order options.hpp states the rules, one (batch, head,
// query) row at a time, with double accumulation and no optimisation: it must be
// obviously right, not fast. Its cost is O(Nq·Nk·(Dk + Dv)) time and O(Nk) memory.
//   pass 1: logits s_j and visibility of every key j (element-wise rules)
//   pass 2: m = max visible s_j;  l = Σ exp(s_j − m);  lse = m + log l
//   pass 3: out = Σ exp(s_j − lse) · v_j, times head_scale[h]
// Non-finite inputs follow options.hpp: a hidden key is never read, a visible NaN
// or +inf logit makes the row NaN, a visible key's NaN or infinite v reaches out.
// K/V of any storage type convertible to float (half, bfloat16) are read as such.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "headwise/detail/internal_begin.hpp"

#include "headwise/detail/checks.hpp"
#include "headwise/options.hpp"
#include "headwise/tensor.hpp"

#include "headwise/detail/internal_end.hpp"

namespace headwise::reference {

/// Widens a stored element to double; storage types (half, bfloat16) go through float.
template <class T>
double widen(const T& x) {
  if constexpr (std::is_arithmetic_v<T>)
    return static_cast<double>(x);
  else
    return static_cast<double>(static_cast<float>(x));
}

/// Is key j visible to query i under the causal, window and sink rules?
/// (The boolean and additive masks are applied by the caller.) The distance of
/// key j from query i's diagonal, j − (i + off), is summed from two terms of
/// opposite signs (or, for top_left, two of one sign subtracted), so no window or
/// size overflows it.
inline bool structurally_visible(const attention_options& opt, std::int64_t i, std::int64_t j,
                                 std::int64_t Nq, std::int64_t Nk) {
  const std::int64_t dist = opt.causal == causal_mode::top_left ? j - i : (j - Nk) + (Nq - i);
  if (opt.causal != causal_mode::none && dist > 0) return false;
  if (static_cast<std::uint64_t>(j) < opt.sink_tokens) return true;
  if (opt.window_left && dist < -*opt.window_left) return false;
  if (opt.window_right && dist > *opt.window_right) return false;
  return true;
}

template <class TQ, class TK, class TV, class TO>
void attention(const tensor_view<TQ>& q, const tensor_view<TK>& k, const tensor_view<TV>& v,
               const tensor_view<TO>& out, const attention_options& opt = {}) {
  static_assert(!std::is_const_v<TO>, "out must be a view of mutable data");
  detail::check_attention("reference::attention", q, k, v, out, opt);

  const std::size_t B = q.batch(), Hq = q.heads(), Hkv = k.heads(), Nq = q.seq(), Nk = k.seq();
  const std::size_t Dk = q.dim(), Dv = v.dim(), group = Hq / Hkv;
  const double scale = opt.scale ? *opt.scale : 1.0 / std::sqrt(static_cast<double>(Dk));
  const double neg_inf = -std::numeric_limits<double>::infinity();
  const bool has_add = opt.additive_mask.is_set();
  const bool has_bool = opt.boolean_mask.is_set();
  const bool has_lse = opt.lse.is_set();

  std::vector<double> s(Nk);
  std::vector<char> visible(Nk);
  std::vector<double> acc(Dv);
  for (std::size_t b = 0; b < B; ++b) {
    for (std::size_t h = 0; h < Hq; ++h) {
      const std::size_t hk = h / group;
      const double head_scale = opt.head_scale.empty() ? 1.0 : opt.head_scale[h];
      for (std::size_t i = 0; i < Nq; ++i) {
        // pass 1: logits and visibility; a visible logit of NaN or +inf leaves the row undefined
        const TQ* q_row = q.row(b, h, i);
        bool undefined = false;
        for (std::size_t j = 0; j < Nk; ++j) {
          const TK* k_row = k.row(b, hk, j);
          double dot = 0;
          for (std::size_t d = 0; d < Dk; ++d)
            dot += widen(q_row[d]) * widen(k_row[d]);
          double sij = scale * dot;
          if (opt.softcap > 0) sij = opt.softcap * std::tanh(sij / opt.softcap);
          if (!opt.alibi_slopes.empty()) {
            const double off = opt.causal == causal_mode::top_left ? 0.0 : double(Nk) - double(Nq);
            sij -= opt.alibi_slopes[h] * std::fabs(double(i) + off - double(j));
          }
          bool vis = structurally_visible(opt, std::int64_t(i), std::int64_t(j), std::int64_t(Nq),
                                          std::int64_t(Nk));
          if (has_bool) {
            const auto& m = opt.boolean_mask;
            vis = vis && m(m.batch() == 1 ? 0 : b, m.heads() == 1 ? 0 : h, i, j);
          }
          if (has_add) {
            const auto& m = opt.additive_mask;
            const double a = m(m.batch() == 1 ? 0 : b, m.heads() == 1 ? 0 : h, i, j);
            sij = sij == neg_inf || a == neg_inf ? neg_inf : sij + a;
          }
          if (sij == neg_inf) vis = false;
          undefined = undefined || (vis && !(sij < -neg_inf));
          s[j] = sij;
          visible[j] = vis;
        }
        // pass 2: log-sum-exp over the visible keys
        double m = neg_inf;
        for (std::size_t j = 0; j < Nk; ++j)
          if (visible[j] && s[j] > m) m = s[j];
        double lse = neg_inf;
        if (head_scale == 0.0) {
          undefined = false;  // a pruned head reads nothing
        } else if (undefined) {
          lse = std::numeric_limits<double>::quiet_NaN();
        } else if (m != neg_inf) {
          double l = 0;
          for (std::size_t j = 0; j < Nk; ++j)
            if (visible[j]) l += std::exp(s[j] - m);
          lse = m + std::log(l);
        }
        // pass 3: probability-weighted sum of values. Every visible key's weight is
        // positive, however far exp underflows: its NaN or infinite values reach the sum.
        for (double& a : acc) a = undefined ? std::numeric_limits<double>::quiet_NaN() : 0.0;
        if (!undefined && lse != neg_inf) {
          for (std::size_t j = 0; j < Nk; ++j) {
            if (!visible[j]) continue;
            const double p = std::exp(s[j] - lse);
            const TV* v_row = v.row(b, hk, j);
            for (std::size_t d = 0; d < Dv; ++d) {
              const double vd = widen(v_row[d]);
              acc[d] += p > 0 ? p * vd : (std::isfinite(vd) ? 0.0 : vd);
            }
          }
        }
        TO* out_row = out.row(b, h, i);
        for (std::size_t d = 0; d < Dv; ++d) out_row[d] = static_cast<TO>(head_scale * acc[d]);
        if (has_lse) opt.lse(b, h, i, 0) = static_cast<float>(lse);
      }
    }
  }
}

}  // namespace headwise::reference
