// headwise/lora.hpp — the LoRA delta operator, its backward, and an adapter set.
//
// Shapes (row-major token matrices, one token per row, as an LLM holds them):
//   x [T × in]   y [T × out]   W [out × in]   (y = x·Wᵀ, the nn.Linear convention)
//   A [r × in]   B [out × r]   s = alpha / r, or alpha / √r with rsLoRA
//   apply:  h = x·Aᵀ          [T × r]     2·T·in·r FLOPs
//           y += s·h·Bᵀ       [T × out]   2·T·r·out FLOPs
// ΔW = s·B·A is never formed: x·ΔWᵀ would cost 2·T·in·out, the base projection's
// whole price again, while the two skinny GEMMs cost r·(in + out)/(in·out) of it —
// 0.78% for in = out = 4096, r = 16 — plus one more pass over y (T·out reads and
// writes). h lives in a grow-only workspace, so steady-state calls do not allocate
// (Eigen's GEMM may still take packing buffers of its own).
//
// merge(W) adds ΔW into W for inference at the base price; unmerge(W) subtracts it.
// Round trip: each of the two in-place updates rounds once, and ΔW's own rounding
// cancels when both passes compute it identically, else each is off by γ_r·|s|·|B||A|;
// merge_round_trip_bound() states the elementwise bound
//   |unmerge(merge(W)) − W| <= 4u·max|W| + (2r + 8)·u·c,   c = |s|·max_i ‖B_i‖₁·max|A|.
// safe_merge(W) refuses (throws, W bit-identical) when A, B, ΔW or W + ΔW would hold
// a NaN or an infinity: it checks the factors (r·(in + out) reads), and when
// max|W| + c cannot overflow it is merge() itself; only near the overflow line does
// it build ΔW in an [out × in] temporary to check it before touching W.
//
// lora_adapter_set: named adapters, each with an optional delta on any of the q, k,
// v and o projections. The active mix is a list of (adapter, weight): one adapter at
// weight 1, several combined (y += Σ w_a·s_a·B_a·A_a·x), or none. A mixed batch
// passes one adapter id per row instead (row t uses id[t], lora_adapter_set::none
// skips the row): rows are grouped by adapter with a counting sort, contiguous runs
// go to the GEMMs as they are and scattered rows are gathered in chunks, so a batch
// costs one pair of GEMMs per adapter and chunk, never one GEMV per row.
//
// 16-bit activations (float factors; x, y Eigen::bfloat16 or Eigen::half, eigen.hpp):
// apply(x, y) widens chunks of widened_rows rows of x and y to float (exact), runs
// the float apply above on them and rounds each y once (y += s·B·A·x in fp32 from y
// widened, then one rounding to nearest even: |error| <= u₁₆·|y| + the float bound,
// u₁₆ = 2^-8 for bfloat16). backward(x, dy, …) takes x and dy in 16 bits and keeps
// the gradients dA, dB, dx in float. A chunk of 128 rows of a 4096-wide x and y is
// 4 MiB of float scratch, grow-only (bounded, unlike a whole-T copy: 64 MiB at
// T 2048); the chunk repacks A and B for Eigen's GEMMs (2·r·4096 floats, 6 % of the
// chunk's x and y at r 16). Time against the float apply (bench/lora_bench.cpp,
// 4096², r 16, Zen 4, -march=native, medians of 5): 0.97× at T 2048, 1.25× at T 128
// and 1.1× at T 1: the conversions cost about what reading half the bytes saves.
//
// Objects here own workspaces: one object, one thread at a time.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "headwise/detail/internal_begin.hpp"

#include "headwise/detail/checks_eigen.hpp"
#include "headwise/eigen.hpp"

#include "headwise/detail/internal_end.hpp"

