// headwise/optim.hpp — what a training loop needs after backward(): AdamW, gradient
// clipping by global norm, and the parameter lists of a layer's LoRA adapters.
//
// parameter<T> pairs a trainable matrix with its gradient: value [rows × cols]
// (written in place) and grad of the same shape (read only). Both are views
// (eigen.hpp's Ref aliases): nothing is copied, and they dangle when a viewed
// matrix is resized or move-assigned (a move swaps buffers: assign gradients with
// `g = expr` or `g.setZero()`, not `g = std::move(other)`).
//
// adamw: Loshchilov & Hutter's decoupled weight decay with Adam's bias-corrected
// moments, step for step as torch.optim.AdamW (amsgrad off, maximize off). At step
// t = 1, 2, … and for every element, with g the gradient:
//   θ ← θ·(1 − lr·wd)                       decay on the parameter, not in g
//   m ← β1·m + (1 − β1)·g                    v ← β2·v + (1 − β2)·g²
//   θ ← θ − (lr / (1 − β1ᵗ)) · m / (√v / √(1 − β2ᵗ) + eps)
// which is θ − lr·m̂/(√v̂ + eps) with m̂ = m/(1 − β1ᵗ), v̂ = v/(1 − β2ᵗ): eps is added
// to √v̂, after the bias correction, as PyTorch does. The scalars (1 − lr·wd, the
// step size, √(1 − β2ᵗ)) are computed in double and rounded to T once, the element
// work is in T. Costs per element: ~10 FLOPs, one square root and one division;
// memory: two moments (m, v) of T per element, allocated at the first step. From
// then on the count and shapes of the parameters are fixed: a step with others
// throws headwise::error before anything changes (reset() forgets the moments).
// Gradients are not checked for NaN (neither does PyTorch): clip_grad_norm does.
//
// clip_grad_norm: the global L2 norm ‖g‖ over every element of every gradient,
// accumulated in double (a float's square cannot overflow it; a double gradient
// above ~1e154 can, and is then reported as not finite), and every gradient scaled
// by c = max_norm / (‖g‖ + 1e-6) when c < 1 — torch.nn.utils.clip_grad_norm_'s
// clamp(c, max = 1): a norm within 1e-6 below max_norm is scaled by a hair too.
// Returns ‖g‖ before clipping. A norm that is not finite throws and leaves the
// gradients unchanged.
//
// lora_parameters(layer, grads) lists {A, dA} and {B, dB} of every delta of the
// layer's active mix (adapter by adapter in mix order, then q, k, v, o, A before B);
// lora_gradients(layer, grads) lists the same gradients, writable, for clipping.
// A model of several layers concatenates the lists, one optimizer for all:
//   auto grads = layer.make_gradients();            // once
//   layer.forward(x, y); …; layer.backward(x, dy, dx, grads);
//   std::vector<matrix_ref<float>> gs = lora_gradients(layer, grads);
//   clip_grad_norm(gs, 1.0f);
//   opt.step(lora_parameters(layer, grads));        // then grads.zero()
#pragma once

#include <cmath>
#include <cstddef>
#include <type_traits>
#include <utility>
#include <vector>

#include "headwise/detail/internal_begin.hpp"

#include "headwise/detail/checks_eigen.hpp"
#include "headwise/eigen.hpp"
#include "headwise/lora.hpp"
#include "headwise/mha.hpp"

#include "headwise/detail/internal_end.hpp"

namespace headwise {

/// A trainable matrix and its gradient, the same shape.
template <class T>
struct parameter {
  matrix_ref<T> value;
  const_matrix_ref<T> grad;
};

/// torch.optim.AdamW's defaults.
template <class T>
struct adamw_config {
  T lr = T(1e-3), beta1 = T(0.9), beta2 = T(0.999), eps = T(1e-8), weight_decay = T(0.01);
};

template <class T>
class adamw {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "adamw computes in float or double");

 public:
  /// lr, eps, weight_decay finite and >= 0; beta1, beta2 in [0, 1).
  explicit adamw(adamw_config<T> cfg) : cfg_(checked(cfg)) {}

  const adamw_config<T>& config() const noexcept { return cfg_; }
  /// A new learning rate from the next step on (schedules); finite and >= 0.
  void set_lr(T lr) {
    adamw_config<T> c = cfg_;
    c.lr = lr;
    cfg_ = checked(c);
  }

  /// Steps taken since construction or reset().
  std::size_t steps() const noexcept { return steps_; }
  /// Forgets the moments and the step count: the next step is a first step.
  void reset() noexcept {
    moments_.clear();
    steps_ = 0;
  }

