// headwise/detail/checks_base.hpp — what every argument check stands on (fail,
// expect_equal, checked_product), and the checks of the two public headers that
// detail/checks.hpp itself needs: tensor.hpp (its checked factories, seq_slice) and
// isa.hpp (HEADWISE_ISA). checks.hpp includes this header; everything else that
// validates an argument is there.
#pragma once

#ifndef HEADWISE_INTERNAL
#error "headwise/detail/* is internal: include <headwise/headwise.hpp>"
#endif

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <sstream>
#include <string>

#include "headwise/error.hpp"

namespace headwise::detail {

/// Throws headwise::error("headwise::<where>: <parts...>").
template <class... Parts>
[[noreturn]] inline void fail(const char* where, const Parts&... parts) {
  std::ostringstream os;
  os << "headwise::" << where << ": ";
  (os << ... << parts);
  throw error(os.str());
}

template <class A, class B>
inline void expect_equal(const char* where, const char* what, A expected, B got) {
  if (static_cast<std::uint64_t>(expected) != static_cast<std::uint64_t>(got))
    fail(where, what, " (expected ", expected, ", got ", got, ")");
}

/// Product of sizes, or an error if it does not fit in std::ptrdiff_t.
inline std::ptrdiff_t checked_product(const char* where, const char* name,
                                      std::initializer_list<std::size_t> sizes) {
  std::size_t total = 1;
  for (std::size_t s : sizes) {
    if (__builtin_mul_overflow(total, s, &total) ||
        total > static_cast<std::size_t>(std::numeric_limits<std::ptrdiff_t>::max()))
      fail(where, name, ": the product of its sizes overflows std::ptrdiff_t");
  }
  return static_cast<std::ptrdiff_t>(total);
}

/// The checked factories (tensor.hpp): a dense tensor of these sizes must fit in
/// the `count` elements of the buffer.
template <std::size_t N>
void check_fits(const char* factory, const char* const (&names)[N], const std::size_t (&sizes)[N],
                std::size_t count) {
  std::size_t need = 1;
  bool overflow = false;
  for (std::size_t s : sizes) overflow = __builtin_mul_overflow(need, s, &need) || overflow;
  for (std::size_t s : sizes)
    if (s == 0) need = 0, overflow = false;  // an empty tensor fits anywhere
  if (!overflow && need <= count) return;
  std::string msg = std::string("headwise::") + factory + ": the shape [";
  for (std::size_t i = 0; i < N; ++i)
    msg += std::string(i ? ", " : "") + names[i] + "=" + std::to_string(sizes[i]);
  msg += "] needs " + (overflow ? std::string("more elements than std::size_t counts")
                                : std::to_string(need) + " elements");
  msg += " but the buffer holds " + std::to_string(count);
  throw error(msg);
}

/// tensor_view::seq_slice: rows [from, from + count) must lie within [0, seq).
inline void check_seq_slice(std::size_t seq, std::size_t from, std::size_t count) {
  if (!(from <= seq && count <= seq - from))
    fail("tensor_view::seq_slice", "from + count must be <= seq() (expected <= ", seq, ", got ", from, " + ",
         count, ")");
}

/// HEADWISE_ISA (isa.hpp), when set and not empty, must name a path.
inline void check_isa_environment(const char* value, bool names_a_path) {
  if (value != nullptr && *value != '\0' && !names_a_path)
    throw error(std::string("headwise: HEADWISE_ISA must be baseline, avx2, avx512 or avx512_bf16 (got \"") + value + "\")");
}

}  // namespace headwise::detail