namespace headwise {

enum class lora_scaling {
  standard,         ///< s = alpha / r (Hu et al., 2021)
  rank_stabilized,  ///< s = alpha / √r (rsLoRA, Kalajdzievski 2023)
};

namespace detail {

/// Rows per chunk when 16-bit activations are widened (header comment).
inline constexpr Eigen::Index widened_rows = 128;

/// fn(r0, n, a_f, b_f) per chunk of widened_rows rows [r0, r0 + n): a_f and b_f are
/// those rows of the 16-bit a and b widened to float; with WriteBack, b's rows are
/// then b_f rounded back. b may be a itself (same rows, read before written).
template <bool WriteBack, class A, class B, class Fn>
void on_widened_rows(matrix_scratch<float>& scratch, const A& a, B& b, Fn&& fn) {
  for (Eigen::Index r0 = 0; r0 < a.rows(); r0 += widened_rows) {
    const Eigen::Index n = std::min(widened_rows, a.rows() - r0);
    matrix_map<float> buf = scratch.take(n, a.cols() + b.cols());
    auto af = buf.leftCols(a.cols());
    auto bf = buf.rightCols(b.cols());
    widen(a.middleRows(r0, n), af);
    widen(b.middleRows(r0, n), bf);
    fn(r0, n, af, bf);
    if constexpr (WriteBack) narrow(bf, b.middleRows(r0, n));
  }
}

/// W += D after checking that D and W + D are finite; W is untouched on failure.
template <class T>
void commit_delta(const char* where, matrix_ref<T> W, const row_matrix<T>& D) {
  check_finite_delta(where, W, D);
  W += D;
}

}  // namespace detail

template <class T>
class lora_delta {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "LoRA computes in float or double");

 public:
  /// a [r × in], b [out × r], r >= 1; alpha finite.
  lora_delta(row_matrix<T> a, row_matrix<T> b, double alpha, lora_scaling scaling = lora_scaling::standard)
      : a_(std::move(a)), b_(std::move(b)), alpha_(alpha), scaling_(scaling) {
    detail::check_lora_factors(a_.rows(), a_.cols(), b_.rows(), b_.cols(), alpha);
  }

  Eigen::Index rank() const noexcept { return a_.rows(); }
  Eigen::Index in_features() const noexcept { return a_.cols(); }
  Eigen::Index out_features() const noexcept { return b_.rows(); }
  Eigen::Index parameter_count() const noexcept { return a_.size() + b_.size(); }
  double alpha() const noexcept { return alpha_; }
  lora_scaling scaling_mode() const noexcept { return scaling_; }
  /// s = alpha / r, or alpha / √r.
  double scale() const noexcept {
    const double r = static_cast<double>(rank());
    return scaling_ == lora_scaling::standard ? alpha_ / r : alpha_ / std::sqrt(r);
  }

  /// The factors; writable in place (training), never resizable.
  const row_matrix<T>& a() const noexcept { return a_; }
  const row_matrix<T>& b() const noexcept { return b_; }
  matrix_ref<T> a() noexcept { return a_; }
  matrix_ref<T> b() noexcept { return b_; }

  /// y += weight·s·(x·Aᵀ)·Bᵀ with h [T × r] as scratch (overwritten). y may be x
  /// itself (in == out: x is not read after h); h must not overlap x or y.
  void apply(const const_matrix_ref<T>& x, matrix_ref<T> y, matrix_ref<T> h, T weight = T(1)) const {
    detail::check_shapes("lora_delta::apply", {x_shape(x), y_shape(x, y), {"h", h, x.rows(), rank()}});
    apply_unchecked(x, y, h, weight);
  }

  /// y += weight·s·(x·Aᵀ)·Bᵀ, scratch from the member workspace.
  void apply(const const_matrix_ref<T>& x, matrix_ref<T> y, T weight = T(1)) {
    detail::check_shapes("lora_delta::apply", {x_shape(x), y_shape(x, y)});
    apply_unchecked(x, y, scratch_.take(x.rows(), rank()), weight);
  }

  /// y += weight·s·(x·Aᵀ)·Bᵀ for 16-bit x and y (Eigen::bfloat16 or Eigen::half):
  /// computed in float on widened chunks of rows, y rounded once (header comment).
  template <class X, class Y, class A = detail::eigen_16_scalar<X>>
  void apply(const X& x_in, Y&& y_in, T weight = T(1)) {
    static_assert(std::is_same_v<T, float>, "16-bit activations go with float factors");
    const const_matrix_ref<A> x(x_in);
    matrix_ref<A> y(y_in);
    detail::check_shapes("lora_delta::apply", {x_shape(x), y_shape(x, y)});
    detail::on_widened_rows<true>(wide_, x, y, [&](Eigen::Index, Eigen::Index n, auto xf, auto yf) {
      apply_unchecked(xf, yf, scratch_.take(n, rank()), weight);
    });
  }

