// headwise/quantize.hpp — int8 K/V: symmetric, one fp32 scale per (token, kv head).
//
//   quantize_int8(x, q, scale)     x [B, H, N, D] (float, double, half, bfloat16)
//                                  → q [B, H, N, D] int8, scale [B, H, N, 1] float
//   dequantize_int8(q, scale, x)   x = scale · q, element by element
//   attention(q, k_int8, v_int8, out, opt) with opt.k_scale / opt.v_scale set
//   (options.hpp); kv_cache<std::int8_t> and paged_kv_cache<std::int8_t> quantize
//   on append and hand out the scales with the rows.
//
// Each row x (D elements) is stored as round(x / s) with s = max|x| / 127, so every
// element is within s/2 = max|x| / 254 of x (plus a float rounding of s): half a
// step of a 255-level grid spanning the row. Why per (token, head) and not per
// block of keys: a cache appends one token at a time, and a per-token scale is
// final when the token arrives, so no earlier row is ever re-quantized; a block
// scale would have to wait for its block to fill or re-round its rows as the block
// max grows. The scale costs 4 bytes per row, 3 % of a d-128 int8 row.
// Kernels never dequantize K/V into memory: decode widens the int8 rows in registers
// (vpmovsxbd + vcvtdq2ps), multiplies each key's score by its K scale and folds each
// V scale into the key's weight after the softmax sums; flash scales its packed K
// and V tiles; all of them accumulate in fp32.
// A row of zeros gets scale 0. A NaN or ±inf in x is an error (nothing is written):
// it has no int8 code.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "headwise/detail/internal_begin.hpp"

#include "headwise/detail/checks_views.hpp"
#include "headwise/storage.hpp"
#include "headwise/tensor.hpp"

#include "headwise/detail/internal_end.hpp"

namespace headwise {

namespace detail {

/// max |x_d| over a row of n elements, as float; NaN if one is not finite.
template <class X>
float row_amax(const X* x, std::size_t n) noexcept {
  float m = 0;
  for (std::size_t d = 0; d < n; ++d) {
    const float a = std::fabs(static_cast<float>(x[d]));
    if (!(a <= std::numeric_limits<float>::max())) return std::numeric_limits<float>::quiet_NaN();
    m = a > m ? a : m;
  }
  return m;
}

/// Quantizes one finite row of n elements into q[0..n); returns its scale.
template <class X>
float quantize_row_int8(const X* x, std::size_t n, std::int8_t* q) noexcept {
  const float scale = row_amax(x, n) / 127.0f;
  for (std::size_t d = 0; d < n; ++d) {
    const float r = scale > 0 ? std::nearbyint(static_cast<float>(x[d]) / scale) : 0.0f;
    q[d] = static_cast<std::int8_t>(std::clamp(r, -127.0f, 127.0f));
  }
  return scale;
}

/// Throws unless every element of x is finite: one pass before anything is written.
template <class TX>
void check_quantizable(const char* where, const char* name, const tensor_view<TX>& x) {
  for (std::size_t b = 0; b < x.batch(); ++b)
    for (std::size_t h = 0; h < x.heads(); ++h)
      for (std::size_t s = 0; s < x.seq(); ++s)
        if (std::isnan(row_amax(x.row(b, h, s), x.dim())))
          fail(where, name, ": int8 quantization needs finite values, and row (", b, ", ", h, ", ", s,
               ") holds a NaN or an infinity");
}

/// Whether view is [b, h, n, d].
template <class T>
void expect_dims(const char* where, const char* name, const tensor_view<T>& t, std::size_t b, std::size_t h,
                 std::size_t n, std::size_t d) {
  if (t.batch() != b || t.heads() != h || t.seq() != n || t.dim() != d)
    fail(where, name, " must be [", b, ", ", h, ", ", n, ", ", d, "], got [", t.batch(), ", ", t.heads(), ", ",
         t.seq(), ", ", t.dim(), "]");
}

}  // namespace detail

/// q = round(x / s) per row, with s = max|row| / 127 stored in scale(b, h, s, 0).
/// Checks everything (shapes, finiteness, overlaps) before writing.
template <class TX>
void quantize_int8(const tensor_view<TX>& x, const tensor_view<std::int8_t>& q, const tensor_view<float>& scale) {
  constexpr const char* where = "quantize_int8";
  const detail::extent ex = detail::check_view(where, "x", x), eq = detail::check_view(where, "q", q),
                       es = detail::check_view(where, "scale", scale);
  detail::expect_dims(where, "q", q, x.batch(), x.heads(), x.seq(), x.dim());
  detail::expect_dims(where, "scale", scale, x.batch(), x.heads(), x.seq(), 1);
  if (ex.overlaps(eq) || ex.overlaps(es) || eq.overlaps(es)) detail::fail(where, "x, q and scale must not overlap");
  detail::check_no_self_overlap(where, "q", q);
  detail::check_no_self_overlap(where, "scale", scale);
  detail::check_quantizable(where, "x", x);
  for (std::size_t b = 0; b < x.batch(); ++b)
    for (std::size_t h = 0; h < x.heads(); ++h)
      for (std::size_t s = 0; s < x.seq(); ++s)
        scale(b, h, s, 0) = detail::quantize_row_int8(x.row(b, h, s), x.dim(), q.row(b, h, s));
}

/// x = scale · q, element by element, in x's type (float or double).
template <class TQ, class TS, class TX>
void dequantize_int8(const tensor_view<TQ>& q, const tensor_view<TS>& scale, const tensor_view<TX>& x) {
  static_assert(std::is_same_v<std::remove_const_t<TQ>, std::int8_t>, "q must hold std::int8_t");
  static_assert(std::is_same_v<std::remove_const_t<TS>, float>, "scale must hold float");
  static_assert(std::is_floating_point_v<TX>, "x must be a mutable view of float or double");
  constexpr const char* where = "dequantize_int8";
  detail::check_view(where, "q", q);
  detail::check_view(where, "scale", scale);
  detail::check_view(where, "x", x);
  detail::expect_dims(where, "scale", scale, q.batch(), q.heads(), q.seq(), 1);
  detail::expect_dims(where, "x", x, q.batch(), q.heads(), q.seq(), q.dim());
  detail::check_no_self_overlap(where, "x", x);
  for (std::size_t b = 0; b < q.batch(); ++b)
    for (std::size_t h = 0; h < q.heads(); ++h)
      for (std::size_t s = 0; s < q.seq(); ++s)
        for (std::size_t d = 0; d < q.dim(); ++d)
          x(b, h, s, d) = static_cast<TX>(scale(b, h, s, 0)) * static_cast<TX>(q(b, h, s, d));
}

}  // namespace headwise
