// tests/fuzz/problem.hpp — one attention() call decoded from bytes, its oracle, and
// the checks every run of it must pass.
//
// A problem<T, S> is q (compute type T: float, or double), K and V (storage S: T,
// or half/bfloat16 under float), K in rows or in key blocks (padding keys NaN), an
// output and an optional LSE in guarded buffers (guarded.hpp), boolean and additive
// masks with any broadcast, and every option: scale, causal mode, window bounds up
// to INT64_MAX, sink counts up to SIZE_MAX, ALiBi, softcap, head scales (0 prunes),
// a caller's workspace. Values are uniform in [-amp, amp]; with `nonfinite` a few
// elements of q, k, v and the additive mask become NaN or ±inf (options.hpp's rules).
// Every layout is the bytes' choice; so are the kernel mode, scalar build, SIMD path
// and thread count of a run (variant, tests/variants.hpp).
// Each run is checked (attention_fuzz.cpp): no error on a valid call, no canary
// touched, every output element written; then against a reference (the oracle, or
// another variant) within attention_tolerance / lse_tolerance of tests/test_util.hpp,
// with NaN and infinities matched exactly (max_abs_diff); and a second thread count
// gives the same bits.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "../test_util.hpp"
#include "../variants.hpp"
#include "byte_source.hpp"
#include "guarded.hpp"

namespace hwfuzz {

using hwtest::variant;

/// Largest sizes a case may take; its cost is capped too (the oracle's multiply-adds).
struct limits {
  std::size_t batch, kv_heads, group, nq, nk, dim;
  double max_cost;
};

/// A length: a boundary the kernels care about (pack widths, tiles, decode's
/// 1024-key chunks) or any value, at most `most`.
inline std::size_t pick_length(byte_source& in, std::size_t most, std::size_t least) {
  static constexpr std::size_t marks[] = {0,  1,  2,  3,  4,  5,   7,   8,   9,   15,   16,   17,  31,
                                          32, 33, 63, 64, 65, 127, 128, 129, 255, 1023, 1024, 1025};
  if (in.flag()) return std::max(least, in.in(least, most));
  std::size_t pick = marks[in.below(sizeof marks / sizeof marks[0])];
  while (pick > most) pick /= 2;
  return std::max(least, pick);
}

/// One run of a problem: the call's variant and (optionally) a workspace of the caller's.
struct run_choice {
  variant var;
  unsigned other_threads = 1;  // for the bit-equality check
  bool caller_scratch = false;
};

inline run_choice pick_run(byte_source& in) {
  static const std::vector<simd_isa> isas = [] {
    std::vector<simd_isa> v = {simd_isa::automatic};
    for (simd_isa i : available_isas()) v.push_back(i);
    return v;
  }();
  run_choice r;
  r.var.mode = kernel_mode(in.below(4));
  r.var.scalar = in.chance(48);
  r.var.isa = isas[in.below(isas.size())];
  r.var.threads = unsigned(in.in(1, 4));
  r.other_threads = r.var.threads == 1 ? unsigned(in.in(2, 4)) : 1;
  r.caller_scratch = in.chance(64);
  return r;
}

/// The largest |x| over the finite elements of a view (0 if none).
template <class X>
double finite_max(const tensor_view<X>& t) {
  double m = 0;
  for (std::size_t b = 0; b < t.batch(); ++b)
    for (std::size_t h = 0; h < t.heads(); ++h)
      for (std::size_t s = 0; s < t.seq(); ++s)
        for (std::size_t d = 0; d < t.dim(); ++d) {
          const double x = double(static_cast<float>(t(b, h, s, d)));
          if (std::isfinite(x)) m = std::max(m, std::fabs(x));
        }
  return m;
}

template <class T, class S>
struct problem {
  std::size_t B = 0, Hq = 1, Hkv = 1, Nq = 0, Nk = 0, Dk = 1, Dv = 1;
  guarded<T> q, out;
  guarded<S> k, v;  // K in rows: what the oracle reads
  bool blocked = false;
  std::vector<S> kb_memory;
  key_blocks_view<S> kb;
  guarded<float> additive, lse;
  guarded<bool> boolean;
  std::vector<float> slopes, head_scales;
  attention_options opt;
  hwtest::error_model model;
  std::string about;  // the case in words, for a finding's report
  double amp_ = 1;
  bool nonfinite_ = false, with_lse_ = false;