  /// Gradients of apply(x, y, weight) given dy = ∂L/∂y [T × out], accumulated (+=)
  /// as in llm.c: da [r × in], db [out × r], dx [T × in] (dx usually also collects
  /// the base projection's dy·W). h = x·Aᵀ is recomputed rather than stored.
  /// The gradients must not overlap x or dy.
  void backward(const const_matrix_ref<T>& x, const const_matrix_ref<T>& dy, matrix_ref<T> da,
                matrix_ref<T> db, matrix_ref<T> dx, T weight = T(1)) {
    detail::check_shapes("lora_delta::backward",
                         {x_shape(x), y_shape(x, dy, "dy"), {"da", da, rank(), in_features()},
                          {"db", db, out_features(), rank()}, {"dx", dx, x.rows(), in_features()}});
    auto buf = scratch_.take(x.rows(), 2 * rank());
    auto h = buf.leftCols(rank());
    auto dh = buf.rightCols(rank());
    const T s = static_cast<T>(scale()) * weight;
    h.noalias() = x * a_.transpose();
    // forward: y += s·h·Bᵀ
    db.noalias() += s * (dy.transpose() * h);
    dh.noalias() = s * (dy * b_);
    // forward: h = x·Aᵀ
    da.noalias() += dh.transpose() * x;
    dx.noalias() += dh * a_;
  }

  /// backward() for 16-bit x and dy; the gradients stay float (header comment).
  template <class X, class DY, class A = detail::eigen_16_scalar<X>>
  void backward(const X& x_in, const DY& dy_in, matrix_ref<T> da, matrix_ref<T> db, matrix_ref<T> dx,
                T weight = T(1)) {
    static_assert(std::is_same_v<T, float>, "16-bit activations go with float factors");
    const const_matrix_ref<A> x(x_in), dy(dy_in);
    detail::check_shapes("lora_delta::backward",
                         {x_shape(x), y_shape(x, dy, "dy"), {"dx", dx, x.rows(), in_features()}});
    detail::on_widened_rows<false>(wide_, x, dy, [&](Eigen::Index r0, Eigen::Index n, auto xf, auto dyf) {
      backward(xf, dyf, da, db, dx.middleRows(r0, n), weight);
    });
  }

  /// W += weight·s·B·A in place, W [out × in]; no checks on values (see safe_merge).
  void merge(matrix_ref<T> W, T weight = T(1)) const {
    detail::check_shapes("lora_delta::merge", {w_shape(W)});
    W.noalias() += (static_cast<T>(scale()) * weight) * (b_ * a_);
  }

  /// W −= weight·s·B·A in place: undoes merge(W, weight) up to merge_round_trip_bound().
  void unmerge(matrix_ref<T> W, T weight = T(1)) const { merge(W, -weight); }

  /// merge() that throws headwise::error, leaving W bit-identical, when A, B, the
  /// delta or the merged W would hold a NaN or an infinity. When finite factors
  /// provably cannot overflow (max|W| + |weight|·c <= max/2, c as in the header),
  /// this is merge() itself; otherwise ΔW goes through an [out × in] temporary.
  void safe_merge(matrix_ref<T> W, T weight = T(1)) const {
    const char* where = "lora_delta::safe_merge";
    detail::check_shapes(where, {w_shape(W)});
    detail::check_finite_factors(where, a_, b_);
    const double w_max = W.size() ? static_cast<double>(W.cwiseAbs().maxCoeff()) : 0.0;
    if (w_max + std::fabs(static_cast<double>(weight)) * delta_abs_bound() <=
        static_cast<double>(std::numeric_limits<T>::max()) / 2) {
      merge(W, weight);
      return;
    }
    row_matrix<T> delta = row_matrix<T>::Zero(out_features(), in_features());
    merge(delta, weight);
    detail::commit_delta<T>(where, W, delta);
  }

  /// Elementwise bound on |unmerge(merge(W)) − W| (header comment), for |weight| <= 1.
  double merge_round_trip_bound(const const_matrix_ref<T>& W) const {
    const double u = std::numeric_limits<T>::epsilon() / 2.0;
    const double w_max = W.size() ? static_cast<double>(W.cwiseAbs().maxCoeff()) : 0.0;
    return 4 * u * w_max + (2 * static_cast<double>(rank()) + 8) * u * delta_abs_bound();
  }

