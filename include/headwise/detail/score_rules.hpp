// headwise/detail/score_rules.hpp — the options of one attention call, resolved
// into what kernels need per query row.
//
// Kernels do not re-read attention_options: they ask this object
//   - which keys a row may see structurally (causal, window, sinks): at most two
//     half-open ranges, [0, sink_end) and [lo, hi), disjoint and ordered, so a
//     kernel loops over them and never visits (or spends FLOPs on) hidden keys;
//   - how to turn a raw q·k dot product into a logit (scale, softcap, ALiBi,
//     additive mask) and whether the boolean mask hides it (logit -inf).
// The oracle (reference.hpp) evaluates the same rules element by element, so a
// mistake in the range arithmetic here cannot hide from the tests.
#pragma once

#ifndef HEADWISE_INTERNAL
#error "headwise/detail/* is internal: include <headwise/headwise.hpp>"
#endif

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>

#include "headwise/detail/checks.hpp"
#include "headwise/options.hpp"

namespace headwise::detail {

/// Half-open key interval [begin, end).
struct key_range {
  std::int64_t begin = 0, end = 0;
  std::int64_t size() const { return end > begin ? end - begin : 0; }
};

/// The visible keys of one query row: sinks first, then the window/causal band.
struct row_ranges {
  key_range sinks, band;
  std::int64_t count() const { return sinks.size() + band.size(); }
  /// The smallest range holding every visible key (for tile skipping).
  key_range hull() const {
    if (sinks.size() == 0) return band;
    if (band.size() == 0) return sinks;
    return {sinks.begin, band.end};
  }
  /// Number of visible keys inside the key interval t.
  std::int64_t count_in(key_range t) const {
    auto overlap = [&](key_range r) {
      return std::max<std::int64_t>(0, std::min(r.end, t.end) - std::max(r.begin, t.begin));
    };
    return overlap(sinks) + overlap(band);
  }
};

template <class T>  // T: the compute type, float or double
struct score_rules {
  std::int64_t Nq = 0, Nk = 0, off = 0;
  bool causal = false;
  std::int64_t left = -1, right = -1;  // -1 = unbounded
  std::int64_t sinks = 0;
  T scale = 1, softcap = 0, inv_softcap = 0;
  span<const float> alibi, head_scale;
  tensor_view<const float> additive;
  tensor_view<const bool> boolean;
  bool has_additive = false, has_boolean = false;

  score_rules(const attention_options& opt, std::size_t nq, std::size_t nk, std::size_t dk)
      : Nq(std::int64_t(nq)),
        Nk(std::int64_t(nk)),
        off(opt.causal == causal_mode::top_left ? 0 : std::int64_t(nk) - std::int64_t(nq)),
        causal(opt.causal != causal_mode::none),
        left(opt.window_left ? *opt.window_left : -1),
        right(opt.window_right ? *opt.window_right : -1),
        sinks(std::int64_t(std::min<std::size_t>(opt.sink_tokens, nk))),  // sinks beyond Nk: every key
        scale(static_cast<T>(opt.scale ? *opt.scale : 1.0 / std::sqrt(double(dk)))),
        softcap(static_cast<T>(opt.softcap)),
        inv_softcap(opt.softcap > 0 ? static_cast<T>(1.0 / opt.softcap) : T(0)),
        alibi(opt.alibi_slopes),
        head_scale(opt.head_scale),
        additive(opt.additive_mask),
        boolean(opt.boolean_mask),
        has_additive(opt.additive_mask.is_set()),
        has_boolean(opt.boolean_mask.is_set()) {}

  /// Keys visible to query i by the causal, window and sink rules. No step overflows
  /// for any window (up to INT64_MAX) or size: diag lies in [Nk − Nq, Nk) (or [0, Nq)
  /// for top_left), so hi − diag <= max(Nq, Nk), and a bound is added to or taken
  /// from diag only when the result stays between 0 and hi.
  row_ranges ranges(std::int64_t i) const {
    const std::int64_t diag = i + off;
    std::int64_t hi = Nk;  // exclusive
    if (causal) hi = std::min(hi, diag + 1);
    std::int64_t band_hi = hi;
    if (right >= 0 && diag < hi && right < hi - diag - 1) band_hi = diag + right + 1;
    const std::int64_t band_lo = left >= 0 && diag > left ? diag - left : 0;
    const std::int64_t sink_end = std::max<std::int64_t>(0, std::min(sinks, hi));
    row_ranges r;
    r.sinks = {0, sink_end};
    r.band = {std::max(band_lo, sink_end), std::max(band_hi, std::max(band_lo, sink_end))};
    return r;
  }

