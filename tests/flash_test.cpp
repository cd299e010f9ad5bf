// Tests of the flash prefill kernel (kernels/flash_prefill.hpp) and its SIMD
// layer (simd/exp.hpp) against the oracle, reference::attention.
//
// Each case computes the reference once and compares every variant of the
// kernel against it: SIMD at 1, 2 and 3 threads, scalar (force_scalar) at 1 and
// 2 threads. The variants of one path must also agree bit for bit across thread
// counts. Shapes: the foundation grid, plus shapes one below, at and one above
// the kernel's own query and key tile sizes (read from make_flash_tiling).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "mask_cases.hpp"
#include "test_util.hpp"

namespace {

using namespace hwtest;  // brings in headwise too

struct flash_case {
  std::size_t B, Hq, Hkv, Nq, Nk, Dk, Dv;
  layout lay;
  mask_kind mask;
  bool dbl;
};

std::string case_name(const flash_case& c) {
  std::ostringstream os;
  os << (c.dbl ? "f64" : "f32") << "_B" << c.B << "_Hq" << c.Hq << "_Hkv" << c.Hkv << "_Nq" << c.Nq << "_Nk"
     << c.Nk << "_Dk" << c.Dk << "_Dv" << c.Dv << "_" << layout_name(c.lay) << "_" << mask_name(c.mask);
  return os.str();
}

template <class T>
struct case_data {
  tensor<T> q, k, v, ref;
  std::vector<float> ref_lse;
  masked_options masks;
  double tol, lse_tol;

