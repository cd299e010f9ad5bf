// tests/test_util.hpp — owning tensors for tests, random fills, and the two
// tolerances (outputs, LSE) every kernel test derives from one error model.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include <headwise/headwise.hpp>


namespace hwtest {

using namespace headwise;

enum class layout { bshd, bhsd };

inline const char* layout_name(layout l) { return l == layout::bshd ? "bshd" : "bhsd"; }

/// An owning [B, H, S, D] tensor in the chosen memory order. The data starts one
/// element past an aligned boundary so kernels never get aligned rows for free.
/// A copy views its own storage.
template <class T>
struct tensor {
  std::vector<T> storage;
  tensor_view<T> view;

  tensor() = default;
  tensor(std::size_t B, std::size_t H, std::size_t S, std::size_t D, layout l = layout::bhsd)
      : storage(B * H * S * D + 1) {
    T* p = storage.data() + 1;
    view = l == layout::bshd ? bshd(p, B, S, H, D) : bhsd(p, B, H, S, D);
  }
  tensor(const tensor& o) : storage(o.storage), view(rebased(o)) {}
  tensor(tensor&&) noexcept = default;
  tensor& operator=(const tensor& o) {
    storage = o.storage;
    view = rebased(o);
    return *this;
  }
  tensor& operator=(tensor&&) noexcept = default;
  tensor_view<const T> cview() const { return view; }
  T& operator()(std::size_t b, std::size_t h, std::size_t s, std::size_t d) { return view(b, h, s, d); }

 private:
  /// o's view moved onto this tensor's storage (same offset, shape and strides).
  tensor_view<T> rebased(const tensor& o) const {
    if (o.storage.empty()) return o.view;
    const auto& v = o.view;
    return tensor_view<T>(const_cast<T*>(storage.data()) + (v.data() - o.storage.data()), v.batch(),
                          v.heads(), v.seq(), v.dim(), v.batch_stride(), v.head_stride(), v.seq_stride());
  }
};

/// Fills with uniform values in [-amp, amp] from a fixed seed.
template <class T>
void fill_uniform(tensor<T>& t, std::uint32_t seed, double amp = 1.0) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> dist(-amp, amp);
  for (std::size_t b = 0; b < t.view.batch(); ++b)
    for (std::size_t h = 0; h < t.view.heads(); ++h)
      for (std::size_t s = 0; s < t.view.seq(); ++s)
        for (std::size_t d = 0; d < t.view.dim(); ++d) t(b, h, s, d) = static_cast<T>(dist(gen));
}

/// A copy of t with every element converted to S, in the given layout.
template <class S, class T>
tensor<S> converted(const tensor<T>& t, layout lay) {
  const tensor_view<T>& v = t.view;
  tensor<S> r(v.batch(), v.heads(), v.seq(), v.dim(), lay);
  for (std::size_t b = 0; b < v.batch(); ++b)
    for (std::size_t h = 0; h < v.heads(); ++h)
      for (std::size_t s = 0; s < v.seq(); ++s)
        for (std::size_t d = 0; d < v.dim(); ++d) r(b, h, s, d) = static_cast<S>(v(b, h, s, d));
  return r;
}

/// t quantized to int8 (quantize_int8) in the given layout; its scales into `scale`.
template <class T>
tensor<std::int8_t> quantized(const tensor<T>& t, layout lay, tensor<float>& scale) {
  const tensor_view<T>& v = t.view;
  tensor<std::int8_t> r(v.batch(), v.heads(), v.seq(), v.dim(), lay);
  scale = tensor<float>(v.batch(), v.heads(), v.seq(), 1, lay);
  quantize_int8(t.cview(), r.view, scale.view);
  return r;
}

/// scale · q, element by element, as T in the given layout.
template <class T>
tensor<T> dequantized(const tensor<std::int8_t>& q, const tensor<float>& scale, layout lay) {
  const tensor_view<std::int8_t>& v = q.view;
  tensor<T> r(v.batch(), v.heads(), v.seq(), v.dim(), lay);
  dequantize_int8(q.cview(), scale.cview(), r.view);
  return r;
}

/// Typed-test names that end in the element type's name: TYPED_TEST_SUITE's third
/// argument (which clang's -Wgnu-zero-variadic-macro-arguments also asks for).
struct element_type_name {
  template <class T>
  static std::string GetName(int) {
    if constexpr (std::is_same_v<T, float>) return "float";
    if constexpr (std::is_same_v<T, double>) return "double";
    if constexpr (std::is_same_v<T, half>) return "half";
    if constexpr (std::is_same_v<T, bfloat16>) return "bfloat16";
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, double> || is_storage_16<T> ||
                  std::is_same_v<T, std::int8_t>);
    return "int8";
  }
};

