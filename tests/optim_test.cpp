// tests/optim_test.cpp — adamw against a double-precision reference of PyTorch's
// AdamW formula with a forward-error bound carried along; clip_grad_norm's values
// and refusals; the LoRA parameter lists of a layer.
#include <headwise/optim.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <random>
#include <vector>

#include "eigen_util.hpp"

namespace {

using hwtest::random_matrix;

using headwise::adamw;
using headwise::adamw_config;
using headwise::matrix_ref;
using headwise::parameter;
template <class T>
using mat = headwise::row_matrix<T>;
using dmat = mat<double>;

/// The PyTorch docs' form of AdamW, in double, for one element, with the bound on
/// |θ computed in T − θ| carried along (first-order error analysis, Higham ch. 2,
/// each rounding count raised by one for the O(u²) terms). The element formula in
/// T and its roundings:
///   m = β1·m + (1−β1)·g           3 roundings over |β1·m| + |(1−β1)·g| <= M (M: m of |g|)
///   v = β2·v + (1−β2)·g·g          4 roundings, every term positive, <= v
///   D = √v / √(1−β2ᵗ) + eps        √: ½·rel(v) + 1, ÷: 1, √(1−β2ᵗ) rounded to T: 1, +: 1
///   Δ = (lr/(1−β1ᵗ))·(m/D)         step size rounded to T: 1, ÷: 1, ×: 1
///   θ = θ·(1−lr·wd) − Δ            (1−lr·wd) rounded to T: 1, ×: 1, −: 1 (on |θ|)
/// (1 − β1 and 1 − β2 are exact by Sterbenz's lemma for β in [½, 1).) The bias
/// corrections 1 − βᵗ are computed in double by both sides with the same expression
/// (PyTorch does so in Python floats), so their rounding is common and not counted.
/// For T = double the reference's own roundings are of the same count: the bound
/// is taken with u_T + u_double.
struct reference_element {
  double theta, m = 0, v = 0, abs_m = 0;  // abs_m: M, the first moment of |g|
  double err_theta = 0, err_m = 0, err_v = 0;

