// Tests of quantize_int8 and dequantize_int8 (quantize.hpp), for float, double, half
// and bfloat16 input: every element comes back within half a step of the row's grid
// plus the float roundings (int8_element_bound, test_util.hpp, derives the bound);
// each scale is max|row| / 127 exactly as float computes it; the element of largest
// magnitude maps to ±127; a zero row gives scale 0 and zeros; a NaN or an infinity in
// any row, a shape mismatch and overlapping views throw headwise::error before
// anything is written (q and scale keep their sentinels).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "int8_check.hpp"

namespace {

using namespace hwtest;

constexpr std::int8_t q_sentinel = 99;
constexpr float scale_sentinel = -7.0f;

/// A [B, H, N, D] input of type X: uniform in [-amp, amp], with rows of other
/// magnitudes (tiny, large) and one row of zeros.
template <class X>
tensor<X> make_input(std::size_t B, std::size_t H, std::size_t N, std::size_t D, std::uint32_t seed) {
  tensor<double> f(B, H, N, D, layout::bshd);
  fill_uniform(f, seed, 3.0);
  for (std::size_t d = 0; d < D; ++d) {
    f(0, 0, 0, d) = 0;                         // zero row
    if (N > 1) f(0, H - 1, 1, d) *= 1e-3;      // small magnitudes
    if (B > 1) f(B - 1, 0, N - 1, d) *= 2000;  // large, still finite in half
  }
  return converted<X>(f, layout::bshd);
}

template <class X>
void check_quantize_roundtrip(std::size_t D) {
  SCOPED_TRACE("D " + std::to_string(D));
  constexpr std::size_t B = 2, H = 3, N = 5;
  const tensor<X> x = make_input<X>(B, H, N, D, std::uint32_t(D));
  tensor<std::int8_t> q(B, H, N, D);
  tensor<float> scale(B, H, N, 1);
  std::fill(q.storage.begin(), q.storage.end(), q_sentinel);
  std::fill(scale.storage.begin(), scale.storage.end(), scale_sentinel);
  quantize_int8(x.cview(), q.view, scale.view);
  tensor<double> back(B, H, N, D);
  dequantize_int8(q.cview(), scale.cview(), back.view);

  for (std::size_t b = 0; b < B; ++b)
    for (std::size_t h = 0; h < H; ++h)
      for (std::size_t s = 0; s < N; ++s) {
        SCOPED_TRACE("row " + std::to_string(b) + " " + std::to_string(h) + " " + std::to_string(s));
        float amax_f = 0;  // max |float(x)|, as the library computes it
        double amax = 0;
        std::size_t arg = 0;
        for (std::size_t d = 0; d < D; ++d) {
          const float a = std::fabs(static_cast<float>(x.view(b, h, s, d)));
          if (a > amax_f) amax_f = a, arg = d;
          amax = std::max(amax, std::fabs(as_double(x.view(b, h, s, d))));
        }
        const float sc = scale.view(b, h, s, 0);
        ASSERT_EQ(sc, amax_f / 127.0f);
        if (amax_f == 0) {
          for (std::size_t d = 0; d < D; ++d) ASSERT_EQ(q.view(b, h, s, d), 0) << d;
          continue;
        }
        ASSERT_EQ(q.view(b, h, s, arg), static_cast<float>(x.view(b, h, s, arg)) > 0 ? 127 : -127);
        const double bound = int8_element_bound(sc, amax);
        for (std::size_t d = 0; d < D; ++d) {
          const std::int8_t qd = q.view(b, h, s, d);
          ASSERT_TRUE(qd >= -127 && qd <= 127) << d;
          const double err = std::fabs(as_double(x.view(b, h, s, d)) - double(qd) * double(sc));
          ASSERT_TRUE(err <= bound) << "d " << d << ": |x - q·s| = " << err << " > " << bound;
          ASSERT_EQ(back.view(b, h, s, d), double(sc) * double(qd)) << d;
        }
      }
}

template <class X>
class quantize_typed : public ::testing::Test {};
using input_types = ::testing::Types<float, double, half, bfloat16>;
TYPED_TEST_SUITE(quantize_typed, input_types, element_type_name);

TYPED_TEST(quantize_typed, every_element_is_within_half_a_step_and_the_max_maps_to_127) {
  for (std::size_t D : {1u, 7u, 16u, 17u, 128u}) check_quantize_roundtrip<TypeParam>(D);
}

TYPED_TEST(quantize_typed, a_nan_or_infinity_throws_and_writes_nothing) {
  using X = TypeParam;
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity()}) {
    SCOPED_TRACE(std::to_string(bad));
    tensor<X> x = make_input<X>(2, 3, 4, 9, 5);
    x(1, 2, 3, 8) = detail::convert_element<X>(bad);  // the last row, its last element
    tensor<std::int8_t> q(2, 3, 4, 9);
    tensor<float> scale(2, 3, 4, 1);
    std::fill(q.storage.begin(), q.storage.end(), q_sentinel);
    std::fill(scale.storage.begin(), scale.storage.end(), scale_sentinel);
    try {
      quantize_int8(x.cview(), q.view, scale.view);
      ADD_FAILURE() << "no error";
    } catch (const error& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("quantize_int8"), std::string::npos) << what;
      EXPECT_NE(what.find("(1, 2, 3)"), std::string::npos) << what;
    }
    for (std::int8_t v : q.storage) ASSERT_EQ(v, q_sentinel);
    for (float v : scale.storage) ASSERT_EQ(v, scale_sentinel);
  }
}

