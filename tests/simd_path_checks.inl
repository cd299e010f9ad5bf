// The SIMD layer's checks, written once and included by pack_test.cpp once per SIMD
// path, inside that path's target pragma (as kernels/dispatch.hpp includes the
// library's per-path headers): the checks' own code then runs on the path's
// registers, as the kernels do. HEADWISE_TEST_PATH names the path's namespace.
// No include guard on purpose.
namespace path_checks::HEADWISE_TEST_PATH {

namespace simd = headwise::HEADWISE_TEST_PATH::simd;

/// Values exact in T whose sums are exact too: r·100 + i² for row r, lane i.
template <class T>
std::vector<T> row_major(std::size_t rows, std::size_t cols, std::size_t offset) {
  std::vector<T> m(offset + rows * cols);
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t i = 0; i < cols; ++i) m[offset + r * cols + i] = T(r * 100 + i * i) - T(7);
  return m;
}

/// reduce_add_rows puts the sum of row i in lane i; reduce_add and reduce_max per row.
template <class T>
void reduce_rows() {
  using P = simd::vector_pack<T>;
  using O = simd::ops<P>;
  constexpr std::size_t W = O::width;
  const std::vector<T> m = row_major<T>(W, W, 1);  // one element in: unaligned rows
  P rows[W];
  for (std::size_t r = 0; r < W; ++r) rows[r] = O::load(m.data() + 1 + r * W);
  T got[W];
  O::store(got, O::reduce_add_rows(rows));
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

/// reduce_max finds the largest lane wherever it is.
template <class T>
void reduce_max_anywhere() {
  using O = simd::ops<simd::vector_pack<T>>;
  constexpr std::size_t W = O::width;
  for (std::size_t at = 0; at < W; ++at) {
    std::vector<T> x(W, T(-3));
    x[at] = T(5);
    EXPECT_EQ(O::reduce_max(O::load(x.data())), T(5)) << "largest in lane " << at;
  }
}

/// The W×W block transpose matches the element loop and writes nothing else.
template <class T>
void transpose_block() {
  using P = simd::vector_pack<T>;
  constexpr std::size_t W = simd::ops<P>::width, src_stride = W + 3, dst_stride = 2 * W + 1;
  const std::vector<T> src = row_major<T>(W, src_stride, 1);
  std::vector<T> dst(1 + W * dst_stride, T(-1));
  simd::transpose_block<P>(src.data() + 1, src_stride, dst.data() + 1, dst_stride);
  for (std::size_t i = 0; i < W; ++i)
    for (std::size_t r = 0; r < W; ++r)
      ASSERT_EQ(dst[1 + i * dst_stride + r], src[1 + r * src_stride + i]) << "dst row " << i << ", col " << r;
  EXPECT_EQ(dst[0], T(-1));
  for (std::size_t i = 0; i < W; ++i)
    for (std::size_t c = W; c < dst_stride && 1 + i * dst_stride + c < dst.size(); ++c)
      EXPECT_EQ(dst[1 + i * dst_stride + c], T(-1));
}

/// Lanes [i·W/R, (i+1)·W/R) land in row i at dst + i·ld, and nothing else is written.
template <class T, std::size_t R>
void store_rows_of() {
  using O = simd::ops<simd::vector_pack<T>>;
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

template <class T>
void store_rows() {
  constexpr std::size_t W = simd::ops<simd::vector_pack<T>>::width;
  store_rows_of<T, 1>();
  if constexpr (W % 2 == 0) store_rows_of<T, 2>();
  if constexpr (W % 4 == 0) store_rows_of<T, 4>();
}

/// keep_in_register leaves every lane unchanged (and is a no-op 1-wide).
template <class T>
void keep_in_register() {
  using O = simd::ops<simd::vector_pack<T>>;
  constexpr std::size_t W = O::width;
  const std::vector<T> m = row_major<T>(1, W, 1);
  auto x = O::load(m.data() + 1);
  O::keep_in_register(x);
  T got[W];
  O::store(got, x);
  for (std::size_t i = 0; i < W; ++i) EXPECT_EQ(got[i], m[1 + i]) << "lane " << i;
  T scalar = m[1];
  simd::ops<T>::keep_in_register(scalar);
  EXPECT_EQ(scalar, m[1]);
}

/// select_less / select_greater pick per lane, and a NaN lane compares false.
template <class T>
void selects() {
  using O = simd::ops<simd::vector_pack<T>>;
  constexpr std::size_t W = O::width;
  std::vector<T> x(W);
  for (std::size_t i = 0; i < W; ++i) x[i] = T(i) - T(W / 2);
  x[W - 1] = std::numeric_limits<T>::quiet_NaN();
  T less[W], greater[W];
  O::store(less, O::select_less(O::load(x.data()), T(0), T(1), T(2)));
  O::store(greater, O::select_greater(O::load(x.data()), T(0), T(1), T(2)));
  for (std::size_t i = 0; i < W; ++i) {
    EXPECT_EQ(less[i], x[i] < T(0) ? T(1) : T(2)) << "lane " << i;
    EXPECT_EQ(greater[i], x[i] > T(0) ? T(1) : T(2)) << "lane " << i;
  }
}

/// exp2_nonpositive (the softmax's exponential) against std::exp2 in double. Bound:
/// the reduction r = x − round(x) is exact; the polynomial p of degree n differs from
/// 2^r by C::approximation (relative) and by its coefficients' rounding to T,
/// u · Σ|c_k||r|^k / p(r) <= u · 2^½ / 2^−½ = 2u (|r| <= ½, c_k > 0); Horner's rounding
/// error is at most γ_2n · Σ|c_k||r|^k / |p(r)| <= 2·γ_2n, γ_m = m·u / (1 − m·u);
/// scaling by 2^n is exact. Below the normal range (x < lo2) the result is exactly 0,
/// as for −inf; NaN stays NaN. Every path gives the bits of the 1-wide code (AVX-512
/// rounds and scales with vrndscale and vscalef instead of the magic addend and the
/// exponent add).
template <class T>
void exp2_against_libm() {
  using O = simd::ops<simd::vector_pack<T>>;
  using C = simd::exp_constants<T>;
  constexpr std::size_t W = O::width;
  const double u = std::numeric_limits<T>::epsilon() / 2, m = 2.0 * double(C::c.size() - 1);
  const double bound = 2 * (m * u / (1 - m * u)) + C::approximation + 2 * u;
  std::vector<T> x;
  for (int i = -3000; i <= 0; ++i) x.push_back(T(i) * T(0.0473));
  x.push_back(-std::numeric_limits<T>::infinity());
  x.push_back(T(-0.0));
  x.push_back(C::lo2);
  x.push_back(std::nextafter(C::lo2, T(-1000)));
  x.push_back(T(-0.5));
  x.push_back(T(-1.5));
  x.push_back(std::numeric_limits<T>::quiet_NaN());
  while (x.size() % W) x.push_back(T(0));
  for (std::size_t i = 0; i < x.size(); i += W) {
    T got[W];
    O::store(got, simd::exp2_nonpositive(O::load(x.data() + i)));
    for (std::size_t l = 0; l < W; ++l) {
      const T one_wide = simd::exp2_nonpositive(x[i + l]);
      EXPECT_EQ(std::memcmp(&got[l], &one_wide, sizeof(T)) == 0 || (std::isnan(got[l]) && std::isnan(one_wide)), true)
          << "exp2(" << x[i + l] << ") = " << got[l] << ", 1-wide " << one_wide;
      if (std::isnan(x[i + l])) {
        EXPECT_TRUE(std::isnan(got[l])) << "exp2(NaN) = " << got[l];
        continue;
      }
      const double want = x[i + l] < C::lo2 ? 0.0 : std::exp2(double(x[i + l]));
      EXPECT_FALSE(!(std::abs(double(got[l]) - want) <= bound * want)) << "exp2(" << x[i + l] << ") = " << got[l];
    }
  }
}

/// The accuracy the kernels' tolerances assume (tests/test_util.hpp: each weight
/// exp2(s − max) within 2u, relative): about 8 million x spread evenly over the bit
/// patterns of [−1, 0], which hold every reduced argument r (x − round(x)) and results
/// from ½ to 1, against exp2l. The scaling by 2^n is exact, so other x add nothing.
/// Measured over every float in [−125, 8]: at most 0.95 ulp, 1.9u (simd/exp.hpp).
template <class T>
void exp2_within_two_u() {
  using O = simd::ops<simd::vector_pack<T>>;
  using Bits = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;
  constexpr std::size_t W = O::width, samples = std::size_t(1) << 23;
  const T one = T(1);
  Bits top;
  std::memcpy(&top, &one, sizeof top);  // patterns 0..top: +0 to 1, negated below
  const Bits stride = Bits(top / samples) | 1;
  const long double u = std::numeric_limits<T>::epsilon() / 2.0L;
  long double worst = 0;
  T worst_x = 0, x[W], got[W];
  for (Bits b = 0; b <= top - stride * W; b += stride * W) {
    for (std::size_t l = 0; l < W; ++l) {
      const Bits bits = b + Bits(l) * stride;
      std::memcpy(&x[l], &bits, sizeof bits);
      x[l] = -x[l];
    }
    O::store(got, simd::exp2_nonpositive(O::load(x)));
    for (std::size_t l = 0; l < W; ++l) {
      const long double want = std::exp2l(static_cast<long double>(x[l]));
      const long double rel = std::abs(static_cast<long double>(got[l]) - want) / want;
      if (rel > worst) worst = rel, worst_x = x[l];
    }
  }
  EXPECT_LE(worst, 2 * u) << "exp2(" << worst_x << "): relative error " << double(worst / u) << "u";
}

/// Widens all 65536 patterns of S through load_as and compares with the portable
/// converter, bit for bit (both are exact).
template <class S>
void widening_exhaustive() {
  using P = simd::vector_pack<float>;
  constexpr std::size_t W = simd::ops<P>::width;
  std::vector<S> all(65536 + W);
  for (std::size_t i = 0; i < all.size(); ++i) all[i] = S::from_bits(std::uint16_t(i));
  std::size_t mismatches = 0;
  for (std::size_t i = 0; i < 65536; i += W) {
    float got[W];
    simd::ops<P>::store(got, simd::load_as<P>(all.data() + i));
    for (std::size_t l = 0; l < W; ++l) {
      const float want = static_cast<float>(all[i + l]);
      mismatches += std::memcmp(&got[l], &want, sizeof want) != 0;
    }
  }
  EXPECT_EQ(mismatches, 0u);
}

template <class T>
void all_of_type() {
  reduce_rows<T>();
  reduce_max_anywhere<T>();
  transpose_block<T>();
  store_rows<T>();
  keep_in_register<T>();
  selects<T>();
  exp2_against_libm<T>();
  exp2_within_two_u<T>();
}

inline void all() {
  all_of_type<float>();
  all_of_type<double>();
  widening_exhaustive<headwise::half>();
  widening_exhaustive<headwise::bfloat16>();
}

}  // namespace path_checks::HEADWISE_TEST_PATH
