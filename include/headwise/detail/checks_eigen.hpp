// headwise/detail/checks_eigen.hpp — the argument checks of the Eigen component:
// eigen.hpp (the adapters), lora.hpp and mha.hpp. Beside detail/checks.hpp rather than
// in it so that the Eigen-free umbrella never reads them; Eigen itself is not
// included: sizes come as std::ptrdiff_t (Eigen::Index) and matrices as templates.
// Each failure throws headwise::error naming the function, the argument, what was
// expected and what was given.
#pragma once

#ifndef HEADWISE_INTERNAL
#error "headwise/detail/* is internal: include <headwise/headwise.hpp>"
#endif

#include <cmath>
#include <cstddef>
#include <initializer_list>
#include <string_view>

#include "headwise/detail/checks.hpp"
#include "headwise/tensor.hpp"

namespace headwise::detail {

/// as_bshd: a token matrix with unit inner stride, cols = heads · dim, rows a
/// multiple of batch.
inline void check_as_bshd(std::ptrdiff_t rows, std::ptrdiff_t cols, std::ptrdiff_t inner_stride,
                          std::size_t heads, std::size_t dim, std::size_t batch) {
  const char* where = "as_bshd";
  if (heads == 0 || dim == 0 || static_cast<std::size_t>(cols) != heads * dim)
    fail(where, "m.cols() must equal heads · dim (expected ", heads, " · ", dim, " = ", heads * dim, ", got ",
         cols, ")");
  if (inner_stride != 1) fail(where, "m.innerStride() must be 1 (got ", inner_stride, ")");
  if (batch == 0 || static_cast<std::size_t>(rows) % batch != 0)
    fail(where, "m.rows() must be a multiple of batch (", batch, ") (got ", static_cast<std::size_t>(rows), ")");
}

/// as_matrix: a view of one batch whose heads sit side by side in each token row.
template <class T>
void check_as_matrix(const tensor_view<T>& v) {
  const char* where = "as_matrix";
  expect_equal(where, "v.batch() must equal 1", 1, v.batch());
  if (v.heads() > 1) expect_equal(where, "v.head_stride() must equal v.dim()", v.dim(), v.head_stride());
  const auto cols = static_cast<std::ptrdiff_t>(v.heads() * v.dim());
  if (v.seq() > 1 && v.seq_stride() < cols)
    fail(where, "v.seq_stride() must be >= heads · dim (expected >= ", cols, ", got ", v.seq_stride(), ")");
}

/// A matrix argument and the [want_rows × want_cols] it must be.
struct matrix_shape {
  template <class M>
  matrix_shape(const char* n, const M& m, std::ptrdiff_t r, std::ptrdiff_t c)
      : name(n), rows(m.rows()), cols(m.cols()), want_rows(r), want_cols(c) {}
  const char* name;
  std::ptrdiff_t rows, cols, want_rows, want_cols;
};

/// Each matrix in turn has its shape (LoRA and the layer's x, y, scratch, gradients, W).
inline void check_shapes(const char* where, std::initializer_list<matrix_shape> shapes) {
  for (const matrix_shape& m : shapes)
    if (m.rows != m.want_rows || m.cols != m.want_cols)
      fail(where, m.name, " has the wrong shape (expected [", m.want_rows, " × ", m.want_cols, "], got [", m.rows,
           " × ", m.cols, "])");
}

/// lora_delta: A [r × in] and B [out × r] with r, in, out >= 1; alpha finite.
inline void check_lora_factors(std::ptrdiff_t a_rows, std::ptrdiff_t a_cols, std::ptrdiff_t b_rows,
                               std::ptrdiff_t b_cols, double alpha) {
  const char* where = "lora_delta";
  if (a_rows < 1) fail(where, "a.rows() (the rank r) must be >= 1 (got ", a_rows, ")");
  if (a_cols < 1) fail(where, "a.cols() (in) must be >= 1 (got ", a_cols, ")");
  if (b_rows < 1) fail(where, "b.rows() (out) must be >= 1 (got ", b_rows, ")");
  expect_equal(where, "b.cols() must equal a.rows() (the rank r)", a_rows, b_cols);
  if (!std::isfinite(alpha)) fail(where, "alpha must be finite (got ", alpha, ")");
}

/// lora_delta::safe_merge: the factors hold no NaN and no infinity.
template <class M>
void check_finite_factors(const char* where, const M& a, const M& b) {
  if (!a.allFinite()) fail(where, "A holds a NaN or an infinity; W is left untouched");
  if (!b.allFinite()) fail(where, "B holds a NaN or an infinity; W is left untouched");
}

/// A merge's delta D, and W + D, hold no NaN and no infinity.
template <class W, class D>
void check_finite_delta(const char* where, const W& w, const D& d) {
  if (!d.allFinite()) fail(where, "the delta s·B·A holds a NaN or an infinity; W is left untouched");
  if (!(w + d).allFinite()) fail(where, "W + s·B·A holds a NaN or an infinity; W is left untouched");
}

/// lora_adapter_set::add: a name not empty and not taken by any of `entries`.
template <class Entries>
void check_new_adapter(const std::string& name, const Entries& entries) {
  const char* where = "lora_adapter_set::add";
  if (name.empty()) fail(where, "name must not be empty");
  for (const auto& e : entries)
    if (e.name == name) fail(where, "an adapter named '", name, "' exists");
}

/// lora_adapter_set::find: an adapter of that name exists.
inline void check_adapter_found(std::string_view name, bool found) {
  if (!found) fail("lora_adapter_set::find", "no adapter named '", name, "'");
}

/// An adapter id below the number of adapters.
inline void check_adapter_id(const char* where, std::size_t id, std::size_t count) {
  if (id >= count) fail(where, "adapter id must be < ", count, " (got ", id, ")");
}

/// lora_adapter_set::attach: a valid id, and a delta of the projection's in and out.
inline void check_lora_attach(std::size_t id, std::size_t count, std::ptrdiff_t in, std::ptrdiff_t out,
                              std::ptrdiff_t delta_in, std::ptrdiff_t delta_out) {
  const char* where = "lora_adapter_set::attach";
  check_adapter_id(where, id, count);
  expect_equal(where, "delta.in_features() must equal the projection's in", in, delta_in);
  expect_equal(where, "delta.out_features() must equal the projection's out", out, delta_out);
}

/// lora_adapter_set::activate: valid, distinct ids with finite weights.
template <class Mix>
void check_adapter_mix(const Mix& mix, std::size_t count) {
  const char* where = "lora_adapter_set::activate";
  for (std::size_t i = 0; i < mix.size(); ++i) {
    check_adapter_id(where, mix[i].id, count);
    if (!std::isfinite(mix[i].weight)) fail(where, "mix[", i, "].weight must be finite (got ", mix[i].weight, ")");
    for (std::size_t j = 0; j < i; ++j)
      if (mix[j].id == mix[i].id) fail(where, "adapter ", mix[i].id, " appears twice in mix");
  }
}

/// Per-row adapters: one id per row of x, each an adapter or `none`.
template <class Id>
void check_row_adapters(const char* where, span<const Id> row_ids, std::ptrdiff_t rows, std::size_t count,
                        Id none) {
  expect_equal(where, "row_ids.size() must equal x.rows()", rows, row_ids.size());
  for (std::size_t t = 0; t < row_ids.size(); ++t)
    if (row_ids[t] != none && row_ids[t] >= count)
      fail(where, "row_ids[", t, "] must be < ", count, " or none (got ", row_ids[t], ")");
}

/// lora_adapter_set::merge: an adapter in the mix holds no NaN and no infinity.
template <class M>
void check_adapter_finite(const std::string& adapter, const char* projection, const M& a, const M& b) {
  if (!a.allFinite() || !b.allFinite())
    fail("lora_adapter_set::merge", "adapter '", adapter, "' on ", projection,
         " holds a NaN or an infinity; W is left untouched");
}

/// multi_head_attention's config: sizes >= 1, num_kv_heads dividing num_heads.
inline void check_mha_config(std::size_t model_dim, std::size_t num_heads, std::size_t num_kv_heads,
                             std::size_t head_dim) {
  const char* where = "multi_head_attention";
  if (model_dim == 0) fail(where, "config.model_dim must be >= 1 (got 0)");
  if (num_heads == 0) fail(where, "config.num_heads must be >= 1 (got 0)");
  if (head_dim == 0) fail(where, "config.head_dim must be >= 1 (got 0)");
  if (num_kv_heads == 0 || num_heads % num_kv_heads != 0)
    fail(where, "config.num_kv_heads must divide config.num_heads (", num_heads, ") (got ", num_kv_heads, ")");
}

/// merge_adapters / unmerge_adapters: the layer's adapters are merged exactly when `want`.
inline void check_adapters_merged(const char* where, bool merged, bool want) {
  if (merged && !want) fail(where, "the adapters are already merged");
  if (!merged && want) fail(where, "the adapters are not merged");
}

/// The layer's forward, prefill and step: x and y [rows × model_dim], rows split into
/// `sequences` equal runs, and per-row adapters (when given) one per row of unmerged weights.
template <class X, class Y>
void check_mha_io(const char* where, const X& x, const Y& y, std::ptrdiff_t model_dim, std::size_t sequences,
                  std::size_t row_adapters, bool merged) {
  check_shapes(where, {{"x", x, x.rows(), model_dim}, {"y", y, x.rows(), model_dim}});
  if (sequences == 0 || static_cast<std::size_t>(x.rows()) % sequences != 0)
    fail(where, "x.rows() must be a multiple of the number of sequences (", sequences, ") (got ", x.rows(), ")");
  if (row_adapters == 0) return;
  expect_equal(where, "row_adapters.size() must equal x.rows()", x.rows(), row_adapters);
  if (merged) fail(where, "per-row adapters need unmerged weights (call unmerge_adapters())");
}

/// multi_head_attention::backward: x, dy and dx [rows × model_dim], x the rows of the
/// forward() whose activations the layer kept (none kept after prefill, step, merge
/// or unmerge), a forward under the active mix rather than per-row adapters.
template <class X, class DY, class DX>
void check_mha_backward(const char* where, const X& x, const DY& dy, const DX& dx, std::ptrdiff_t model_dim,
                        bool kept, std::ptrdiff_t kept_rows, bool per_row, bool merged) {
  if (!kept) fail(where, "no activations kept: call forward() first (prefill, step, merge and unmerge drop them)");
  if (per_row) fail(where, "the forward used per-row adapters; backward differentiates the active mix only");
  if (merged) fail(where, "the adapters are merged: their gradients need unmerged weights (call unmerge_adapters())");
  check_shapes(where,
               {{"x", x, kept_rows, model_dim}, {"dy", dy, kept_rows, model_dim}, {"dx", dx, kept_rows, model_dim}});
}

/// mha_gradients' adapter part: dA, dB of every delta of the active mix's adapters
/// sized as its factors (`projections` projections per adapter).
template <class Projection, class Grads, class Set>
void check_lora_gradients(const char* where, const Grads& g, const Set& set, std::size_t projections) {
  for (const auto& m : set.active()) {
    if (m.id >= g.adapters.size())
      fail(where, "grads.adapters has no entry for adapter ", m.id, " (it has ", g.adapters.size(),
           "): make the gradients after adding the adapters");
    for (std::size_t p = 0; p < projections; ++p)
      if (const auto* d = set.delta(m.id, static_cast<Projection>(p))) {
        const auto& gp = g.adapters[m.id][p];
        check_shapes(where, {{"grads.adapters[id][p].a", gp.a, d->rank(), d->in_features()},
                             {"grads.adapters[id][p].b", gp.b, d->out_features(), d->rank()}});
      }
  }
}

/// mha_gradients: the adapters' part as above; dW and db each empty (not trained)
/// or sized as W and b.
template <class Projection, class Grads, class Set, class Weights, class Biases>
void check_mha_gradients(const char* where, const Grads& g, const Set& set, const Weights& w, const Biases& b) {
  check_lora_gradients<Projection>(where, g, set, w.size());
  for (std::size_t p = 0; p < w.size(); ++p) {
    if (g.weights[p].size() != 0) check_shapes(where, {{"grads.weights[p]", g.weights[p], w[p].rows(), w[p].cols()}});
    if (g.biases[p].size() != 0) check_shapes(where, {{"grads.biases[p]", g.biases[p], 1, b[p].size()}});
  }
}

/// adamw_config (optim.hpp), PyTorch's ranges: lr >= 0, 0 <= beta1, beta2 < 1,
/// eps >= 0, weight_decay >= 0, all finite.
inline void check_adamw_config(const char* where, double lr, double beta1, double beta2, double eps,
                               double weight_decay) {
  const struct {
    const char* name;
    double value, upper;
  } fields[] = {{"lr", lr, HUGE_VAL},
                {"beta1", beta1, 1.0},
                {"beta2", beta2, 1.0},
                {"eps", eps, HUGE_VAL},
                {"weight_decay", weight_decay, HUGE_VAL}};
  for (const auto& f : fields)
    if (!(f.value >= 0 && f.value < f.upper && std::isfinite(f.value)))
      fail(where, "config.", f.name, f.upper == 1.0 ? " must be in [0, 1)" : " must be finite and >= 0",
           " (got ", f.value, ")");
}

/// adamw::step: each parameter's grad shaped as its value; once the moments exist
/// (`moments` of them, moment_shape(i) the i-th's [rows, cols]), as many parameters
/// as moments and each value shaped as its moment.
template <class Params, class MomentShape>
void check_adamw_step(const Params& params, bool started, std::size_t moments, MomentShape moment_shape) {
  const char* where = "adamw::step";
  if (started)
    expect_equal(where, "params.size() must equal the parameter count of the first step", moments,
                 params.size());
  for (std::size_t i = 0; i < params.size(); ++i) {
    const auto& p = params[i];
    if (p.grad.rows() != p.value.rows() || p.grad.cols() != p.value.cols())
      fail(where, "params[", i, "].grad has the wrong shape (expected [", p.value.rows(), " × ",
           p.value.cols(), "] like its value, got [", p.grad.rows(), " × ", p.grad.cols(), "])");
    if (!started) continue;
    const auto [rows, cols] = moment_shape(i);
    if (p.value.rows() != rows || p.value.cols() != cols)
      fail(where, "params[", i, "].value has the wrong shape (expected [", rows, " × ", cols,
           "] as at the first step, got [", p.value.rows(), " × ", p.value.cols(), "])");
  }
}

/// clip_grad_norm: max_norm finite and >= 0.
inline void check_max_norm(double max_norm) {
  if (!(max_norm >= 0 && std::isfinite(max_norm)))
    fail("clip_grad_norm", "max_norm must be finite and >= 0 (got ", max_norm, ")");
}

/// clip_grad_norm: the gradients' global norm is finite (no NaN, no infinity).
inline void check_grad_norm_finite(double norm) {
  if (!std::isfinite(norm))
    fail("clip_grad_norm", "the gradients' global L2 norm is not finite (got ", norm,
         "): a gradient holds a NaN or an infinity; the gradients are left unchanged");
}

}  // namespace headwise::detail