 private:
  /// The shapes the arguments must have: x [T × in], y [T × out], W [out × in].
  template <class X>
  detail::matrix_shape x_shape(const X& x) const {
    return {"x", x, x.rows(), in_features()};
  }
  template <class X, class Y>
  detail::matrix_shape y_shape(const X& x, const Y& y, const char* name = "y") const {
    return {name, y, x.rows(), out_features()};
  }
  detail::matrix_shape w_shape(const matrix_ref<T>& W) const { return {"W", W, out_features(), in_features()}; }

  /// c = |s|·max_i ‖B_i‖₁·max|A| >= max |s·B·A| elementwise (and >= Σ_k |s·B_ik·A_kj|).
  double delta_abs_bound() const {
    return std::fabs(scale()) * static_cast<double>(b_.cwiseAbs().rowwise().sum().maxCoeff()) *
           static_cast<double>(a_.cwiseAbs().maxCoeff());
  }

  void apply_unchecked(const const_matrix_ref<T>& x, matrix_ref<T> y, matrix_ref<T> h, T weight) const {
    if (x.rows() == 0) return;
    h.noalias() = x * a_.transpose();
    y.noalias() += (static_cast<T>(scale()) * weight) * (h * b_.transpose());
  }

  row_matrix<T> a_, b_;
  double alpha_;
  lora_scaling scaling_;
  matrix_scratch<T> scratch_;
  matrix_scratch<float> wide_;  // 16-bit activations widened, a chunk at a time
};

/// The four attention projections an adapter can modify.
enum class projection : std::size_t { q, k, v, o };
inline constexpr std::size_t projection_count = 4;
inline constexpr const char* projection_name(projection p) {
  constexpr const char* names[] = {"q", "k", "v", "o"};
  return names[static_cast<std::size_t>(p)];
}

/// in × out features of one projection (W is [out × in]).
struct projection_shape {
  Eigen::Index in = 0, out = 0;
};

template <class T>
class lora_adapter_set {
 public:
  using adapter_id = std::uint32_t;
  static constexpr adapter_id none = std::numeric_limits<adapter_id>::max();
  struct weighted {
    adapter_id id;
    double weight;
  };

  /// shapes[p] fixes in/out of projection p; every attached delta must match it.
  explicit lora_adapter_set(const std::array<projection_shape, projection_count>& shapes) : shapes_(shapes) {}

  /// Registers an adapter with no deltas yet; names are unique and non-empty.
  adapter_id add(std::string name) {
    detail::check_new_adapter(name, entries_);
    entries_.push_back(entry{std::move(name), {}});
    return static_cast<adapter_id>(entries_.size() - 1);
  }

  /// Sets (or replaces) adapter id's delta on projection p.
  void attach(adapter_id id, projection p, lora_delta<T> delta) {
    const projection_shape& s = shapes_[static_cast<std::size_t>(p)];
    detail::check_lora_attach(id, entries_.size(), s.in, s.out, delta.in_features(), delta.out_features());
    entries_[id].deltas[static_cast<std::size_t>(p)] = std::move(delta);
  }

  adapter_id find(std::string_view name) const {
    std::size_t i = 0;
    while (i < entries_.size() && entries_[i].name != name) ++i;
    detail::check_adapter_found(name, i < entries_.size());
    return static_cast<adapter_id>(i);
  }
  std::size_t size() const noexcept { return entries_.size(); }
  const std::string& name(adapter_id id) const {
    detail::check_adapter_id("lora_adapter_set::name", id, entries_.size());
    return entries_[id].name;
  }
  const projection_shape& shape(projection p) const noexcept { return shapes_[static_cast<std::size_t>(p)]; }

  /// Adapter id's delta on p, or nullptr.
  const lora_delta<T>* delta(adapter_id id, projection p) const {
    detail::check_adapter_id("lora_adapter_set::delta", id, entries_.size());
    const auto& d = entries_[id].deltas[static_cast<std::size_t>(p)];
    return d ? &*d : nullptr;
  }
  lora_delta<T>* delta(adapter_id id, projection p) {
    return const_cast<lora_delta<T>*>(std::as_const(*this).delta(id, p));
  }