  /// One update of every parameter (header comment). The first step fixes the
  /// count and shapes of the parameters.
  void step(const std::vector<parameter<T>>& params) { step(span<const parameter<T>>(params)); }
  void step(span<const parameter<T>> params) {
    detail::check_adamw_step(params, steps_ > 0, moments_.size(), [&](std::size_t i) {
      return std::pair{moments_[i].m.rows(), moments_[i].m.cols()};
    });
    if (steps_ == 0)
      for (const parameter<T>& p : params)
        moments_.push_back({row_matrix<T>::Zero(p.value.rows(), p.value.cols()),
                            row_matrix<T>::Zero(p.value.rows(), p.value.cols())});
    ++steps_;
    const double t = static_cast<double>(steps_), lr = cfg_.lr;
    const T decay = static_cast<T>(1 - lr * static_cast<double>(cfg_.weight_decay));
    const T step_size = static_cast<T>(lr / (1 - std::pow(static_cast<double>(cfg_.beta1), t)));
    const T bc2_sqrt = static_cast<T>(std::sqrt(1 - std::pow(static_cast<double>(cfg_.beta2), t)));
    const T b1 = cfg_.beta1, b2 = cfg_.beta2, eps = cfg_.eps;
    for (std::size_t i = 0; i < params.size(); ++i) {
      matrix_ref<T> w = params[i].value;
      const const_matrix_ref<T>& g = params[i].grad;
      row_matrix<T>& m = moments_[i].m;
      row_matrix<T>& v = moments_[i].v;
      for (Eigen::Index r = 0; r < w.rows(); ++r)
        for (Eigen::Index c = 0; c < w.cols(); ++c) {
          const T gi = g(r, c);
          T& mi = m(r, c);
          T& vi = v(r, c);
          mi = b1 * mi + (1 - b1) * gi;
          vi = b2 * vi + (1 - b2) * gi * gi;
          const T denom = std::sqrt(vi) / bc2_sqrt + eps;
          w(r, c) = w(r, c) * decay - step_size * (mi / denom);
        }
    }
  }

 private:
  struct moment {
    row_matrix<T> m, v;
  };

  static const adamw_config<T>& checked(const adamw_config<T>& c) {
    detail::check_adamw_config("adamw", c.lr, c.beta1, c.beta2, c.eps, c.weight_decay);
    return c;
  }

  adamw_config<T> cfg_;
  std::vector<moment> moments_;
  std::size_t steps_ = 0;
};

/// Global L2 norm of all gradients before clipping; scales them all by
/// max_norm / (norm + 1e-6) when that is below 1 (header comment). max_norm finite,
/// >= 0. T comes from max_norm alone (common_type_t<T> is not deduced), so a
/// std::vector<matrix_ref<T>> converts to the span.
template <class T>
T clip_grad_norm(span<const matrix_ref<std::common_type_t<T>>> grads, T max_norm) {
  detail::check_max_norm(static_cast<double>(max_norm));
  double sum = 0;
  for (const matrix_ref<T>& g : grads)
    for (Eigen::Index r = 0; r < g.rows(); ++r)
      for (Eigen::Index c = 0; c < g.cols(); ++c)
        sum += static_cast<double>(g(r, c)) * static_cast<double>(g(r, c));
  const double norm = std::sqrt(sum);
  detail::check_grad_norm_finite(norm);
  const double coef = static_cast<double>(max_norm) / (norm + 1e-6);
  if (coef < 1)
    for (matrix_ref<T> g : grads) g *= static_cast<T>(coef);
  return static_cast<T>(norm);
}

namespace detail {

/// fn(factor, gradient) for A then B of every delta of the layer's active mix, in
/// the order of lora_parameters (header comment), after checking grads.
template <class T, class W, class Fn>
void for_each_lora_factor(const char* where, multi_head_attention<T, W>& layer, mha_gradients<T>& grads,
                          Fn&& fn) {
  check_adapters_merged(where, layer.adapters_merged(), false);
  lora_adapter_set<T>& set = layer.adapters();
  check_lora_gradients<projection>(where, grads, set, projection_count);
  for (const auto& m : set.active())
    for (std::size_t p = 0; p < projection_count; ++p)
      if (lora_delta<T>* d = set.delta(m.id, projection(p))) {
        fn(d->a(), grads.adapters[m.id][p].a);
        fn(d->b(), grads.adapters[m.id][p].b);
      }
}

}  // namespace detail

/// {A, dA}, {B, dB} of every delta in the layer's active mix, grads as filled by
/// layer.backward(); views into both (valid while neither is resized or destroyed).
template <class T, class W>
std::vector<parameter<T>> lora_parameters(multi_head_attention<T, W>& layer, mha_gradients<T>& grads) {
  std::vector<parameter<T>> out;
  detail::for_each_lora_factor("lora_parameters", layer, grads,
                               [&](matrix_ref<T> value, row_matrix<T>& grad) {
                                 out.push_back({value, grad});
                               });
  return out;
}

/// dA, dB in lora_parameters' order, writable: what clip_grad_norm takes.
template <class T, class W>
std::vector<matrix_ref<T>> lora_gradients(multi_head_attention<T, W>& layer, mha_gradients<T>& grads) {
  std::vector<matrix_ref<T>> out;
  detail::for_each_lora_factor("lora_gradients", layer, grads,
                               [&](matrix_ref<T>, row_matrix<T>& grad) { out.emplace_back(grad); });
  return out;
}

}  // namespace headwise