/// The bound on |x − q·s| for a row quantized with scale s whose largest magnitude is
/// amax. With u = 2^-24 (float's unit roundoff) and x_f = float(x) (exact for float,
/// half and bfloat16; |x − x_f| <= u·|x| for double), quantize_row_int8 computes
/// r = x_f / s rounded to float, r = (x_f / s)(1 + δ) with |δ| <= u, and q = the
/// integer nearest r (|x_f / s| <= 127(1 + u)/(1 − u) < 127.5, so the clamp never moves
/// it further). Then x − q·s = (x − x_f) + (x_f − r·s) + (r − q)·s, the terms at most
/// u·|x|, u·|x_f| <= u(1 + u)·|x| and s/2: |x − q·s| <= s/2 + (2 + u)·u·amax. s is the
/// scale stored, so its own rounding does not enter; q·s is exact in double (8 + 24 bits).
constexpr double int8_element_bound(double s, double amax) {
  const double u = 1.0 / 16777216;  // 2^-24
  return s / 2 + (2 + u) * u * amax;
}

/// Unit roundoff of T: 2^-digits (half, bfloat16: of their 11- and 8-bit significands).
/// int8 (quantize.hpp): its error relative to the row's max, the unit of error_model's
/// kmax and vmax: int8_element_bound with amax 1, s = fl(amax / 127) <= (1 + u)/127,
/// plus u for the kernels' use of s·q, rounded (flash packing) or not (decode).
template <class T>
constexpr double unit_roundoff() {
  if constexpr (is_storage_int8<T>)
    return int8_element_bound((1 + unit_roundoff<float>()) / 127, 1) + unit_roundoff<float>();
  else if constexpr (is_storage_16<T>)
    return 1.0 / double(std::uint64_t(1) << T::format::digits);
  else
    return std::numeric_limits<T>::epsilon() / 2;
}

/// What a kernel's error against the oracle depends on, besides the compute type.
struct error_model {
  std::size_t Dk = 1, Nk = 1;
  double scale = 1;
  double qmax = 1, kmax = 1, vmax = 1;  // bounds on |q|, |k|, |v|
  double bias = 0;                      // bound on |ALiBi term + finite additive mask entry| of a logit
  double softcap = 0;                   // c; 0 = none
  double min_abs_logit = 0;  // lower bound on every |scale·q·k| (saturates the softcap); 0 = none known
  double head_scale = 1;     // largest head_scale
  double storage_u = 0;      // unit roundoff of a K/V storage the oracle did not read (0: it read it)
  double weight_u = 0;       // unit roundoff of the weights as P·V reads them (bf16 P: vdpbf16ps)
  double out_u = 0;          // unit roundoff of a 16-bit output (0: out in T)
};