  /// Trainable parameters of the adapters in the active mix.
  Eigen::Index active_parameter_count() const {
    Eigen::Index n = 0;
    for (const weighted& w : active_)
      for (const auto& d : entries_[w.id].deltas) n += d ? d->parameter_count() : 0;
    return n;
  }

  void activate(std::string_view name) { active_ = {weighted{find(name), 1.0}}; }
  /// Combination Σ w_a·ΔW_a; weights finite, ids valid and distinct.
  void activate(std::vector<weighted> mix) {
    detail::check_adapter_mix(mix, entries_.size());
    active_ = std::move(mix);
  }
  void disable() noexcept { active_.clear(); }
  bool enabled() const noexcept { return !active_.empty(); }
  const std::vector<weighted>& active() const noexcept { return active_; }

  /// y += Σ over the active mix of w·s·B·A·x on projection p.
  void apply(projection p, const const_matrix_ref<T>& x, matrix_ref<T> y) {
    detail::check_shapes("lora_adapter_set::apply", {x_shape(p, x), y_shape(p, x, y)});
    for (const weighted& w : active_)
      if (lora_delta<T>* d = delta(w.id, p))
        d->apply(x, y, scratch_.take(x.rows(), d->rank()), static_cast<T>(w.weight));
  }

  /// Mixed batch: row t gets adapter row_ids[t]'s delta (weight 1), none skips it.
  void apply(projection p, const const_matrix_ref<T>& x, matrix_ref<T> y, span<const adapter_id> row_ids) {
    const char* where = "lora_adapter_set::apply";
    detail::check_shapes(where, {x_shape(p, x), y_shape(p, x, y)});
    detail::check_row_adapters(where, row_ids, x.rows(), entries_.size(), none);
    group_rows(row_ids);
    for (std::size_t a = 0; a < entries_.size(); ++a)
      if (lora_delta<T>* d = delta(static_cast<adapter_id>(a), p))
        apply_rows(*d, x, y, order_.data() + starts_[a], starts_[a + 1] - starts_[a]);
  }

  /// Both apply()s for 16-bit x and y (Eigen::bfloat16 or Eigen::half): the float
  /// apply on widened chunks of rows, y rounded once (header comment).
  template <class X, class Y, class A = detail::eigen_16_scalar<X>>
  void apply(projection p, const X& x, Y&& y) {
    apply_widened<A>(p, x, y, nullptr);
  }
  template <class X, class Y, class A = detail::eigen_16_scalar<X>>
  void apply(projection p, const X& x, Y&& y, span<const adapter_id> row_ids) {
    apply_widened<A>(p, x, y, &row_ids);
  }

  /// W += Σ w·s·B·A over the active mix, checked like lora_delta::safe_merge.
  void merge(projection p, matrix_ref<T> W) const { merge(p, W, active_); }
  void merge(projection p, matrix_ref<T> W, const std::vector<weighted>& mix) const {
    const char* where = "lora_adapter_set::merge";
    detail::check_shapes(where, {w_shape(p, W)});
    detail::commit_delta<T>(where, W, combined_delta(p, mix));
  }
  /// W −= the same sum: undoes merge(p, W, mix) up to rounding (lora_delta's bound
  /// per term; the sum is computed identically both times).
  void unmerge(projection p, matrix_ref<T> W) const { unmerge(p, W, active_); }
  void unmerge(projection p, matrix_ref<T> W, const std::vector<weighted>& mix) const {
    detail::check_shapes("lora_adapter_set::unmerge", {w_shape(p, W)});
    W -= combined_delta(p, mix);
  }

 private:
  struct entry {
    std::string name;
    std::array<std::optional<lora_delta<T>>, projection_count> deltas;
  };
  static constexpr Eigen::Index gather_rows = 64;  // rows per gathered chunk: ~1-2 MB of scratch at 4096 wide

  /// The shapes the arguments of projection p must have: x [T × in], y [T × out], W [out × in].
  template <class X>
  detail::matrix_shape x_shape(projection p, const X& x) const {
    return {"x", x, x.rows(), shape(p).in};
  }
  template <class X, class Y>
  detail::matrix_shape y_shape(projection p, const X& x, const Y& y) const {
    return {"y", y, x.rows(), shape(p).out};
  }
  detail::matrix_shape w_shape(projection p, const matrix_ref<T>& W) const {
    return {"W", W, shape(p).out, shape(p).in};
  }

