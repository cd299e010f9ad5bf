// inspect_test: probabilities, statistics and diagnostics (inspect.hpp,
// diagnostics.hpp) against the oracle's full probability matrix, and head pruning
// in every kernel mode.
//
// The oracle matrix comes from reference::attention with one-hot values: V = the
// Nk×Nk identity (Dv = Nk), so out_i = Σ_j p_ij e_j = P_i exactly, in double.
// Every statistic is then recomputed here from P with plain loops and compared
// with a tolerance derived from the per-element error of p (see tolerances()).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include <headwise/diagnostics.hpp>
#include <headwise/inspect.hpp>

#include "test_util.hpp"

namespace {

using namespace headwise;
using hwtest::layout;
using hwtest::tensor;

enum class rules { none, top_left, window_sinks, masks, alibi_softcap, pruned };
const char* rules_name(rules r) {
  static const char* names[] = {"none", "topleft", "bottomright_window_sinks", "bool_additive", "alibi_softcap",
                                "pruned_heads"};
  return names[int(r)];
}

/// Inputs, options and token ids of one case, owned together so views stay valid.
struct problem {
  std::size_t B, Hq, Hkv, Nq, Nk, Dk;
  tensor<float> q, k;
  std::vector<float> additive, slopes, head_scale;
  std::vector<char> boolean;
  std::vector<std::int32_t> tokens;
  attention_options opt;

  problem(std::size_t b, std::size_t hq, std::size_t hkv, std::size_t nq, std::size_t nk, std::size_t dk, rules r)
      : B(b), Hq(hq), Hkv(hkv), Nq(nq), Nk(nk), Dk(dk), q(b, hq, nq, dk, layout::bshd), k(b, hkv, nk, dk) {
    hwtest::fill_uniform(q, 11, 2.0);  // amplitude 2: a mix of sharp and diffuse rows
    hwtest::fill_uniform(k, 12, 2.0);
    std::mt19937 gen(13);
    std::uniform_int_distribution<std::int32_t> token(0, 4);  // 5 ids: plenty of repeats
    for (std::size_t j = 0; j < Nk; ++j) tokens.push_back(token(gen));
    switch (r) {
      case rules::none: break;
      case rules::top_left: opt.causal = causal_mode::top_left; break;
      case rules::window_sinks:
        opt.causal = causal_mode::bottom_right;
        opt.window_left = 5;
        opt.sink_tokens = 2;
        break;
      case rules::masks: {
        boolean.resize(B * Nq * Nk);
        std::bernoulli_distribution keep(0.7), hide(0.1);
        for (auto& x : boolean) x = keep(gen);
        opt.boolean_mask = mask_view<const bool>(reinterpret_cast<const bool*>(boolean.data()), B, 1, Nq, Nk);
        std::uniform_real_distribution<float> bias(-2.f, 2.f);
        additive.resize(Hq * Nq * Nk);
        for (auto& x : additive) x = hide(gen) ? -INFINITY : bias(gen);
        opt.additive_mask = mask_view<const float>(additive.data(), 1, Hq, Nq, Nk);
        break;
      }
      case rules::alibi_softcap:
        for (std::size_t h = 0; h < Hq; ++h) slopes.push_back(std::pow(2.f, -float(h + 1)));
        opt.alibi_slopes = slopes;
        opt.softcap = 1.5;
        opt.causal = causal_mode::bottom_right;
        break;
      case rules::pruned:
        for (std::size_t h = 0; h < Hq; ++h) head_scale.push_back(h % 2 ? 0.f : 1.f);
        opt.head_scale = head_scale;
        break;
    }
  }

  /// P[b, h, i, j] in double, from the oracle with one-hot values.
  tensor<double> oracle() const {
    tensor<float> eye(B, Hkv, Nk, Nk);
    for (std::size_t b = 0; b < B; ++b)
      for (std::size_t h = 0; h < Hkv; ++h)
        for (std::size_t j = 0; j < Nk; ++j) eye(b, h, j, j) = 1.f;
    tensor<double> p(B, Hq, Nq, Nk);  // returned by move: the vector keeps its buffer, the view stays valid
    attention_options o = opt;
    if (!head_scale.empty()) o.head_scale = {};  // the oracle scales outputs; P is zero for pruned heads below
    reference::attention(q.view, k.view, eye.view, p.view, o);
    for (std::size_t h = 0; h < head_scale.size(); ++h)
      if (head_scale[h] == 0.f)
        for (std::size_t b = 0; b < B; ++b)
          for (std::size_t i = 0; i < Nq; ++i)
            for (std::size_t j = 0; j < Nk; ++j) p(b, h, i, j) = 0;
    return p;
  }