// The error analysis behind both tolerances: worst-case forward error bounds
// (Higham, Accuracy and Stability of Numerical Algorithms, ch. 3) of a kernel
// computing in T, unit roundoff u, against the oracle (double: its own error is
// negligible). γ(n) = n·u.
//   Logits: |scale·q·k| <= S = scale·Dk·qmax·kmax. The Dk-term dot product and the
//   scale and log2 e products: |δ| <= (Dk + 2)·u·S; K stored with unit roundoff
//   u_S the oracle did not see: + u_S·S. Softcap c·tanh(s/c) has absolute
//   condition 1 − tanh²(s/c) <= 1: δ passes through damped (to 0 when every
//   |s| >= min_abs_logit >> c), never above 2c, and s/c, tanh (<= 2 ulps) and ×c
//   add 4·u·c. Then |logit| <= L = min(c, S) + bias; the ALiBi product and sum,
//   the mask addition, ×log2 e (u·L each) and the subtraction of the running max
//   (|s − max| <= 2L) add <= 6·u·L. ⇒ Δ.
//   Weights: exp2(s − max) is within 2u, relative (pack_test's exp2_within_two_u);
//   each rescale of the online softmax state and each merge of split-KV partials
//   multiplies earlier weights by a factor within 4u, at most Nk times: relative
//   weight error ε <= (2 + 4·Nk)·u.
//   Output: logits within Δ and weights within ε (one weight in Σw·v and in Σw)
//   keep each share of the average within e^{±2(Δ+ε)}: expm1(2(Δ + ε))·vmax; weights
//   rounded (unit u_P) for P·V alone, not for Σw, widen that to expm1(2(Δ + ε) + u_P). The
//   sums Σw, Σw·v of <= 2·Nk terms (keys and rescales) add γ(2Nk) each and the
//   division u: (4·Nk + 1)·u·vmax; V stored unseen, u_S·vmax. A head scale h
//   multiplies this; applying it and storing the oracle's output in T add 2u·h·vmax,
//   storing it in a 16-bit type u_O·h·vmax.
//   LSE = max + log Σw moves by at most Δ + ε + γ(2Nk); the log, ln 2 and the
//   addition add 4u·|lse|, storing it and the oracle's as float 2·u_f·|lse|, with
//   |lse| <= L + log Nk.
// Worst case, not an estimate, and still sharp enough: a key wrongly shown or
// hidden among n visible moves an output by about |v_j − o|/n, above this bound
// while n·12·Nk·u < 1 (float: rows up to ~1000 keys); a lost tile or a wrong rule
// moves it by far more.
namespace detail_tolerance {
struct logit_bounds {
  double delta, weights, lse_max;  // Δ, ε, bound on |lse|
};
template <class T>
logit_bounds logit_error(const error_model& m) {
  const double u = unit_roundoff<T>(), Dk = double(m.Dk), Nk = double(m.Nk);
  const double S = m.scale * Dk * m.qmax * m.kmax;
  double delta = (Dk + 2) * u * S + m.storage_u * S;
  double L = S;
  if (m.softcap > 0) {
    const double c = m.softcap, t = std::tanh(std::max(0.0, m.min_abs_logit - delta) / c);
    delta = std::min(2 * c, delta * (1 - t * t)) + 4 * u * c;
    L = std::min(c, S);
  }
  L += m.bias;
  delta += 6 * u * L;
  return {delta, (2 + 4 * Nk) * u, L + std::log(std::max(1.0, Nk))};
}
}  // namespace detail_tolerance

/// Bound on max |out − oracle| (see the analysis above).
template <class T>
double attention_tolerance(const error_model& m) {
  const double u = unit_roundoff<T>(), Nk = double(m.Nk);
  const auto e = detail_tolerance::logit_error<T>(m);
  const double err = std::expm1(2 * (e.delta + e.weights) + m.weight_u) * m.vmax + (4 * Nk + 1) * u * m.vmax +
                     m.storage_u * m.vmax;
  return m.head_scale * (err + (2 * u + m.out_u) * m.vmax);
}

/// The same for the common case: no element-wise rules, K/V as the oracle read them.
template <class T>
double attention_tolerance(std::size_t Dk, std::size_t Nk, double scale, double qmax, double kmax,
                           double vmax) {
  error_model m;
  m.Dk = Dk, m.Nk = Nk, m.scale = scale, m.qmax = qmax, m.kmax = kmax, m.vmax = vmax;
  return attention_tolerance<T>(m);
}

/// Bound on max |lse − oracle lse| for the float LSE attention() writes.
template <class T>
double lse_tolerance(const error_model& m) {
  const double u = unit_roundoff<T>();
  const auto e = detail_tolerance::logit_error<T>(m);
  return e.delta + e.weights + 2 * double(m.Nk) * u + (4 * u + 2 * unit_roundoff<float>()) * e.lse_max;
}