TEST(quantize, shape_mismatches_and_overlaps_throw_and_write_nothing) {
  const tensor<float> x = make_input<float>(1, 2, 3, 8, 1);
  tensor<std::int8_t> q(1, 2, 3, 8), q_dim(1, 2, 3, 7), q_seq(1, 2, 2, 8);
  tensor<float> scale(1, 2, 3, 1), scale_dim(1, 2, 3, 2), scale_heads(1, 1, 3, 1);
  std::fill(q.storage.begin(), q.storage.end(), q_sentinel);
  std::fill(scale.storage.begin(), scale.storage.end(), scale_sentinel);
  auto untouched = [&] {
    for (std::int8_t v : q.storage) ASSERT_EQ(v, q_sentinel);
    for (float v : scale.storage) ASSERT_EQ(v, scale_sentinel);
  };
  auto expect_error = [&](auto&& call, const std::string& part) {
    try {
      call();
      ADD_FAILURE() << "no error (expected \"" << part << "\")";
    } catch (const error& e) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    }
    untouched();
  };
  expect_error([&] { quantize_int8(x.cview(), q_dim.view, scale.view); },
               "q must be [1, 2, 3, 8], got [1, 2, 3, 7]");
  expect_error([&] { quantize_int8(x.cview(), q_seq.view, scale.view); }, "q must be [1, 2, 3, 8]");
  expect_error([&] { quantize_int8(x.cview(), q.view, scale_dim.view); },
               "scale must be [1, 2, 3, 1], got [1, 2, 3, 2]");
  expect_error([&] { quantize_int8(x.cview(), q.view, scale_heads.view); }, "scale must be [1, 2, 3, 1]");

  // scale over x's own memory, q over scale's bytes, and q rows that share memory
  tensor<float> xs = make_input<float>(1, 2, 3, 8, 2);
  const tensor_view<float> scale_in_x(xs.view.data(), 1, 2, 3, 1, 48, 24, 8);
  expect_error([&] { quantize_int8(xs.cview(), q.view, scale_in_x); }, "must not overlap");
  const tensor_view<std::int8_t> q_on_scale(reinterpret_cast<std::int8_t*>(scale.view.data()), 1, 2, 3, 8, 48,
                                            24, 8);
  expect_error([&] { quantize_int8(x.cview(), q_on_scale, scale.view); }, "must not overlap");
  const tensor_view<std::int8_t> q_self(q.view.data(), 1, 2, 3, 8, 24, 8, 4);  // rows 4 apart, 8 long
  expect_error([&] { quantize_int8(x.cview(), q_self, scale.view); }, "q");

  // dequantize: shapes and an x whose rows overlap
  tensor<float> back(1, 2, 3, 8), back_dim(1, 2, 3, 9);
  EXPECT_THROW(dequantize_int8(q.cview(), scale.cview(), back_dim.view), error);
  EXPECT_THROW(dequantize_int8(q.cview(), scale_dim.cview(), back.view), error);
  const tensor_view<float> back_self(back.view.data(), 1, 2, 3, 8, 24, 8, 4);
  EXPECT_THROW(dequantize_int8(q.cview(), scale.cview(), back_self), error);
}

}  // namespace
