// tests/mha_backward_test.cpp — multi_head_attention::backward against central finite
// differences in double: dx, dA and dB of every adapter in the active mix, dW and db
// of all four projections; MHA, GQA and MQA, causal or not, RoPE off / neox /
// interleaved, two sequences per batch. Plus accumulation and the argument checks.
#include <headwise/kv_cache.hpp>
#include <headwise/mha.hpp>

#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <ostream>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

namespace {

using namespace headwise;
using dmat = row_matrix<double>;
constexpr auto all_projections = std::array{projection::q, projection::k, projection::v, projection::o};

template <class M>
void fill(M&& m, std::uint32_t seed, double amp) {
  using S = typename std::decay_t<M>::Scalar;
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> dist(-amp, amp);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = static_cast<S>(dist(gen));
}

template <class T = double>
row_matrix<T> random_matrix(Eigen::Index rows, Eigen::Index cols, std::uint32_t seed, double amp = 1.0) {
  row_matrix<T> m(rows, cols);
  fill(m, seed, amp);
  return m;
}

struct backward_case {
  const char* name;
  std::size_t heads, kv_heads;
  rope_style rope;
  bool causal;
};

// Small enough that every parameter gets its own pair of differences: model 6,
// D 4, two sequences of 3 tokens (rows 6), rank-2 and rank-1 adapters.
void PrintTo(const backward_case& c, std::ostream* os) { *os << c.name; }

constexpr std::size_t model = 6, head_dim = 4, sequences = 2;
constexpr Eigen::Index rows = 6;

mha_config config_of(const backward_case& c, std::size_t model_dim = model) {
  mha_config cfg;
  cfg.model_dim = model_dim;
  cfg.num_heads = c.heads;
  cfg.num_kv_heads = c.kv_heads;
  cfg.head_dim = head_dim;
  cfg.rope = rope_config{c.rope, 100.0, 1.0};  // base 100: angles of order 1 rad at these positions
  cfg.causal = c.causal;
  cfg.bias = true;
  cfg.threads = 2;
  return cfg;
}

/// Random weights (1/√in scale) and biases, and a mix of two adapters: "a" on q, k, v
/// and o (rank 2) at weight 0.75, "b" on k and o (rank 1, rsLoRA) at weight −0.5.
/// B is random, not zero as at initialisation, so dA is not trivially zero.
template <class T>
void build(multi_head_attention<T>& layer) {
  std::uint32_t seed = 300;
  for (projection p : all_projections) {
    fill(layer.weight(p), seed++, 1.0 / std::sqrt(double(layer.weight(p).cols())));
    fill(layer.bias(p), seed++, 0.5);
  }
  auto& set = layer.adapters();
  const auto a = set.add("a"), b = set.add("b");
  for (projection p : all_projections) {
    const projection_shape s = set.shape(p);
    set.attach(
        a, p,
        lora_delta<T>(random_matrix<T>(2, s.in, seed, 0.5), random_matrix<T>(s.out, 2, seed + 1, 0.5), 4.0));
    seed += 2;
  }
  for (projection p : {projection::k, projection::o}) {
    const projection_shape s = set.shape(p);
    set.attach(b, p,
               lora_delta<T>(random_matrix<T>(1, s.in, seed, 0.5), random_matrix<T>(s.out, 1, seed + 1, 0.5),
                             2.0, lora_scaling::rank_stabilized));
    seed += 2;
  }
  set.activate({{a, 0.75}, {b, -0.5}});
}

/// max |row of x·W_effᵀ + b| for projection p, W_eff = W + Σ |w·s·B·A| over the mix
/// (an upper bound on every |q|, |k| entry; RoPE keeps pair norms, hence the √2).
double projected_max(const multi_head_attention<double>& layer, const dmat& x, projection p) {
  dmat w = layer.weight(p).cwiseAbs();
  for (const auto& m : layer.adapters().active())
    if (const lora_delta<double>* d = layer.adapters().delta(m.id, p))
      w += std::fabs(m.weight * d->scale()) * d->b().cwiseAbs() * d->a().cwiseAbs();
  dmat t = x.cwiseAbs() * w.transpose();
  t.rowwise() += layer.bias(p).cwiseAbs();
  return std::sqrt(2.0) * t.maxCoeff();
}

class mha_backward : public ::testing::TestWithParam<backward_case> {};

// Central differences of L(θ) = Σ G ∘ y(θ), G = dL/dy random, one coordinate at a time.
//   Truncation: fd(h) = g + c·h² + O(h⁴), c = L'''/6. A bound on L''' a priori would
//   go through softmax composed with three bilinear maps (x enters q, k and v); it
//   is measured instead from the step-doubling difference: fd(2h) − fd(h) = 3c·h² +
//   O(h⁴), so |fd(h) − g| <= 2·|fd(2h) − fd(h)|/3 while the O(h⁴) term stays below
//   c·h² (h = 1e-4 against derivatives of order 1: by ~10⁻⁸). That is the function's
//   curvature at this h, not the code under test.
//   Rounding: one evaluation of L in double is within e_L = n·u·Σ|G|·(1 + max|y|),
//   n = 64 >= the longest reduction chain (model + rank + keys + D + the sums of
//   softmax and LoRA); fd(h) carries e_L/h, fd(2h) e_L/(2h), and the estimate above
//   (e_L/h + e_L/(2h))/3·2. Total: 2·|fd(2h) − fd(h)|/3 + 2.5·e_L/h.
//   The float LSE: attention() hands back the LSE in float even for double, so the
//   backward's P = exp(s − lse) is off by a factor e^{−δ_i} per row and head, |δ_i| <=
//   δ = u_f·|lse| <= u_f·(S + log Nk), S = scale·D·qmax·kmax the logit bound. With the
//   stored out, that is exactly the gradient of da_i scaled by e^{−δ_i} (dP and
//   D = rowsum(da ∘ out) both scale): an error of δ times the attention paths'
//   share of each gradient. Bounded here by 2·expm1(δ)·max|g| over the tensor — an
//   estimate, not worst case: rows whose contributions cancel could in principle
//   exceed it; it is 30–90× the errors seen (<= 3e-8 per unit gradient scale).
//   The backward's own double rounding (~n·u·|g|) is far below these and left out.
// The bound must also stay small (<= 1e-4 per unit gradient scale), so that it has teeth.
TEST_P(mha_backward, gradients_match_central_differences) {
  multi_head_attention<double> layer(config_of(GetParam()));
  build(layer);
  dmat x = random_matrix(rows, model, 11);
  const dmat G = random_matrix(rows, model, 12);
  dmat y(rows, model), dx(rows, model);
  auto grads = layer.make_gradients(true);
  layer.forward(x, y, {}, sequences);
  layer.backward(x, G, dx, grads);

  auto loss = [&] {
    layer.forward(x, y, {}, sequences);
    return (G.array() * y.array()).sum();
  };
  const double u = std::numeric_limits<double>::epsilon() / 2, h = 1e-4;
  const double e_l = 64 * u * G.cwiseAbs().sum() * (1 + y.cwiseAbs().maxCoeff());
  const double S = std::sqrt(double(head_dim)) * projected_max(layer, x, projection::q) *
                   projected_max(layer, x, projection::k);
  const double lse_shift = std::expm1(std::ldexp(S + std::log(double(rows / sequences)), -24));
  std::size_t checked = 0;
  auto check = [&](auto&& param, const auto& grad, const std::string& name) {
    ASSERT_EQ(param.size(), grad.size()) << name;
    const double g_scale = grad.cwiseAbs().maxCoeff();
    for (Eigen::Index i = 0; i < param.size(); ++i) {
      double& p = param.data()[i];
      const double keep = p;
      auto diff = [&](double step) {
        p = keep + step;
        const double up = loss();
        p = keep - step;
        const double down = loss();
        p = keep;
        return (up - down) / (2 * step);
      };
      const double fd = diff(h), fd2 = diff(2 * h), g = grad.data()[i];
      const double bound = 2 * std::fabs(fd2 - fd) / 3 + 2.5 * e_l / h + 2 * lse_shift * g_scale;
      const double err = std::fabs(fd - g);
      if (!(err <= bound))
        ADD_FAILURE() << name << "[" << i << "]: analytic " << g << " vs fd " << fd << " (bound " << bound
                      << ")";
      if (!(bound <= 1e-4 * (1 + g_scale)))
        ADD_FAILURE() << name << "[" << i << "]: bound " << bound << " too loose";
      ++checked;
    }
  };
  check(x, dx, "dx");
  for (projection p : all_projections) {
    const std::size_t i = std::size_t(p);
    const std::string n = projection_name(p);
    check(layer.weight(p), grads.weights[i], "dW" + n);
    check(layer.bias(p), grads.biases[i], "db" + n);
    for (auto id : {0u, 1u})
      if (lora_delta<double>* d = layer.adapters().delta(id, p)) {
        check(d->a(), grads.adapters[id][i].a, "adapter " + std::to_string(id) + " dA" + n);
        check(d->b(), grads.adapters[id][i].b, "adapter " + std::to_string(id) + " dB" + n);
      } else {
        EXPECT_EQ(grads.adapters[id][i].a.size(), 0) << "no delta, no gradient";
      }
  }
  EXPECT_GT(checked, 400u);
}

// MHA, GQA and MQA × RoPE off / neox / interleaved, causal or not in turn: every
// pair of heads, RoPE and mask appears (9 cases; the 18 of the full grid took 82 s of
// the ASan test run).
std::vector<backward_case> backward_cases() {
  std::vector<backward_case> cases;
  static const std::string names[] = {"mha", "gqa", "mqa"};
  static const char* rope_names[] = {"norope", "neox", "interleaved"};
  static std::vector<std::string> storage;
  storage.reserve(9);
  const std::size_t kv[] = {4, 2, 1};
  const rope_style ropes[] = {rope_style::none, rope_style::neox, rope_style::interleaved};
  for (int g = 0; g < 3; ++g)
    for (int r = 0; r < 3; ++r) {
      const bool causal = (g + r) % 2 == 0;
      storage.push_back(names[g] + "_" + rope_names[r] + (causal ? "_causal" : "_full"));
      cases.push_back({storage.back().c_str(), 4, kv[g], ropes[r], causal});
    }
  return cases;
}
INSTANTIATE_TEST_SUITE_P(shapes, mha_backward, ::testing::ValuesIn(backward_cases()),
                         [](const ::testing::TestParamInfo<backward_case>& c) {
                           return std::string(c.param.name);
                         });

// Gradients accumulate: a second backward adds exactly the same values (v + v = 2v
// is exact in binary floating point); dx is overwritten. Adapters-only gradients
// (make_gradients(false)) leave dW, db untouched and give the adapters the same bits.
// Float (which the finite differences do not cover) and double.
template <class T>
void check_accumulation() {
  using mat = row_matrix<T>;
  multi_head_attention<T> layer(config_of({"", 4, 2, rope_style::neox, true}));
  build(layer);
  const mat x = random_matrix<T>(rows, model, 21), G = random_matrix<T>(rows, model, 22);
  mat y(rows, model), dx1(rows, model), dx2(rows, model);
  auto once = layer.make_gradients(true), twice = layer.make_gradients(true), lora = layer.make_gradients();
  layer.forward(x, y, {}, sequences);
  layer.backward(x, G, dx1, once);
  layer.backward(x, G, dx2, twice);
  layer.backward(x, G, dx2, twice);
  layer.backward(x, G, dx2, lora);
  EXPECT_TRUE(dx1 == dx2);
  for (std::size_t p = 0; p < projection_count; ++p) {
    EXPECT_TRUE(twice.weights[p] == 2 * once.weights[p]);
    EXPECT_TRUE(twice.biases[p] == 2 * once.biases[p]);
    EXPECT_EQ(lora.weights[p].size(), 0);
    for (std::size_t id = 0; id < 2; ++id) {
      EXPECT_TRUE(twice.adapters[id][p].a == 2 * once.adapters[id][p].a);
      EXPECT_TRUE(lora.adapters[id][p].b == once.adapters[id][p].b);
    }
  }
  twice.zero();
  EXPECT_TRUE(twice.adapters[0][0].a.isZero(0) && twice.weights[3].isZero(0));
  EXPECT_TRUE(dx1.allFinite());
}
TEST(mha_backward_accumulation, second_call_doubles_gradients_float) { check_accumulation<float>(); }
TEST(mha_backward_accumulation, second_call_doubles_gradients_double) { check_accumulation<double>(); }

// Model 1100 cuts dx and dW_o into three blocks of 512 columns (and 76): the bits
// must not depend on how many threads run them.
TEST(mha_backward_threads, gradients_have_the_same_bits_for_every_thread_count) {
  const Eigen::Index wide = 1100;
  const dmat x = random_matrix(rows, wide, 41), G = random_matrix(rows, wide, 42);
  dmat y(rows, wide), dx_first;
  mha_gradients<double> first;
  for (unsigned threads : {1u, 2u, 3u}) {
    mha_config cfg = config_of({"", 4, 2, rope_style::neox, true}, std::size_t(wide));
    cfg.threads = threads;
    multi_head_attention<double> layer(cfg);
    build(layer);
    auto grads = layer.make_gradients(true);
    dmat dx(rows, wide);
    layer.forward(x, y, {}, sequences);
    layer.backward(x, G, dx, grads);
    if (threads == 1) {
      dx_first = dx, first = grads;
      continue;
    }
    EXPECT_TRUE(dx == dx_first) << threads << " threads";
    for (std::size_t p = 0; p < projection_count; ++p)
      EXPECT_TRUE(grads.weights[p] == first.weights[p] && grads.adapters[0][p].a == first.adapters[0][p].a)
          << threads << " threads, projection " << p;
  }
}

TEST(mha_backward_errors, refuses_without_kept_activations_or_with_bad_shapes_and_writes_nothing) {
  multi_head_attention<double> layer(config_of({"", 4, 2, rope_style::interleaved, true}));
  build(layer);
  const dmat x = random_matrix(rows, model, 31), G = random_matrix(rows, model, 32);
  dmat y(rows, model), dx = dmat::Zero(rows, model), dx_bad = dmat::Zero(rows - 1, model);
  auto grads = layer.make_gradients(true);
  EXPECT_THROW(layer.backward(x, G, dx, grads), error);  // no forward yet
  layer.forward(x, y, {}, sequences);
  EXPECT_THROW(layer.backward(x, G, dx_bad, grads), error);
  EXPECT_THROW(layer.backward(x.topRows(rows - 2), G.topRows(rows - 2), dx.topRows(rows - 2), grads), error);
  auto stale = layer.make_gradients();
  stale.adapters.pop_back();  // made before adapter "b" was added
  EXPECT_THROW(layer.backward(x, G, dx, stale), error);
  auto wrong = layer.make_gradients(true);
  wrong.weights[1].resize(3, 3);
  EXPECT_THROW(layer.backward(x, G, dx, wrong), error);
  EXPECT_TRUE(dx.isZero(0) && grads.weights[0].isZero(0) && grads.adapters[0][0].a.isZero(0))
      << "nothing may be written before the checks pass";

  layer.merge_adapters();  // drops the kept forward; a merged forward has no adapter gradients
  layer.forward(x, y, {}, sequences);
  EXPECT_THROW(layer.backward(x, G, dx, grads), error);
  layer.unmerge_adapters();
  EXPECT_THROW(layer.backward(x, G, dx, grads), error);

  const std::vector<lora_adapter_set<double>::adapter_id> ids(rows, 0);
  layer.forward(x, y, ids, sequences);
  EXPECT_THROW(layer.backward(x, G, dx, grads), error);  // per-row adapters

  layer.forward(x, y, {}, sequences);
  kv_cache<double> cache(sequences, 2, 8, head_dim);
  layer.prefill(x, y, cache);
  EXPECT_THROW(layer.backward(x, G, dx, grads), error);  // prefill overwrote the activations
  EXPECT_TRUE(dx.isZero(0));

  const dmat x_empty(0, model);
  dmat dx_empty(0, model);
  layer.forward(x_empty, dx_empty);
  EXPECT_NO_THROW(layer.backward(x_empty, x_empty, dx_empty, grads)) << "zero tokens is a valid, empty call";
}

}  // namespace
