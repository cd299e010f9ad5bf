// headwise/merge.hpp — merge two partial attention results over disjoint key sets.
//
//   merge_states(o_a, lse_a, o_b, lse_b, out, lse_out)
//   o_a, o_b, out       [B, H, N, Dv]   float or double (one type for all three)
//   lse_a, lse_b        [B, H, N, 1]    float, natural log
//   lse_out             [B, H, N, 1]    float, or unset (tensor_view{}) when not wanted
//
// If o_a, lse_a is attention of queries over keys K_a (options.lse gives the LSE)
// and o_b, lse_b over a disjoint K_b, the result is attention over K_a ∪ K_b:
//   lse = log(e^lse_a + e^lse_b)
//   out = e^(lse_a − lse) · o_a + e^(lse_b − lse) · o_b
// This is the primitive of sequence-parallel and ring attention: each process (or
// KV chunk, as in kernels/decode.hpp, which folds its chunks with the same row
// merge, kernels/merge_row.hpp) attends to its own slice of the keys, and the partials are merged in
// any fixed order. It is exact up to rounding: the weights are computed in double
// around the larger LSE (no overflow, no ∞ − ∞), then each element takes two
// products and one sum in the output type. A side with LSE −inf (no visible key) is
// not read: the other side is the result, whatever the −inf side's o holds; if both
// are −inf the row is 0 and lse −inf, never NaN. An LSE of NaN or +inf (an undefined
// row, options.hpp) makes the merged row and its LSE NaN; NaN or ±inf in an o that
// is merged reaches the output as the two products and the sum make it.
// N = 0 (views with no rows, whatever their strides) is a valid call that does nothing.
// Head scaling (options.head_scale) is not undone: merge unscaled partials.
//
// out may be o_a or o_b itself (same data and strides), and lse_out lse_a or lse_b,
// to accumulate in place; any other overlap of an output with an input is an error.
// Cost: one pass over the rows, 3 flops per element; no threads, no allocation.
#pragma once

#include <cmath>
#include <cstddef>
#include <limits>
#include <type_traits>

#include "headwise/detail/internal_begin.hpp"

#include "headwise/detail/checks.hpp"
#include "headwise/kernels/merge_row.hpp"
#include "headwise/tensor.hpp"

#include "headwise/detail/internal_end.hpp"

namespace headwise {

template <class OA, class LA, class OB, class LB, class OO>
void merge_states(const tensor_view<OA>& o_a, const tensor_view<LA>& lse_a, const tensor_view<OB>& o_b,
                  const tensor_view<LB>& lse_b, const tensor_view<OO>& out,
                  const tensor_view<float>& lse_out = {}) {
  using T = std::remove_const_t<OA>;
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "o_a must hold float or double");
  static_assert(std::is_same_v<std::remove_const_t<OB>, T> && std::is_same_v<OO, T>,
                "o_b and out must hold o_a's element type (out mutable)");
  static_assert(std::is_same_v<std::remove_const_t<LA>, float> && std::is_same_v<std::remove_const_t<LB>, float>,
                "lse_a and lse_b must hold float");
  detail::check_merge_states(o_a, lse_a, o_b, lse_b, out, lse_out);
  const std::size_t B = o_a.batch(), H = o_a.heads(), N = o_a.seq(), D = o_a.dim();
  const bool has_lse = lse_out.is_set();

  for (std::size_t b = 0; b < B; ++b)
    for (std::size_t h = 0; h < H; ++h)
      for (std::size_t i = 0; i < N; ++i) {
        const T lse = kernels::merge_row<T>(o_a.row(b, h, i), T(lse_a(b, h, i, 0)), o_b.row(b, h, i),
                                           T(lse_b(b, h, i, 0)), out.row(b, h, i), D);
        if (has_lse) lse_out(b, h, i, 0) = static_cast<float>(lse);
      }
}

}  // namespace headwise
