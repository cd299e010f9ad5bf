// headwise/detail/kernel_call.hpp — the arguments every attention kernel takes.
//
// attention() checks its arguments, resolves the options into score_rules, and hands
// each kernel (kernels/plain.hpp, flash.hpp, decode.hpp) one kernel_call: the views,
// the rules, the thread count and the workspace its scratch comes from.
#pragma once

#ifndef HEADWISE_INTERNAL
#error "headwise/detail/* is internal: include <headwise/headwise.hpp>"
#endif

#include "headwise/detail/score_rules.hpp"
#include "headwise/key_view.hpp"
#include "headwise/tensor.hpp"
#include "headwise/workspace.hpp"

namespace headwise::detail {

/// T: the compute type (q, out); S: K/V storage (T, or half/bfloat16 under float).
template <class T, class S>
struct kernel_call {
  tensor_view<const T> q;    // [B, Hq, Nq, Dk]
  key_view<const S> k;       // [B, Hkv, Nk, Dk], rows or key blocks
  tensor_view<const S> v;    // [B, Hkv, Nk, Dv]
  tensor_view<T> out;        // [B, Hq, Nq, Dv]
  tensor_view<float> lse;    // [B, Hq, Nq, 1], or unset
  const score_rules<T>& rules;
  unsigned threads;          // as the caller asked (0 = hardware)
  workspace& scratch;

  std::size_t group() const noexcept { return q.heads() / k.heads(); }
};

}  // namespace headwise::detail
