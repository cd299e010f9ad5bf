// headwise/detail/checks.hpp — argument validation for every public entry.
//
// Checks run before any output is written. Each failure throws headwise::error
// naming the function, the argument, what was expected and what was given.
// Beyond the shape rules of options.hpp, a view is rejected when its data is
// null while it has elements, when a stride is negative, when its last reachable
// element's offset overflows std::ptrdiff_t, and (for outputs) when two of its
// elements share memory or it overlaps an input.
#pragma once

#ifndef HEADWISE_INTERNAL
#error "headwise/detail/* is internal: include <headwise/headwise.hpp>"
#endif

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <sstream>
#include <string>
#include <type_traits>

#include "headwise/error.hpp"
#include "headwise/options.hpp"
#include "headwise/tensor.hpp"

namespace headwise::detail {

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

/// Byte range [lo, hi) a view can touch; {0, 0} for a view with no elements.
struct extent {
  std::uintptr_t lo = 0, hi = 0;
  bool overlaps(const extent& o) const { return lo < o.hi && o.lo < hi; }
};

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
  std::ptrdiff_t bytes = 0;
  if (__builtin_mul_overflow(last + 1, static_cast<std::ptrdiff_t>(sizeof(T)), &bytes))
    fail(where, name, ": its byte extent overflows std::ptrdiff_t");
  const auto lo = reinterpret_cast<std::uintptr_t>(t.data());
  return {lo, lo + static_cast<std::uintptr_t>(bytes)};
}

/// An output view must not map two index tuples to one element: sorting the axes
/// by stride, each stride must cover the whole extent of the smaller axes.
template <class T>
void check_no_self_overlap(const char* where, const char* name, const tensor_view<T>& t) {
  struct axis {
    std::size_t size;
    std::ptrdiff_t stride;
  };
  std::array<axis, 4> axes = {axis{t.batch(), t.batch_stride()}, axis{t.heads(), t.head_stride()},
                              axis{t.seq(), t.seq_stride()}, axis{t.dim(), 1}};
  std::sort(axes.begin(), axes.end(), [](const axis& a, const axis& b) { return a.stride < b.stride; });
  std::ptrdiff_t covered = 1;  // elements spanned by the axes sorted so far
  for (const axis& a : axes) {
    if (a.size <= 1) continue;
    if (a.stride < covered)
      fail(where, name, ": its elements overlap (a stride of ", a.stride, " is smaller than the ",
           covered, " elements spanned by the faster axes); an output needs distinct elements");
    covered = a.stride * static_cast<std::ptrdiff_t>(a.size);
  }
}

/// A mask or LSE view must be [B|1, H|1, Nq, cols]; `cols` is Nk for masks, 1 for LSE.
template <class T>
void check_broadcast(const char* where, const char* name, const tensor_view<T>& m, std::size_t batch,
                     std::size_t heads, std::size_t rows, std::size_t cols, bool allow_broadcast) {
  auto axis_ok = [&](std::size_t got, std::size_t want) {
    return got == want || (allow_broadcast && got == 1);
  };
  if (!axis_ok(m.batch(), batch) || !axis_ok(m.heads(), heads) || m.seq() != rows || m.dim() != cols) {
    fail(where, name, ": shape must be [", batch, allow_broadcast ? "|1" : "", ", ", heads,
         allow_broadcast ? "|1" : "", ", ", rows, ", ", cols, "] (got [", m.batch(), ", ", m.heads(),
         ", ", m.seq(), ", ", m.dim(), "])");
  }
}

template <class T>
bool is_unset(const tensor_view<T>& t) {
  return t.data() == nullptr && t.batch() == 0 && t.heads() == 0 && t.seq() == 0 && t.dim() == 0;
}

/// Memory a call reads (q, k, masks) and the LSE it writes, for alias checks.
struct score_extents {
  extent q, k, additive, boolean, lse;
};

