// headwise/rope.hpp — rotary position embeddings (RoPE) applied in place on a view.
//
//   x [B, H, S, D] (q or k, any strides), D even; row s sits at position p0 + s.
//   θ_i = base^(−2i/D), i in [0, D/2);  angle(p, i) = (p / scaling) · θ_i
//   each pair (a, b) ← (a·cos − b·sin, a·sin + b·cos)
// The two pairings in use:
//   neox         (x_i, x_{i+D/2})   GPT-NeoX, Hugging Face Llama, most checkpoints
//   interleaved  (x_{2i}, x_{2i+1}) GPT-J, Meta's original Llama code
// `scaling` is linear position interpolation (Chen et al., 2023): positions are
// divided by it, stretching the trained context by that factor.
//
// Angles are formed and rotated into cos/sin in double: at p = 10⁵ a float angle
// is only good to ~4·10⁻³ rad, far worse than the rotation it feeds. The table of
// (cos, sin) per position and pair grows on demand and is reused (D·4 bytes per
// position for float), so decode steps cost D/2 complex multiplies per row and no
// trigonometry. One rotary_embedding, one thread at a time.
//
// rotate_back() rotates by −θ instead: the rotation is orthogonal, so that is both
// the inverse of apply() and its backward (∂L/∂x = Rᵀ·∂L/∂(R·x), Rᵀ = R(−θ)).
#pragma once

#include <cmath>
#include <cstddef>
#include <vector>

#include "headwise/detail/internal_begin.hpp"

#include "headwise/detail/checks.hpp"
#include "headwise/tensor.hpp"

#include "headwise/detail/internal_end.hpp"

namespace headwise {

enum class rope_style { none, neox, interleaved };

struct rope_config {
  rope_style style = rope_style::none;
  double base = 10000.0;  ///< θ_i = base^(−2i/D); finite, > 1
  double scaling = 1.0;   ///< linear position scaling factor; finite, > 0
};

template <class T>
class rotary_embedding {
 public:
  rotary_embedding(const rope_config& cfg, std::size_t head_dim) : cfg_(cfg), dim_(head_dim) {
    detail::check_rope_args(cfg.base, cfg.scaling, cfg.style != rope_style::none, head_dim);
  }

  const rope_config& config() const noexcept { return cfg_; }

  /// Rotates every row of x in place; row s of x is at position first_position + s.
  void apply(const tensor_view<T>& x, std::size_t first_position) {
    rotate("rotary_embedding::apply", x, first_position, T(1));
  }

  /// Rotates every row of x by −θ: undoes apply(x, first_position), and maps the
  /// gradient of apply's output to the gradient of its input.
  void rotate_back(const tensor_view<T>& x, std::size_t first_position) {
    rotate("rotary_embedding::rotate_back", x, first_position, T(-1));
  }

 private:
  /// Rotation by sign·θ (sign = ±1 flips sin, the only odd function of θ).
  void rotate(const char* where, const tensor_view<T>& x, std::size_t first_position, T sign) {
    if (cfg_.style == rope_style::none || x.seq() == 0) return;
    detail::expect_equal(where, "x.dim() must equal head_dim", dim_, x.dim());
    grow(first_position + x.seq());
    const std::size_t half = dim_ / 2;
    // pair i of a row: elements (i, i + half) for neox, (2i, 2i + 1) for interleaved
    const std::size_t first_step = cfg_.style == rope_style::neox ? 1 : 2;
    const std::size_t partner = cfg_.style == rope_style::neox ? half : 1;
    for (std::size_t b = 0; b < x.batch(); ++b)
      for (std::size_t h = 0; h < x.heads(); ++h)
        for (std::size_t s = 0; s < x.seq(); ++s) {
          T* row = x.row(b, h, s);
          const T* cs = table_.data() + (first_position + s) * dim_;  // (cos, sin) per pair
          for (std::size_t i = 0; i < half; ++i) {
            T& a = row[i * first_step];
            T& c = row[i * first_step + partner];
            const T cos = cs[2 * i], sin = sign * cs[2 * i + 1];
            const T a0 = a, c0 = c;
            a = a0 * cos - c0 * sin;
            c = a0 * sin + c0 * cos;
          }
        }
  }

  /// Extends the (cos, sin) table to cover positions [0, positions).
  void grow(std::size_t positions) {
    const std::size_t have = table_.size() / dim_;
    if (positions <= have) return;
    table_.resize(positions * dim_);
    const std::size_t half = dim_ / 2;
    for (std::size_t p = have; p < positions; ++p)
      for (std::size_t i = 0; i < half; ++i) {
        const double theta = std::pow(cfg_.base, -2.0 * double(i) / double(dim_));
        const double angle = double(p) / cfg_.scaling * theta;
        table_[p * dim_ + 2 * i] = static_cast<T>(std::cos(angle));
        table_[p * dim_ + 2 * i + 1] = static_cast<T>(std::sin(angle));
      }
  }

  rope_config cfg_;
  std::size_t dim_;
  std::vector<T> table_;
};

}  // namespace headwise