  void step(const adamw_config<double>& c, int t, double g, double u) {
    const double bc1 = 1 - std::pow(c.beta1, t), bc2 = 1 - std::pow(c.beta2, t);
    theta = theta - c.lr * c.weight_decay * theta;
    const double decayed = theta;
    m = c.beta1 * m + (1 - c.beta1) * g;
    v = c.beta2 * v + (1 - c.beta2) * g * g;
    abs_m = c.beta1 * abs_m + (1 - c.beta1) * std::fabs(g);
    const double m_hat = m / bc1, v_hat = v / bc2;
    const double delta = c.lr * m_hat / (std::sqrt(v_hat) + c.eps);
    theta -= delta;

    err_m = c.beta1 * err_m + 4 * u * abs_m;
    err_v = c.beta2 * err_v + 5 * u * v;
    const double denom = std::sqrt(v) / std::sqrt(bc2) + c.eps;
    const double rel_denom = (v > 0 ? 0.5 * err_v / v : 0.0) + 5 * u;
    const double err_delta = (c.lr / bc1) / denom * err_m + std::fabs(delta) * (rel_denom + 4 * u);
    err_theta = (1 - c.lr * c.weight_decay) * err_theta + 3 * u * std::fabs(decayed) +
                2 * u * std::fabs(theta) + err_delta;
  }
};

template <class T>
adamw_config<double> as_double(const adamw_config<T>& c) {
  return {double(c.lr), double(c.beta1), double(c.beta2), double(c.eps), double(c.weight_decay)};
}

/// Runs `steps` steps of adamw<T> on three parameters — one a block of a wider
/// matrix (outer stride != cols), one 1 × 1 — and checks every element after every
/// step against reference_element within its carried bound.
template <class T>
void check_against_reference(const adamw_config<T>& cfg, int steps) {
  const double u = std::numeric_limits<T>::epsilon() / 2 +
                   (std::is_same_v<T, double> ? std::numeric_limits<double>::epsilon() / 2 : 0.0);
  mat<T> a = random_matrix<T>(3, 17, 1), wide = random_matrix<T>(5, 12, 2), one = random_matrix<T>(1, 1, 3);
  std::vector<mat<T>> grads{mat<T>(3, 17), mat<T>(5, 9), mat<T>(1, 1)};
  std::vector<parameter<T>> params{{a, grads[0]}, {wide.leftCols(9), grads[1]}, {one, grads[2]}};
  const mat<T> wide_right = wide.rightCols(3);

  std::vector<std::vector<reference_element>> ref(params.size());
  for (std::size_t i = 0; i < params.size(); ++i)
    for (Eigen::Index r = 0; r < params[i].value.rows(); ++r)
      for (Eigen::Index c = 0; c < params[i].value.cols(); ++c)
        ref[i].push_back({static_cast<double>(params[i].value(r, c))});

  adamw<T> opt(cfg);
  double worst = 0;  // largest error / bound seen: how much of the bound the code uses
  for (int t = 1; t <= steps; ++t) {
    // Gradients of mixed magnitude (1e-3 .. 1), a few exact zeros, signs that flip
    // between steps so m cancels while v does not.
    for (std::size_t i = 0; i < grads.size(); ++i) {
      // copy-assigned, not moved: a move would swap the buffer the parameter views
      const mat<T> fresh = random_matrix<T>(grads[i].rows(), grads[i].cols(), std::uint32_t(100 * t + i));
      grads[i] = fresh;
      for (Eigen::Index k = 0; k < grads[i].size(); ++k) {
        T& g = grads[i].data()[k];
        g = (k % 7 == 3) ? T(0) : g * static_cast<T>(std::pow(10.0, -double(k % 4)));
      }
    }
    opt.step(params);
    ASSERT_EQ(opt.steps(), std::size_t(t));
    for (std::size_t i = 0; i < params.size(); ++i) {
      Eigen::Index k = 0;
      for (Eigen::Index r = 0; r < params[i].value.rows(); ++r)
        for (Eigen::Index c = 0; c < params[i].value.cols(); ++c, ++k) {
          reference_element& e = ref[i][std::size_t(k)];
          e.step(as_double(cfg), t, static_cast<double>(grads[i](r, c)), u);
          const double got = static_cast<double>(params[i].value(r, c));
          if (e.err_theta > 0) worst = std::max(worst, std::fabs(got - e.theta) / e.err_theta);
          ASSERT_FALSE(std::fabs(got - e.theta) > e.err_theta || std::isnan(got))
              << "step " << t << " param " << i << " (" << r << ", " << c << "): got " << got << ", want "
              << e.theta << " ± " << e.err_theta;
        }
    }
  }
  EXPECT_TRUE(wide.rightCols(3) == wide_right) << "a step wrote outside the block it was given";
  std::printf("largest error / bound over %d steps: %.3f\n", steps, worst);
}

TEST(adamw, matches_pytorch_formula_float) {
  check_against_reference<float>({1e-2f, 0.9f, 0.999f, 1e-8f, 0.1f}, 12);
}
TEST(adamw, matches_pytorch_formula_double) {
  check_against_reference<double>({1e-2, 0.9, 0.999, 1e-8, 0.1}, 12);
}
TEST(adamw, matches_pytorch_formula_defaults_and_large_eps) {
  check_against_reference<float>(adamw_config<float>{}, 5);
  check_against_reference<float>({3e-2f, 0.5f, 0.9f, 1e-1f, 0.0f}, 8);
}

// Step 1 with bias correction: m̂ = g and v̂ = g², so each element moves by
// lr·g/(|g| + eps), ≈ lr·sign(g) whatever |g| is. Uncorrected moments would move
// it by lr·(1−β1)·g/(√(1−β2)·|g| + eps) ≈ 3.16·lr·sign(g).
TEST(adamw, first_step_moves_by_lr_times_sign) {
  const float lr = 1e-3f;
  mat<float> w = mat<float>::Zero(2, 4), g(2, 4);
  g << 1e-4f, -2e-3f, 0.5f, -7.0f, 3.0f, -1e-2f, 1e-5f, 40.0f;
  adamw<float> opt({lr, 0.9f, 0.999f, 1e-8f, 0.0f});
  std::vector<parameter<float>> params{{w, g}};
  opt.step(params);
  for (Eigen::Index k = 0; k < w.size(); ++k) {
    const double gk = g.data()[k];
    const double want = -double(lr) * gk / (std::fabs(gk) + 1e-8);
    // the roundings counted in reference_element, all relative to |Δ| here (m, v
    // start at 0): ~14u·|Δ|; 16u states it with room for the O(u²) terms.
    const double bound = 16 * (std::numeric_limits<float>::epsilon() / 2) * std::fabs(want);
    EXPECT_FALSE(std::fabs(double(w.data()[k]) - want) > bound) << k << ": " << w.data()[k] << " vs " << want;
  }
}

// Decoupled decay: with a zero gradient the moments stay 0, the Adam term is
// 0 / (0 + eps) = 0 and only θ ← θ·(1 − lr·wd) remains. An L2 penalty added to the
// gradient (Adam with weight_decay) would instead move θ by ≈ lr·sign(θ) at step 1.
TEST(adamw, zero_gradient_still_decays_weights) {
  const float lr = 1e-2f, wd = 0.1f;
  const mat<float> w0 = random_matrix<float>(4, 6, 7);
  mat<float> w = w0;
  const mat<float> g = mat<float>::Zero(4, 6);
  adamw<float> opt({lr, 0.9f, 0.999f, 1e-8f, wd});
  std::vector<parameter<float>> params{{w, g}};
  for (int t = 1; t <= 3; ++t) {
    opt.step(params);
    // per step: (1 − lr·wd) rounded to float and one product, 2u relative each
    const double factor = std::pow(1.0 - double(lr) * double(wd), t);
    const double u = std::numeric_limits<float>::epsilon() / 2;
    for (Eigen::Index k = 0; k < w.size(); ++k) {
      const double want = double(w0.data()[k]) * factor;
      EXPECT_FALSE(std::fabs(double(w.data()[k]) - want) > 2 * t * u * std::fabs(want) + 0.0)
          << "step " << t << ", element " << k;
    }
  }
  // The shrink is lr·wd·θ (1e-3 relative), not the ≈ lr = 1e-2 absolute of coupled L2.
  EXPECT_LT((w - w0).cwiseAbs().maxCoeff(), 4 * lr * wd * w0.cwiseAbs().maxCoeff());
}

TEST(adamw, reset_forgets_moments_and_shapes) {
  mat<double> w1 = mat<double>::Ones(2, 3), g1 = mat<double>::Ones(2, 3);
  mat<double> w2 = mat<double>::Ones(4, 1), g2 = mat<double>::Ones(4, 1);
  adamw<double> opt({0.1, 0.9, 0.999, 1e-8, 0.0});
  std::vector<parameter<double>> p1{{w1, g1}}, p2{{w2, g2}};
  opt.step(p1);
  opt.step(p1);
  EXPECT_EQ(opt.steps(), 2u);
  opt.reset();
  EXPECT_EQ(opt.steps(), 0u);
  opt.step(p2);  // other shapes: a first step again
  EXPECT_EQ(opt.steps(), 1u);
  // a first step: lr·g/(|g| + eps) = 0.1 / (1 + 1e-8) off 1
  EXPECT_NEAR(w2(0, 0), 1 - 0.1 / (1 + 1e-8), 1e-15);
}

TEST(adamw, set_lr_applies_from_the_next_step) {
  mat<double> w = mat<double>::Zero(1, 1), g = mat<double>::Ones(1, 1);
  adamw<double> opt({0.1, 0.9, 0.999, 0.0, 0.0});
  std::vector<parameter<double>> p{{w, g}};
  opt.step(p);  // m̂ = v̂ = 1 at every step for a constant g = 1, eps 0: moves by lr exactly
  opt.set_lr(0.25);
  opt.step(p);
  // √v̂ = 1 only up to the rounding of 1 − β2ᵗ, which cancels: 1 − 0.999² carries
  // u·0.998/0.002 ≈ 500u relative (PyTorch's too), half of it through √.
  EXPECT_NEAR(w(0, 0), -0.35, 0.25 * 500 * std::numeric_limits<double>::epsilon());
  EXPECT_THROW(opt.set_lr(-1.0), headwise::error);
  EXPECT_EQ(opt.config().lr, 0.25);
}

TEST(adamw, bad_config_throws) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (adamw_config<double> c :
       {adamw_config<double>{-1e-3}, adamw_config<double>{nan}, adamw_config<double>{1e-3, 1.0},
        adamw_config<double>{1e-3, -0.1}, adamw_config<double>{1e-3, 0.9, 1.0},
        adamw_config<double>{1e-3, 0.9, 0.999, -1.0}, adamw_config<double>{1e-3, 0.9, 0.999, 1e-8, -0.01},
        adamw_config<double>{1e-3, 0.9, 0.999, 1e-8, HUGE_VAL}})
    EXPECT_THROW(adamw<double>{c}, headwise::error);
}

