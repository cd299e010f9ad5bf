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
// attention_backward below is the oracle of backward.hpp: the same passes, then the
// gradients per row; O(B·Hkv·Nk·(Dk + Dv)) memory for the dk, dv sums.
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

/// Pass 1 of one (b, h, i) row: the logit s[j] of every key, whether it is visible,
/// and when slope is non-null the softcap's derivative there, ds/d(scale·q·k) =
/// 1 − tanh²(scale·q·k / c) (1 without a softcap). False when a visible logit is NaN
/// or +inf (the row is undefined: options.hpp).
template <class TQ, class TK>
bool row_logits(const attention_options& opt, const tensor_view<TQ>& q, const tensor_view<TK>& k,
                std::size_t b, std::size_t h, std::size_t i, double* s, char* visible, double* slope = nullptr) {
  const std::size_t Nq = q.seq(), Nk = k.seq(), Dk = q.dim(), hk = h / (q.heads() / k.heads());
  const double scale = opt.scale ? *opt.scale : 1.0 / std::sqrt(static_cast<double>(Dk));
  const double neg_inf = -std::numeric_limits<double>::infinity();
  const TQ* q_row = q.row(b, h, i);
  bool defined = true;
  for (std::size_t j = 0; j < Nk; ++j) {
    const TK* k_row = k.row(b, hk, j);
    double dot = 0;
    for (std::size_t d = 0; d < Dk; ++d) dot += widen(q_row[d]) * widen(k_row[d]);
    double sij = scale * dot;
    if (slope) slope[j] = 1;
    if (opt.softcap > 0) {
      const double t = std::tanh(sij / opt.softcap);
      sij = opt.softcap * t;
      if (slope) slope[j] = 1 - t * t;
    }
    if (!opt.alibi_slopes.empty()) {
      const double off = opt.causal == causal_mode::top_left ? 0.0 : double(Nk) - double(Nq);
      sij -= opt.alibi_slopes[h] * std::fabs(double(i) + off - double(j));
    }
    bool vis = structurally_visible(opt, std::int64_t(i), std::int64_t(j), std::int64_t(Nq), std::int64_t(Nk));
    if (opt.boolean_mask.is_set()) {
      const auto& m = opt.boolean_mask;
      vis = vis && m(m.batch() == 1 ? 0 : b, m.heads() == 1 ? 0 : h, i, j);
    }
    if (opt.additive_mask.is_set()) {
      const auto& m = opt.additive_mask;
      const double a = m(m.batch() == 1 ? 0 : b, m.heads() == 1 ? 0 : h, i, j);
      sij = sij == neg_inf || a == neg_inf ? neg_inf : sij + a;
    }
    if (sij == neg_inf) vis = false;
    if (vis && !(sij < -neg_inf)) defined = false;  // NaN or +inf
    s[j] = sij;
    visible[j] = vis;
  }
  return defined;
}

/// Pass 2: the row's log-sum-exp over its visible keys; −inf when none is visible.
inline double row_lse(const double* s, const char* visible, std::size_t Nk) {
  double m = -std::numeric_limits<double>::infinity();
  for (std::size_t j = 0; j < Nk; ++j)
    if (visible[j] && s[j] > m) m = s[j];
  if (m == -std::numeric_limits<double>::infinity()) return m;
  double l = 0;
  for (std::size_t j = 0; j < Nk; ++j)
    if (visible[j]) l += std::exp(s[j] - m);
  return m + std::log(l);
}

