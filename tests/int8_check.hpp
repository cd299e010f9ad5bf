// tests/int8_check.hpp — what the int8 tests share (quantize_test, kv_cache_test,
// paged_kv_cache_test): exact values as doubles, and one stored row against
// quantize_int8 of the row appended (within int8_element_bound, test_util.hpp).
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