// Every refused step leaves parameters, moments and the step count as they were:
// the step after the refusals gives the bits of an optimizer that never saw them.
TEST(adamw, bad_step_throws_before_anything_changes) {
  mat<float> w = random_matrix<float>(3, 4, 11), g = random_matrix<float>(3, 4, 12);
  mat<float> w_other = w, small(3, 3), g_small(3, 3), g_wrong(4, 3);
  mat<float> twin = w;
  adamw<float> opt({1e-2f, 0.9f, 0.999f, 1e-8f, 0.1f}), twin_opt({1e-2f, 0.9f, 0.999f, 1e-8f, 0.1f});
  std::vector<parameter<float>> good{{w, g}}, twin_params{{twin, g}};

  std::vector<parameter<float>> mismatched{{w, g_wrong}};
  EXPECT_THROW(opt.step(mismatched), headwise::error);  // grad not shaped as value, first step
  EXPECT_EQ(opt.steps(), 0u);
  opt.step(good);
  twin_opt.step(twin_params);

  const mat<float> before = w;
  std::vector<parameter<float>> reshaped{{small, g_small}};
  std::vector<parameter<float>> more{{w, g}, {w_other, g}};
  std::vector<parameter<float>> none;
  std::vector<parameter<float>> bad_grad{{w, g_wrong}};
  for (auto* p : {&reshaped, &more, &none, &bad_grad}) {
    EXPECT_THROW(opt.step(*p), headwise::error);
    EXPECT_EQ(opt.steps(), 1u);
    EXPECT_TRUE(w == before);
  }
  opt.step(good);
  twin_opt.step(twin_params);
  EXPECT_TRUE(w == twin) << "a refused step changed the moments";
}