  /// Shapes, options, masks, values and layouts from `in`, in that order (the
  /// choices that matter most come first, so that short inputs make them); an output
  /// layout that may overlap only when `free_out` (then out.distinct() says whether
  /// it does).
  problem(byte_source& in, const limits& lim, bool nonfinite, bool free_out) {
    B = in.chance(8) ? 0 : in.in(1, lim.batch);
    Hkv = in.in(1, lim.kv_heads);
    Hq = Hkv * in.in(1, lim.group);
    Nq = pick_length(in, lim.nq, 0);
    Nk = pick_length(in, lim.nk, 0);
    Dk = pick_length(in, lim.dim, 1);
    Dv = pick_length(in, lim.dim, 1);
    while (double(B) * double(Hq) * double(Nq) * double(Nk) * double(Dk + Dv) > lim.max_cost)
      (Nq > 1 && Nq * 4 > Nk ? Nq : Dk + Dv > 8 ? (Dk > Dv ? Dk : Dv) : Nk) /= 2;
    pick_options(in);
    const mask_choice boolean_choice = pick_mask(in, {0.9, 0.5, 0.1, 1.0, 0.0});
    const mask_choice additive_choice = pick_mask(in, {0.1, 0.0, 0.6});
    std::vector<std::uint8_t> pokes;  // non-finite values: what and where (inject)
    for (std::size_t n = nonfinite ? in.in(1, 4) : 0; n > 0; --n)
      for (int b = 0; b < 4; ++b) pokes.push_back(in.byte());
    amp_ = std::vector<double>{1.0, 0.1, 3.0}[in.below(3)], nonfinite_ = nonfinite;
    const bool free_out_layout = free_out && in.chance(64);
    blocked = in.chance(80);
    value_source values(in.word());
    for (std::size_t h = 0; h < Hq && !slopes.empty(); ++h) slopes[h] = float(values.uniform(0.5));
    for (float& h : head_scales) h = std::vector<float>{0.0f, 1.0f, -1.5f, 0.25f, 3.0f}[values.below(5)];

    q = guarded<T>({B, Hq, Nq, Dk}, nested_layout(in, {B, Hq, Nq, Dk}, true));
    k = guarded<S>({B, Hkv, Nk, Dk}, nested_layout(in, {B, Hkv, Nk, Dk}, true));
    v = guarded<S>({B, Hkv, Nk, Dv}, nested_layout(in, {B, Hkv, Nk, Dv}, true));
    fill(q.view, values, amp_);
    fill(k.view, values, amp_);
    fill(v.view, values, amp_);
    const std::array<std::size_t, 4> out_sizes{B, Hq, Nq, Dv};
    out = guarded<T>(out_sizes,
                     free_out_layout ? free_layout(in, out_sizes) : nested_layout(in, out_sizes, false));
    if (boolean_choice.on) {
      boolean = make_mask<bool>(in, boolean_choice, [&](double p) { return values.chance(p); });
      opt.boolean_mask = boolean.view;
    }
    if (additive_choice.on) {
      additive = make_mask<float>(in, additive_choice, [&](double p) {
        return values.chance(p) ? -INFINITY : float(values.uniform(1.0));
      });
      opt.additive_mask = additive.view;
    }
    if (with_lse_) {
      const std::array<std::size_t, 4> sz{B, Hq, Nq, 1};
      lse = guarded<float>(sz, nested_layout(in, sz, false));
      opt.lse = lse.view;
    }
    inject(pokes);
    if (blocked) make_key_blocks(in);
    settle();
  }

