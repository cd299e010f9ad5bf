// tests/mask_cases.hpp — the mask kinds that kernel tests sweep, and the options
// (with the memory they point to) that each kind stands for.
//
// A kernel test names a case by a mask_kind and builds its attention_options with
// masked_options. What a kind means in detail (window widths, how many keys a boolean
// mask hides, ALiBi slopes, which head is pruned) depends on the kernel's geometry —
// flash tiles want windows narrower than a tile, decode chunks want windows wider
// than a block — so each test passes a mask_recipe with its own figures.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include <headwise/headwise.hpp>

namespace hwtest {

using namespace headwise;

enum class mask_kind {
  none,
  causal_top_left,
  causal_bottom_right,
  window,        // recipe.window (no causal)
  window_sinks,  // bottom-right causal, recipe.sink_window and recipe.sinks
  boolean,       // [1, Hq, Nq, Nk], row 0 fully hidden (in head 0 or in every head)
  additive,      // [B, 1, Nq, Nk] in [-1, 1], 10% -inf
  alibi,
  softcap,
  head_scale,  // one pruned head, the others scaled up to 0.5 + Hq - 1
  everything,  // all of the above at once (causal: recipe.everything_causal)
};

inline const char* mask_name(mask_kind m) {
  static const char* names[] = {"none",     "causal_tl", "causal_br", "window",     "window_sinks", "boolean",
                                "additive", "alibi",     "softcap",   "head_scale", "everything"};
  return names[int(m)];
}

/// The figures behind each mask kind.
struct mask_recipe {
  causal_mode everything_causal = causal_mode::top_left;
  std::size_t window_left = 5, window_right = 3;  // mask_kind::window
  std::size_t sink_window_left = 16, sinks = 4;   // window_sinks and everything
  float visible = 0.7f;                           // share of keys a boolean mask shows
  bool hide_row0_in_every_head = true;            // else in head 0 only
  int alibi_first_exponent = 1;                   // slope of head h: 2^-(h + first)
  double softcap = 0.75;
  std::size_t pruned_head = 0;  // taken modulo Hq
  std::uint32_t seed = 99;
};

/// The options of one mask kind over a [B, Hq, Nq, Nk] score shape, owning the masks
/// and per-head arrays they point to. extra_logit bounds |what the element-wise
/// rules add to a scaled logit| (for tolerances); max_head_scale the largest head scale.
struct masked_options {
  attention_options opt;
  std::unique_ptr<bool[]> boolean;
  std::vector<float> additive, slopes, head_scale;
  double extra_logit = 0, max_head_scale = 1;

  masked_options(mask_kind m, std::size_t B, std::size_t Hq, std::size_t Nq, std::size_t Nk,
                 const mask_recipe& r = {}) {
    const bool all = m == mask_kind::everything;
    std::mt19937 gen(r.seed);
    std::uniform_real_distribution<float> unit(0, 1);
    if (m == mask_kind::causal_top_left) opt.causal = causal_mode::top_left;
    if (m == mask_kind::causal_bottom_right || m == mask_kind::window_sinks) opt.causal = causal_mode::bottom_right;
    if (all) opt.causal = r.everything_causal;
    if (m == mask_kind::window) opt.window_left = r.window_left, opt.window_right = r.window_right;
    if (m == mask_kind::window_sinks || all) opt.window_left = r.sink_window_left, opt.sink_tokens = r.sinks;
    if (m == mask_kind::boolean || all) {
      const std::size_t n = Hq * Nq * Nk;
      boolean.reset(new bool[n]);
      for (std::size_t e = 0; e < n; ++e) boolean[e] = unit(gen) < r.visible;
      for (std::size_t h = 0; h < (r.hide_row0_in_every_head ? Hq : 1); ++h)
        for (std::size_t j = 0; j < Nk; ++j) boolean[h * Nq * Nk + j] = false;
      opt.boolean_mask = mask_view<const bool>(boolean.get(), 1, Hq, Nq, Nk);
    }
    if (m == mask_kind::additive || all) {
      additive.resize(B * Nq * Nk);
      for (float& a : additive) a = unit(gen) < 0.1f ? -INFINITY : 2 * unit(gen) - 1;
      opt.additive_mask = mask_view<const float>(additive.data(), B, 1, Nq, Nk);
      extra_logit += 1;
    }
    if (m == mask_kind::alibi || all) {
      for (std::size_t h = 0; h < Hq; ++h) slopes.push_back(std::ldexp(1.0f, -int(h) - r.alibi_first_exponent));
      opt.alibi_slopes = slopes;
      extra_logit += double(slopes[0]) * double(Nq + Nk);  // |i + offset - j| < Nq + Nk
    }
    if (m == mask_kind::softcap || all) {
      opt.softcap = r.softcap;
      extra_logit += r.softcap;
    }
    if (m == mask_kind::head_scale || all) {
      for (std::size_t h = 0; h < Hq; ++h) head_scale.push_back(h == r.pruned_head % Hq ? 0.0f : 0.5f + float(h));
      for (float s : head_scale) max_head_scale = std::max(max_head_scale, double(s));
      opt.head_scale = head_scale;
    }
  }
};

}  // namespace hwtest
