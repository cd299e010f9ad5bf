// tests/mask_cases.hpp — the one mask builder of the kernel tests: a mask_spec names
// the rules of a case (every kind composes with the others), masked_options builds
// the attention_options and owns the memory they point to.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <headwise/headwise.hpp>

#include "test_util.hpp"

namespace hwtest {

using namespace headwise;

/// The rules of one case besides its shapes.
struct mask_spec {
  causal_mode causal = causal_mode::none;
  std::optional<std::int64_t> left, right;  // sliding window, from the diagonal
  std::size_t sinks = 0;
  bool boolean = false;     // [1, Hq, Nq, Nk], 30 % hidden; row 0 of head 0 fully hidden
  bool additive = false;    // [B, 1, Nq, Nk] in [-1, 1], 10 % -inf
  bool alibi = false;       // slope of head h: 2^-(h + 2)
  double softcap = 0;       // c
  bool head_scale = false;  // head 1 (mod Hq) pruned, head h scaled by 0.5 + h

  /// For test names: "none", "br_w16x_s4_bool", ...
  std::string name() const {
    static const char* causal_names[] = {"", "tl", "br"};
    std::string n = causal_names[int(causal)];
    auto add = [&n](const std::string& part) { n += (n.empty() ? "" : "_") + part; };
    if (left || right)
      add("w" + (left ? std::to_string(*left) : std::string()) + "x" +
          (right ? std::to_string(*right) : std::string()));
    if (sinks) add("s" + std::to_string(sinks));
    if (boolean) add("bool");
    if (additive) add("add");
    if (alibi) add("alibi");
    if (softcap > 0) add("cap");
    if (head_scale) add("hscale");
    return n.empty() ? "none" : n;
  }
};

/// Every mask kind alone, the causal modes with windows and sinks, and all at once.
inline std::vector<mask_spec> every_mask_kind() {
  std::vector<mask_spec> specs(16);
  specs[1].causal = causal_mode::top_left;
  specs[2].causal = causal_mode::bottom_right;
  specs[3].left = 5, specs[3].right = 3;    // narrower than any tile
  specs[4].left = 300, specs[4].right = 2;  // wider than a decode block
  specs[5].left = 0, specs[5].right = 0;    // the diagonal only
  specs[6].causal = causal_mode::bottom_right, specs[6].left = 16, specs[6].sinks = 4;
  specs[7].causal = causal_mode::top_left, specs[7].left = 5, specs[7].sinks = 3;
  specs[8].causal = causal_mode::bottom_right, specs[8].right = 8;  // causal wins over right
  specs[9].boolean = true;
  specs[10].additive = true;
  specs[11].alibi = true;
  specs[12].softcap = 0.75;
  specs[13].head_scale = true;
  for (std::size_t i : {14, 15}) {
    mask_spec& all = specs[i];
    all.causal = i == 14 ? causal_mode::top_left : causal_mode::bottom_right;
    all.left = 20, all.sinks = 5;
    all.boolean = all.additive = all.alibi = all.head_scale = true;
    all.softcap = 0.6;
  }
  return specs;
}

/// The options of a mask_spec over a [B, Hq, Nq, Nk] score shape, owning the masks
/// and per-head arrays they point to, and the bounds the tolerances need.
struct masked_options {
  attention_options opt;
  std::unique_ptr<bool[]> boolean;
  std::vector<float> additive, slopes, head_scale;
  double bias = 0;  // bound on |ALiBi term + finite additive entry|
  double max_head_scale = 1;

  masked_options(const mask_spec& m, std::size_t B, std::size_t Hq, std::size_t Nq, std::size_t Nk,
                 std::uint32_t seed = 99) {
    std::mt19937 gen(seed);
    std::uniform_real_distribution<float> unit(0, 1);
    opt.causal = m.causal;
    opt.window_left = m.left;
    opt.window_right = m.right;
    opt.sink_tokens = m.sinks;
    if (m.boolean) {
      const std::size_t n = Hq * Nq * Nk;
      boolean.reset(new bool[n]);
      for (std::size_t e = 0; e < n; ++e) boolean[e] = unit(gen) < 0.7f;
      std::fill(boolean.get(), boolean.get() + Nk, false);
      opt.boolean_mask = mask_view<const bool>(boolean.get(), 1, Hq, Nq, Nk);
    }
    if (m.additive) {
      additive.resize(B * Nq * Nk);
      for (float& a : additive) a = unit(gen) < 0.1f ? -INFINITY : 2 * unit(gen) - 1;
      opt.additive_mask = mask_view<const float>(additive.data(), B, 1, Nq, Nk);
      bias += 1;
    }
    if (m.alibi) {
      for (std::size_t h = 0; h < Hq; ++h) slopes.push_back(std::ldexp(1.0f, -int(h) - 2));
      opt.alibi_slopes = slopes;
      bias += double(slopes[0]) * double(std::max(Nq, Nk));  // |i + off - j| < max(Nq, Nk)
    }
    opt.softcap = m.softcap;
    if (m.head_scale) {
      for (std::size_t h = 0; h < Hq; ++h) head_scale.push_back(h == 1 % Hq ? 0.0f : 0.5f + float(h));
      max_head_scale = std::max(1.0, double(*std::max_element(head_scale.begin(), head_scale.end())));
      opt.head_scale = head_scale;
    }
  }

  /// The error model of these rules over inputs within qmax, kmax, vmax.
  error_model model(std::size_t Dk, std::size_t Nk, double qmax = 1, double kmax = 1, double vmax = 1) const {
    error_model e;
    e.Dk = Dk, e.Nk = Nk, e.scale = opt.scale ? *opt.scale : 1 / std::sqrt(double(Dk));
    e.qmax = qmax, e.kmax = kmax, e.vmax = vmax;
    e.bias = bias, e.softcap = opt.softcap, e.head_scale = max_head_scale;
    return e;
  }
};

}  // namespace hwtest
