// attention_test: attention() against the oracle over shapes, layouts, head
// groupings and every mask rule, for each kernel mode and thread count.
//
// Each test case computes the oracle once, then runs every kernel mode with 1
// and 2 threads: outputs must be within the derived tolerance of the oracle and
// bitwise identical across thread counts.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "test_util.hpp"

namespace {

using namespace headwise;
using hwtest::layout;
using hwtest::tensor;

struct heads_config {
  std::size_t hq, hkv;
  const char* name;
};
const heads_config kMha{2, 2, "mha"}, kGqa{4, 2, "gqa"}, kMqa{3, 1, "mqa"};

const kernel_mode kModes[] = {kernel_mode::automatic, kernel_mode::plain, kernel_mode::flash,
                              kernel_mode::decode};

/// Rules that are not shapes: masks and per-head parameters, named for test output.
struct mask_config {
  causal_mode causal = causal_mode::none;
  std::int64_t left = -1, right = -1;  // -1 = unset
  std::size_t sinks = 0;
  enum extra_kind { none, boolean, additive, alibi, softcap, all } extra = none;

  std::string name() const {
    static const char* causal_names[] = {"nocausal", "topleft", "bottomright"};
    static const char* extra_names[] = {"plain", "bool", "additive", "alibi", "softcap", "all"};
    std::ostringstream os;
    os << causal_names[int(causal)] << "_w" << (left < 0 ? std::string("inf") : std::to_string(left)) << "x"
       << (right < 0 ? std::string("inf") : std::to_string(right)) << "_s" << sinks << "_"
       << extra_names[int(extra)];
    return os.str();
  }
};

/// Inputs, masks and options of one case, owned together so views stay valid.
template <class T>
struct problem {
  tensor<T> q, k, v;
  std::vector<float> additive;
  std::vector<char> boolean;  // bytes viewed as bool
  std::vector<float> slopes, head_scale;
  attention_options opt;
  double logit_bias_max = 0;  // largest |ALiBi + additive| term, for the tolerance

  problem(std::size_t B, heads_config h, std::size_t Nq, std::size_t Nk, std::size_t Dk, std::size_t Dv,
          layout l, const mask_config& m, std::uint32_t seed)
      : q(B, h.hq, Nq, Dk, l), k(B, h.hkv, Nk, Dk, l), v(B, h.hkv, Nk, Dv, l) {
    hwtest::fill_uniform(q, seed, 1.0);
    hwtest::fill_uniform(k, seed + 1, 1.0);
    hwtest::fill_uniform(v, seed + 2, 1.0);
    opt.causal = m.causal;
    if (m.left >= 0) opt.window_left = m.left;
    if (m.right >= 0) opt.window_right = m.right;
    opt.sink_tokens = m.sinks;
    std::mt19937 gen(seed + 3);
    const bool all = m.extra == mask_config::all;
    if (m.extra == mask_config::boolean || all) {
      // [B, 1, Nq, Nk]: broadcast over heads; ~30% hidden, and one row fully hidden.
      boolean.resize(B * Nq * Nk);
      std::bernoulli_distribution keep(0.7);
      for (auto& x : boolean) x = keep(gen);
      for (std::size_t j = 0; j < Nk && Nq > 1; ++j) boolean[1 * Nk + j] = 0;
      opt.boolean_mask = mask_view<const bool>(reinterpret_cast<const bool*>(boolean.data()), B, 1, Nq, Nk);
    }
    if (m.extra == mask_config::additive || all) {
      // [1, Hq, Nq, Nk]: broadcast over batch; values in [-2, 2] and some -inf.
      additive.resize(h.hq * Nq * Nk);
      std::uniform_real_distribution<float> bias(-2.f, 2.f);
      std::bernoulli_distribution hide(0.1);
      for (auto& x : additive) x = hide(gen) ? -INFINITY : bias(gen);
      opt.additive_mask = mask_view<const float>(additive.data(), 1, h.hq, Nq, Nk);
      logit_bias_max += 2;
    }
    if (m.extra == mask_config::alibi || all) {
      for (std::size_t i = 0; i < h.hq; ++i) slopes.push_back(std::pow(2.f, -float(i + 1)));
      opt.alibi_slopes = slopes;
      logit_bias_max += 0.5 * double(std::max(Nq, Nk));
    }
    if (m.extra == mask_config::softcap || all) opt.softcap = 0.75;
    if (all) {
      for (std::size_t i = 0; i < h.hq; ++i) head_scale.push_back(i == 1 ? 0.f : 1.f + 0.5f * float(i));
      opt.head_scale = head_scale;
    }
  }