template <class TQ, class TK, class TV, class TO>
void attention(const tensor_view<TQ>& q, const tensor_view<TK>& k, const tensor_view<TV>& v,
               const tensor_view<TO>& out, const attention_options& opt = {}) {
  static_assert(!std::is_const_v<TO>, "out must be a view of mutable data");
  detail::check_attention("reference::attention", q, k, v, out, opt);

  const std::size_t B = q.batch(), Hq = q.heads(), Nq = q.seq(), Nk = k.seq();
  const std::size_t Dv = v.dim(), group = Hq / k.heads();
  const double neg_inf = -std::numeric_limits<double>::infinity();
  const bool has_lse = opt.lse.is_set();

  std::vector<double> s(Nk);
  std::vector<char> visible(Nk);
  std::vector<double> acc(Dv);
  for (std::size_t b = 0; b < B; ++b) {
    for (std::size_t h = 0; h < Hq; ++h) {
      const std::size_t hk = h / group;
      const double head_scale = opt.head_scale.empty() ? 1.0 : opt.head_scale[h];
      for (std::size_t i = 0; i < Nq; ++i) {
        // pass 1; a visible logit of NaN or +inf leaves the row undefined (options.hpp)
        const bool undefined = head_scale != 0.0 && !row_logits(opt, q, k, b, h, i, s.data(), visible.data());
        // pass 2; a pruned head reads nothing
        const double lse = head_scale == 0.0 ? neg_inf
                           : undefined       ? std::numeric_limits<double>::quiet_NaN()
                                             : row_lse(s.data(), visible.data(), Nk);
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

/// The gradients of attention(q, k, v, ·, opt) for the output gradient dout, as
/// attention_backward (backward.hpp) defines them, exactly in double: each row's
/// logits, LSE and P are recomputed here (pass 1–2 above, P materialised per row),
/// so this is the derivative of reference::attention itself; no forward state is
/// taken. Per (b, h, i), with dA = head_scale·dout_i and A = Σ_j p_j v_j:
///   pass 3: A, D = dA·A, dp_j = dA·v_j
///   pass 4: ds_j = p_j (dp_j − D) · slope_j;  dq_i = scale Σ_j ds_j k_j;
///           dk_j += scale · ds_j q_i;  dv_j += p_j dA   (summed over the group's heads)
template <class TQ, class TK, class TV, class TD, class TG>
void attention_backward(const tensor_view<TQ>& q, const tensor_view<TK>& k, const tensor_view<TV>& v,
                        const tensor_view<TD>& dout, const tensor_view<TG>& dq, const tensor_view<TG>& dk,
                        const tensor_view<TG>& dv, const attention_options& opt = {}) {
  static_assert(!std::is_const_v<TG>, "dq, dk and dv must be views of mutable data");
  detail::check_attention("reference::attention_backward", q, k, v, dout, opt);
  const std::size_t B = q.batch(), Hq = q.heads(), Hkv = k.heads(), Nq = q.seq(), Nk = k.seq();
  const std::size_t Dk = q.dim(), Dv = v.dim(), group = Hq / Hkv;
  const double scale = opt.scale ? *opt.scale : 1.0 / std::sqrt(static_cast<double>(Dk));
  const double neg_inf = -std::numeric_limits<double>::infinity();

  std::vector<double> s(Nk), slope(Nk), p(Nk), a(Dv), da(Dv), dq_acc(Dk);
  std::vector<char> visible(Nk);
  std::vector<double> dk_acc(B * Hkv * Nk * Dk, 0.0), dv_acc(B * Hkv * Nk * Dv, 0.0);
  for (std::size_t b = 0; b < B; ++b)
    for (std::size_t h = 0; h < Hq; ++h) {
      const std::size_t hk = h / group;
      const double head_scale = opt.head_scale.empty() ? 1.0 : opt.head_scale[h];
      double* dk_head = dk_acc.data() + (b * Hkv + hk) * Nk * Dk;
      double* dv_head = dv_acc.data() + (b * Hkv + hk) * Nk * Dv;
      for (std::size_t i = 0; i < Nq; ++i) {
        row_logits(opt, q, k, b, h, i, s.data(), visible.data(), slope.data());
        const double lse = head_scale != 0.0 ? row_lse(s.data(), visible.data(), Nk) : neg_inf;
        for (double& x : dq_acc) x = 0;
        if (lse != neg_inf) {
          for (std::size_t d = 0; d < Dv; ++d) a[d] = 0, da[d] = head_scale * widen(dout(b, h, i, d));
          for (std::size_t j = 0; j < Nk; ++j) {
            p[j] = visible[j] ? std::exp(s[j] - lse) : 0.0;
            for (std::size_t d = 0; d < Dv; ++d) a[d] += p[j] * widen(v(b, hk, j, d));
          }
          double D = 0;
          for (std::size_t d = 0; d < Dv; ++d) D += da[d] * a[d];
          for (std::size_t j = 0; j < Nk; ++j) {
            if (p[j] == 0.0) continue;
            double dp = 0;
            for (std::size_t d = 0; d < Dv; ++d) dp += da[d] * widen(v(b, hk, j, d));
            const double ds = p[j] * (dp - D) * slope[j] * scale;
            for (std::size_t d = 0; d < Dk; ++d) {
              dq_acc[d] += ds * widen(k(b, hk, j, d));
              dk_head[j * Dk + d] += ds * widen(q(b, h, i, d));
            }
            for (std::size_t d = 0; d < Dv; ++d) dv_head[j * Dv + d] += p[j] * da[d];
          }
        }
        for (std::size_t d = 0; d < Dk; ++d) dq(b, h, i, d) = static_cast<TG>(dq_acc[d]);
      }
    }
  for (std::size_t b = 0; b < B; ++b)
    for (std::size_t hk = 0; hk < Hkv; ++hk)
      for (std::size_t j = 0; j < Nk; ++j) {
        for (std::size_t d = 0; d < Dk; ++d) dk(b, hk, j, d) = static_cast<TG>(dk_acc[((b * Hkv + hk) * Nk + j) * Dk + d]);
        for (std::size_t d = 0; d < Dv; ++d) dv(b, hk, j, d) = static_cast<TG>(dv_acc[((b * Hkv + hk) * Nk + j) * Dv + d]);
      }
}

}  // namespace headwise::reference
