// tests/fuzz/guarded.hpp — a [B, H, S, D] view inside a buffer whose every other
// element is a canary, in any layout the bytes choose.
//
// Layouts: the three outer axes in any order, each padded (elements between rows,
// heads or batches that the view never maps), the buffer padded before and after;
// for inputs also broadcast axes (stride 0: one row read for all), and for outputs
// also arbitrary strides, interleaved or overlapping, whose validity the fuzzer
// decides by brute force (distinct() below) and the library by its own check.
// After a call, damaged() counts the canaries that changed (a write outside the
// view) and unwritten() the view elements still holding the sentinel an output
// starts with. Both patterns are signalling NaNs, which no arithmetic produces
// (results of arithmetic on a NaN are quiet), so a kernel cannot write them.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <type_traits>
#include <vector>

#include <headwise/headwise.hpp>

#include "byte_source.hpp"

namespace hwfuzz {

using namespace headwise;

/// Bit patterns of T: a canary and an output sentinel, both signalling NaNs for the
/// floating types (for the 16-bit storage types, only canaries matter).
template <class T>
T pattern(bool sentinel) {
  T x;
  if constexpr (std::is_same_v<T,
                               bool>) {  // masks are inputs: no pattern to check, and only 0 or 1 is a bool
    x = sentinel;
  } else if constexpr (sizeof(T) == 8) {
    const std::uint64_t bits = sentinel ? 0x7ff4a5a5a5a5a5a5u : 0x7ff1c3c3c3c3c3c3u;
    std::memcpy(&x, &bits, 8);
  } else if constexpr (sizeof(T) == 4) {
    const std::uint32_t bits = sentinel ? 0x7fa5a5a5u : 0x7f9c3c3cu;
    std::memcpy(&x, &bits, 4);
  } else if constexpr (sizeof(T) == 2) {
    const std::uint16_t bits = sentinel ? 0x7d5au : 0x7c3cu;
    std::memcpy(&x, &bits, 2);
  }
  return x;
}

template <class T>
bool same_bits(const T& a, const T& b) {
  return std::memcmp(&a, &b, sizeof(T)) == 0;
}

/// Strides and padding of one view, from bytes.
struct layout {
  std::array<std::ptrdiff_t, 3> strides{};  // batch, heads, seq
  std::size_t lead = 0, tail = 0;           // elements before and after the view
};

/// A nested layout: the outer axes in one of six orders, each padded by 0-3
/// elements; for inputs (may_broadcast) any axis may have stride 0.
inline layout nested_layout(byte_source& in, const std::array<std::size_t, 4>& sizes, bool may_broadcast) {
  static constexpr int orders[6][3] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};
  const int* order = orders[in.below(6)];  // outer to inner
  layout l;
  const bool padded = in.chance(96);
  std::ptrdiff_t span = std::ptrdiff_t(sizes[3]) + (padded ? std::ptrdiff_t(in.below(4)) : 0);
  for (int i = 2; i >= 0; --i) {
    const int axis = order[i];
    l.strides[std::size_t(axis)] = span;
    span *= std::ptrdiff_t(std::max<std::size_t>(sizes[std::size_t(axis)], 1));
    if (padded) span += std::ptrdiff_t(in.below(4));
  }
  if (may_broadcast && in.chance(40))
    for (std::size_t a = 0; a < 3; ++a)
      if (in.chance(128)) l.strides[a] = 0;
  l.lead = in.below(3);
  l.tail = in.below(3);
  return l;
}

/// Any non-negative strides up to a few rows: interleaved or overlapping layouts.
inline layout free_layout(byte_source& in, const std::array<std::size_t, 4>& sizes) {
  layout l;
  const std::size_t row = sizes[3];
  for (auto& s : l.strides) s = std::ptrdiff_t(in.below(4 * row + 4));
  l.lead = in.below(3);
  l.tail = in.below(3);
  return l;
}

template <class T>
struct guarded {
  std::array<std::size_t, 4> sizes{};
  std::unique_ptr<T[]> memory;  // not a vector: vector<bool> has no data()
  std::size_t count = 0;
  std::vector<unsigned char> hits;  // view elements mapped to each memory element
  tensor_view<T> view;

  guarded() = default;
  guarded(const std::array<std::size_t, 4>& s, const layout& l) : sizes(s) {
    std::size_t last = 0;
    const bool empty = s[0] == 0 || s[1] == 0 || s[2] == 0 || s[3] == 0;
    if (!empty) {
      last = s[3] - 1;
      for (std::size_t a = 0; a < 3; ++a) last += (s[a] - 1) * std::size_t(l.strides[a]);
    }
    count = l.lead + (empty ? 0 : last + 1) + l.tail + 1;
    memory.reset(new T[count]);
    std::fill(memory.get(), memory.get() + count, pattern<T>(false));
    hits.assign(count, 0);
    view = tensor_view<T>(memory.get() + l.lead, s[0], s[1], s[2], s[3], l.strides[0], l.strides[1],
                          l.strides[2]);
    for_each([&](std::size_t e) { hits[e] = static_cast<unsigned char>(std::min(hits[e] + 1, 2)); });
  }
  guarded(const guarded&) = delete;  // the view points into memory
  guarded& operator=(const guarded&) = delete;
  guarded(guarded&&) noexcept = default;
  guarded& operator=(guarded&&) noexcept = default;

  /// Calls fn(memory index) for every (b, h, s, d) of the view.
  template <class Fn>
  void for_each(Fn&& fn) const {
    for (std::size_t b = 0; b < sizes[0]; ++b)
      for (std::size_t h = 0; h < sizes[1]; ++h)
        for (std::size_t s = 0; s < sizes[2]; ++s)
          for (std::size_t d = 0; d < sizes[3]; ++d) fn(std::size_t(&view(b, h, s, d) - memory.get()));
  }
  bool distinct() const {
    return std::none_of(hits.begin(), hits.end(), [](unsigned char n) { return n > 1; });
  }
  /// Every view element set to the output sentinel (canaries stay).
  void arm() {
    for_each([&](std::size_t e) { memory[e] = pattern<T>(true); });
  }
  /// The buffer's bytes, to compare before and after a call (== would call NaN
  /// unequal to itself).
  std::vector<unsigned char> bytes() const {
    const auto* p = reinterpret_cast<const unsigned char*>(memory.get());
    return std::vector<unsigned char>(p, p + count * sizeof(T));
  }
  std::size_t damaged() const {
    std::size_t n = 0;
    for (std::size_t e = 0; e < count; ++e) n += !hits[e] && !same_bits(memory[e], pattern<T>(false));
    return n;
  }
  std::size_t unwritten() const {
    std::size_t n = 0;
    for_each([&](std::size_t e) { n += same_bits(memory[e], pattern<T>(true)); });
    return n;
  }
};

}  // namespace hwfuzz
