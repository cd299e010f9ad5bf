// tests/int8_check.hpp — what the int8 tests share (quantize_test, kv_cache_test,
// paged_kv_cache_test): exact values as doubles, the bound on one quantized element,
// and one stored row against quantize_int8 of the row appended.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "test_util.hpp"

namespace hwtest {

/// x exactly, as a double (16-bit types convert to float only).
template <class X>
double as_double(X x) {
  if constexpr (is_storage_16<X>)
    return double(static_cast<float>(x));
  else
    return double(x);
}

/// The bound on |x − q·s| for a row quantized with scale s whose largest magnitude is
/// amax. With u = 2^-24 (float's unit roundoff) and x_f = float(x) (exact for float,
/// half and bfloat16; |x − x_f| <= u·|x| for double), quantize_row_int8 computes
/// r = x_f / s rounded to float, r = (x_f / s)(1 + δ) with |δ| <= u, and q = the
/// integer nearest r (|x_f / s| <= 127(1 + u)/(1 − u) < 127.5, so the clamp never moves
/// it further). Then x − q·s = (x − x_f) + (x_f − r·s) + (r − q)·s, the terms at most
/// u·|x|, u·|x_f| <= u(1 + u)·|x| and s/2: |x − q·s| <= s/2 + (2 + u)·u·amax. s is the
/// scale stored, so its own rounding does not enter; q·s is exact in double (8 + 24 bits).
inline double int8_element_bound(float s, double amax) {
  const double u = std::ldexp(1.0, -24);
  return double(s) / 2 + (2 + u) * u * amax;
}

/// A stored int8 row (code d = q_at(d), its scale) against quantize_int8 of x, the n
/// values appended (exact as doubles, which quantize as the input type does: float(x)
/// is the same): the same codes and scale bit for bit, and each q·s within
/// int8_element_bound of x.
template <class QAt>
::testing::AssertionResult int8_row_matches(const double* x, std::size_t n, QAt q_at, float scale) {
  std::vector<std::int8_t> q(n);
  float s = 0;
  quantize_int8(bhsd(x, 1, 1, 1, n), bhsd(q.data(), 1, 1, 1, n), bhsd(&s, 1, 1, 1, 1));
  if (std::memcmp(&s, &scale, sizeof s) != 0)
    return ::testing::AssertionFailure() << "scale " << scale << ", quantize_int8 gives " << s;
  double amax = 0;
  for (std::size_t d = 0; d < n; ++d) amax = std::max(amax, std::fabs(x[d]));
  const double bound = int8_element_bound(scale, amax);
  for (std::size_t d = 0; d < n; ++d) {
    const std::int8_t got = q_at(d);
    if (got != q[d])
      return ::testing::AssertionFailure()
             << "code " << d << " is " << int(got) << ", quantize_int8 gives " << int(q[d]);
    const double err = std::fabs(x[d] - double(got) * double(scale));
    if (!(err <= bound))
      return ::testing::AssertionFailure() << "element " << d << ": |x - q·s| = " << err << " > " << bound;
  }
  return ::testing::AssertionSuccess();
}

}  // namespace hwtest