/// The rules of options.hpp that concern the scores: q and k shapes, every
/// option, the masks and the LSE view. Inspection (which has no v or out) and
/// attention() share it.
template <class TQ, class TK>
score_extents check_scores(const char* where, const tensor_view<TQ>& q, const tensor_view<TK>& k,
                           const attention_options& opt) {
  score_extents e;
  e.q = check_view(where, "q", q);
  e.k = check_view(where, "k", k);
  if (q.heads() == 0) fail(where, "q.heads() must be >= 1 (got 0)");
  if (k.heads() == 0) fail(where, "k.heads() must be >= 1 (got 0)");
  if (q.dim() == 0) fail(where, "q.dim() (Dk) must be >= 1 (got 0)");
  expect_equal(where, "k.batch() must equal q.batch()", q.batch(), k.batch());
  expect_equal(where, "k.dim() must equal q.dim() (Dk)", q.dim(), k.dim());
  if (q.heads() % k.heads() != 0)
    fail(where, "q.heads() (Hq) must be a multiple of k.heads() (Hkv) (expected a multiple of ",
         k.heads(), ", got ", q.heads(), ")");

  const std::size_t B = q.batch(), Hq = q.heads(), Nq = q.seq(), Nk = k.seq();
  if (opt.scale && !std::isfinite(*opt.scale))
    fail(where, "options.scale must be finite (got ", *opt.scale, ")");
  if (!(std::isfinite(opt.softcap) && opt.softcap >= 0))
    fail(where, "options.softcap must be finite and >= 0 (got ", opt.softcap, ")");
  if (opt.window_left && *opt.window_left < 0)
    fail(where, "options.window_left must be >= 0 or unset (got ", *opt.window_left, ")");
  if (opt.window_right && *opt.window_right < 0)
    fail(where, "options.window_right must be >= 0 or unset (got ", *opt.window_right, ")");
  for (const auto& [values, name] : {std::pair{opt.alibi_slopes, "options.alibi_slopes"},
                                     std::pair{opt.head_scale, "options.head_scale"}}) {
    if (values.empty()) continue;
    if (values.size() != Hq) fail(where, name, ".size() must equal q.heads() (expected ", Hq, ", got ", values.size(), ")");
    if (values.data() == nullptr) fail(where, name, ": data is null");
    for (std::size_t h = 0; h < Hq; ++h)
      if (!std::isfinite(values[h])) fail(where, name, "[", h, "] must be finite (got ", values[h], ")");
  }
  if (!is_unset(opt.additive_mask)) {
    e.additive = check_view(where, "options.additive_mask", opt.additive_mask);
    check_broadcast(where, "options.additive_mask", opt.additive_mask, B, Hq, Nq, Nk, true);
  }
  if (!is_unset(opt.boolean_mask)) {
    e.boolean = check_view(where, "options.boolean_mask", opt.boolean_mask);
    check_broadcast(where, "options.boolean_mask", opt.boolean_mask, B, Hq, Nq, Nk, true);
  }
  if (!is_unset(opt.lse)) {
    e.lse = check_view(where, "options.lse", opt.lse);
    check_broadcast(where, "options.lse", opt.lse, B, Hq, Nq, 1, false);
    check_no_self_overlap(where, "options.lse", opt.lse);
  }
  return e;
}

/// All the rules of options.hpp for attention(q, k, v, out, options).
/// The rules of check_attention beyond the scores': v, out and aliasing, given the
/// extents check_scores found and k's heads and keys.
template <class TQ, class TV, class TO>
void check_values_and_outputs(const char* where, const score_extents& e, const tensor_view<TQ>& q,
                              std::size_t k_heads, std::size_t k_seq, const tensor_view<TV>& v,
                              const tensor_view<TO>& out) {
  const extent ev = check_view(where, "v", v), eo = check_view(where, "out", out);
  if (v.dim() == 0) fail(where, "v.dim() (Dv) must be >= 1 (got 0)");
  expect_equal(where, "v.batch() must equal q.batch()", q.batch(), v.batch());
  expect_equal(where, "out.batch() must equal q.batch()", q.batch(), out.batch());
  expect_equal(where, "v.heads() must equal k.heads() (Hkv)", k_heads, v.heads());
  expect_equal(where, "v.seq() must equal k.seq() (Nk)", k_seq, v.seq());
  expect_equal(where, "out.heads() must equal q.heads() (Hq)", q.heads(), out.heads());
  expect_equal(where, "out.seq() must equal q.seq() (Nq)", q.seq(), out.seq());
  expect_equal(where, "out.dim() must equal v.dim() (Dv)", v.dim(), out.dim());
  check_no_self_overlap(where, "out", out);
  for (const auto& [in, name] : {std::pair{e.q, "q"}, std::pair{e.k, "k"}, std::pair{ev, "v"},
                                 std::pair{e.additive, "options.additive_mask"},
                                 std::pair{e.boolean, "options.boolean_mask"}}) {
    if (eo.overlaps(in)) fail(where, "out overlaps the memory of ", name, "; outputs must not alias inputs");
    if (e.lse.overlaps(in))
      fail(where, "options.lse overlaps the memory of ", name, "; outputs must not alias inputs");
  }
  if (eo.overlaps(e.lse)) fail(where, "options.lse overlaps the memory of out");
}

template <class TQ, class TK, class TV, class TO>
void check_attention(const char* where, const tensor_view<TQ>& q, const tensor_view<TK>& k,
                     const tensor_view<TV>& v, const tensor_view<TO>& out,
                     const attention_options& opt) {
  check_values_and_outputs(where, check_scores(where, q, k, opt), q, k.heads(), k.seq(), v, out);
}

}  // namespace headwise::detail
