// headwise/simd/xsimd_shim.hpp — every difference between the xsimd versions headwise
// supports (8.1 to 14), and nothing else. The rest of simd/ calls xsimd_shim:: for
// these operations and plain xsimd:: for everything that did not change.
//
//   xsimd_shim::               xsimd 8.x                  later xsimd
//   reduce_add(x)              hadd(x)                    reduce_add(x)           (9.0)
//   reduce_max(x)              — (a store and a loop)     reduce_max(x)           (9.0)
//   bitwise_cast<U>(x)         bitwise_cast<batch<U,A>>   bitwise_cast<U>(x)      (11.0)
//   reduce_add_rows(rows)      haddp(rows)                haddp(rows)  (13.2 too)
//
// Both 8.1's and 13.2's AVX-512 float haddp put rows 2–5 and 10–13 in the wrong lanes
// (lane 2 holds row 4's sum, lane 4 row 2's, ...), so that case never comes here
// (simd/x86_reduce.hpp); HEADWISE_XSIMD_NO_HADDP selects a plain version, should a
// later xsimd drop haddp.
// Not shimmed: xsimd 14.0 made max/min behave as std::max/min when one argument is
// NaN (before, the ISA's instruction decided); code that meets NaN lanes must not
// rely on either.
#pragma once

#ifndef HEADWISE_INTERNAL
#error "headwise/simd/* is internal: include <headwise/headwise.hpp>"
#endif

#include <cstddef>
#include <type_traits>

#include <xsimd/xsimd.hpp>

#if !defined(XSIMD_VERSION_MAJOR)
#error "headwise: cannot read XSIMD_VERSION_MAJOR from <xsimd/xsimd.hpp>"
#elif XSIMD_VERSION_MAJOR < 8
#error "headwise needs xsimd 8 or newer"
#endif

namespace headwise::simd::xsimd_shim {

/// The sum of the lanes of x.
template <class T, class A>
T reduce_add(const xsimd::batch<T, A>& x) {
#if XSIMD_VERSION_MAJOR >= 9
  return xsimd::reduce_add(x);
#else
  return xsimd::hadd(x);
#endif
}

/// Lane i of the result is the sum of the lanes of rows[i], for i < batch size.
/// Not for AVX-512 floats (see above): simd/xsimd_pack.hpp sends those to
/// x86::sum_rows_16 before reaching this.
template <class T, class A>
xsimd::batch<T, A> reduce_add_rows(const xsimd::batch<T, A>* rows) {
#if defined(HEADWISE_XSIMD_NO_HADDP)  // an xsimd without haddp: the plain way
  using batch = xsimd::batch<T, A>;
  alignas(A::alignment()) T sums[batch::size];
  for (std::size_t i = 0; i < batch::size; ++i) sums[i] = reduce_add(rows[i]);
  return batch::load_aligned(sums);
#else
  return xsimd::haddp(rows);
#endif
}

/// The largest lane of x (NaN lanes: whatever the ISA's max does, as xsimd::max).
template <class T, class A>
T reduce_max(const xsimd::batch<T, A>& x) {
#if XSIMD_VERSION_MAJOR >= 9
  return xsimd::reduce_max(x);
#else
  using batch = xsimd::batch<T, A>;
  alignas(A::alignment()) T tmp[batch::size];
  x.store_aligned(tmp);
  T m = tmp[0];
  for (std::size_t i = 1; i < batch::size; ++i) m = tmp[i] > m ? tmp[i] : m;
  return m;
#endif
}

/// x's bits as a batch of U (same register, lanes reinterpreted).
template <class U, class T, class A>
xsimd::batch<U, A> bitwise_cast(const xsimd::batch<T, A>& x) {
#if XSIMD_VERSION_MAJOR >= 11
  return xsimd::bitwise_cast<U>(x);
#else
  return xsimd::bitwise_cast<xsimd::batch<U, A>>(x);
#endif
}

}  // namespace headwise::simd::xsimd_shim