  /// The error model and the description, again after a caller changed the options.
  void settle() {
    model.Dk = Dk, model.Nk = std::max<std::size_t>(Nk, 1);
    model.scale = std::fabs(opt.scale ? *opt.scale : 1 / std::sqrt(double(Dk)));
    model.qmax = finite_max(q.view), model.kmax = finite_max(k.view), model.vmax = finite_max(v.view);
    model.softcap = opt.softcap;
    double slope = 0;
    for (float s : opt.alibi_slopes) slope = std::max(slope, double(std::fabs(s)));
    model.bias =
        slope * double(std::max(Nq, Nk)) + (opt.additive_mask.is_set() ? finite_max(additive.view) : 0.0);
    model.head_scale = 1;
    for (float h : opt.head_scale) model.head_scale = std::max(model.head_scale, double(std::fabs(h)));
    std::ostringstream os;
    os << "B " << B << " Hq " << Hq << " Hkv " << Hkv << " Nq " << Nq << " Nk " << Nk << " Dk " << Dk
       << " Dv " << Dv << " T " << sizeof(T) << " S " << sizeof(S) << (blocked ? " key blocks" : " rows")
       << " amp " << amp_ << (nonfinite_ ? " nonfinite" : "") << " | scale "
       << (opt.scale ? *opt.scale : -0.0) << " causal " << int(opt.causal) << " window "
       << (opt.window_left ? std::to_string(*opt.window_left) : "-") << "/"
       << (opt.window_right ? std::to_string(*opt.window_right) : "-") << " sinks " << opt.sink_tokens
       << " bool " << opt.boolean_mask.is_set() << " add " << opt.additive_mask.is_set() << " alibi "
       << !opt.alibi_slopes.empty() << " softcap " << opt.softcap << " head_scale " << !opt.head_scale.empty()
       << " lse " << opt.lse.is_set();
    about = os.str();
  }

  /// The options of a run of variant r (at `threads`); the outputs armed.
  attention_options prepare(const run_choice& r, unsigned threads, workspace& ws) {
    attention_options o = opt;
    r.var.apply(o);
    o.threads = threads;
    o.scratch = r.caller_scratch ? &ws : nullptr;
    out.arm();
    if (o.lse.is_set()) lse.arm();
    return o;
  }
  void run(const run_choice& r, unsigned threads, workspace& ws) { call(prepare(r, threads, ws)); }

  void call(const attention_options& o) {
    const tensor_view<const T> qc = q.view;
    const tensor_view<const S> vc = v.view;
    if (blocked)
      attention(qc, key_blocks_view<const S>(kb), vc, out.view, o);
    else
      attention(qc, tensor_view<const S>(k.view), vc, out.view, o);
  }

  /// The oracle's output and LSE, dense.
  void oracle(hwtest::tensor<T>& ref, std::vector<float>& ref_lse) const {
    ref = hwtest::tensor<T>(B, Hq, Nq, Dv);
    ref_lse.assign(B * Hq * Nq, 0.0f);
    attention_options o = opt;
    o.lse = lse_view(ref_lse.data(), B, Hq, Nq);
    reference::attention(tensor_view<const T>(q.view), tensor_view<const S>(k.view),
                         tensor_view<const S>(v.view), ref.view, o);
  }
  tensor_view<const float> lse_of(const std::vector<float>& l) const { return lse_view(l.data(), B, Hq, Nq); }

  double tolerance() const { return hwtest::attention_tolerance<T>(model); }
  double lse_tolerance() const { return hwtest::lse_tolerance<T>(model); }

 private:
  template <class X>
  static void fill(const tensor_view<X>& t, value_source& values, double amp) {
    for (std::size_t b = 0; b < t.batch(); ++b)
      for (std::size_t h = 0; h < t.heads(); ++h)
        for (std::size_t s = 0; s < t.seq(); ++s)
          for (std::size_t d = 0; d < t.dim(); ++d) t(b, h, s, d) = X(float(values.uniform(amp)));
  }

  /// A mask: whether there is one, its batch and head axes (B or 1, Hq or 1), and
  /// the share of its entries that hide (boolean: the share visible).
  struct mask_choice {
    bool on = false, batch = false, heads = false;
    double share = 0;
  };
  mask_choice pick_mask(byte_source& in, const std::vector<double>& shares) {
    mask_choice m;
    m.on = in.chance(96);
    m.batch = in.flag(), m.heads = in.flag();
    m.share = shares[in.below(shares.size())];
    return m;
  }
  /// The [B or 1, Hq or 1, Nq, Nk] mask of m, entry(share) giving each entry.
  template <class X, class Entry>
  guarded<X> make_mask(byte_source& in, const mask_choice& m, Entry&& entry) {
    const std::array<std::size_t, 4> sz{m.batch ? B : 1, m.heads ? Hq : 1, Nq, Nk};
    guarded<X> g(sz, nested_layout(in, sz, true));
    const auto& view = g.view;
    for (std::size_t b = 0; b < sz[0]; ++b)
      for (std::size_t h = 0; h < sz[1]; ++h)
        for (std::size_t i = 0; i < Nq; ++i)
          for (std::size_t j = 0; j < Nk; ++j) view(b, h, i, j) = entry(m.share);
    return g;
  }

