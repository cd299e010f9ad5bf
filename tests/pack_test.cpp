// Tests of the SIMD layer (simd/pack.hpp, simd/transpose.hpp) at the width this
// build has (1, 4, 8 or 16 floats): the horizontal reductions the decode kernel
// uses (reduce_add_rows, reduce_add, reduce_max, store_rows), keep_in_register, and the W×W
// block transpose of the flash packing, against plain loops, for float and double,
// on unaligned pointers.
// xsimd 8.1's AVX-512 float haddp put rows 2–5 and 10–13 in the wrong lanes: the
// row sums here are distinct integers, so any lane swap fails exactly.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <vector>

#include <headwise/headwise.hpp>

namespace {

using namespace headwise;

template <class T>
class simd_layer : public ::testing::Test {};
using value_types = ::testing::Types<float, double>;
TYPED_TEST_SUITE(simd_layer, value_types, );  // the empty name-generator argument: clang -Wpedantic wants one

/// Values exact in T whose sums are exact too: r·100 + i² for row r, lane i.
template <class T>
std::vector<T> row_major(std::size_t rows, std::size_t cols, std::size_t offset) {
  std::vector<T> m(offset + rows * cols);
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t i = 0; i < cols; ++i) m[offset + r * cols + i] = T(r * 100 + i * i) - T(7);
  return m;
}

TYPED_TEST(simd_layer, reduce_add_rows_puts_the_sum_of_row_i_in_lane_i) {
  using T = TypeParam;
  using P = simd::vector_pack<T>;
  using O = simd::ops<P>;
  constexpr std::size_t W = O::width;
  const std::vector<T> m = row_major<T>(W, W, 1);  // one element in: unaligned rows
  std::vector<P> rows;
  for (std::size_t r = 0; r < W; ++r) rows.push_back(O::load(m.data() + 1 + r * W));
  std::vector<T> got(W);
  O::store(got.data(), O::reduce_add_rows(rows.data()));
  for (std::size_t r = 0; r < W; ++r) {
    T want = 0, max = m[1 + r * W];
    for (std::size_t i = 0; i < W; ++i) {
      want += m[1 + r * W + i];
      max = std::max(max, m[1 + r * W + i]);
    }
    EXPECT_EQ(got[r], want) << "lane " << r << " of " << W;
    EXPECT_EQ(O::reduce_add(rows[r]), want) << "row " << r;
    EXPECT_EQ(O::reduce_max(rows[r]), max) << "row " << r;
  }
}

TYPED_TEST(simd_layer, reduce_max_finds_the_largest_lane_wherever_it_is) {
  using T = TypeParam;
  using P = simd::vector_pack<T>;
  using O = simd::ops<P>;
  constexpr std::size_t W = O::width;
  for (std::size_t at = 0; at < W; ++at) {
    std::vector<T> x(W, T(-3));
    x[at] = T(5);
    EXPECT_EQ(O::reduce_max(O::load(x.data())), T(5)) << "largest in lane " << at;
  }
}

TYPED_TEST(simd_layer, transpose_block_matches_the_element_loop) {
  using T = TypeParam;
  using P = simd::vector_pack<T>;
  constexpr std::size_t W = simd::ops<P>::width, src_stride = W + 3, dst_stride = 2 * W + 1;
  const std::vector<T> src = row_major<T>(W, src_stride, 1);
  std::vector<T> dst(1 + W * dst_stride, T(-1));
  simd::transpose_block<P>(src.data() + 1, src_stride, dst.data() + 1, dst_stride);
  for (std::size_t i = 0; i < W; ++i)
    for (std::size_t r = 0; r < W; ++r)
      ASSERT_EQ(dst[1 + i * dst_stride + r], src[1 + r * src_stride + i]) << "dst row " << i << ", col " << r;
  // nothing outside the W×W block is written
  EXPECT_EQ(dst[0], T(-1));
  for (std::size_t i = 0; i < W; ++i)
    for (std::size_t c = W; c < dst_stride && 1 + i * dst_stride + c < dst.size(); ++c)
      EXPECT_EQ(dst[1 + i * dst_stride + c], T(-1));
}

/// Lanes [i·W/R, (i+1)·W/R) land in row i at dst + i·ld, and nothing else is written.
template <class O, std::size_t R>
void check_store_rows() {
  using T = typename O::value_type;
  constexpr std::size_t W = O::width, per_row = W / R, ld = per_row + 3;
  const std::vector<T> m = row_major<T>(1, W, 1);
  std::vector<T> dst(2 + R * ld, T(-1));
  O::template store_rows<R>(O::load(m.data() + 1), dst.data() + 1, ld);  // unaligned rows
  for (std::size_t i = 0; i < dst.size(); ++i) {
    const std::size_t at = i - 1, row = at / ld, col = at % ld;
    const bool written = i >= 1 && row < R && col < per_row;
    EXPECT_EQ(dst[i], written ? m[1 + row * per_row + col] : T(-1)) << "R " << R << ", element " << i;
  }
}

TYPED_TEST(simd_layer, store_rows_writes_each_row_of_lanes_and_nothing_else) {
  using O = simd::ops<simd::vector_pack<TypeParam>>;
  if constexpr (O::width > 1) {
    check_store_rows<O, 1>();
    if constexpr (O::width % 2 == 0) check_store_rows<O, 2>();
    if constexpr (O::width % 4 == 0) check_store_rows<O, 4>();
  }
}

TYPED_TEST(simd_layer, keep_in_register_leaves_every_lane_unchanged) {
  using T = TypeParam;
  using P = simd::vector_pack<T>;
  using O = simd::ops<P>;
  constexpr std::size_t W = O::width;
  const std::vector<T> m = row_major<T>(1, W, 1);
  P x = O::load(m.data() + 1);
  O::keep_in_register(x);
  std::vector<T> got(W);
  O::store(got.data(), x);
  for (std::size_t i = 0; i < W; ++i) EXPECT_EQ(got[i], m[1 + i]) << "lane " << i;
  T scalar = m[1];
  simd::ops<T>::keep_in_register(scalar);  // the 1-wide path: a no-op
  EXPECT_EQ(scalar, m[1]);
}

}  // namespace
