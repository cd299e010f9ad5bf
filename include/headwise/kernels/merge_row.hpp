// headwise/kernels/merge_row.hpp — one row of merge_states: two partial attention
// results over disjoint key sets folded into one (the arithmetic is in merge.hpp's
// header comment). The decode kernel folds its split-KV chunks with it, and
// merge_states its rows, so both give the same bits.
#pragma once

#ifndef HEADWISE_INTERNAL
#error "headwise/kernels/* is internal: include <headwise/headwise.hpp>"
#endif

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>

namespace headwise::kernels {

/// Merges one row: out[0..n) and the returned LSE from (o_a, lse_a) and (o_b, lse_b).
/// out may alias o_a or o_b (element d is read before it is written). A side with
/// LSE −inf saw no key: it is not read (its o may hold anything, NaN included).
template <class T>
T merge_row(const T* o_a, T lse_a, const T* o_b, T lse_b, T* out, std::size_t n) noexcept {
  constexpr T neg_inf = -std::numeric_limits<T>::infinity();
  if (lse_a == neg_inf && lse_b == neg_inf) {
    for (std::size_t d = 0; d < n; ++d) out[d] = T(0);
    return neg_inf;
  }
  if (lse_a == neg_inf || lse_b == neg_inf) {
    const T* o = lse_a == neg_inf ? o_b : o_a;
    for (std::size_t d = 0; d < n; ++d) out[d] = o[d];
    return lse_a == neg_inf ? lse_b : lse_a;
  }
  const double m = std::max<double>(lse_a, lse_b);
  const double ea = std::exp(double(lse_a) - m), eb = std::exp(double(lse_b) - m);  // one is 1
  const double sum = ea + eb;
  const T wa = static_cast<T>(ea / sum), wb = static_cast<T>(eb / sum);
  for (std::size_t d = 0; d < n; ++d) out[d] = wa * o_a[d] + wb * o_b[d];
  return static_cast<T>(m + std::log(sum));
}

}  // namespace headwise::kernels
