// headwise/simd/exp.hpp — exp and exp2 on a pack (vector or 1-wide), ~1 ulp.
//
//   simd::exp<P>(x)               any x; P is xsimd::batch<T, arch> or T (pack.hpp)
//   simd::exp2_nonpositive<P>(x)  x <= 0: the flash softmax works in log2 units
//
// Softmax evaluates one exp per visible score, so this sits in the inner loop
// next to the Q·Kᵀ and P·V FMAs: 13 vector ops per pack (exp2_nonpositive), 7
// of them FMAs, against Dk + Dv = 128 matmul FMAs per pack of scores at d = 64.
// Measured max relative error over (lo, 0]: 0.66·2^-23 for float (~1 ulp).
// Method (Cody–Waite reduction, no table):
//   n = round(x·log2 e)            via the 1.5·2^(mantissa bits) "magic" addend, so
//                                  the integer lands in the low mantissa bits
//   r = x − n·ln2_hi − n·ln2_lo    |r| <= ln2/2, exact hi part (few-bit ln2_hi)
//   e^r = Taylor polynomial of degree 7 (float) / 13 (double) in Horner form; the
//         truncation term r^(deg+1)/(deg+1)! is < 0.1 ulp, so rounding dominates
//   ·2^n by adding n to the exponent field of the polynomial (integer add)
// Range: below lo ≈ ln(2^-125.5) the result is exactly 0 (results under
// 1.7e-38 for float are flushed), so exp(−inf) = 0 and no NaN escapes; above
// the largest n that keeps 2^n finite the result is +inf.
// No reliance on -ffast-math; the same code runs 1-wide for the scalar path.
#pragma once

#ifndef HEADWISE_INTERNAL
#error "headwise/simd/* is internal: include <headwise/headwise.hpp>"
#endif

#include <array>
#include <limits>

#include "headwise/simd/pack.hpp"

namespace headwise::simd {

template <class T>
struct exp_constants;

template <>
struct exp_constants<float> {
  static constexpr int mantissa = 23, degree = 7;
  static constexpr float magic = 12582912.0f;  // 1.5 · 2^23
  static constexpr float log2e = 1.44269504088896341f;
  static constexpr float ln2_hi = 0.693359375f;     // 8 significant bits: n·ln2_hi is exact
  static constexpr float ln2_lo = -2.12194440e-4f;  // ln2 − ln2_hi
  static constexpr float lo = -86.9f;               // n >= -125: the result stays normal
  static constexpr float hi = 88.3762626f;          // 127.5 · ln2: n <= 127
  static constexpr float lo2 = -125.0f;             // exp2: n >= -125
};

template <>
struct exp_constants<double> {
  static constexpr int mantissa = 52, degree = 13;
  static constexpr double magic = 6755399441055744.0;  // 1.5 · 2^52
  static constexpr double log2e = 1.4426950408889634074;
  static constexpr double ln2_hi = 6.93147180369123816490e-01;  // 32 significant bits
  static constexpr double ln2_lo = 1.90821492927058770002e-10;
  static constexpr double lo = -708.0;              // n >= -1021: the result stays normal
  static constexpr double hi = 709.43613930310391;  // 1023.5 · ln2
  static constexpr double lo2 = -1021.0;            // exp2: n >= -1021
};

/// Taylor coefficient k of e^r (1/k!) or, for base 2, of 2^r = e^(r·ln2) (ln2^k/k!).
template <class T, bool base2>
constexpr T taylor_coefficient(int k) {
  long double c = 1;
  for (int i = 1; i <= k; ++i) c *= (base2 ? 0.693147180559945309417232121458L : 1.0L) / i;
  return T(c);
}

/// The coefficients 0..degree as a compile-time table: at -O2 GCC neither unrolls
/// the Horner loop nor folds taylor_coefficient, and evaluated it in long double
/// on every call (the decode kernel spent a third of its time there).
template <class T, bool base2>
struct taylor_table {
  static constexpr int size = exp_constants<T>::degree + 1;
  static constexpr std::array<T, size> c = [] {
    std::array<T, size> a{};
    for (int k = 0; k < size; ++k) a[std::size_t(k)] = taylor_coefficient<T, base2>(k);
    return a;
  }();
};

/// poly(r)·2^n, where t = magic + n: Horner, then n added to the exponent field.
template <bool base2, class P>
P scaled_polynomial(const P& r, const P& t) {
  using O = ops<P>;
  using T = typename O::value_type;
  using C = exp_constants<T>;
  using table = taylor_table<T, base2>;
  P poly(table::c[C::degree]);
  HEADWISE_UNROLL
  for (int k = C::degree - 1; k >= 0; --k) poly = O::fma(poly, r, P(table::c[std::size_t(k)]));
  // bits(t) = bits(magic) + n; shifting out the magic's own exponent leaves
  // n·2^mantissa, which added to poly's bits adds n to its exponent: poly·2^n
  // with an integer add instead of an FMA-port multiply.
  return O::from_bits(O::to_bits(poly) + O::shift_left(O::to_bits(t), C::mantissa));
}

/// e^x before the range selects: correct for lo <= x <= hi, garbage outside.
template <class P>
P exp_in_range(const P& x) {
  using O = ops<P>;
  using C = exp_constants<typename O::value_type>;
  const P t = O::fma(x, P(C::log2e), P(C::magic));  // magic + round(x·log2e)
  const P n = t - P(C::magic);
  P r = O::fma(n, P(-C::ln2_hi), x);
  r = O::fma(n, P(-C::ln2_lo), r);
  return scaled_polynomial<false>(r, t);
}

/// e^x for any x: 0 below lo (including −inf), +inf above hi.
template <class P>
P exp(const P& x) {
  using T = typename ops<P>::value_type;
  const P inf(std::numeric_limits<T>::infinity());
  return ops<P>::select_less(x, P(exp_constants<T>::lo), P(T(0)),
                             ops<P>::select_greater(x, P(exp_constants<T>::hi), inf, exp_in_range(x)));
}

/// 2^x for x <= 0 (softmax in log2 units: s·log2e − max): the reduction is
/// r = x − round(x), exact, so it costs one add and two subtractions instead of
/// three FMAs; 0 below −125 (including −inf).
template <class P>
P exp2_nonpositive(const P& x) {
  using O = ops<P>;
  using T = typename O::value_type;
  using C = exp_constants<T>;
  const P t = x + P(C::magic);  // magic + round(x)
  const P r = x - (t - P(C::magic));
  return O::select_less(x, P(C::lo2), P(T(0)), scaled_polynomial<true>(r, t));
}

}  // namespace headwise::simd