// ---------------------------------------------------------------- clip_grad_norm

TEST(clip_grad_norm, scales_all_gradients_to_max_norm) {
  mat<float> a(1, 2), b(2, 1);
  a << 3.0f, 0.0f;
  b << 0.0f, -4.0f;  // global norm 5
  std::vector<matrix_ref<float>> gs{a, b};
  const float norm = headwise::clip_grad_norm(gs, 1.0f);
  EXPECT_EQ(norm, 5.0f);
  // c = 1 / (5 + 1e-6) computed in double, rounded to float once, one product each
  const double c = 1.0 / (5.0 + 1e-6), u = std::numeric_limits<float>::epsilon() / 2;
  EXPECT_FALSE(std::fabs(a(0, 0) - 3.0 * c) > 2 * u * 3.0 * c);
  EXPECT_FALSE(std::fabs(b(1, 0) + 4.0 * c) > 2 * u * 4.0 * c);
  EXPECT_EQ(a(0, 1), 0.0f);
  const double after = std::sqrt(double(a(0, 0)) * a(0, 0) + double(b(1, 0)) * b(1, 0));
  EXPECT_LT(after, 1.0);
  EXPECT_GT(after, 1.0 - 1e-6);
}

TEST(clip_grad_norm, returns_norm_of_many_gradients_and_leaves_small_ones) {
  // 10000 elements of 0.01 in three matrices, one a block: norm 1, accumulated in
  // double from float squares (each exact in double), so within a few u_double.
  mat<float> a = mat<float>::Constant(50, 100, 0.01f), wide = mat<float>::Constant(40, 130, 0.01f);
  mat<float> c = mat<float>::Constant(10, 100, 0.01f);
  const mat<float> a0 = a, wide0 = wide, c0 = c;
  std::vector<matrix_ref<float>> gs{a, wide.leftCols(100), c};
  const double want = std::sqrt(10000.0 * double(0.01f) * double(0.01f));
  const float norm = headwise::clip_grad_norm(gs, 2.0f);
  EXPECT_FALSE(std::fabs(double(norm) - want) > std::numeric_limits<float>::epsilon() / 2 * want);
  EXPECT_TRUE(a == a0 && wide == wide0 && c == c0);  // norm <= max_norm: untouched bits
  // clipped: only the block's columns change, the rest of `wide` keeps its bits
  EXPECT_EQ(headwise::clip_grad_norm(gs, 0.5f), norm);
  EXPECT_TRUE(wide.rightCols(30) == wide0.rightCols(30));
  EXPECT_LT(a(0, 0), 0.01f);
}

