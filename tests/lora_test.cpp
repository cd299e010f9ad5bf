// tests/lora_test.cpp — lora_delta, its backward and lora_adapter_set against
// explicit dense computations in double; on 16-bit activations against float.
#include <headwise/lora.hpp>

#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "eigen_util.hpp"
#include "test_util.hpp"

namespace {

using headwise::lora_adapter_set;
using headwise::lora_delta;
using headwise::lora_scaling;
using headwise::projection;
using headwise::projection_shape;
template <class T>
using mat = headwise::row_matrix<T>;
using dmat = mat<double>;

using hwtest::random_matrix;

template <class Derived>
dmat to_double(const Eigen::MatrixBase<Derived>& m) {
  return m.template cast<double>();
}

/// y0 + w·s·x·(B·A)ᵀ in double: the dense definition apply() must match.
template <class T>
dmat explicit_apply(const lora_delta<T>& d, const mat<T>& x, const mat<T>& y0, double w = 1.0) {
  const dmat delta = w * d.scale() * to_double(d.b()) * to_double(d.a());
  return to_double(y0) + to_double(x) * delta.transpose();
}

/// Elementwise forward-error bound of apply() in T (Higham ch. 3): each output is
/// y0 + s·Σ_k B_jk·(Σ_i x_ti·A_ki), in + r + 4 roundings along any path, applied to
/// the sum of absolute values of the terms.
template <class T>
dmat apply_bound(const lora_delta<T>& d, const mat<T>& x, const mat<T>& y0, double w = 1.0) {
  const double u = std::numeric_limits<T>::epsilon() / 2;
  const double n = double(d.in_features() + d.rank() + 4);
  const dmat terms = std::fabs(w * d.scale()) * to_double(x).cwiseAbs() *
                         to_double(d.a()).cwiseAbs().transpose() * to_double(d.b()).cwiseAbs().transpose() +
                     to_double(y0).cwiseAbs();
  return n * u * terms;
}

/// Count of elements with |got − want| > bound, NaN counting as a failure.
inline Eigen::Index violations(const dmat& got, const dmat& want, const dmat& bound) {
  Eigen::Index bad = 0;
  for (Eigen::Index i = 0; i < got.size(); ++i)
    if (!(std::fabs(got.data()[i] - want.data()[i]) <= bound.data()[i])) ++bad;
  return bad;
}

struct lora_shape {
  Eigen::Index tokens, in, out, rank;
};

std::string shape_name(const ::testing::TestParamInfo<lora_shape>& info) {
  const lora_shape& s = info.param;
  return "T" + std::to_string(s.tokens) + "_in" + std::to_string(s.in) + "_out" + std::to_string(s.out) +
         "_r" + std::to_string(s.rank);
}

class lora_shapes : public ::testing::TestWithParam<lora_shape> {};

// Ranks 1 and 64 bracket practice; 7/9/17 straddle an AVX2 float batch (8); T = 1 is decode.
INSTANTIATE_TEST_SUITE_P(shapes, lora_shapes,
                         ::testing::Values(lora_shape{1, 7, 9, 1}, lora_shape{17, 33, 9, 4},
                                           lora_shape{3, 64, 130, 16}, lora_shape{70, 17, 65, 64}),
                         shape_name);

template <class T>
void check_apply(const lora_shape& s, lora_scaling scaling) {
  lora_delta<T> d(random_matrix<T>(s.rank, s.in, 1), random_matrix<T>(s.out, s.rank, 2), 16.0, scaling);
  const double r = double(s.rank);
  const double want_scale = scaling == lora_scaling::standard ? 16.0 / r : 16.0 / std::sqrt(r);
  EXPECT_TRUE(d.scale() == want_scale) << d.scale() << " vs " << want_scale;
  const mat<T> x = random_matrix<T>(s.tokens, s.in, 3), y0 = random_matrix<T>(s.tokens, s.out, 4);
  mat<T> y = y0;
  d.apply(x, y, T(0.5));
  EXPECT_EQ(violations(to_double(y), explicit_apply(d, x, y0, 0.5), apply_bound(d, x, y0, 0.5)), 0);
}

TEST_P(lora_shapes, apply_matches_dense_delta_double) {
  check_apply<double>(GetParam(), lora_scaling::standard);
}
TEST_P(lora_shapes, apply_matches_dense_delta_float) {
  check_apply<float>(GetParam(), lora_scaling::standard);
}
TEST_P(lora_shapes, apply_rank_stabilized_scaling) {
  check_apply<float>(GetParam(), lora_scaling::rank_stabilized);
}

TEST_P(lora_shapes, apply_with_caller_scratch_equals_member_scratch) {
  const lora_shape& s = GetParam();
  lora_delta<float> d(random_matrix<float>(s.rank, s.in, 5), random_matrix<float>(s.out, s.rank, 6), 8.0);
  const mat<float> x = random_matrix<float>(s.tokens, s.in, 7);
  mat<float> y1 = mat<float>::Zero(s.tokens, s.out), y2 = y1, h(s.tokens, s.rank);
  d.apply(x, y1);
  std::as_const(d).apply(x, y2, h);
  EXPECT_TRUE(y1 == y2);
}

TEST_P(lora_shapes, merge_unmerge_round_trip_within_bound) {
  const lora_shape& s = GetParam();
  lora_delta<float> d(random_matrix<float>(s.rank, s.in, 8), random_matrix<float>(s.out, s.rank, 9), 32.0);
  const mat<float> W0 = random_matrix<float>(s.out, s.in, 10);
  mat<float> W = W0;
  d.merge(W);
  // merged forward: x·Wᵀ equals x·W0ᵀ + apply within the GEMM bound over in terms
  const mat<float> x = random_matrix<float>(s.tokens, s.in, 11);
  const mat<float> y_base = x * W0.transpose();
  mat<float> y_unmerged = y_base;
  d.apply(x, y_unmerged);
  const mat<float> y_merged = x * W.transpose();
  // y_merged adds in + 2 roundings over |x|·(|W0| + |ΔW|)ᵀ on top of apply's bound
  const double u = std::numeric_limits<float>::epsilon() / 2;
  const dmat abs_w =
      to_double(W0).cwiseAbs() + d.scale() * to_double(d.b()).cwiseAbs() * to_double(d.a()).cwiseAbs();
  const dmat bound =
      apply_bound(d, x, y_base) + double(s.in + 2) * u * to_double(x).cwiseAbs() * abs_w.transpose();
  EXPECT_EQ(violations(to_double(y_merged), to_double(y_unmerged), bound), 0);

  d.unmerge(W);
  const double err = (to_double(W) - to_double(W0)).cwiseAbs().maxCoeff();
  const double tol = d.merge_round_trip_bound(W0);
  EXPECT_TRUE(err <= tol) << "round trip error " << err << " > bound " << tol;
  EXPECT_TRUE(tol < 1e-3) << "the bound must stay meaningful: " << tol;
}

template <class T>
void expect_refused(const lora_delta<T>& d, mat<T>& W) {
  const mat<T> before = W;
  EXPECT_THROW(d.safe_merge(W), headwise::error);
  EXPECT_EQ(std::memcmp(W.data(), before.data(), sizeof(T) * std::size_t(W.size())), 0);
}

TEST(lora_delta, safe_merge_refuses_non_finite_and_leaves_w_bit_identical) {
  mat<float> W = random_matrix<float>(9, 7, 12);
  mat<float> A = random_matrix<float>(3, 7, 13), B = random_matrix<float>(9, 3, 14);
  mat<float> A_nan = A, B_inf = B, A_huge = A * 1e30f, B_huge = B * 1e30f;
  A_nan(1, 2) = std::numeric_limits<float>::quiet_NaN();
  B_inf(4, 0) = -std::numeric_limits<float>::infinity();
  expect_refused(lora_delta<float>(A_nan, B, 4.0), W);
  expect_refused(lora_delta<float>(A, B_inf, 4.0), W);
  expect_refused(lora_delta<float>(A_huge, B_huge, 4.0), W);  // finite factors, ΔW overflows
  mat<float> W_edge = W;
  W_edge(0, 0) = std::numeric_limits<float>::max();  // W + ΔW overflows somewhere
  expect_refused(lora_delta<float>(A * 1e19f, B * 1e19f, 4.0), W_edge);

  lora_delta<float> ok(A, B, 4.0);
  mat<float> W_safe = W, W_plain = W;
  ok.safe_merge(W_safe);
  ok.merge(W_plain);
  EXPECT_TRUE(W_safe == W_plain);
}

TEST(lora_delta, shape_errors_throw_and_write_nothing) {
  using E = headwise::error;
  EXPECT_THROW(lora_delta<float>(mat<float>(3, 7), mat<float>(9, 4), 1.0), E);
  EXPECT_THROW(lora_delta<float>(mat<float>(0, 7), mat<float>(9, 0), 1.0), E);
  EXPECT_THROW(lora_delta<float>(mat<float>(3, 7), mat<float>(9, 3), std::nan("")), E);
  lora_delta<float> d(random_matrix<float>(3, 7, 15), random_matrix<float>(9, 3, 16), 1.0);
  mat<float> x = random_matrix<float>(4, 7, 17), y = mat<float>::Zero(4, 9), h(4, 3);
  mat<float> x_bad(4, 8), y_bad = mat<float>::Zero(5, 9), h_bad(4, 2), W_bad(7, 9);
  EXPECT_THROW(d.apply(x_bad, y), E);
  EXPECT_THROW(d.apply(x, y_bad), E);
  EXPECT_THROW(std::as_const(d).apply(x, y, h_bad), E);
  EXPECT_THROW(d.merge(W_bad), E);
  EXPECT_THROW(d.safe_merge(W_bad), E);
  mat<float> da(3, 7), db(9, 3), dx(4, 7), dx_bad(4, 6);
  EXPECT_THROW(d.backward(x, y, da, db, dx_bad), E);
  EXPECT_TRUE(y.isZero(0)) << "nothing may be written before the checks pass";
  try {
    d.apply(x_bad, y);
  } catch (const E& e) {
    EXPECT_NE(std::string(e.what()).find("x has the wrong shape (expected [4 × 7], got [4 × 8])"),
              std::string::npos)
        << e.what();
  }
}

// ---- backward: analytic gradients against central finite differences in double

TEST(lora_delta, backward_matches_central_differences) {
  const Eigen::Index T = 5, in = 7, out = 6, r = 3;
  const double w = 0.75;
  lora_delta<double> d(random_matrix<double>(r, in, 20), random_matrix<double>(out, r, 21), 6.0,
                       lora_scaling::rank_stabilized);
  dmat x = random_matrix<double>(T, in, 22);
  const dmat G = random_matrix<double>(T, out, 23);  // dL/dy for L = Σ G ⊙ y
  auto loss = [&] {
    dmat y = dmat::Zero(T, out);
    d.apply(x, y, w);
    return (G.array() * y.array()).sum();
  };
  // Accumulation: start from ones, the gradient is what backward adds.
  dmat dA = dmat::Ones(r, in), dB = dmat::Ones(out, r), dx = dmat::Ones(T, in);
  d.backward(x, G, dA, dB, dx, w);
  dA.array() -= 1;
  dB.array() -= 1;
  dx.array() -= 1;

  // L is linear in each single entry, so a central difference has no truncation
  // error, only rounding: |δL| <= (in + r + 4)·u·Σ|G|·|terms| per evaluation, over 2h.
  const double h = 1e-3, u = std::numeric_limits<double>::epsilon() / 2;
  const double l_abs = (G.cwiseAbs().array() * (std::fabs(w * d.scale()) * x.cwiseAbs() *
                                                d.a().cwiseAbs().transpose() * d.b().cwiseAbs().transpose())
                                                   .array())
                           .sum();
  const double tol = 2 * double(in + r + 4) * u * l_abs / (2 * h) + 1e-12;
  auto check = [&](auto&& param, const dmat& grad, const char* name) {
    for (Eigen::Index i = 0; i < param.size(); ++i) {
      double& p = param.data()[i];
      const double saved = p;
      p = saved + h;
      const double up = loss();
      p = saved - h;
      const double down = loss();
      p = saved;
      const double fd = (up - down) / (2 * h), err = std::fabs(fd - grad.data()[i]);
      EXPECT_TRUE(err <= tol) << name << "[" << i << "]: analytic " << grad.data()[i] << " vs fd " << fd;
    }
  };
  check(d.a(), dA, "dA");
  check(d.b(), dB, "dB");
  check(x, dx, "dx");
  EXPECT_TRUE(dA.cwiseAbs().maxCoeff() > 1e-3) << "gradients must not be trivially zero";
}

// ---- the adapter set

class adapter_set : public ::testing::Test {
 protected:
  static constexpr Eigen::Index in = 24, out = 20;
  lora_adapter_set<double> set{{projection_shape{in, out}, projection_shape{in, 12}, projection_shape{in, 12},
                                projection_shape{out, in}}};
  lora_adapter_set<double>::adapter_id a = set.add("alpha"), b = set.add("beta");