  double tolerance() const {
    const std::size_t Dk = q.view.dim(), Nk = k.view.seq();
    const double scale = 1.0 / std::sqrt(double(Dk));
    const double head_max = head_scale.empty() ? 1.0 : 2.5;
    // Adding bias terms of size c to a logit costs at most c·u more per logit.
    const double bias_err = 2 * logit_bias_max * hwtest::unit_roundoff<T>();
    return head_max * (hwtest::attention_tolerance<T>(Dk, Nk, scale, 1.0, 1.0, 1.0) + bias_err);
  }
};

/// Runs the oracle once and every kernel mode at 1 and 2 threads against it.
template <class T>
void check_all_modes(problem<T>& p, std::size_t Dv) {
  const std::size_t B = p.q.view.batch(), Hq = p.q.view.heads(), Nq = p.q.view.seq();
  tensor<T> expected(B, Hq, Nq, Dv);
  std::vector<float> expected_lse(B * Hq * Nq);
  attention_options ref_opt = p.opt;
  ref_opt.lse = lse_view(expected_lse.data(), B, Hq, Nq);
  reference::attention(p.q.view, p.k.view, p.v.view, expected.view, ref_opt);
  const double bound = p.tolerance();
  // LSE is float: its error is the logit error plus float rounding of |lse|.
  for (kernel_mode mode : kModes) {
    tensor<T> first(B, Hq, Nq, Dv);
    for (unsigned threads : {1u, 2u}) {
      tensor<T> got(B, Hq, Nq, Dv);
      std::vector<float> lse(B * Hq * Nq);
      attention_options opt = p.opt;
      opt.kernel = mode;
      opt.threads = threads;
      opt.lse = lse_view(lse.data(), B, Hq, Nq);
      attention(p.q.view, p.k.view, p.v.view, got.view, opt);
      const double err = hwtest::max_abs_diff(got.view, expected.view);
      EXPECT_TRUE(err <= bound) << "mode " << int(mode) << " threads " << threads << ": error " << err
                                << " > bound " << bound;
      for (std::size_t r = 0; r < lse.size(); ++r) {
        const double e = expected_lse[r], g = lse[r];
        const bool same_inf = std::isinf(e) && e == g;
        const double lse_bound = 4 * bound + 4e-7 * std::fabs(e);
        EXPECT_TRUE(same_inf || std::fabs(e - g) <= lse_bound)
            << "mode " << int(mode) << " threads " << threads << " lse[" << r << "] " << g << " vs " << e;
      }
      if (threads == 1)
        first = got;
      else
        EXPECT_EQ(0, std::memcmp(first.storage.data(), got.storage.data(), got.storage.size() * sizeof(T)))
            << "mode " << int(mode) << ": 2 threads differ bitwise from 1 thread";
    }
  }
}

// ---------------------------------------------------------------------------
// Shapes: (Nq, Nk) × head_dim × MHA/GQA/MQA × layout, no mask and bottom-right causal.
// (Nq, Nk) straddle tile sizes and the decode/prefill boundary; head_dim straddles the
// float pack width W (7, 8, 9 on AVX2; 15, 16, 17 on AVX-512) and covers the common 64
// and 128; 1 is the degenerate case.

constexpr std::size_t kW = headwise::simd::vector_width<float>;

using shape_param = std::tuple<std::pair<std::size_t, std::size_t>, std::size_t, heads_config, layout, bool>;

class Shapes : public ::testing::TestWithParam<shape_param> {};

TEST_P(Shapes, MatchesReference) {
  const auto& [nqk, dim, heads, lay, causal] = GetParam();
  mask_config m;
  m.causal = causal ? causal_mode::bottom_right : causal_mode::none;
  const std::size_t Dv = dim == 1 ? 3 : dim;  // also covers Dk != Dv
  problem<float> p(1, heads, nqk.first, nqk.second, dim, Dv, lay, m, 17);
  check_all_modes(p, Dv);
}

std::string shape_name(const ::testing::TestParamInfo<shape_param>& info) {
  const auto& [nqk, dim, heads, lay, causal] = info.param;
  return "q" + std::to_string(nqk.first) + "k" + std::to_string(nqk.second) + "_d" + std::to_string(dim) + "_" +
         heads.name + "_" + hwtest::layout_name(lay) + (causal ? "_causal" : "");
}

INSTANTIATE_TEST_SUITE_P(Small, Shapes,
                         ::testing::Combine(::testing::Values(std::pair<std::size_t, std::size_t>{1, 1},
                                                              std::pair<std::size_t, std::size_t>{1, 7},
                                                              std::pair<std::size_t, std::size_t>{17, 3},
                                                              std::pair<std::size_t, std::size_t>{113, 203}),
                                            ::testing::Values(1, kW - 1, kW, kW + 1, 64, 128),
                                            ::testing::Values(kMha, kGqa, kMqa),
                                            ::testing::Values(layout::bshd, layout::bhsd),
                                            ::testing::Bool()),
                         shape_name);

// The large shape costs ~1 GFLOP in the oracle per head: fewer combinations.
INSTANTIATE_TEST_SUITE_P(Large, Shapes,
                         ::testing::Combine(::testing::Values(std::pair<std::size_t, std::size_t>{1023, 1024}),
                                            ::testing::Values(9, 64), ::testing::Values(kMqa),
                                            ::testing::Values(layout::bshd), ::testing::Bool()),
                         shape_name);

// ---------------------------------------------------------------------------
// Masks: every causal mode × windows × sinks × element-wise rule, on small ragged shapes.

using mask_param = std::tuple<std::pair<std::size_t, std::size_t>, causal_mode, std::pair<int, int>, std::size_t,
                              mask_config::extra_kind>;

mask_config to_mask_config(const mask_param& param) {
  const auto& [nqk, causal, window, sinks, extra] = param;
  mask_config m;
  m.causal = causal;
  m.left = window.first;
  m.right = window.second;
  m.sinks = sinks;
  m.extra = extra;
  return m;
}

template <class T>
void run_mask_case(const mask_param& param) {
  const auto& nqk = std::get<0>(param);
  problem<T> p(2, kGqa, nqk.first, nqk.second, 9, 5, layout::bshd, to_mask_config(param), 29);
  check_all_modes(p, 5);
}

class MasksFloat : public ::testing::TestWithParam<mask_param> {};
class MasksDouble : public ::testing::TestWithParam<mask_param> {};
TEST_P(MasksFloat, MatchesReference) { run_mask_case<float>(GetParam()); }
TEST_P(MasksDouble, MatchesReference) { run_mask_case<double>(GetParam()); }

std::string mask_name(const ::testing::TestParamInfo<mask_param>& info) {
  const auto& nqk = std::get<0>(info.param);
  return "q" + std::to_string(nqk.first) + "k" + std::to_string(nqk.second) + "_" +
         to_mask_config(info.param).name();
}

const auto kMaskSpace = ::testing::Combine(
    ::testing::Values(std::pair<std::size_t, std::size_t>{1, 7}, std::pair<std::size_t, std::size_t>{17, 3},
                      std::pair<std::size_t, std::size_t>{40, 40}, std::pair<std::size_t, std::size_t>{113, 203}),
    ::testing::Values(causal_mode::none, causal_mode::top_left, causal_mode::bottom_right),
    ::testing::Values(std::pair<int, int>{-1, -1}, std::pair<int, int>{8, -1}, std::pair<int, int>{5, 3},
                      std::pair<int, int>{0, 0}),
    ::testing::Values(std::size_t(0), std::size_t(3)),
    ::testing::Values(mask_config::none, mask_config::boolean, mask_config::additive, mask_config::alibi,
                      mask_config::softcap, mask_config::all));

INSTANTIATE_TEST_SUITE_P(All, MasksFloat, kMaskSpace, mask_name);
INSTANTIATE_TEST_SUITE_P(All, MasksDouble, kMaskSpace, mask_name);

// ---------------------------------------------------------------------------

TEST(Attention, SoftcapIsNanFreeAtHugeLogits) {
  // Every product is ±1e40 and overflows float: logits are ±inf (never inf − inf,
  // since each key row has one sign), and the softcap must map them to ±c.
  tensor<float> q(1, 1, 2, 4), k(1, 1, 3, 4), v(1, 1, 3, 2), out(1, 1, 2, 2);
  for (std::size_t i = 0; i < 2; ++i)
    for (std::size_t d = 0; d < 4; ++d) q(0, 0, i, d) = 1e20f;
  for (std::size_t j = 0; j < 3; ++j)
    for (std::size_t d = 0; d < 4; ++d) k(0, 0, j, d) = j == 1 ? -1e20f : 1e20f;
  hwtest::fill_uniform(v, 3);
  attention_options opt;
  opt.softcap = 5.0;
  tensor<float> expected(1, 1, 2, 2);
  reference::attention(q.view, k.view, v.view, expected.view, opt);  // double: no overflow
  for (kernel_mode mode : kModes) {
    opt.kernel = mode;
    attention(q.view, k.view, v.view, out.view, opt);
    const double err = hwtest::max_abs_diff(out.view, expected.view);
    EXPECT_TRUE(err <= 1e-6) << "mode " << int(mode) << ": error " << err;
  }
}

TEST(Attention, ThreadCountsBeyondTasksAndDefault) {
  problem<float> p(1, kGqa, 33, 65, 16, 16, layout::bhsd, mask_config{}, 3);
  tensor<float> a(1, 4, 33, 16), b(1, 4, 33, 16);
  attention_options opt = p.opt;
  opt.threads = 1;
  attention(p.q.view, p.k.view, p.v.view, a.view, opt);
  for (unsigned threads : {0u, 3u, 64u}) {
    opt.threads = threads;
    attention(p.q.view, p.k.view, p.v.view, b.view, opt);
    EXPECT_EQ(0, std::memcmp(a.storage.data(), b.storage.data(), a.storage.size() * sizeof(float)))
        << threads << " threads";
  }
}

}  // namespace