TEST(clip_grad_norm, zero_max_norm_zeroes_and_empty_list_is_zero) {
  mat<double> a = mat<double>::Constant(2, 2, 3.0);
  std::vector<matrix_ref<double>> gs{a};
  EXPECT_EQ(headwise::clip_grad_norm(gs, 0.0), 6.0);
  EXPECT_TRUE(a.isZero(0.0));
  std::vector<matrix_ref<double>> none;
  EXPECT_EQ(headwise::clip_grad_norm(none, 1.0), 0.0);
}

TEST(clip_grad_norm, non_finite_norm_throws_and_leaves_gradients) {
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    mat<float> a = mat<float>::Constant(2, 3, 5.0f), b = mat<float>::Constant(3, 1, 1.0f);
    b(2, 0) = bad;
    const mat<float> a0 = a;
    std::vector<matrix_ref<float>> gs{a, b};
    EXPECT_THROW(headwise::clip_grad_norm(gs, 1.0f), headwise::error);
    EXPECT_TRUE(a == a0);
    EXPECT_EQ(b(0, 0), 1.0f);
  }
  // 1e200² overflows the double sum: reported, not clipped to zero.
  mat<double> huge = mat<double>::Constant(1, 2, 1e200);
  std::vector<matrix_ref<double>> gs{huge};
  EXPECT_THROW(headwise::clip_grad_norm(gs, 1.0), headwise::error);
  EXPECT_EQ(huge(0, 0), 1e200);
}

TEST(clip_grad_norm, bad_max_norm_throws) {
  mat<float> a = mat<float>::Ones(1, 1);
  std::vector<matrix_ref<float>> gs{a};
  EXPECT_THROW(headwise::clip_grad_norm(gs, -1.0f), headwise::error);
  EXPECT_THROW(headwise::clip_grad_norm(gs, std::numeric_limits<float>::quiet_NaN()), headwise::error);
  EXPECT_THROW(headwise::clip_grad_norm(gs, std::numeric_limits<float>::infinity()), headwise::error);
  EXPECT_EQ(a(0, 0), 1.0f);
}

// ---------------------------------------------------------------- LoRA parameters