  /// Union of the hulls of rows [i0, i1): keys a query tile may need.
  key_range tile_hull(std::int64_t i0, std::int64_t i1) const {
    key_range u{Nk, 0};
    for (std::int64_t i = i0; i < i1; ++i) {
      const key_range h = ranges(i).hull();
      if (h.size() == 0) continue;
      u.begin = std::min(u.begin, h.begin);
      u.end = std::max(u.end, h.end);
    }
    return u.size() ? u : key_range{};
  }

  bool has_elementwise() const { return has_additive || has_boolean || !alibi.empty() || softcap > 0; }

  T head_multiplier(std::size_t h) const { return head_scale.empty() ? T(1) : T(head_scale[h]); }

  /// Sets s[c] = -inf for each key j0 + c (c < n) outside the row's ranges rr.
  static void hide_invisible(const row_ranges& rr, std::int64_t j0, std::size_t n, T* s) {
    const std::int64_t j1 = j0 + std::int64_t(n);
    if ((rr.band.begin <= j0 && j1 <= rr.band.end) || (rr.sinks.begin <= j0 && j1 <= rr.sinks.end)) return;
    const T neg_inf = -std::numeric_limits<T>::infinity();
    for (std::size_t c = 0; c < n; ++c) {
      const std::int64_t j = j0 + std::int64_t(c);
      const bool vis = (j >= rr.sinks.begin && j < rr.sinks.end) || (j >= rr.band.begin && j < rr.band.end);
      s[c] = vis ? s[c] : neg_inf;
    }
  }

  /// The element-wise rules of logit() (softcap, ALiBi, boolean, additive), in
  /// its order, applied in place to the already scaled scores s[0..n) of keys
  /// j0.. of row (b, h, i), before hide_invisible: a score that overflowed to
  /// ±inf is capped to ±softcap like any other. A −inf score or mask entry hides
  /// the key whatever the other holds (NaN, +inf: options.hpp). One pass per rule,
  /// so the ALiBi and additive passes vectorise.
  void apply_elementwise(std::size_t b, std::size_t h, std::int64_t i, std::int64_t j0, std::size_t n,
                         T* s) const {
    apply_softcap(n, s);
    apply_bias_and_masks(b, h, i, j0, n, s);
  }

  /// The first rule alone: s = c·tanh(s/c) when softcap c > 0. The backward reads
  /// its derivative, 1 − (s/c)², between the two halves.
  void apply_softcap(std::size_t n, T* s) const {
    if (softcap > 0)
      for (std::size_t c = 0; c < n; ++c) s[c] = softcap * std::tanh(s[c] * inv_softcap);
  }

  /// The rules after the softcap: ALiBi, boolean mask, additive mask.
  void apply_bias_and_masks(std::size_t b, std::size_t h, std::int64_t i, std::int64_t j0, std::size_t n,
                            T* s) const {
    const T neg_inf = -std::numeric_limits<T>::infinity();
    if (!alibi.empty()) {
      const T slope = T(alibi[h]);
      for (std::size_t c = 0; c < n; ++c) s[c] -= slope * T(std::abs(i + off - j0 - std::int64_t(c)));
    }
    if (has_boolean) {
      const bool* m = boolean.row(boolean.batch() == 1 ? 0 : b, boolean.heads() == 1 ? 0 : h,
                                  std::size_t(i)) + j0;
      for (std::size_t c = 0; c < n; ++c) s[c] = m[c] ? s[c] : neg_inf;
    }
    if (has_additive) {
      const float* a = additive.row(additive.batch() == 1 ? 0 : b, additive.heads() == 1 ? 0 : h,
                                    std::size_t(i)) + j0;
      for (std::size_t c = 0; c < n; ++c)
        s[c] = s[c] == neg_inf || T(a[c]) == neg_inf ? neg_inf : s[c] + T(a[c]);
    }
  }

  /// Logit of (b, h, i, j) from the raw dot product; -inf when masked. One key
  /// of apply_elementwise, so the rules live in one place.
  T logit(std::size_t b, std::size_t h, std::int64_t i, std::int64_t j, T dot) const {
    T s = scale * dot;
    apply_elementwise(b, h, i, j, 1, &s);
    return s;
  }
};

}  // namespace headwise::detail
