// tests/test_util.hpp — owning tensors for tests, random fills, and tolerances
// derived from the compute type and the reduction lengths.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <headwise/headwise.hpp>

#include "kernel_instances.hpp"

namespace hwtest {

using namespace headwise;

enum class layout { bshd, bhsd };

inline const char* layout_name(layout l) { return l == layout::bshd ? "bshd" : "bhsd"; }

/// An owning [B, H, S, D] tensor in the chosen memory order. The data starts one
/// element past an aligned boundary so kernels never get aligned rows for free.
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
  tensor_view<const T> cview() const { return view; }
  T& operator()(std::size_t b, std::size_t h, std::size_t s, std::size_t d) { return view(b, h, s, d); }
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

/// Unit roundoff of T.
template <class T>
constexpr double unit_roundoff() {
  return std::numeric_limits<T>::epsilon() / 2;
}

/// Forward error bound for attention outputs computed in T against an exact
/// oracle, from standard error analysis (Higham, ch. 3):
///   logits: |δs| <= γ(Dk+2)·scale·Σ|q_d k_d| <= γ(Dk+2)·scale·Dk·qmax·kmax
///   a logit error δ perturbs p_j by p_j·(δ_j − Σ p δ), so the output moves by at
///   most 2·max|δs|·vmax; exp, the running rescale and the final division add a
///   few ulps each; the weighted sum of Nk values adds γ(Nk)·vmax.
/// γ(n) = n·u is the worst case; this is the bound, not an estimate, so tests
/// stay meaningful (a wrong mask moves outputs by O(vmax), far above it).
template <class T>
double attention_tolerance(std::size_t Dk, std::size_t Nk, double scale, double qmax, double kmax,
                           double vmax) {
  const double u = unit_roundoff<T>();
  const double logit_err = (double(Dk) + 2) * u * scale * double(Dk) * qmax * kmax;
  return (2 * logit_err + (double(Nk) + 16) * u) * vmax + 16 * u;
}

/// Largest |a - b| over two tensors of equal shape; NaN if either has a NaN.
template <class A, class B>
double max_abs_diff(const tensor_view<A>& a, const tensor_view<B>& b) {
  double worst = 0;
  for (std::size_t i = 0; i < a.batch(); ++i)
    for (std::size_t h = 0; h < a.heads(); ++h)
      for (std::size_t s = 0; s < a.seq(); ++s)
        for (std::size_t d = 0; d < a.dim(); ++d) {
          const double x = double(a(i, h, s, d)), y = double(b(i, h, s, d));
          if (std::isnan(x) || std::isnan(y)) return std::numeric_limits<double>::quiet_NaN();
          if (x == y) continue;  // equal infinities
          worst = std::max(worst, std::fabs(x - y));
        }
  return worst;
}

}  // namespace hwtest