  /// Every option but the masks; slopes and head scales get their values later.
  void pick_options(byte_source& in) {
    constexpr std::int64_t int64_max = std::numeric_limits<std::int64_t>::max();
    if (in.chance(64)) opt.scale = std::vector<double>{0.0, -1.0, 0.3, 2.5, 1e-3}[in.below(5)];
    opt.causal = causal_mode(in.below(3));
    auto bound = [&]() -> std::optional<std::int64_t> {  // none first: what exhausted bytes give
      switch (in.below(7)) {
        case 3:
          return std::int64_t(in.below(4));
        case 4:
          return std::int64_t(in.below(40));
        case 5:
          return std::int64_t(Nq + Nk);
        case 6:
          return int64_max - std::int64_t(in.below(3));
        default:
          return std::nullopt;
      }
    };
    opt.window_left = bound();
    opt.window_right = bound();
    switch (in.below(6)) {
      case 0:
        opt.sink_tokens = in.below(9);
        break;
      case 1:
        opt.sink_tokens = Nk + in.below(2);
        break;
      case 2:
        opt.sink_tokens = std::numeric_limits<std::size_t>::max() - in.below(2);
        break;
      case 3:
        opt.sink_tokens = std::size_t(1) << 63;
        break;
      default:
        break;
    }
    if (in.chance(64)) {
      slopes.assign(Hq, 0.0f);
      opt.alibi_slopes = slopes;
    }
    if (in.chance(64)) opt.softcap = std::vector<double>{0.5, 5.0, 30.0}[in.below(3)];
    if (in.chance(64)) {
      head_scales.assign(Hq, 1.0f);
      opt.head_scale = head_scales;
    }
    with_lse_ = in.chance(180);
  }

  /// Each 4 bytes of pokes make one element of q, k, v or the additive mask NaN, +inf
  /// or −inf: which tensor and value, then the row (for K and V a key near the end
  /// half the time: the last keys are the ones most rows see), then the column.
  void inject(const std::vector<std::uint8_t>& pokes) {
    for (std::size_t e = 0; e + 3 < pokes.size(); e += 4) {
      const float x = std::vector<float>{NAN, INFINITY, -INFINITY}[pokes[e] % 3];
      auto poke = [&](auto& t, bool is_key) {
        using X = std::remove_reference_t<decltype(t.memory[0])>;  // T, S or float
        const auto& sz = t.sizes;
        if (sz[0] * sz[1] * sz[2] * sz[3] == 0) return;
        const std::size_t bh = pokes[e + 1] % (sz[0] * sz[1]), r = pokes[e + 2];
        const std::size_t s =
            is_key && r % 2 ? sz[2] - 1 - std::min<std::size_t>(r / 2 % 16, sz[2] - 1) : r % sz[2];
        t.view(bh / sz[1], bh % sz[1], s, pokes[e + 3] % sz[3]) = X(x);
      };
      switch (pokes[e] / 3 % 4) {
        case 0:
          poke(q, false);
          break;
        case 1:
          poke(k, true);
          break;
        case 2:
          poke(v, true);
          break;
        default:
          if (opt.additive_mask.is_set()) poke(additive, true);
      }
    }
  }

  /// K copied into key blocks; heads and batches 0-2 elements apart beyond their
  /// blocks, padding keys NaN.
  void make_key_blocks(byte_source& in) {
    const std::size_t per_head = key_blocks_elements(1, 1, Nk, Dk) + in.below(3);
    const std::size_t per_batch = Hkv * per_head + in.below(3);
    kb_memory.assign(std::max<std::size_t>(B, 1) * per_batch + 1, S(NAN));
    kb = key_blocks_view<S>(kb_memory.data(), B, Hkv, Nk, Dk, std::ptrdiff_t(per_batch),
                            std::ptrdiff_t(per_head));
    for (std::size_t b = 0; b < B; ++b)
      for (std::size_t h = 0; h < Hkv; ++h)
        for (std::size_t s = 0; s < Nk; ++s)
          for (std::size_t d = 0; d < Dk; ++d) kb(b, h, s, d) = k.view(b, h, s, d);
  }
};

}  // namespace hwfuzz