/// Bounds on max |dq|, |dk|, |dv| − oracle| for attention_backward computing in T
/// from a forward (its out and float LSE) computed by attention() in T, with
/// |dout| <= gmax. col_mass: the largest exact Σ_i p_ij over the rows (of every head
/// of the group) that reach one key j (<= group·Nq; the oracle's P gives it).
//   P: the backward's logits carry the forward's Δ; the LSE passed back is within
//   lse_tolerance; the subtraction, ×log2 e and exp2 add 4u: relative error
//   ε_P = expm1(Δ + lse_tol + 4u).
//   dp = dA·v and D = dout·out are Dv-term dots with |·| <= DP = Dv·hs·gmax·vmax:
//   γ(Dv + 1)·DP each; D also sees the forward's output error, Dv·gmax·out_tol.
//   Softcap slope 1 − t², t = tanh(x/c): x within δ = (Dk + 2)·u·S ⇒ slope within
//   2δ/c + 4u. ds = p·(dp − D)·slope, |dp − D| <= 2DP: per unit p, within
//   E = ε_P·2DP + γ(Dv + 1)·DP·2 + Dv·gmax·out_tol + 2DP·(slope error + 3u).
//   dv_j = Σ_i p_ij dA_i: col_mass·hs·gmax·(ε_P + (N + 2)u), N the rows summed;
//   dk_j = scale Σ_i ds_ij q_i: |scale|·qmax·col_mass·(E + (N + 3)·u·2DP);
//   dq_i = scale Σ_j ds_ij k_j, Σ_j p_ij = 1: |scale|·kmax·(E + (Nk + 3)·u·2DP).
//   Each + 2u·(its magnitude bound) for the stores in T.
struct backward_bounds {
  double dq, dk, dv;
};
template <class T>
backward_bounds backward_tolerance(const error_model& m, std::size_t rows, std::size_t Dv, double col_mass,
                                   double gmax = 1) {
  const double u = unit_roundoff<T>(), N = double(rows), Nk = double(m.Nk), dv = double(Dv);
  const auto e = detail_tolerance::logit_error<T>(m);
  const double eps_p = std::expm1(e.delta + lse_tolerance<T>(m) + 4 * u);
  const double hs = m.head_scale, DP = dv * hs * gmax * m.vmax;
  double slope_err = 0;
  if (m.softcap > 0) {
    const double S = m.scale * double(m.Dk) * m.qmax * m.kmax;
    slope_err = 2 * (double(m.Dk) + 2) * u * S / m.softcap + 4 * u;
  }
  const double E = eps_p * 2 * DP + 2 * (dv + 1) * u * DP + dv * gmax * attention_tolerance<T>(m) +
                   2 * DP * (slope_err + 3 * u);
  const double sc = std::fabs(m.scale);
  backward_bounds b;
  b.dv = col_mass * hs * gmax * (eps_p + (N + 4) * u);
  b.dk = sc * m.qmax * col_mass * (E + (N + 5) * u * 2 * DP);
  b.dq = sc * m.kmax * (E + (Nk + 5) * u * 2 * DP);
  return b;
}

/// backward_tolerance's col_mass: max over (b, hk, j) of Σ over the group's heads h and
/// rows i of the exact p_hij.
template <class T>
double column_mass(const tensor<T>& q, const tensor<T>& k, const attention_options& opt) {
  const auto qv = q.cview(), kv = k.cview();
  const std::size_t B = qv.batch(), Hq = qv.heads(), Hkv = kv.heads(), Nq = qv.seq(), Nk = kv.seq();
  std::vector<double> s(Nk), mass(B * Hkv * Nk, 0.0);
  std::vector<char> vis(Nk);
  for (std::size_t b = 0; b < B; ++b)
    for (std::size_t h = 0; h < Hq; ++h)
      for (std::size_t i = 0; i < Nq; ++i) {
        reference::row_logits(opt, qv, kv, b, h, i, s.data(), vis.data());
        const double lse = reference::row_lse(s.data(), vis.data(), Nk);
        if (lse == -std::numeric_limits<double>::infinity()) continue;
        for (std::size_t j = 0; j < Nk; ++j)
          if (vis[j]) mass[(b * Hkv + h / (Hq / Hkv)) * Nk + j] += std::exp(s[j] - lse);
      }
  double worst = 0;
  for (double x : mass) worst = std::max(worst, x);
  return worst;
}

/// Largest |a - b| over two tensors of equal shape. Elements of one class agree
/// exactly where they are not finite (NaN and NaN, +inf and +inf count as 0); a NaN
/// against anything else makes the result NaN and an infinity against anything else
/// makes it inf, so `!(err <= bound)` fails on any difference of class
/// (options.hpp's rules for NaN and infinities are rules on classes).
template <class A, class B>
double max_abs_diff(const tensor_view<A>& a, const tensor_view<B>& b) {
  double worst = 0;
  for (std::size_t i = 0; i < a.batch(); ++i)
    for (std::size_t h = 0; h < a.heads(); ++h)
      for (std::size_t s = 0; s < a.seq(); ++s)
        for (std::size_t d = 0; d < a.dim(); ++d) {
          const double x = double(a(i, h, s, d)), y = double(b(i, h, s, d));
          if (std::isnan(x) != std::isnan(y)) return std::numeric_limits<double>::quiet_NaN();
          if (std::isnan(x) || x == y) continue;  // both NaN, or equal (infinities included)
          worst = std::max(worst, std::fabs(x - y));
        }
  return worst;
}

}  // namespace hwtest