  void SetUp() override {
    set.attach(a, projection::q,
               lora_delta<double>(random_matrix<double>(4, in, 30), random_matrix<double>(out, 4, 31), 8.0));
    set.attach(b, projection::q,
               lora_delta<double>(random_matrix<double>(8, in, 32), random_matrix<double>(out, 8, 33), 4.0));
    set.attach(b, projection::o,
               lora_delta<double>(random_matrix<double>(2, out, 34), random_matrix<double>(in, 2, 35), 2.0));
  }
  dmat delta(lora_adapter_set<double>::adapter_id id, projection p) const {
    const lora_delta<double>* d = set.delta(id, p);
    return d->scale() * d->b() * d->a();
  }
  static double tol() { return 1e-12; }  // double GEMMs over <= 24 terms of size O(10)
};

TEST_F(adapter_set, switch_disable_and_weighted_combination) {
  const dmat x = random_matrix<double>(9, in, 36), y0 = random_matrix<double>(9, out, 37);
  auto run = [&](projection p) {
    dmat y = y0;
    set.apply(p, x, y);
    return y;
  };
  set.activate("alpha");
  EXPECT_TRUE((run(projection::q) - (y0 + x * delta(a, projection::q).transpose())).cwiseAbs().maxCoeff() <=
              tol());
  set.activate("beta");
  EXPECT_TRUE((run(projection::q) - (y0 + x * delta(b, projection::q).transpose())).cwiseAbs().maxCoeff() <=
              tol());
  dmat yk = dmat::Zero(9, 12);
  set.apply(projection::k, x, yk);
  EXPECT_TRUE(yk.isZero(0)) << "beta has no k delta";
  set.disable();
  EXPECT_FALSE(set.enabled());
  EXPECT_TRUE(run(projection::q) == y0);
  set.activate({{a, 0.3}, {b, -1.5}});
  const dmat mix = 0.3 * delta(a, projection::q) - 1.5 * delta(b, projection::q);
  EXPECT_TRUE((run(projection::q) - (y0 + x * mix.transpose())).cwiseAbs().maxCoeff() <= tol());
  EXPECT_EQ(set.active_parameter_count(), 4 * (in + out) + 8 * (in + out) + 2 * (out + in));

  dmat W = random_matrix<double>(out, in, 38);
  const dmat W0 = W;
  set.merge(projection::q, W);
  EXPECT_TRUE((W - (W0 + mix)).cwiseAbs().maxCoeff() <= tol());
  set.unmerge(projection::q, W);
  // two in-place roundings of the same combined delta: 2u·(|W| + |ΔW|)
  const double u = std::numeric_limits<double>::epsilon() / 2;
  const double round_trip = 2.01 * u * (W0.cwiseAbs().maxCoeff() + mix.cwiseAbs().maxCoeff());
  EXPECT_TRUE((W - W0).cwiseAbs().maxCoeff() <= round_trip);
}

TEST_F(adapter_set, per_row_ids_match_explicit_rows) {
  // rows 0..99: one contiguous run of alpha (applied in place); rows 100..299 cycle
  // beta, alpha, none, beta: 100 scattered beta rows cross a 64-row gather chunk.
  const Eigen::Index T = 300;
  std::vector<lora_adapter_set<double>::adapter_id> ids(T);
  const auto none = lora_adapter_set<double>::none;
  for (Eigen::Index t = 0; t < T; ++t) ids[t] = t < 100 ? a : std::array{b, a, none, b}[t % 4];
  const dmat x = random_matrix<double>(T, in, 39), y0 = random_matrix<double>(T, out, 40);
  dmat y = y0;
  set.activate("beta");  // ignored by the per-row overload
  set.apply(projection::q, x, y, ids);
  dmat want = y0;
  for (Eigen::Index t = 0; t < T; ++t)
    if (ids[t] != none) want.row(t) += x.row(t) * delta(ids[t], projection::q).transpose();
  EXPECT_TRUE((y - want).cwiseAbs().maxCoeff() <= tol());
}

TEST_F(adapter_set, errors_throw_and_write_nothing) {
  using E = headwise::error;
  EXPECT_THROW(set.add("alpha"), E);
  EXPECT_THROW(set.add(""), E);
  EXPECT_THROW(set.find("gamma"), E);
  EXPECT_THROW(set.activate("gamma"), E);
  EXPECT_THROW(set.activate({{a, 1.0}, {a, 2.0}}), E);
  EXPECT_THROW(set.activate({{7, 1.0}}), E);
  EXPECT_THROW(set.activate({{a, std::numeric_limits<double>::infinity()}}), E);
  EXPECT_THROW(set.attach(a, projection::k, lora_delta<double>(dmat(2, in), dmat(out, 2), 1.0)), E);
  const dmat x = random_matrix<double>(3, in, 41);
  dmat y = dmat::Zero(3, out);
  std::vector<lora_adapter_set<double>::adapter_id> bad_id{a, 9, b}, short_ids{a, b};
  EXPECT_THROW(set.apply(projection::q, x, y, bad_id), E);
  EXPECT_THROW(set.apply(projection::q, x, y, short_ids), E);
  EXPECT_TRUE(y.isZero(0));

  // a NaN factor makes merge refuse and leaves W bit-identical
  set.delta(a, projection::q)->a()(0, 0) = std::numeric_limits<double>::quiet_NaN();
  set.activate({{b, 1.0}, {a, 1.0}});
  dmat W = random_matrix<double>(out, in, 42);
  const dmat W0 = W;
  EXPECT_THROW(set.merge(projection::q, W), E);
  EXPECT_EQ(std::memcmp(W.data(), W0.data(), sizeof(double) * std::size_t(W.size())), 0);
}

// ---- 16-bit activations (Eigen::bfloat16, Eigen::half) with float factors
//
// The 16-bit calls widen x and y exactly, compute in float and round y once, so
// against the float call on the same (16-bit representable) x and y0:
//   |y₁₆ − y_f| <= u₁₆·|y_f| + (1 + u₁₆)·2·B_f,
// B_f = apply_bound<float> (each float computation is within B_f of the exact
// value, the two may group the sums differently: chunks of 128 rows), and the final
// rounding is within u₁₆ of the 16-bit path's float value, itself within 2·B_f of
// y_f. u₁₆ = 2^-8 (bfloat16), 2^-11 (half).

/// The bound above, elementwise.
template <class A>
dmat widened_bound(const dmat& y_f, const dmat& float_bound) {
  return hwtest::unit_roundoff<headwise::storage_16<A>>() * y_f.cwiseAbs() + (1 + hwtest::unit_roundoff<headwise::storage_16<A>>()) * 2 * float_bound;
}

template <class A>
void check_apply_16(const lora_shape& s) {
  lora_delta<float> d(random_matrix<float>(s.rank, s.in, 1), random_matrix<float>(s.out, s.rank, 2), 16.0);
  const mat<float> x = hwtest::representable<A>(random_matrix<float>(s.tokens, s.in, 3)),
                   y0 = hwtest::representable<A>(random_matrix<float>(s.tokens, s.out, 4));
  mat<float> y_f = y0;
  d.apply(x, y_f, 0.5f);
  mat<A> y = y0.cast<A>();
  d.apply(x.cast<A>(), y, 0.5f);
  const dmat got = y.template cast<double>();
  EXPECT_EQ(violations(got, to_double(y_f), widened_bound<A>(to_double(y_f), apply_bound(d, x, y0, 0.5))), 0);
}

TEST_P(lora_shapes, apply_bfloat16_activations_within_the_rounding_bound) {
  check_apply_16<Eigen::bfloat16>(GetParam());
}
TEST_P(lora_shapes, apply_half_activations_within_the_rounding_bound) {
  check_apply_16<Eigen::half>(GetParam());
}
// T 300: two whole chunks of 128 rows and a partial one.
TEST(lora_delta_16, apply_across_chunks_and_in_place) {
  check_apply_16<Eigen::bfloat16>({300, 40, 40, 8});
  // y is x itself (in == out): each chunk is read before it is written
  lora_delta<float> d(random_matrix<float>(8, 40, 5), random_matrix<float>(40, 8, 6), 4.0);
  const mat<float> x = hwtest::representable<Eigen::bfloat16>(random_matrix<float>(300, 40, 7));
  mat<float> y_f = x;
  d.apply(x, y_f);
  mat<Eigen::bfloat16> xy = x.cast<Eigen::bfloat16>();
  d.apply(xy, xy);
  EXPECT_EQ(violations(xy.cast<double>(), to_double(y_f),
                       widened_bound<Eigen::bfloat16>(to_double(y_f), apply_bound(d, x, x))),
            0);
}

// backward: the gradients stay float; x and dy widened. Each gradient is a sum of
// products computed in float both ways, grouped differently across chunks: within
// 2·γ(n)·(sum of |terms|), n the longest chain of roundings: dA = s·(dy·B)ᵀ·x,
// n = out + T + 2; dB = s·dyᵀ·(x·Aᵀ), n = in + T + 2; dx = s·(dy·B)·A, n = out + r + 2.
TEST(lora_delta_16, backward_bfloat16_matches_float_within_the_summation_bound) {
  const Eigen::Index T = 300, in = 24, out = 20, r = 4;
  lora_delta<float> d(random_matrix<float>(r, in, 50), random_matrix<float>(out, r, 51), 8.0);
  const mat<float> x = hwtest::representable<Eigen::bfloat16>(random_matrix<float>(T, in, 52)),
                   dy = hwtest::representable<Eigen::bfloat16>(random_matrix<float>(T, out, 53));
  auto run = [&](const auto& xs, const auto& dys) {
    std::array<mat<float>, 3> g{mat<float>::Zero(r, in), mat<float>::Zero(out, r), mat<float>::Zero(T, in)};
    d.backward(xs, dys, g[0], g[1], g[2], 0.75f);
    return g;
  };
  const auto want = run(x, dy);
  const auto got = run(x.cast<Eigen::bfloat16>(), dy.cast<Eigen::bfloat16>());
  const double u = std::numeric_limits<float>::epsilon() / 2, s = 0.75 * d.scale();
  const dmat ax = to_double(x).cwiseAbs(), ady = to_double(dy).cwiseAbs(), aa = to_double(d.a()).cwiseAbs(),
             ab = to_double(d.b()).cwiseAbs();
  const std::array<dmat, 3> bound{2 * double(out + T + 2) * u * s * (ady * ab).transpose() * ax,
                                  2 * double(in + T + 2) * u * s * ady.transpose() * (ax * aa.transpose()),
                                  2 * double(out + r + 2) * u * s * ady * ab * aa};
  for (std::size_t i = 0; i < 3; ++i)
    EXPECT_EQ(violations(to_double(got[i]), to_double(want[i]), bound[i]), 0) << "gradient " << i;
}

TEST(lora_delta_16, shape_errors_throw_and_write_nothing) {
  using E = headwise::error;
  lora_delta<float> d(random_matrix<float>(3, 7, 15), random_matrix<float>(9, 3, 16), 1.0);
  const mat<Eigen::bfloat16> x = random_matrix<float>(4, 7, 17).cast<Eigen::bfloat16>(),
                             x_bad = mat<Eigen::bfloat16>::Zero(4, 8);
  mat<Eigen::bfloat16> y = mat<Eigen::bfloat16>::Zero(4, 9), y_bad = mat<Eigen::bfloat16>::Zero(5, 9);
  EXPECT_THROW(d.apply(x_bad, y), E);
  EXPECT_THROW(d.apply(x, y_bad), E);
  mat<float> da = mat<float>::Zero(3, 7), db = mat<float>::Zero(9, 3), dx_bad = mat<float>::Zero(4, 6);
  EXPECT_THROW(d.backward(x, y, da, db, dx_bad), E);
  EXPECT_TRUE(y.cast<float>().isZero(0) && da.isZero(0) && db.isZero(0))
      << "nothing may be written before the checks pass";
}

// The set: the float set's apply on widened chunks, so the same bound per delta. T
// 300 crosses the 128-row chunks; per-row ids are sliced with them.
TEST(lora_adapter_set_16, mix_and_per_row_ids_match_float_within_the_rounding_bound) {
  const Eigen::Index T = 300, in = 24, out = 20;
  lora_adapter_set<float> set{{projection_shape{in, out}, projection_shape{in, out},
                               projection_shape{in, out}, projection_shape{in, out}}};
  const auto a = set.add("alpha"), b = set.add("beta"), none = lora_adapter_set<float>::none;
  set.attach(a, projection::q,
             lora_delta<float>(random_matrix<float>(4, in, 60), random_matrix<float>(out, 4, 61), 8.0));
  set.attach(b, projection::q,
             lora_delta<float>(random_matrix<float>(8, in, 62), random_matrix<float>(out, 8, 63), 4.0));
  const mat<float> x = hwtest::representable<Eigen::bfloat16>(random_matrix<float>(T, in, 64)),
                   y0 = hwtest::representable<Eigen::bfloat16>(random_matrix<float>(T, out, 65));
  std::vector<lora_adapter_set<float>::adapter_id> ids(T);
  for (Eigen::Index t = 0; t < T; ++t) ids[std::size_t(t)] = std::array{a, none, b}[t % 3];
  const lora_delta<float>& da = *set.delta(a, projection::q);

  set.activate("alpha");
  mat<float> y_f = y0;
  set.apply(projection::q, x, y_f);
  mat<Eigen::bfloat16> y = y0.cast<Eigen::bfloat16>();
  set.apply(projection::q, x.cast<Eigen::bfloat16>(), y);
  EXPECT_EQ(violations(y.cast<double>(), to_double(y_f),
                       widened_bound<Eigen::bfloat16>(to_double(y_f), apply_bound(da, x, y0))),
            0);

  mat<float> yr_f = y0;
  set.apply(projection::q, x, yr_f, ids);
  mat<Eigen::bfloat16> yr = y0.cast<Eigen::bfloat16>();
  set.apply(projection::q, x.cast<Eigen::bfloat16>(), yr, ids);
  const dmat bound = widened_bound<Eigen::bfloat16>(
      to_double(yr_f), apply_bound(da, x, y0).cwiseMax(apply_bound(*set.delta(b, projection::q), x, y0)));
  EXPECT_EQ(violations(yr.cast<double>(), to_double(yr_f), bound), 0);
  for (Eigen::Index t = 1; t < T; t += 3)
    EXPECT_TRUE(yr.row(t).cast<float>() == y0.row(t)) << "row " << t << " has no adapter: bit-identical";

  std::vector<lora_adapter_set<float>::adapter_id> short_ids(T - 1, a);
  mat<Eigen::bfloat16> untouched = y0.cast<Eigen::bfloat16>();
  EXPECT_THROW(set.apply(projection::q, x.cast<Eigen::bfloat16>(), untouched, short_ids), headwise::error);
  EXPECT_TRUE(untouched.cast<float>() == y0);
}

}  // namespace
