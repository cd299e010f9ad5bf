// reference_test: the oracle on cases small enough to compute by hand.
//
// A trick used throughout: with q = 0 every visible logit is equal, so the
// probabilities are uniform over the visible keys; with V = identity
// (Dv = Nk, v_j = e_j) the output row *is* the probability row. Together they
// print the visibility pattern of every mask rule as a matrix.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "test_util.hpp"

namespace {

using namespace headwise;
using hwtest::tensor;

constexpr double kInf = std::numeric_limits<double>::infinity();

/// Visibility pattern of `opt` for Nq queries and Nk keys, one string per row,
/// '1' = visible, read off the oracle's probabilities (q = 0, V = identity).
std::vector<std::string> pattern(std::size_t Nq, std::size_t Nk, attention_options opt) {
  tensor<double> q(1, 1, Nq, 4), k(1, 1, Nk, 4), v(1, 1, Nk, Nk), out(1, 1, Nq, Nk);
  hwtest::fill_uniform(k, 3);
  for (std::size_t j = 0; j < Nk; ++j) v(0, 0, j, j) = 1.0;
  reference::attention(q.view, k.view, v.view, out.view, opt);
  std::vector<std::string> rows;
  for (std::size_t i = 0; i < Nq; ++i) {
    std::string r;
    for (std::size_t j = 0; j < Nk; ++j) r += out(0, 0, i, j) > 0 ? '1' : '0';
    rows.push_back(r);
  }
  return rows;
}

TEST(Reference, SingleKeyReturnsItsValue) {
  tensor<double> q(1, 1, 1, 3), k(1, 1, 1, 3), v(1, 1, 1, 2), out(1, 1, 1, 2);
  std::vector<float> lse(1);
  q(0, 0, 0, 0) = 1;  q(0, 0, 0, 1) = 2;  q(0, 0, 0, 2) = 3;
  k(0, 0, 0, 0) = 4;  k(0, 0, 0, 1) = 5;  k(0, 0, 0, 2) = 6;
  v(0, 0, 0, 0) = -7; v(0, 0, 0, 1) = 0.5;
  attention_options opt;
  opt.lse = lse_view(lse.data(), 1, 1, 1);
  reference::attention(q.view, k.view, v.view, out.view, opt);
  EXPECT_EQ(out(0, 0, 0, 0), -7.0);
  EXPECT_EQ(out(0, 0, 0, 1), 0.5);
  EXPECT_FLOAT_EQ(lse[0], float(32.0 / std::sqrt(3.0)));  // lse of one logit is the logit
}

TEST(Reference, UniformScoresAverageTheValues) {
  const std::size_t Nk = 5;
  tensor<double> q(1, 1, 1, 4), k(1, 1, Nk, 4), v(1, 1, Nk, 1), out(1, 1, 1, 1);
  std::vector<float> lse(1);
  hwtest::fill_uniform(k, 1);
  for (std::size_t j = 0; j < Nk; ++j) v(0, 0, j, 0) = double(j + 1);  // mean 3
  attention_options opt;
  opt.lse = lse_view(lse.data(), 1, 1, 1);
  reference::attention(q.view, k.view, v.view, out.view, opt);  // q = 0: all logits 0
  EXPECT_DOUBLE_EQ(out(0, 0, 0, 0), 3.0);
  EXPECT_FLOAT_EQ(lse[0], float(std::log(5.0)));
}

TEST(Reference, OneHotScoresSelectOneValue) {
  // Logit 0 for key 2 and -200 for the others: p_2 = 1 / (1 + 3e^-200) == 1 in double.
  const std::size_t Nk = 4;
  tensor<double> q(1, 1, 1, 1), k(1, 1, Nk, 1), v(1, 1, Nk, 2), out(1, 1, 1, 2);
  q(0, 0, 0, 0) = 1;
  for (std::size_t j = 0; j < Nk; ++j) {
    k(0, 0, j, 0) = j == 2 ? 0.0 : -200.0;
    v(0, 0, j, 0) = double(j);
    v(0, 0, j, 1) = 10.0 * double(j);
  }
  attention_options opt;
  opt.scale = 1.0;
  reference::attention(q.view, k.view, v.view, out.view, opt);
  EXPECT_DOUBLE_EQ(out(0, 0, 0, 0), 2.0);
  EXPECT_DOUBLE_EQ(out(0, 0, 0, 1), 20.0);
}

TEST(Reference, SoftmaxWeightsMatchHandComputation) {
  // Two keys with logits 0 and log 3: p = (1/4, 3/4).
  tensor<double> q(1, 1, 1, 1), k(1, 1, 2, 1), v(1, 1, 2, 1), out(1, 1, 1, 1);
  q(0, 0, 0, 0) = 1;
  k(0, 0, 1, 0) = std::log(3.0);
  v(0, 0, 0, 0) = 4;
  v(0, 0, 1, 0) = 8;
  attention_options opt;
  opt.scale = 1.0;
  reference::attention(q.view, k.view, v.view, out.view, opt);
  EXPECT_DOUBLE_EQ(out(0, 0, 0, 0), 0.25 * 4 + 0.75 * 8);
}

TEST(Reference, FullyMaskedRowGivesZeroAndMinusInfLse) {
  tensor<double> q(1, 1, 2, 3), k(1, 1, 3, 3), v(1, 1, 3, 2), out(1, 1, 2, 2);
  hwtest::fill_uniform(q, 1);
  hwtest::fill_uniform(k, 2);
  hwtest::fill_uniform(v, 3);
  bool visible[2 * 3] = {false, false, false, true, false, true};
  std::vector<float> lse(2);
  attention_options opt;
  opt.boolean_mask = mask_view<const bool>(visible, 1, 1, 2, 3);
  opt.lse = lse_view(lse.data(), 1, 1, 2);
  reference::attention(q.view, k.view, v.view, out.view, opt);
  EXPECT_EQ(out(0, 0, 0, 0), 0.0);
  EXPECT_EQ(out(0, 0, 0, 1), 0.0);
  EXPECT_EQ(lse[0], -kInf);
  EXPECT_TRUE(std::isfinite(lse[1]));
  EXPECT_FALSE(std::isnan(out(0, 0, 1, 0)));
}

TEST(Reference, AdditiveMinusInfHidesKeys) {
  float bias[1 * 3] = {-INFINITY, -INFINITY, -INFINITY};
  attention_options opt;
  opt.additive_mask = mask_view<const float>(bias, 1, 1, 1, 3);
  EXPECT_EQ(pattern(1, 3, opt), std::vector<std::string>{"000"});
  bias[1] = 0.f;
  EXPECT_EQ(pattern(1, 3, opt), std::vector<std::string>{"010"});
}

TEST(Reference, CausalAlignmentWithMoreKeysThanQueries) {
  attention_options opt;
  opt.causal = causal_mode::top_left;
  EXPECT_EQ(pattern(2, 4, opt), (std::vector<std::string>{"1000", "1100"}));
  opt.causal = causal_mode::bottom_right;
  EXPECT_EQ(pattern(2, 4, opt), (std::vector<std::string>{"1110", "1111"}));
}

TEST(Reference, CausalAlignmentWithMoreQueriesThanKeys) {
  attention_options opt;
  opt.causal = causal_mode::top_left;
  EXPECT_EQ(pattern(4, 2, opt), (std::vector<std::string>{"10", "11", "11", "11"}));
  opt.causal = causal_mode::bottom_right;  // the first two queries see nothing
  EXPECT_EQ(pattern(4, 2, opt), (std::vector<std::string>{"00", "00", "10", "11"}));
}

TEST(Reference, SlidingWindowAndSinks) {
  attention_options opt;
  opt.causal = causal_mode::top_left;
  opt.window_left = 1;
  EXPECT_EQ(pattern(5, 5, opt), (std::vector<std::string>{"10000", "11000", "01100", "00110", "00011"}));
  opt.sink_tokens = 1;  // key 0 stays visible past the window
  EXPECT_EQ(pattern(5, 5, opt), (std::vector<std::string>{"10000", "11000", "11100", "10110", "10011"}));
  opt = {};
  opt.window_left = 0;  // non-causal window: measured from the bottom-right diagonal
  opt.window_right = 1;
  EXPECT_EQ(pattern(2, 4, opt), (std::vector<std::string>{"0011", "0001"}));
}

// Issue 25: a bound of INT64_MAX overflowed the distance arithmetic (every row came
// out 0) and a sink count >= 2^63 acted as no sink. Any bound is valid and one that
// reaches every key is no bound; any sink count >= Nk makes every key a sink.
TEST(Reference, WindowBoundsAndSinkCountsAtTheEndsOfTheirTypes) {
  constexpr std::int64_t max_bound = std::numeric_limits<std::int64_t>::max();
  attention_options opt;
  opt.window_left = 1;
  opt.window_right = max_bound;
  EXPECT_EQ(pattern(2, 8, opt), (std::vector<std::string>{"00000111", "00000011"}));
  opt = {};
  opt.window_left = max_bound;  // Nk < Nq: the diagonal is left of key 0
  EXPECT_EQ(pattern(5, 2, opt), (std::vector<std::string>(5, "11")));
  opt.causal = causal_mode::top_left;
  opt.window_right = max_bound;
  EXPECT_EQ(pattern(5, 2, opt), (std::vector<std::string>{"10", "11", "11", "11", "11"}));
  opt = {};
  opt.window_left = opt.window_right = 0;
  for (std::size_t sinks : {std::size_t(2), std::size_t(1) << 63, std::numeric_limits<std::size_t>::max()}) {
    opt.sink_tokens = sinks;
    EXPECT_EQ(pattern(2, 2, opt), (std::vector<std::string>{"11", "11"})) << sinks << " sinks";
  }
}

TEST(Reference, SinksStillObeyCausality) {
  attention_options opt;
  opt.causal = causal_mode::top_left;
  opt.window_left = 0;
  opt.sink_tokens = 3;
  EXPECT_EQ(pattern(4, 4, opt), (std::vector<std::string>{"1000", "1100", "1110", "1111"}));
}

TEST(Reference, SoftcapBoundsTheLogits) {
  // Logits 100 and 0 with softcap 2: capped to 2·tanh(50) ≈ 2 and 0.
  tensor<double> q(1, 1, 1, 1), k(1, 1, 2, 1), v(1, 1, 2, 1), out(1, 1, 1, 1);
  q(0, 0, 0, 0) = 1;
  k(0, 0, 0, 0) = 100;
  v(0, 0, 0, 0) = 1;
  attention_options opt;
  opt.scale = 1.0;
  opt.softcap = 2.0;
  reference::attention(q.view, k.view, v.view, out.view, opt);
  const double s0 = 2.0 * std::tanh(50.0);
  EXPECT_DOUBLE_EQ(out(0, 0, 0, 0), std::exp(s0) / (std::exp(s0) + 1.0));
}

TEST(Reference, AlibiPenalisesDistanceFromTheDiagonal) {
  // q = 0, causal bottom_right, Nq = 1, Nk = 3, slope 1: logits -2, -1, 0.
  tensor<double> q(1, 1, 1, 2), k(1, 1, 3, 2), v(1, 1, 3, 1), out(1, 1, 1, 1);
  for (std::size_t j = 0; j < 3; ++j) v(0, 0, j, 0) = double(j);
  const float slope[1] = {1.f};
  attention_options opt;
  opt.causal = causal_mode::bottom_right;
  opt.alibi_slopes = span<const float>(slope, 1);
  reference::attention(q.view, k.view, v.view, out.view, opt);
  const double e2 = std::exp(-2.0), e1 = std::exp(-1.0);
  EXPECT_DOUBLE_EQ(out(0, 0, 0, 0), (0 * e2 + 1 * e1 + 2 * 1.0) / (e2 + e1 + 1.0));
}

TEST(Reference, GqaQueryHeadReadsItsGroupsKvHead) {
  // Hq = 4, Hkv = 2: heads 0, 1 read kv head 0 (values 10), heads 2, 3 read kv head 1 (values 20).
  tensor<double> q(1, 4, 1, 2), k(1, 2, 3, 2), v(1, 2, 3, 1), out(1, 4, 1, 1);
  hwtest::fill_uniform(q, 5);
  hwtest::fill_uniform(k, 6);
  for (std::size_t j = 0; j < 3; ++j) {
    v(0, 0, j, 0) = 10;
    v(0, 1, j, 0) = 20;
  }
  reference::attention(q.view, k.view, v.view, out.view);
  EXPECT_DOUBLE_EQ(out(0, 0, 0, 0), 10.0);
  EXPECT_DOUBLE_EQ(out(0, 1, 0, 0), 10.0);
  EXPECT_DOUBLE_EQ(out(0, 2, 0, 0), 20.0);
  EXPECT_DOUBLE_EQ(out(0, 3, 0, 0), 20.0);
}

TEST(Reference, HeadScaleMultipliesAndZeroPrunes) {
  tensor<double> q(1, 2, 3, 2), k(1, 1, 3, 2), v(1, 1, 3, 2), a(1, 2, 3, 2), b(1, 2, 3, 2);
  hwtest::fill_uniform(q, 1);
  hwtest::fill_uniform(k, 2);
  hwtest::fill_uniform(v, 3);
  reference::attention(q.view, k.view, v.view, a.view);
  const float scale[2] = {0.f, 2.f};
  std::vector<float> lse(2 * 3);
  attention_options opt;
  opt.head_scale = span<const float>(scale, 2);
  opt.lse = lse_view(lse.data(), 1, 2, 3);
  reference::attention(q.view, k.view, v.view, b.view, opt);
  for (std::size_t i = 0; i < 3; ++i)
    for (std::size_t d = 0; d < 2; ++d) {
      EXPECT_EQ(b(0, 0, i, d), 0.0);
      EXPECT_DOUBLE_EQ(b(0, 1, i, d), 2.0 * a(0, 1, i, d));
    }
  EXPECT_EQ(lse[0], -kInf);
}

TEST(Reference, DefaultScaleIsInverseSqrtOfDk) {
  tensor<double> q(1, 1, 1, 4), k(1, 1, 2, 4), v(1, 1, 2, 1), out_default(1, 1, 1, 1), out_half(1, 1, 1, 1);
  hwtest::fill_uniform(q, 1);
  hwtest::fill_uniform(k, 2);
  hwtest::fill_uniform(v, 3);
  reference::attention(q.view, k.view, v.view, out_default.view);
  attention_options opt;
  opt.scale = 0.5;  // 1/sqrt(4)
  reference::attention(q.view, k.view, v.view, out_half.view, opt);
  EXPECT_EQ(out_default(0, 0, 0, 0), out_half(0, 0, 0, 0));
}

}  // namespace
