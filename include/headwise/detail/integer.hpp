// headwise/detail/integer.hpp — the integer rounding the library writes often.
#pragma once

#ifndef HEADWISE_INTERNAL
#error "headwise/detail/* is internal: include <headwise/headwise.hpp>"
#endif

#include <cstddef>

namespace headwise::detail {

/// ⌈x / m⌉ for m >= 1.
constexpr std::size_t ceil_div(std::size_t x, std::size_t m) noexcept { return (x + m - 1) / m; }

/// x rounded up to a multiple of m >= 1.
constexpr std::size_t round_up(std::size_t x, std::size_t m) noexcept { return ceil_div(x, m) * m; }

}  // namespace headwise::detail
