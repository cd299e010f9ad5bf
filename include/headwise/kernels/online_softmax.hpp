// headwise/kernels/online_softmax.hpp — the running softmax state of one query row.
//
//   softmax_row<T>::absorb<P>(s, n): s[0..n) are the logits of one key tile in
//   log2 units (logit·log2 e, which the flash kernel folds into its Q scale;
//   −inf = hidden; n a multiple of the pack width). On return s holds the
//   unnormalised probabilities p_j = 2^(s_j − m) for the updated running max m,
//   and the returned factor alpha = 2^(m_old − m) must rescale the row's output
//   accumulator before p·V is added (the flash kernel folds it into the P·V load).
//   finish(): out = acc · out_scale(), lse = lse().
//
// Scalar form of one step (what the vector loops compute):
//   m_new = max(m, max_j s_j)
//   alpha = 2^(m − m_new);  p_j = 2^(s_j − m_new);  l = alpha·l + Σ_j p_j;  m = m_new
// Normalisation is deferred to the end (one division per row, not per tile).
// Lazy rescale: m only moves when a tile's max exceeds it by more than 8, so
// p_j <= 2^8 and l, O stay far from overflow in float; m is then within 8 of
// the max rather than the max, which the final division by l cancels exactly.
// Most tiles then skip the scalar exp and the rescale.
// No ∞−∞: while every logit seen so far is −inf, m stays −inf and the tile's
// probabilities are written as 0 without evaluating s − m; once m is finite,
// 2^(−inf − m) = 0 and 2^(m_old − m) with m_old = −inf is 0. A row that never
// sees a visible key ends with l = 0: output 0 and LSE −inf, never NaN.
// A visible logit of NaN or +inf (options.hpp: the row is undefined) is caught by a
// running sum of the logits, not by the max (which may drop a NaN) nor by exp2
// (whose exponent arithmetic can turn a NaN carrying a payload into a number): l
// becomes NaN, and so do the row's output and LSE.
// Cost per tile and row: n/W max + n/W exp + 2·n/W add (W = pack width), plus one
// scalar exp and two horizontal reductions.
#ifndef HEADWISE_ISA_NS
#error "headwise/kernels/* is internal: include <headwise/headwise.hpp>"
#endif

namespace headwise::HEADWISE_ISA_NS::kernels {

template <class T>
struct softmax_row {
  T m = -std::numeric_limits<T>::infinity();  // running max of the logits seen
  T l = 0;                                    // running Σ 2^(s − m)
  static constexpr T slack = 8;               // p <= 2^8 between rescales
  static constexpr T log2e = simd::exp_constants<T>::log2e;
  static constexpr T ln2 = T(0.693147180559945309417232121458L);

  /// The factor a kernel multiplies q by: the scale, times log2 e so the scores
  /// come out in log2 units, unless element-wise rules (softcap, ALiBi, masks)
  /// must see natural logits first; their output then goes through to_log2.
  static T q_scale(T scale, bool natural_first) { return natural_first ? scale : scale * log2e; }
  static void to_log2(T* s, std::size_t n) {
    for (std::size_t j = 0; j < n; ++j) s[j] *= log2e;
  }

  /// Turns the logits s[0..n) into probabilities relative to the new running
  /// max and returns the factor that rescales the accumulated output.
  template <class P>
  T absorb(T* s, std::size_t n) {
    using O = simd::ops<P>;
    constexpr std::size_t W = O::width;
    const T neg_inf = -std::numeric_limits<T>::infinity();
    P mx(neg_inf), total(T(0));
    for (std::size_t j = 0; j < n; j += W) {
      const P x = O::load(s + j);
      mx = O::max(mx, x);
      total = total + x;
    }
    // Σ s is NaN or +inf when a visible logit is NaN or +inf (or when finite logits
    // overflow the sum: a false alarm, which only sends the row to the plain kernel's
    // row). Such a row is undefined (options.hpp): l becomes NaN and stays NaN.
    const P undefined = O::select_less(total, P(std::numeric_limits<T>::infinity()), P(T(0)),
                                       P(std::numeric_limits<T>::quiet_NaN()));
    const T tile_max = O::reduce_max(mx);
    if (tile_max == neg_inf && m == neg_inf) {  // nothing visible yet: p = 0, accumulators stay 0
      for (std::size_t j = 0; j < n; j += W) O::store(s + j, P(T(0)));
      l += O::reduce_add(undefined);
      return T(1);
    }
    // Lazy rescale: keep the reference m while the tile's max exceeds it by at
    // most `slack`, so p <= 2^slack (far from overflow) and alpha = 1 costs nothing.
    T alpha = T(1);
    if (m == neg_inf || tile_max > m + slack) {
      const T m_new = std::max(m, tile_max);
      alpha = simd::exp2_nonpositive<T>(m - m_new);
      m = m_new;
    }
    const P shift(m);
    P sum = undefined;
    for (std::size_t j = 0; j < n; j += W) {
      const P p = simd::exp2_nonpositive<P>(O::load(s + j) - shift);
      O::store(s + j, p);
      sum = sum + p;
    }
    l = alpha * l + O::reduce_add(sum);
    return alpha;
  }

  /// Factor turning the accumulated Σ p_j v_j into the output row (times the
  /// head multiplier); 0 for a row with no visible key, NaN for an undefined one.
  T out_scale(T head_multiplier) const { return l == T(0) ? T(0) : head_multiplier / l; }

  /// Natural-log LSE of the row's visible logits (m is in log2 units); −inf
  /// when none is visible, NaN when the row is undefined. log_sum() keeps T
  /// (decode merges partials in T).
  T log_sum() const { return l == T(0) ? -std::numeric_limits<T>::infinity() : m * ln2 + std::log(l); }
  float lse() const { return static_cast<float>(log_sum()); }
};

}  // namespace headwise::HEADWISE_ISA_NS::kernels