  /// The 16-bit apply()s: row_ids null for the active mix.
  template <class A, class X, class Y>
  void apply_widened(projection p, const X& x_in, Y& y_in, const span<const adapter_id>* row_ids) {
    static_assert(std::is_same_v<T, float>, "16-bit activations go with float factors");
    const char* where = "lora_adapter_set::apply";
    const const_matrix_ref<A> x(x_in);
    matrix_ref<A> y(y_in);
    detail::check_shapes(where, {x_shape(p, x), y_shape(p, x, y)});
    if (row_ids) detail::check_row_adapters(where, *row_ids, x.rows(), entries_.size(), none);
    detail::on_widened_rows<true>(wide_, x, y, [&](Eigen::Index r0, Eigen::Index n, auto xf, auto yf) {
      if (row_ids)
        apply(p, xf, yf, span<const adapter_id>(row_ids->data() + r0, std::size_t(n)));
      else
        apply(p, xf, yf);
    });
  }

  row_matrix<T> combined_delta(projection p, const std::vector<weighted>& mix) const {
    const projection_shape& s = shape(p);
    row_matrix<T> D = row_matrix<T>::Zero(s.out, s.in);
    for (const weighted& w : mix)
      if (const lora_delta<T>* d = delta(w.id, p)) {
        detail::check_adapter_finite(entries_[w.id].name, projection_name(p), d->a(), d->b());
        d->merge(D, static_cast<T>(w.weight));
      }
    return D;
  }

  /// Counting sort of row indices by adapter id: rows of adapter a are
  /// order_[starts_[a] .. starts_[a+1]), ascending; rows with none are dropped.
  void group_rows(span<const adapter_id> row_ids) {
    starts_.assign(entries_.size() + 1, 0);
    for (adapter_id id : row_ids)
      if (id != none) ++starts_[id + 1];
    for (std::size_t a = 0; a < entries_.size(); ++a) starts_[a + 1] += starts_[a];
    order_.resize(starts_.back());
    cursor_.assign(starts_.begin(), starts_.end() - 1);
    for (std::size_t t = 0; t < row_ids.size(); ++t)
      if (row_ids[t] != none) order_[cursor_[row_ids[t]]++] = static_cast<Eigen::Index>(t);
  }

  /// Applies d to the listed rows (ascending): contiguous runs of at least
  /// gather_rows rows in place, the others gathered into chunks and scattered back.
  void apply_rows(const lora_delta<T>& d, const const_matrix_ref<T>& x, matrix_ref<T> y,
                  const Eigen::Index* rows, std::size_t count) {
    const Eigen::Index r = d.rank(), in = x.cols(), out = y.cols();
    auto buf = gather_scratch_.take(gather_rows, in + r + out);
    auto xg = buf.leftCols(in);
    auto hg = buf.middleCols(in, r);
    auto yg = buf.rightCols(out);
    std::array<Eigen::Index, gather_rows> gathered;
    Eigen::Index pending = 0;
    auto flush = [&] {
      yg.topRows(pending).setZero();
      d.apply(xg.topRows(pending), yg.topRows(pending), hg.topRows(pending));
      for (Eigen::Index i = 0; i < pending; ++i) y.row(gathered[std::size_t(i)]) += yg.row(i);
      pending = 0;
    };
    for (std::size_t i = 0, j = 0; i < count; i = j) {
      j = i + 1;
      while (j < count && rows[j] == rows[j - 1] + 1) ++j;
      const auto run = static_cast<Eigen::Index>(j - i);
      if (run >= gather_rows) {
        d.apply(x.middleRows(rows[i], run), y.middleRows(rows[i], run), run_scratch_.take(run, r));
        continue;
      }
      for (std::size_t t = i; t < j; ++t) {
        if (pending == gather_rows) flush();
        gathered[std::size_t(pending)] = rows[t];
        xg.row(pending++) = x.row(rows[t]);
      }
    }
    if (pending > 0) flush();
  }

  std::array<projection_shape, projection_count> shapes_;
  std::vector<entry> entries_;
  std::vector<weighted> active_;
  matrix_scratch<T> scratch_, gather_scratch_, run_scratch_;
  matrix_scratch<float> wide_;  // 16-bit activations widened, a chunk at a time
  std::vector<Eigen::Index> order_;
  std::vector<std::size_t> starts_, cursor_;
};

}  // namespace headwise