headwise::mha_config small_config() { return hwtest::layer_config(16, 4, 2, 4); }

TEST(lora_parameters, list_the_active_mix_factors_in_order_and_train_them) {
  using headwise::projection;
  headwise::multi_head_attention<double> layer(small_config());
  for (std::size_t p = 0; p < headwise::projection_count; ++p)
    layer.weight(projection(p)) = random_matrix<double>(
        layer.weight(projection(p)).rows(), layer.weight(projection(p)).cols(), std::uint32_t(20 + p));
  auto& set = layer.adapters();
  const auto idle = set.add("idle"), tuned = set.add("tuned");
  set.attach(
      idle, projection::q,
      headwise::lora_delta<double>(random_matrix<double>(2, 16, 30), random_matrix<double>(16, 2, 31), 4.0));
  set.attach(
      tuned, projection::v,
      headwise::lora_delta<double>(random_matrix<double>(3, 16, 32), random_matrix<double>(8, 3, 33), 6.0));
  set.attach(
      tuned, projection::o,
      headwise::lora_delta<double>(random_matrix<double>(3, 16, 34), random_matrix<double>(16, 3, 35), 6.0));
  set.activate("tuned");
  auto grads = layer.make_gradients();

  const mat<double> x = random_matrix<double>(6, 16, 40);
  mat<double> y(6, 16), dx(6, 16);
  layer.forward(x, y);
  layer.backward(x, mat<double>::Ones(6, 16), dx, grads);

  const auto params = headwise::lora_parameters(layer, grads);
  const auto gs = headwise::lora_gradients(layer, grads);
  ASSERT_EQ(params.size(), 4u);  // v's A, B, then o's A, B; the idle adapter's q left out
  ASSERT_EQ(gs.size(), 4u);
  auto* dv = set.delta(tuned, projection::v);
  auto* d_o = set.delta(tuned, projection::o);
  const double* values[] = {dv->a().data(), dv->b().data(), d_o->a().data(), d_o->b().data()};
  const double* grad_data[] = {grads.adapters[tuned][2].a.data(), grads.adapters[tuned][2].b.data(),
                               grads.adapters[tuned][3].a.data(), grads.adapters[tuned][3].b.data()};
  for (std::size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(params[i].value.data(), values[i]) << i;  // views, not copies
    EXPECT_EQ(params[i].grad.data(), grad_data[i]) << i;
    EXPECT_EQ(gs[i].data(), grad_data[i]) << i;
  }
  EXPECT_GT(grads.adapters[tuned][3].b.cwiseAbs().maxCoeff(), 0.0);

  const mat<double> a0 = dv->a(), q_a0 = set.delta(idle, projection::q)->a();
  adamw<double> opt(adamw_config<double>{});
  headwise::clip_grad_norm(gs, 1.0);
  opt.step(params);
  EXPECT_FALSE(dv->a() == a0);                               // trained in place
  EXPECT_TRUE(set.delta(idle, projection::q)->a() == q_a0);  // not in the mix
}

TEST(lora_parameters, refuse_merged_layers_and_stale_gradients) {
  using headwise::projection;
  headwise::multi_head_attention<float> layer(small_config());
  auto stale = layer.make_gradients();  // before the adapter exists
  auto& set = layer.adapters();
  set.attach(
      set.add("a"), projection::k,
      headwise::lora_delta<float>(random_matrix<float>(2, 16, 50), random_matrix<float>(8, 2, 51), 2.0));
  set.activate("a");
  EXPECT_THROW(headwise::lora_parameters(layer, stale), headwise::error);
  EXPECT_THROW(headwise::lora_gradients(layer, stale), headwise::error);
  auto grads = layer.make_gradients();
  EXPECT_EQ(headwise::lora_parameters(layer, grads).size(), 2u);
  layer.merge_adapters();
  EXPECT_THROW(headwise::lora_parameters(layer, grads), headwise::error);
}

}  // namespace
