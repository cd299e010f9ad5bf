// headwise/detail/kernel_call.hpp — the arguments every attention kernel takes.
//
// attention() checks its arguments, resolves the options into score_rules, and hands
// each kernel (kernels/plain.hpp, flash.hpp, decode.hpp) one kernel_call: the views,
// the rules, the thread count and the workspace its scratch comes from.
// attention_varlen (varlen.hpp) hands a kernel one kernel_call per sequence (batch-1
// views, each sequence's own rules) and the kernel runs all their tasks in one
// parallel_for: kernel_calls below.
#pragma once

#ifndef HEADWISE_INTERNAL
#error "headwise/detail/* is internal: include <headwise/headwise.hpp>"
#endif

#include "headwise/detail/score_rules.hpp"
#include "headwise/key_view.hpp"
#include "headwise/storage.hpp"
#include "headwise/tensor.hpp"
#include "headwise/workspace.hpp"

namespace headwise::detail {

/// T: the compute type; S: K/V storage (T, or half/bfloat16/int8 under float); Q:
/// q's type (T, or S when S is 16-bit); O: out's (T, or Q when Q is 16-bit). Kernels
/// widen q rows on load and narrow output rows on store (simd/convert.hpp, narrow).
/// int8 K/V come with k_scale and v_scale (one fp32 per key, dim 1, laid out as the
/// rows are); every other storage leaves them unset.
template <class T, class S, class Q = T, class O = T>
struct kernel_call {
  tensor_view<const Q> q;    // [B, Hq, Nq, Dk]
  key_view<const S> k;       // [B, Hkv, Nk, Dk], rows, key blocks or pages
  value_view<const S> v;     // [B, Hkv, Nk, Dv], rows or pages
  tensor_view<O> out;        // [B, Hq, Nq, Dv]
  tensor_view<float> lse;    // [B, Hq, Nq, 1], or unset
  const score_rules<T>& rules;
  unsigned threads;          // as the caller asked (0 = hardware)
  workspace& scratch;
  value_view<const float> k_scale = {};  // [B, Hkv, Nk, 1], int8 K only
  value_view<const float> v_scale = {};  // [B, Hkv, Nk, 1], int8 V only

  std::size_t group() const noexcept { return q.heads() / k.heads(); }
};

/// The scale of row j of (b, h) in an int8 call's k_scale or v_scale view; 1 for any
/// other storage (a multiplication by it then folds away).
template <class T, class S>
inline T row_scale(const value_view<const float>& scale, std::size_t b, std::size_t h, std::size_t j) noexcept {
  if constexpr (is_storage_int8<S>)
    return T(scale(b, h, j, 0));
  else
    return T(1);
}

/// The calls one kernel run serves: one for attention(), one per sequence for
/// attention_varlen. Every call shares calls[0]'s threads and workspace.
template <class T, class S, class Q = T, class O = T>
using kernel_calls = span<const kernel_call<T, S, Q, O>>;

/// The arguments of the backward kernel (kernels/flash_backward.hpp): the forward's
/// inputs and results, the output gradient, and the three gradients it writes.
/// K/V in T only (no 16-bit storage, no key blocks: dK is written in rows).
template <class T>
struct backward_call {
  tensor_view<const T> q;        // [B, Hq, Nq, Dk]
  tensor_view<const T> k;        // [B, Hkv, Nk, Dk]
  tensor_view<const T> v;        // [B, Hkv, Nk, Dv]
  tensor_view<const T> out;      // [B, Hq, Nq, Dv]  the forward's output
  tensor_view<const float> lse;  // [B, Hq, Nq, 1]   the forward's natural-log LSE
  tensor_view<const T> dout;     // [B, Hq, Nq, Dv]
  tensor_view<T> dq;             // [B, Hq, Nq, Dk]
  tensor_view<T> dk;             // [B, Hkv, Nk, Dk]
  tensor_view<T> dv;             // [B, Hkv, Nk, Dv]
  const score_rules<T>& rules;
  unsigned threads;
  workspace& scratch;

  std::size_t group() const noexcept { return q.heads() / k.heads(); }
};

}  // namespace headwise::detail
