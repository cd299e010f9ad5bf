// headwise/detail/checks_views.hpp — the checks of one view or span alone: its byte
// extent (null data, negative strides and offsets or extents that overflow are
// errors; a view with no elements passes), whether an output's elements are distinct,
// and whether its shape is [batch, heads, rows, cols] (with broadcast axes). The
// rules of each public call, built from these, are in detail/checks.hpp.
#pragma once

#ifndef HEADWISE_INTERNAL
#error "headwise/detail/* is internal: include <headwise/headwise.hpp>"
#endif

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <sstream>
#include <utility>

#include "headwise/detail/checks_base.hpp"
#include "headwise/key_view.hpp"
#include "headwise/tensor.hpp"

namespace headwise::detail {
/// Byte range [lo, hi) a view can touch; {0, 0} for a view with no elements.
struct extent {
  std::uintptr_t lo = 0, hi = 0;
  bool overlaps(const extent& o) const { return lo < o.hi && o.lo < hi; }
};

/// The extent of `bytes` bytes from data; an error if they run past the address space.
inline extent memory_extent(const char* where, const char* name, const void* data, std::size_t bytes) {
  const auto lo = reinterpret_cast<std::uintptr_t>(data);
  if (bytes > std::numeric_limits<std::uintptr_t>::max() - lo)
    fail(where, name, ": its memory runs past the end of the address space");
  return {lo, lo + bytes};
}

/// The extent of a span (per-head parameters); {0, 0} when empty.
template <class T>
extent span_extent(const char* where, const char* name, const span<T>& s) {
  std::size_t bytes = 0;
  if (s.empty()) return {};
  if (__builtin_mul_overflow(s.size(), sizeof(T), &bytes))
    fail(where, name, ": its byte size overflows std::size_t");
  return memory_extent(where, name, s.data(), bytes);
}

/// Validates a view's pointer, strides and index arithmetic; returns its extent.
template <class T>
extent check_view(const char* where, const char* name, const tensor_view<T>& t) {
  const std::size_t sizes[4] = {t.batch(), t.heads(), t.seq(), t.dim()};
  const std::ptrdiff_t strides[3] = {t.batch_stride(), t.head_stride(), t.seq_stride()};
  checked_product(where, name, {sizes[0], sizes[1], sizes[2], sizes[3]});
  if (sizes[0] == 0 || sizes[1] == 0 || sizes[2] == 0 || sizes[3] == 0) return {};
  if (t.data() == nullptr) fail(where, name, ": data is null but the view has elements");
  std::ptrdiff_t last = static_cast<std::ptrdiff_t>(sizes[3]) - 1;
  for (int a = 0; a < 3; ++a) {
    if (strides[a] < 0) fail(where, name, ": strides must be >= 0 (axis ", a, " has ", strides[a], ")");
    std::ptrdiff_t step = 0;
    if (__builtin_mul_overflow(static_cast<std::ptrdiff_t>(sizes[a] - 1), strides[a], &step) ||
        __builtin_add_overflow(last, step, &last))
      fail(where, name, ": the offset of its last element overflows std::ptrdiff_t");
  }
  std::ptrdiff_t count = 0, bytes = 0;
  if (__builtin_add_overflow(last, 1, &count) ||
      __builtin_mul_overflow(count, static_cast<std::ptrdiff_t>(sizeof(T)), &bytes))
    fail(where, name, ": its byte extent overflows std::ptrdiff_t");
  return memory_extent(where, name, t.data(), static_cast<std::size_t>(bytes));
}

/// K in rows or key blocks: validated as the memory it spans (for blocks, every
/// block whole, padding included); returns that extent.
template <class T>
extent check_view(const char* where, const char* name, const key_blocks_view<T>& k) {
  return check_view(where, name, k.storage());
}
/// Pages are checked by attention_varlen (varlen.hpp), the one entry that builds them.
template <class T>
extent check_view(const char* where, const char* name, const key_view<T>& k) {
  if (k.paged()) fail(where, name, ": K in pages is read through attention_varlen with a paged_kv_view");
  return k.blocked() ? check_view(where, name, k.blocks()) : check_view(where, name, k.rows());
}

/// An output view must map distinct index tuples (b, h, s, d) to distinct elements.
/// Two tuples share one when their difference x (|x_a| < size_a, not all 0) has
/// Σ_a x_a·stride_a = 0. The dim axis (stride 1, D elements) cancels any difference
/// below D, so the search is for a nonzero x over the other axes with
/// |Σ x_a·stride_a| < D. Axes of size 1 drop out, one of stride 0 collides at once.
/// The axes are searched from the largest stride down, each over the steps the
/// smaller ones can still cancel, the smallest axis solved directly. Nested layouts
/// (each stride covering the axes below it: BSHD, BHSD, padded rows) take one step
/// per axis; an interleaved one (strides 4 and 6 over rows of 2 elements) is
/// accepted when its elements are distinct, after at most
/// (2·size_1 − 1)·size_2 steps for its two largest-stride axes: under two per element.
template <class T>
void check_no_self_overlap(const char* where, const char* name, const tensor_view<T>& t) {
  struct axis {
    std::ptrdiff_t size, stride;
    int index;  // 0 batch, 1 heads, 2 seq
  };
  const std::size_t sizes[4] = {t.batch(), t.heads(), t.seq(), t.dim()};
  if (sizes[0] == 0 || sizes[1] == 0 || sizes[2] == 0 || sizes[3] == 0) return;  // no element to share
  const std::ptrdiff_t strides[3] = {t.batch_stride(), t.head_stride(), t.seq_stride()};
  std::array<axis, 3> axes{};  // the axes of size > 1 first, by stride
  int n = 0;
  for (int a = 0; a < 3; ++a) {
    const bool steps_out = sizes[a] > 1;
    n += steps_out;
    axes[std::size_t(a)] = {static_cast<std::ptrdiff_t>(sizes[a]), steps_out ? strides[a] : -1, a};
  }
  std::sort(axes.begin(), axes.end(), [](const axis& a, const axis& b) {
    return (a.stride < 0) != (b.stride < 0) ? b.stride < 0 : a.stride < b.stride;
  });
  // reach[a]: how far |r + x_a·stride_a| may be from 0 for axes a-1..0 and the dim
  // axis to cancel it. Every partial sum stays within the view's last offset, which
  // check_view bounded; a numerator that would overflow lies beyond every step.
  std::ptrdiff_t reach[3] = {static_cast<std::ptrdiff_t>(sizes[3]) - 1, 0, 0};
  for (int a = 1; a < n; ++a)
    reach[a] = reach[a - 1] + (axes[std::size_t(a - 1)].size - 1) * axes[std::size_t(a - 1)].stride;
  std::ptrdiff_t x[3] = {0, 0, 0};
  // Steps x of axis a with |r + x·stride| <= reach[a], within [lo, size - 1].
  auto steps = [&](int a, std::ptrdiff_t r, std::ptrdiff_t lo, std::ptrdiff_t& first, std::ptrdiff_t& end) {
    const axis& ax = axes[std::size_t(a)];
    std::ptrdiff_t hi = ax.size - 1, num = 0;
    if (!__builtin_sub_overflow(reach[a], r, &num)) {  // x <= floor((reach − r) / stride)
      const std::ptrdiff_t q = num / ax.stride - (num % ax.stride != 0 && num < 0);
      hi = std::min(hi, q);
    }
    if (!__builtin_sub_overflow(-reach[a], r, &num)) {  // x >= ceil((−reach − r) / stride)
      const std::ptrdiff_t q = num / ax.stride + (num % ax.stride != 0 && num > 0);
      lo = std::max(lo, q);
    }
    first = lo, end = hi + 1;
  };
  // Whether axes a..0 complete a collision from partial sum r; `moved` when a larger
  // axis stepped (then steps of either sign count, else only positive ones: x and −x
  // are the same pair).
  auto collides = [&](auto&& self, int a, std::ptrdiff_t r, bool moved) -> bool {
    const axis& ax = axes[std::size_t(a)];
    std::ptrdiff_t first = 0, end = 0;
    steps(a, r, moved ? 1 - ax.size : (a == 0 ? 1 : 0), first, end);
    if (a == 0) return first < end && (x[0] = first, true);
    for (x[a] = first; x[a] < end; ++x[a])
      if (self(self, a - 1, r + x[a] * ax.stride, moved || x[a] != 0)) return true;
    return false;
  };
  if (n > 0 && axes[0].stride == 0)
    x[0] = 1;  // a broadcast axis: its first two elements are one
  else if (n == 0 || !collides(collides, n - 1, 0, false))
    return;
  std::ptrdiff_t first[4] = {0, 0, 0, 0}, second[4] = {0, 0, 0, 0}, delta = 0;
  for (int a = 0; a < n; ++a) {
    const axis& ax = axes[std::size_t(a)];
    first[ax.index] = std::max<std::ptrdiff_t>(x[a], 0),
    second[ax.index] = std::max<std::ptrdiff_t>(-x[a], 0);
    delta += x[a] * ax.stride;  // first's row starts delta elements after second's
  }
  first[3] = std::max<std::ptrdiff_t>(-delta, 0), second[3] = std::max<std::ptrdiff_t>(delta, 0);
  fail(where, name, ": its elements overlap ([", first[0], ", ", first[1], ", ", first[2], ", ", first[3],
       "] and [", second[0], ", ", second[1], ", ", second[2], ", ", second[3],
       "] are one element); an output needs distinct elements");
}

/// Axis names a shape message prints, as in "[B=2 or 1, Hq=8 or 1, Nq=16, Nk=32]";
/// a null name prints the bare size (the 1 of an LSE view's last axis).
struct axis_names {
  const char* batch = "B";
  const char* heads = "H";
  const char* rows = "N";
  const char* cols = "D";
};

inline constexpr axis_names mask_axes{"B", "Hq", "Nq", "Nk"};
inline constexpr axis_names lse_axes{"B", "Hq", "Nq", nullptr};
inline constexpr axis_names kv_scale_axes{"B", "Hkv", "Nk", nullptr};

/// A view must be [batch, heads, rows, cols]; with allow_broadcast its batch and
/// heads may also be 1 (masks: [B or 1, Hq or 1, Nq, Nk]; LSE: [B, Hq, Nq, 1]).
template <class T>
void check_broadcast(const char* where, const char* name, const tensor_view<T>& m, std::size_t batch,
                     std::size_t heads, std::size_t rows, std::size_t cols, bool allow_broadcast,
                     const axis_names& axes = {}) {
  auto axis_ok = [&](std::size_t got, std::size_t want) {
    return got == want || (allow_broadcast && got == 1);
  };
  if (axis_ok(m.batch(), batch) && axis_ok(m.heads(), heads) && m.seq() == rows && m.dim() == cols) return;
  std::ostringstream want;
  auto axis = [&](const char* label, std::size_t size, bool broadcasts, const char* sep) {
    if (label) want << label << '=';
    want << size << (broadcasts && allow_broadcast && size != 1 ? " or 1" : "") << sep;
  };
  axis(axes.batch, batch, true, ", ");
  axis(axes.heads, heads, true, ", ");
  axis(axes.rows, rows, false, ", ");
  axis(axes.cols, cols, false, "");
  fail(where, name, ": shape must be [", want.str(), "] (got [", m.batch(), ", ", m.heads(), ", ", m.seq(), ", ",
       m.dim(), "])");
}

}  // namespace headwise::detail