  explicit case_data(const flash_case& c)
      : q(c.B, c.Hq, c.Nq, c.Dk, c.lay),
        k(c.B, c.Hkv, c.Nk, c.Dk, c.lay),
        v(c.B, c.Hkv, c.Nk, c.Dv, c.lay),
        ref(c.B, c.Hq, c.Nq, c.Dv, c.lay),
        ref_lse(c.B * c.Hq * c.Nq),
        masks(c.mask, c.B, c.Hq, c.Nq, c.Nk) {
    fill_uniform(q, 1);
    fill_uniform(k, 2);
    fill_uniform(v, 3);
    attention_options opt = masks.opt;
    opt.lse = lse_view(ref_lse.data(), c.B, c.Hq, c.Nq);
    reference::attention(q.cview(), k.cview(), v.cview(), ref.view, opt);
    // The kernel's logit error: the dot-product bound of attention_tolerance plus
    // a few ulps of every term the element-wise rules add (softcap, ALiBi, mask).
    const double u = unit_roundoff<T>(), scale = 1 / std::sqrt(double(c.Dk));
    const double extra = 4 * u * masks.extra_logit;
    tol = masks.max_head_scale * (attention_tolerance<T>(c.Dk, c.Nk, scale, 1, 1, 1) + 2 * extra);
    lse_tol = (double(c.Dk) + 2) * u * scale * double(c.Dk) + extra + (double(c.Nk) + 16) * u +
              8 * unit_roundoff<float>();
  }
};

template <class T>
void check_case(const flash_case& c) {
  case_data<T> data(c);
  struct variant {
    bool scalar;
    unsigned threads;
  };
  const variant variants[] = {{false, 1}, {false, 2}, {false, 3}, {true, 1}, {true, 2}};
  std::vector<T> first_bits[2];
  for (const variant& var : variants) {
    tensor<T> out(c.B, c.Hq, c.Nq, c.Dv, c.lay);
    std::fill(out.storage.begin(), out.storage.end(), T(7));  // every element must be written
    std::vector<float> lse(c.B * c.Hq * c.Nq, 7.0f);
    attention_options opt = data.masks.opt;
    opt.kernel = kernel_mode::flash;
    opt.force_scalar = var.scalar;
    opt.threads = var.threads;
    opt.lse = lse_view(lse.data(), c.B, c.Hq, c.Nq);
    attention(data.q.cview(), data.k.cview(), data.v.cview(), out.view, opt);

    const std::string what =
        std::string(var.scalar ? "scalar" : "simd") + " threads " + std::to_string(var.threads);
    const double err = max_abs_diff(out.view, data.ref.view);
    EXPECT_TRUE(err <= data.tol) << what << ": max |out - ref| = " << err << " > " << data.tol;
    double lse_err = 0;
    for (std::size_t e = 0; e < lse.size(); ++e) {
      const double a = lse[e], r = data.ref_lse[e];
      if (a == r) continue;  // equal, including both -inf
      const bool finite = std::isfinite(a) && std::isfinite(r);
      lse_err = finite ? std::max(lse_err, std::fabs(a - r) / std::max(1.0, std::fabs(r)))
                       : std::numeric_limits<double>::quiet_NaN();
    }
    EXPECT_TRUE(lse_err <= data.lse_tol)
        << what << ": lse relative error " << lse_err << " > " << data.lse_tol;

    std::vector<T>& bits = first_bits[var.scalar];
    if (bits.empty()) {
      bits = out.storage;
    } else {
      EXPECT_EQ(0, std::memcmp(bits.data(), out.storage.data(), bits.size() * sizeof(T)))
          << what << ": result differs from 1 thread";
    }
  }
}

class flash_test : public ::testing::TestWithParam<flash_case> {};

TEST_P(flash_test, matches_reference_for_every_variant) {
  const flash_case& c = GetParam();
  if (c.dbl)
    check_case<double>(c);
  else
    check_case<float>(c);
}

struct heads {
  std::size_t Hq, Hkv;
};
const heads mha{2, 2}, gqa{4, 2}, mqa{3, 1};

/// Foundation grid: (Nq, Nk) × head_dim × MHA/GQA/MQA × layouts, no mask; the
/// (1023, 1024) shapes only at d = 64, 128 for MHA and GQA (they dominate run time).
std::vector<flash_case> foundation_cases() {
  std::vector<flash_case> cases;
  const std::pair<std::size_t, std::size_t> seqs[] = {{1, 1}, {1, 7}, {17, 3}, {113, 203}};
  constexpr std::size_t W = simd::vector_width<float>;  // 8 on AVX2, 16 on AVX-512
  for (auto [nq, nk] : seqs)
    for (std::size_t d : {std::size_t(1), W - 1, W, W + 1, std::size_t(64), std::size_t(128)})
      for (heads h : {mha, gqa, mqa})
        for (layout l : {layout::bshd, layout::bhsd})
          cases.push_back({1, h.Hq, h.Hkv, nq, nk, d, d, l, mask_kind::none, false});
  for (std::size_t d : {64, 128})
    for (heads h : {mha, gqa})
      cases.push_back({1, h.Hq, h.Hkv, 1023, 1024, d, d, d == 64 ? layout::bshd : layout::bhsd,
                       mask_kind::causal_bottom_right, false});
  cases.push_back({1, 2, 2, 1023, 1024, 64, 64, layout::bhsd, mask_kind::none, false});
  return cases;
}

/// Every mask kind on shapes straddling the pack width and the tiles, float and double.
std::vector<flash_case> mask_cases() {
  std::vector<flash_case> cases;
  for (int m = 0; m <= int(mask_kind::everything); ++m)
    for (bool dbl : {false, true}) {
      const auto k = mask_kind(m);
      cases.push_back({2, 4, 2, 17, 3, 9, 9, layout::bshd, k, dbl});
      cases.push_back({2, 4, 2, 113, 203, 8, 7, layout::bhsd, k, dbl});
      cases.push_back({1, 3, 1, 70, 150, 64, 64, layout::bshd, k, dbl});
      cases.push_back({1, 2, 2, 150, 70, 33, 20, layout::bhsd, k, dbl});
    }
  return cases;
}

/// Tile boundaries: Nq in {bq-1, bq, bq+1}, Nk in {bc-1, bc, bc+1, 2bc+1} with bq,
/// bc the kernel's own tile sizes for the SIMD path at d = 64 and d = 128.
std::vector<flash_case> tile_boundary_cases() {
  std::vector<flash_case> cases;
  for (std::size_t d : {64, 128}) {
    const kernels::flash_tiling t =
        kernels::make_flash_tiling(sizeof(float), simd::vector_width<float>, 1024, 2, d, d);
    for (std::size_t nq : {t.bq - 1, t.bq, t.bq + 1})
      for (std::size_t nk : {t.bc - 1, t.bc, t.bc + 1, 2 * t.bc + 1})
        cases.push_back({1, 4, 2, nq, nk, d, d, layout::bshd,
                         nq == nk ? mask_kind::causal_top_left : mask_kind::causal_bottom_right, false});
  }
  return cases;
}

std::string param_name(const ::testing::TestParamInfo<flash_case>& info) { return case_name(info.param); }

INSTANTIATE_TEST_SUITE_P(foundation, flash_test, ::testing::ValuesIn(foundation_cases()), param_name);
INSTANTIATE_TEST_SUITE_P(masks, flash_test, ::testing::ValuesIn(mask_cases()), param_name);
INSTANTIATE_TEST_SUITE_P(tiles, flash_test, ::testing::ValuesIn(tile_boundary_cases()), param_name);

/// K/V stored as half or bfloat16 are widened while packing: the kernel must
/// match the oracle reading the same stored values.
template <class S>
void check_storage_16() {
  const std::size_t B = 1, Hq = 4, Hkv = 2, Nq = 70, Nk = 150, D = 72;
  tensor<float> q(B, Hq, Nq, D, layout::bshd), kf(B, Hkv, Nk, D), vf(B, Hkv, Nk, D), ref(B, Hq, Nq, D);
  tensor<S> k(B, Hkv, Nk, D), v(B, Hkv, Nk, D);
  fill_uniform(q, 1);
  fill_uniform(kf, 2);
  fill_uniform(vf, 3);
  for (std::size_t e = 0; e < kf.storage.size(); ++e)
    k.storage[e] = S(kf.storage[e]), v.storage[e] = S(vf.storage[e]);
  attention_options opt;
  opt.causal = causal_mode::bottom_right;
  reference::attention(q.cview(), k.cview(), v.cview(), ref.view, opt);
  const double tol = attention_tolerance<float>(D, Nk, 1 / std::sqrt(double(D)), 1, 1, 1);
  opt.kernel = kernel_mode::flash;
  for (bool scalar : {false, true}) {
    tensor<float> out(B, Hq, Nq, D);
    opt.force_scalar = scalar;
    attention(q.cview(), k.cview(), v.cview(), out.view, opt);
    const double err = max_abs_diff(out.view, ref.view);
    EXPECT_TRUE(err <= tol) << (scalar ? "scalar" : "simd") << ": " << err << " > " << tol;
  }
}

TEST(flash_storage, half_and_bfloat16_kv_match_the_oracle) {
  check_storage_16<half>();
  check_storage_16<bfloat16>();
}

/// ulp distance between a and b (0 when equal, including equal infinities).
template <class T>
double ulp_error(T a, double exact) {
  if (double(a) == exact) return 0;
  const double ulp =
      std::max(std::fabs(exact) * std::numeric_limits<T>::epsilon(), double(std::numeric_limits<T>::min()));
  return std::fabs(double(a) - exact) / ulp;
}

template <class P>
void check_exp() {
  using O = simd::ops<P>;
  using T = typename O::value_type;
  constexpr std::size_t W = O::width;
  std::vector<T> xs = {-std::numeric_limits<T>::infinity(),
                       T(-1e30),
                       T(-700),
                       T(-80),
                       T(-20),
                       T(-1),
                       T(-0.34),
                       T(0),
                       T(0.34),
                       T(1),
                       T(20),
                       T(80)};
  std::mt19937 gen(5);
  std::uniform_real_distribution<double> dist(-87, 88);
  for (int i = 0; i < 2000; ++i) xs.push_back(T(dist(gen)));
  while (xs.size() % W) xs.push_back(T(0));
  double worst = 0;
  for (std::size_t i = 0; i < xs.size(); i += W) {
    T y[W];
    O::store(y, simd::exp<P>(O::load(xs.data() + i)));
    for (std::size_t l = 0; l < W; ++l) {
      const T x = xs[i + l];
      const double exact = std::exp(double(x));
      // below exp's lower bound (results near the denormal range) it is exactly 0
      const bool flushed = x < simd::exp_constants<T>::lo;
      const double e = flushed ? (y[l] == T(0) ? 0 : 1e9) : ulp_error(y[l], exact);
      EXPECT_TRUE(e <= 2) << "exp(" << x << ") = " << y[l] << ", exact " << exact;
      worst = std::max(worst, e);
    }
  }
  EXPECT_TRUE(worst <= 2) << "worst ulp error " << worst;

  // exp2_nonpositive over x <= 0, the flash softmax's form: 0 below lo2 (−125 for float).
  std::vector<T> x2 = {
      -std::numeric_limits<T>::infinity(), T(-1e30), T(-126), T(-125), T(-0.5), T(-1e-9), T(0)};
  std::uniform_real_distribution<double> neg(-125, 0);
  for (int i = 0; i < 2000; ++i) x2.push_back(T(neg(gen)));
  while (x2.size() % W) x2.push_back(T(0));
  for (std::size_t i = 0; i < x2.size(); i += W) {
    T y[W];
    O::store(y, simd::exp2_nonpositive<P>(O::load(x2.data() + i)));
    for (std::size_t l = 0; l < W; ++l) {
      const T x = x2[i + l];
      const bool flushed = x < simd::exp_constants<T>::lo2;
      const double e = flushed ? (y[l] == T(0) ? 0 : 1e9) : ulp_error(y[l], std::exp2(double(x)));
      EXPECT_TRUE(e <= 2) << "exp2(" << x << ") = " << y[l];
    }
  }
}

TEST(flash_simd, exp_and_exp2_are_accurate_and_zero_at_minus_infinity) {
  check_exp<simd::vector_pack<float>>();
  check_exp<simd::vector_pack<double>>();
  check_exp<float>();
  check_exp<double>();
}

// Nq = Nk = 16384, d = 64, one head: the scratch of every worker together stays
// far below 16 MiB (it is bounded by the tiles, not by N).
TEST(flash_memory, scratch_is_bounded_by_the_tiles) {
  for (std::size_t w : {simd::vector_width<float>, std::size_t(1)}) {
    const kernels::flash_tiling t = kernels::make_flash_tiling(sizeof(float), w, 16384, 1, 64, 64);
    const std::size_t workers = 2;
    const std::size_t bytes = workers * kernels::flash_scratch_bytes<float>(t);
    EXPECT_TRUE(bytes < (std::size_t(16) << 20)) << bytes << " bytes of scratch";
    // the tiles themselves: Q and O of the tall tile, a K and a V tile, an S micro-tile,
    // the transpose buffer (floats), plus a quarter for states, extents and alignment
    const std::size_t tiles = 4 * (t.rows() * (t.dk + t.dv_pad) + t.bc * (t.dk + t.dv_pad) +
                                   kernels::tile_rows * t.bc + t.kb * t.dk);
    EXPECT_TRUE(bytes < workers * (tiles + tiles / 4)) << bytes << " bytes: more than the tiles need";
    EXPECT_TRUE(bytes < (std::size_t(512) << 10)) << bytes << " bytes";
  }
}

}  // namespace
