// headwise/simd/exp.hpp — 2^x for x <= 0 on a pack (vector or 1-wide), ~1 ulp.
//
//   simd::exp2_nonpositive<P>(x)  x <= 0: the softmax works in log2 units
//                                 (scores pre-multiplied by log2 e, minus the max)
//
// Softmax evaluates one exponential per visible score, so this sits in the inner
// loop next to the Q·Kᵀ and P·V FMAs: 13 vector ops per pack (10 with AVX-512's
// vrndscale/vscalef, same bits), 6 of them FMAs,
// against Dk + Dv = 128 matmul FMAs per pack of scores at d = 64.
// Method (no table):
//   n = round(x)                   via the 1.5·2^(mantissa bits) "magic" addend, so
//                                  the integer lands in the low mantissa bits
//   r = x − n                      exact, |r| <= 1/2
//   2^r = polynomial in Horner form: float, degree 6, minimax for the relative error
//         on [−½, ½] (Remez; 1.9e-9 = 0.03 u before its coefficients are rounded to
//         float); double, the degree-13 Taylor polynomial of e^(r·ln2) (tail < 0.1 u)
//   ·2^n by adding n to the exponent field of the polynomial (integer add)
// Accuracy (float, every x in [−125, 8] against exp2 in double): at most 0.95 ulp
// (the degree-7 Taylor polynomial it replaced: 0.87 ulp, one FMA more); 2^0 = 1.
// The bound the tests derive is in tests/simd_path_checks.inl.
// Range: below lo2 (2^-125 for float) the result is exactly 0 (results under
// 2.4e-38 are flushed), so 2^−inf = 0 and no NaN escapes.
// No reliance on -ffast-math; the same code runs 1-wide for the scalar path.
//
// Per-path header (kernels/paths.hpp): no include guard, namespace headwise::<path>.
#if !defined(HEADWISE_INTERNAL) || !defined(HEADWISE_ISA_NS)
#error "headwise/simd/* is internal: include <headwise/headwise.hpp>"
#endif

namespace headwise::HEADWISE_ISA_NS::simd {

template <class T>
struct exp_constants;

/// Taylor coefficients 0..degree of 2^r = e^(r·ln2): ln2^k / k!, as a compile-time
/// table (at -O2 GCC neither unrolls the Horner loop nor folds the series, and
/// evaluated it in long double on every call: the decode kernel spent a third of
/// its time there).
template <class T, std::size_t degree>
constexpr std::array<T, degree + 1> taylor_coefficients() {
  std::array<T, degree + 1> a{};
  long double c = 1;
  for (std::size_t k = 0; k <= degree; ++k) {
    if (k > 0) c *= 0.693147180559945309417232121458L / (long double)(k);
    a[k] = T(c);
  }
  return a;
}

template <>
struct exp_constants<float> {
  static constexpr int mantissa = 23;
  static constexpr float magic = 12582912.0f;  // 1.5 · 2^23
  static constexpr float log2e = 1.44269504088896341f;
  static constexpr float lo2 = -125.0f;  // n >= -125: the result stays normal
  // Minimax (relative error) on [−½, ½], degree 6: c[0] rounds to exactly 1.
  static constexpr std::array<float, 7> c = {1.000000001e+00f, 6.931472057e-01f, 2.402264689e-01f,
                                             5.550328777e-02f, 9.618488957e-03f, 1.339993122e-03f,
                                             1.534581200e-04f};
  static constexpr double approximation = 1.9e-9;  // its relative error, coefficients unrounded
};

template <>
struct exp_constants<double> {
  static constexpr int mantissa = 52;
  static constexpr double magic = 6755399441055744.0;  // 1.5 · 2^52
  static constexpr double log2e = 1.4426950408889634074;
  static constexpr double lo2 = -1021.0;  // n >= -1021: the result stays normal
  static constexpr std::array<double, 14> c = taylor_coefficients<double, 13>();
  // Its tail, relative: e^|y| · |y|^14 / 14! over 2^r for |y| = |r|·ln2 <= ln2/2.
  static constexpr double approximation = 8.3e-18;
};

/// The polynomial of 2^r, in Horner form.
template <class P>
HEADWISE_ALWAYS_INLINE P exp2_polynomial(const P& r) {
  using O = ops<P>;
  constexpr auto& c = exp_constants<typename O::value_type>::c;
  P poly(c[c.size() - 1]);
  HEADWISE_UNROLL
  for (int k = int(c.size()) - 2; k >= 0; --k) poly = O::fma(poly, r, P(c[std::size_t(k)]));
  return poly;
}

/// poly(r)·2^n, where t = magic + n: Horner, then n added to the exponent field.
template <class P>
HEADWISE_ALWAYS_INLINE P scaled_polynomial(const P& r, const P& t) {
  using O = ops<P>;
  using T = typename O::value_type;
  using C = exp_constants<T>;
  const P poly = exp2_polynomial(r);
  // bits(t) = bits(magic) + n; shifting out the magic's own exponent leaves
  // n·2^mantissa, which added to poly's bits adds n to its exponent: poly·2^n
  // with an integer add instead of an FMA-port multiply.
  return O::from_bits(O::to_bits(poly) + O::shift_left(O::to_bits(t), C::mantissa));
}

/// 2^x for x <= 0 (softmax in log2 units: s·log2e − max): the reduction is
/// r = x − round(x), exact, so it costs one add and two subtractions instead of
/// three FMAs; 0 below −125 (including −inf).
template <class P>
HEADWISE_ALWAYS_INLINE P exp2_nonpositive(const P& x) {
  using O = ops<P>;
  using T = typename O::value_type;
  using C = exp_constants<T>;
#if HEADWISE_PATH_AVX512
  // The same n, r and polynomial in 10 instructions instead of 13: vrndscale rounds
  // (to nearest even, as the magic addend does), vscalef multiplies by 2^n exactly
  // (the results are normal, so the bits are those of the exponent add), and its
  // zeroing mask is the range test; NaN stays NaN (unordered compares keep the lane).
  if constexpr (!std::is_arithmetic_v<P> && O::width * sizeof(T) == 64) {
    constexpr int nearest = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    if constexpr (std::is_same_v<T, float>) {
      const __m512 xv = x;
      const __mmask16 live = _mm512_cmp_ps_mask(xv, _mm512_set1_ps(C::lo2), _CMP_NLT_UQ);
      const __m512 n = _mm512_roundscale_ps(xv, nearest);
      return P(_mm512_maskz_scalef_ps(live, exp2_polynomial(P(_mm512_sub_ps(xv, n))), n));
    } else {
      const __m512d xv = x;
      const __mmask8 live = _mm512_cmp_pd_mask(xv, _mm512_set1_pd(C::lo2), _CMP_NLT_UQ);
      const __m512d n = _mm512_roundscale_pd(xv, nearest);
      return P(_mm512_maskz_scalef_pd(live, exp2_polynomial(P(_mm512_sub_pd(xv, n))), n));
    }
  } else
#endif
  {
    const P t = x + P(C::magic);  // magic + round(x)
    const P r = x - (t - P(C::magic));
    return O::select_less(x, P(C::lo2), P(T(0)), scaled_polynomial(r, t));
  }
}

}  // namespace headwise::HEADWISE_ISA_NS::simd
