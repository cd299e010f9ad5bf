// headwise/detail/integer.hpp — the round-up arithmetic of tiles, tasks and blocks.
#pragma once

#ifndef HEADWISE_INTERNAL
#error "headwise/detail/* is internal: include <headwise/headwise.hpp>"
#endif

#include <cstddef>

namespace headwise::detail {

/// ⌈x / m⌉ for m >= 1 (x + m − 1 must not overflow).
constexpr std::size_t ceil_div(std::size_t x, std::size_t m) noexcept { return (x + m - 1) / m; }

/// The smallest multiple of m that is >= x, for m >= 1.
constexpr std::size_t round_up(std::size_t x, std::size_t m) noexcept { return ceil_div(x, m) * m; }

static_assert(ceil_div(0, 4) == 0 && ceil_div(1, 4) == 1 && ceil_div(4, 4) == 1 && ceil_div(5, 4) == 2);
static_assert(round_up(0, 16) == 0 && round_up(1, 16) == 16 && round_up(16, 16) == 16 && round_up(17, 16) == 32);

}  // namespace headwise::detail