  /// Keys the rules leave visible to query i of head (b, h): the oracle's rules.
  std::size_t visible(std::size_t b, std::size_t h, std::size_t i) const {
    std::size_t n = 0;
    for (std::size_t j = 0; j < Nk; ++j) {
      bool vis = reference::structurally_visible(opt, std::int64_t(i), std::int64_t(j), std::int64_t(Nq),
                                                 std::int64_t(Nk));
      if (!boolean.empty()) vis = vis && boolean[(b * Nq + i) * Nk + j];
      if (!additive.empty()) vis = vis && additive[(h * Nq + i) * Nk + j] != -INFINITY;
      n += vis;
    }
    return n;
  }

  std::int64_t offset() const { return opt.causal == causal_mode::top_left ? 0 : std::int64_t(Nk) - std::int64_t(Nq); }

  /// Bound on |p_ij − P_ij| / P_ij. p = exp(s − lse) moves by p·(δs + δlse):
  ///   δs   our float logits: the attention bound with unit values, plus rounding
  ///        of the bias terms (ALiBi, additive mask) added to them;
  ///   δlse the LSE attention() stores: within 4·bound + 4e-7·|lse| of the oracle,
  ///        the contract attention_test checks for every kernel mode.
  double relative_error() const {
    double bias = 0;  // largest |ALiBi + additive| term added to a logit
    if (!additive.empty()) bias += 2;
    if (!slopes.empty()) bias += 0.5 * double(std::max(Nq, Nk));
    const double scale = 1 / std::sqrt(double(Dk));
    const double lse_max = scale * double(Dk) * 2.0 * 2.0 + bias + std::log(double(Nk));
    const double logit = hwtest::attention_tolerance<float>(Dk, Nk, scale, 2.0, 2.0, 1.0) +
                         2 * bias * hwtest::unit_roundoff<float>();
    return logit + 4 * logit + 4e-7 * lse_max;
  }
};

/// Statistics of head (b, h) recomputed from the oracle matrix with plain loops.
head_statistics oracle_statistics(const problem& pr, const tensor<double>& P, std::size_t b, std::size_t h,
                                  std::size_t sinks) {
  head_statistics st;
  st.received.assign(pr.Nk, 0.0);
  const std::int64_t off = pr.offset();
  for (std::size_t i = 0; i < pr.Nq; ++i) {
    double total = 0;
    for (std::size_t j = 0; j < pr.Nk; ++j) total += P.view(b, h, i, j);
    if (total < 0.5) continue;  // no visible key (or a pruned head): the row is all zeros
    const std::int64_t pos = std::int64_t(i) + off;
    double H = 0, mx = 0;
    ++st.rows;
    for (std::size_t j = 0; j < pr.Nk; ++j) {
      const double p = P.view(b, h, i, j);
      if (p > 0) H -= p * std::log(p);
      mx = std::max(mx, p);
      st.received[j] += p;
      if (j < sinks) st.sink_share += p;
      st.mean_distance += p * std::fabs(double(pos) - double(j));
    }
    st.mean_entropy += H;
    const std::size_t n = pr.visible(b, h, i);
    st.mean_normalized_entropy += n > 1 ? H / std::log(double(n)) : 0.0;
    st.mean_max_probability += mx;
    if (pos >= 1 && pos <= std::int64_t(pr.Nk)) {
      st.previous_token += P.view(b, h, i, std::size_t(pos - 1));
      ++st.previous_rows;
    }
    if (pos < 0 || pos >= std::int64_t(pr.Nk)) continue;
    double dup = 0, ind = 0;
    bool any_dup = false, any_ind = false;
    for (std::int64_t j = 0; j < pos; ++j)
      if (pr.tokens[j] == pr.tokens[pos]) {
        any_dup = true;
        dup += P.view(b, h, i, std::size_t(j));
        if (j + 1 < pos) any_ind = true, ind += P.view(b, h, i, std::size_t(j + 1));
      }
    if (any_dup) st.duplicate_token += dup, ++st.duplicate_rows;
    if (any_ind) st.induction += ind, ++st.induction_rows;
  }
  const double rows = st.rows ? double(st.rows) : 1.0;
  for (double* x : {&st.mean_entropy, &st.mean_normalized_entropy, &st.mean_max_probability, &st.sink_share,
                    &st.mean_distance})
    *x /= rows;
  if (st.previous_rows) st.previous_token /= double(st.previous_rows);
  if (st.duplicate_rows) st.duplicate_token /= double(st.duplicate_rows);
  if (st.induction_rows) st.induction /= double(st.induction_rows);
  return st;
}

double js_bits(const double* p, const double* q, std::size_t n) {
  double js = 0;
  for (std::size_t j = 0; j < n; ++j) {
    const double m = 0.5 * (p[j] + q[j]);
    if (p[j] > 0) js += 0.5 * p[j] * std::log2(p[j] / m);
    if (q[j] > 0) js += 0.5 * q[j] * std::log2(q[j] / m);
  }
  return js;
}

using case_param = std::tuple<std::pair<std::size_t, std::size_t>, std::pair<std::size_t, std::size_t>, rules>;

void check_probabilities(const problem& pr, const tensor<double>& P) {
  const double bound = pr.relative_error();
  for (kernel_mode mode : {kernel_mode::plain, kernel_mode::flash, kernel_mode::decode, kernel_mode::automatic}) {
    // The main pass in this kernel mode writes the LSE the probabilities come from.
    tensor<float> v(pr.B, pr.Hkv, pr.Nk, 3), out(pr.B, pr.Hq, pr.Nq, 3);
    std::vector<float> lse(pr.B * pr.Hq * pr.Nq);
    attention_options opt = pr.opt;
    opt.kernel = mode;
    opt.lse = lse_view(lse.data(), pr.B, pr.Hq, pr.Nq);
    attention(pr.q.view, pr.k.view, v.view, out.view, opt);
    for (std::size_t b = 0; b < pr.B; ++b)
      for (std::size_t h = 0; h < pr.Hq; ++h) {
        const auto full = head_probabilities(pr.q.view, pr.k.view, opt, b, h);
        ASSERT_EQ(full.rows, pr.Nq);
        ASSERT_EQ(full.cols, pr.Nk);
        double worst = 0;
        for (std::size_t i = 0; i < pr.Nq; ++i)
          for (std::size_t j = 0; j < pr.Nk; ++j) {
            const double want = P.view(b, h, i, j), got = full(i, j);
            worst = std::max(worst, want > 0 ? std::fabs(got - want) / want : std::fabs(got));
          }
        EXPECT_TRUE(worst <= bound) << "mode " << int(mode) << " head (" << b << ", " << h
                                    << "): relative error " << worst << " > " << bound;
        // A row block is exactly the same rows of the full matrix.
        const std::size_t r0 = pr.Nq / 3, r1 = pr.Nq - pr.Nq / 4;
        const auto block = attention_probabilities(pr.q.view, pr.k.view, opt, b, h, r0, r1);
        ASSERT_EQ(block.rows, r1 - r0);
        EXPECT_EQ(block.first_row, r0);
        EXPECT_EQ(0, std::memcmp(block.values.data(), full.row(r0), block.values.size() * sizeof(float)));
      }
  }
}

void check_statistics(const problem& pr, const tensor<double>& P) {
  statistics_options so;
  so.sink_tokens = 3;
  so.tokens = pr.tokens;
  so.threads = 1;
  const std::vector<head_statistics> stats = attention_statistics(pr.q.view, pr.k.view, pr.opt, so);
  ASSERT_EQ(stats.size(), pr.B * pr.Hq);

  const double eps = pr.relative_error();
  const double entropy_tol = eps * (std::log(double(pr.Nk)) + 2);
  for (std::size_t b = 0; b < pr.B; ++b)
    for (std::size_t h = 0; h < pr.Hq; ++h) {
      const head_statistics& got = stats[b * pr.Hq + h];
      const head_statistics want = oracle_statistics(pr, P, b, h, so.sink_tokens);
      const std::string at = "head (" + std::to_string(b) + ", " + std::to_string(h) + ") ";
      EXPECT_EQ(got.batch, b);
      EXPECT_EQ(got.head, h);
      EXPECT_EQ(got.rows, want.rows) << at;
      EXPECT_EQ(got.previous_rows, want.previous_rows) << at;
      EXPECT_EQ(got.duplicate_rows, want.duplicate_rows) << at;
      EXPECT_EQ(got.induction_rows, want.induction_rows) << at;
      const struct {
        const char* name;
        double got, want, tol;
      } checks[] = {
          {"mean_entropy", got.mean_entropy, want.mean_entropy, entropy_tol},
          {"mean_normalized_entropy", got.mean_normalized_entropy, want.mean_normalized_entropy,
           entropy_tol / std::log(2.0)},
          {"mean_max_probability", got.mean_max_probability, want.mean_max_probability, eps},
          {"sink_share", got.sink_share, want.sink_share, eps},
          {"previous_token", got.previous_token, want.previous_token, eps},
          {"mean_distance", got.mean_distance, want.mean_distance, eps * double(pr.Nk)},
          {"duplicate_token", got.duplicate_token, want.duplicate_token, eps},
          {"induction", got.induction, want.induction, eps},
      };
      for (const auto& c : checks)
        EXPECT_TRUE(std::fabs(c.got - c.want) <= c.tol)
            << at << c.name << " " << c.got << " vs oracle " << c.want << " (bound " << c.tol << ")";
      ASSERT_EQ(got.received.size(), pr.Nk);
      for (std::size_t j = 0; j < pr.Nk; ++j)
        EXPECT_TRUE(std::fabs(got.received[j] - want.received[j]) <= eps * double(pr.Nq))
            << at << "received[" << j << "] " << got.received[j] << " vs oracle " << want.received[j];
    }

  // Bitwise identical for any thread count.
  so.threads = 3;
  const std::vector<head_statistics> again = attention_statistics(pr.q.view, pr.k.view, pr.opt, so);
  for (std::size_t t = 0; t < stats.size(); ++t) {
    EXPECT_EQ(0, std::memcmp(&stats[t].mean_entropy, &again[t].mean_entropy, sizeof(double)));
    EXPECT_EQ(stats[t].received, again[t].received);
  }
}

void check_redundancy(const problem& pr, const tensor<double>& P) {
  const redundancy_report rep = head_redundancy(pr.q.view, pr.k.view, pr.opt);
  ASSERT_EQ(rep.heads, pr.Hq);
  const double bound = 8 * pr.relative_error();
  for (std::size_t a = 0; a < pr.Hq; ++a)
    for (std::size_t c = 0; c < pr.Hq; ++c) {
      double sum = 0;
      std::size_t rows = 0;
      for (std::size_t b = 0; b < pr.B; ++b)
        for (std::size_t i = 0; i < pr.Nq; ++i) {
          const double* pa = &P.view(b, a, i, 0);
          const double* pc = &P.view(b, c, i, 0);
          double ta = 0, tc = 0;
          for (std::size_t j = 0; j < pr.Nk; ++j) ta += pa[j], tc += pc[j];
          if (ta < 0.5 || tc < 0.5) continue;
          sum += js_bits(pa, pc, pr.Nk);
          ++rows;
        }
      const double want = a == c ? 0.0 : rows ? sum / double(rows) : 1.0;
      EXPECT_TRUE(std::fabs(rep(a, c) - want) <= bound)
          << "JS(" << a << ", " << c << ") " << rep(a, c) << " vs oracle " << want << " (bound " << bound << ")";
      if (a != c) {
        EXPECT_EQ(rep.rows[a * pr.Hq + c], rows);
      }
    }
}

// One case: the oracle matrix once, then probabilities (from every kernel mode's
// LSE), statistics and redundancy against it. One test per case keeps the CTest
// process count (and the sanitizer start-up cost) low.
class Inspect : public ::testing::TestWithParam<case_param> {};

TEST_P(Inspect, MatchesOracle) {
  const auto& [nqk, heads, r] = GetParam();
  const problem pr(2, heads.first, heads.second, nqk.first, nqk.second, 9, r);
  const tensor<double> P = pr.oracle();
  {
    SCOPED_TRACE("probabilities");
    check_probabilities(pr, P);
  }
  {
    SCOPED_TRACE("statistics");
    check_statistics(pr, P);
  }
  {
    SCOPED_TRACE("redundancy");
    check_redundancy(pr, P);
  }
}

std::string case_name(const ::testing::TestParamInfo<case_param>& info) {
  const auto& [nqk, heads, r] = info.param;
  return "q" + std::to_string(nqk.first) + "k" + std::to_string(nqk.second) + "_h" + std::to_string(heads.first) +
         "x" + std::to_string(heads.second) + "_" + rules_name(r);
}

// (1, 7): a decode row; (17, 3): more queries than keys; (37, 70): ragged, spans
// more than one 32/64-row task; heads: MHA and GQA.
INSTANTIATE_TEST_SUITE_P(All, Inspect,
                         ::testing::Combine(::testing::Values(std::pair<std::size_t, std::size_t>{1, 7},
                                                              std::pair<std::size_t, std::size_t>{17, 3},
                                                              std::pair<std::size_t, std::size_t>{70, 70},
                                                              std::pair<std::size_t, std::size_t>{37, 70}),
                                            ::testing::Values(std::pair<std::size_t, std::size_t>{2, 2},
                                                              std::pair<std::size_t, std::size_t>{4, 2}),
                                            ::testing::Values(rules::none, rules::top_left, rules::window_sinks,
                                                              rules::masks, rules::alibi_softcap, rules::pruned)),
                         case_name);

// Double compute: the statistics stream with their own double LSE, so they match
// the oracle to double precision; probabilities use the float LSE of the main
// pass, so their relative error is that LSE's rounding, |lse|·2^-24 and more.
TEST(Inspect, DoubleComputeMatchesOracle) {
  const std::size_t Hq = 2, N = 23, Dk = 5;
  tensor<double> q(1, Hq, N, Dk), k(1, 1, N, Dk), P(1, Hq, N, N);
  tensor<float> eye(1, 1, N, N);
  hwtest::fill_uniform(q, 41, 2.0);
  hwtest::fill_uniform(k, 42, 2.0);
  for (std::size_t j = 0; j < N; ++j) eye(0, 0, j, j) = 1.f;
  attention_options opt;
  opt.causal = causal_mode::top_left;
  reference::attention(q.view, k.view, eye.view, P.view, opt);

  const double eps = hwtest::attention_tolerance<double>(Dk, N, 1 / std::sqrt(double(Dk)), 2.0, 2.0, 1.0);
  const std::vector<head_statistics> stats = attention_statistics(q.view, k.view, opt);
  for (std::size_t h = 0; h < Hq; ++h) {
    double entropy = 0, max_p = 0;
    for (std::size_t i = 0; i < N; ++i) {
      double row_max = 0;
      for (std::size_t j = 0; j <= i; ++j) {
        const double p = P(0, h, i, j);
        entropy -= p * std::log(p);
        row_max = std::max(row_max, p);
      }
      max_p += row_max;
    }
    EXPECT_TRUE(std::fabs(stats[h].mean_entropy - entropy / N) <= eps * (std::log(double(N)) + 2))
        << stats[h].mean_entropy << " vs " << entropy / N;
    EXPECT_TRUE(std::fabs(stats[h].mean_max_probability - max_p / N) <= eps) << stats[h].mean_max_probability;
    EXPECT_TRUE(eps < 1e-12) << "the double bound is not a double-precision check: " << eps;
  }

  std::vector<float> lse(Hq * N);
  tensor<double> v(1, 1, N, 2), out(1, Hq, N, 2);
  opt.lse = lse_view(lse.data(), 1, Hq, N);
  attention(q.view, k.view, v.view, out.view, opt);
  const auto p = head_probabilities(q.view, k.view, opt, 0, 1);
  const double lse_bound = eps + 8 * hwtest::unit_roundoff<float>() * (2 * 2 * std::sqrt(double(Dk)) + std::log(N));
  for (std::size_t i = 0; i < N; ++i)
    for (std::size_t j = 0; j < N; ++j) {
      const double want = P(0, 1, i, j);
      const double err = want > 0 ? std::fabs(p(i, j) - want) / want : std::fabs(p(i, j));
      EXPECT_TRUE(err <= lse_bound) << "p(" << i << ", " << j << ") " << p(i, j) << " vs " << want;
    }
}

// ---------------------------------------------------------------------------
// Head pruning: pruned heads write exact zeros and LSE -inf, the other heads are
// bitwise unchanged; a head scale multiplies the output. Every kernel mode.

class Pruning : public ::testing::TestWithParam<std::tuple<kernel_mode, std::pair<std::size_t, std::size_t>>> {};

TEST_P(Pruning, PrunedHeadsAreZeroOthersUnchanged) {
  // Not a structured binding: C++17 lambdas may not capture one (clang rejects it).
  const kernel_mode mode = std::get<0>(GetParam());
  const auto nqk = std::get<1>(GetParam());
  const std::size_t B = 2, Hq = 8, Hkv = 2, Nq = nqk.first, Nk = nqk.second, D = 16;
  tensor<float> q(B, Hq, Nq, D), k(B, Hkv, Nk, D), v(B, Hkv, Nk, D);
  hwtest::fill_uniform(q, 1);
  hwtest::fill_uniform(k, 2);
  hwtest::fill_uniform(v, 3);
  auto run = [&](const std::vector<float>& scale, tensor<float>& out, std::vector<float>& lse) {
    attention_options opt;
    opt.causal = causal_mode::bottom_right;
    opt.kernel = mode;
    opt.head_scale = scale;
    opt.lse = lse_view(lse.data(), B, Hq, Nq);
    attention(q.view, k.view, v.view, out.view, opt);
  };
  const std::vector<float> all(Hq, 1.f), pruned = {1, 0, 1, 1, 0, 0, 1, 0}, scaled = {1, 0.5f, 1, 1, 1, 1, 1, 3};
  tensor<float> base(B, Hq, Nq, D), got(B, Hq, Nq, D), with_scale(B, Hq, Nq, D);
  std::vector<float> base_lse(B * Hq * Nq, 7.f), got_lse(base_lse), scale_lse(base_lse);
  run(all, base, base_lse);
  run(pruned, got, got_lse);
  run(scaled, with_scale, scale_lse);
  const float u = std::numeric_limits<float>::epsilon() / 2;
  for (std::size_t b = 0; b < B; ++b)
    for (std::size_t h = 0; h < Hq; ++h)
      for (std::size_t i = 0; i < Nq; ++i) {
        const float l = got_lse[(b * Hq + h) * Nq + i], l0 = base_lse[(b * Hq + h) * Nq + i];
        if (pruned[h] == 0.f)
          EXPECT_TRUE(l == -INFINITY) << "pruned head " << h << " lse " << l;
        else
          EXPECT_EQ(0, std::memcmp(&l, &l0, sizeof l)) << "head " << h << " lse changed";
        for (std::size_t d = 0; d < D; ++d) {
          const float o = got(b, h, i, d), o0 = base(b, h, i, d), s = with_scale(b, h, i, d);
          if (pruned[h] == 0.f)
            EXPECT_TRUE(o == 0.f && !std::signbit(o)) << "pruned head " << h << " wrote " << o;
          else
            EXPECT_EQ(0, std::memcmp(&o, &o0, sizeof o)) << "head " << h << " changed: " << o << " vs " << o0;
          const float want = scaled[h] * o0;
          EXPECT_TRUE(std::fabs(s - want) <= 8 * u * std::fabs(want))
              << "head " << h << " scaled by " << scaled[h] << ": " << s << " vs " << want;
        }
      }
}

std::string pruning_name(const ::testing::TestParamInfo<std::tuple<kernel_mode, std::pair<std::size_t, std::size_t>>>& info) {
  static const char* names[] = {"automatic", "plain", "flash", "decode"};
  const auto& [mode, nqk] = info.param;
  return std::string(names[int(mode)]) + "_q" + std::to_string(nqk.first) + "k" + std::to_string(nqk.second);
}

// (1, 200): decode shape; (70, 70): prefill spanning several tiles.
INSTANTIATE_TEST_SUITE_P(AllModes, Pruning,
                         ::testing::Combine(::testing::Values(kernel_mode::automatic, kernel_mode::plain,
                                                              kernel_mode::flash, kernel_mode::decode),
                                            ::testing::Values(std::pair<std::size_t, std::size_t>{1, 200},
                                                              std::pair<std::size_t, std::size_t>{70, 70})),
                         pruning_name);

// ---------------------------------------------------------------------------
// Diagnostics rules on hand-made statistics, and argument checks.

head_statistics made(std::size_t head, double norm_entropy, std::size_t rows, std::vector<double> received) {
  head_statistics st;
  st.head = head;
  st.rows = rows;
  st.mean_normalized_entropy = norm_entropy;
  st.received = std::move(received);
  return st;
}

TEST(Diagnostics, CollapseNamesTheRuleThatFired) {
  const std::vector<head_statistics> stats = {made(0, 0.9, 10, {5, 5}), made(1, 0.05, 10, {5, 5}),
                                              made(2, 0.8, 10, {9, 1}), made(3, 0.0, 0, {0, 0})};
  const auto v = detect_collapse(stats, {0.1, 0.6});
  ASSERT_EQ(v.size(), 4u);
  EXPECT_FALSE(v[0].collapsed());
  EXPECT_TRUE(v[1].low_entropy && !v[1].dominant_key);
  EXPECT_TRUE(v[2].dominant_key && !v[2].low_entropy);
  EXPECT_EQ(v[2].key, 0u);
  EXPECT_DOUBLE_EQ(v[2].key_share, 0.9);
  EXPECT_FALSE(v[3].collapsed()) << "a head with no rows (pruned) is not collapsed";
}

TEST(Diagnostics, PrunesTheBlurrierTwinOfEachNearDuplicatePair) {
  redundancy_report rep{4, std::vector<double>(16, 0.9), std::vector<std::size_t>(16, 1)};
  auto set = [&](std::size_t a, std::size_t b, double js) { rep.js[a * 4 + b] = rep.js[b * 4 + a] = js; };
  set(0, 2, 0.01);  // most similar pair: 2 is blurrier, pruned
  set(1, 3, 0.02);  // equal entropy: the higher index (3) is pruned
  set(0, 1, 0.03);  // both still kept: 0 is blurrier than 1, pruned
  set(2, 3, 0.04);  // both already pruned: nothing
  const std::vector<head_statistics> stats = {made(0, 0.5, 4, {}), made(1, 0.4, 4, {}), made(2, 0.7, 4, {}),
                                              made(3, 0.4, 4, {})};
  const auto p = prunable_heads(rep, stats, 0.05);
  ASSERT_EQ(p.size(), 3u);
  EXPECT_EQ(p[0].head, 2u);
  EXPECT_EQ(p[0].twin, 0u);
  EXPECT_EQ(p[1].head, 3u);
  EXPECT_EQ(p[1].twin, 1u);
  EXPECT_EQ(p[2].head, 0u);
  EXPECT_EQ(p[2].twin, 1u);
  EXPECT_DOUBLE_EQ(p[2].js, 0.03);
}

TEST(Diagnostics, RolesUseTheDetectorScores) {
  head_statistics st;
  st.previous_token = 0.9, st.previous_rows = 5;
  st.duplicate_token = 0.2, st.duplicate_rows = 5;
  st.induction = 0.7, st.induction_rows = 0;  // no row with a target: no evidence
  const auto r = head_roles({st});
  EXPECT_TRUE(r[0].previous_token);
  EXPECT_FALSE(r[0].duplicate_token);
  EXPECT_FALSE(r[0].induction);
}

TEST(Inspect, BadArgumentsThrowNamingThem) {
  tensor<float> q(1, 2, 4, 8), k(1, 2, 5, 8), k_bad(1, 2, 5, 7);
  std::vector<float> lse(8);
  attention_options opt;
  auto message = [](auto&& fn) {
    try {
      fn();
    } catch (const headwise::error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message([&] { head_probabilities(q.view, k.view, opt, 0, 0); }).find("options.lse"), std::string::npos);
  opt.lse = lse_view(lse.data(), 1, 2, 4);
  EXPECT_NE(message([&] { head_probabilities(q.view, k.view, opt, 0, 2); }).find("head must be < q.heads()"),
            std::string::npos);
  EXPECT_NE(message([&] { attention_probabilities(q.view, k.view, opt, 0, 0, 3, 5); }).find("row_end"),
            std::string::npos);
  EXPECT_NE(message([&] { head_probabilities(q.view, k_bad.view, opt, 0, 0); }).find("k.dim()"), std::string::npos);
  opt.window_left = -1;
  EXPECT_NE(message([&] { attention_statistics(q.view, k.view, opt); }).find("options.window_left"),
            std::string::npos);
  opt.window_left.reset();
  const std::vector<std::int32_t> tokens(4);
  statistics_options so;
  so.tokens = tokens;
  EXPECT_NE(message([&] { attention_statistics(q.view, k.view, opt, so); }).find("tokens.size()"),
            std::string::npos);
  EXPECT_NE(message([&] { head_redundancy(q.view, k_bad.view, opt); }).find("k.dim()"), std::string::npos);
}

}  // namespace
