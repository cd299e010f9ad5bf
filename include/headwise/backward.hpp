// headwise/backward.hpp — attention_backward(): the gradients of attention().
//
//   attention(q, k, v, out, options)               with options.lse set, then
//   attention_backward(q, k, v, out, lse, dout, dq, dk, dv, options)
//   q, dq [B, Hq, Nq, Dk]  k, dk [B, Hkv, Nk, Dk]  v, dv [B, Hkv, Nk, Dv]
//   out, dout [B, Hq, Nq, Dv]  lse [B, Hq, Nq, 1] (float, natural log: the forward's)
//
// Given dout = ∂L/∂out, writes dq = ∂L/∂q, dk = ∂L/∂k, dv = ∂L/∂v (overwritten, not
// added to) for the attention() call with the same q, k, v and options, whose out and
// LSE are passed back: P is recomputed tile by tile from the LSE (never N×N; memory
// O(N·d) plus per-thread scratch bounded by the tiles, kernels/flash_backward.hpp).
// Every option of attention_options with the forward's meaning (options.hpp):
//   - causal, window, sinks, boolean and additive masks: no gradient flows into a
//     mask; a hidden key gets none from the rows that cannot see it;
//   - ALiBi: a constant bias, no gradient; softcap through its derivative 1 − tanh²;
//   - head_scale: multiplies the gradient of the head's output; a pruned head (0)
//     gets zero dq and gives nothing to dk, dv, at no cost;
//   - GQA/MQA: dk, dv of kv head g sum over the group's query heads;
//   - a row with no visible key (LSE −inf) has zero gradients.
// options.lse is not read (lse is an argument); options.kernel is ignored (one
// kernel); options.isa and force_scalar choose the path as for attention().
// Types: float or double, K/V in q's type. K/V stored in half or bfloat16 and
// K in key blocks are not supported yet: such calls do not compile (the
// static_assert says so).
// Results are bitwise identical for every thread count. Bad arguments throw
// headwise::error before anything is written.
#pragma once

#include <type_traits>

#include "headwise/detail/internal_begin.hpp"

#include "headwise/detail/checks.hpp"
#include "headwise/detail/score_rules.hpp"
#include "headwise/isa.hpp"
#include "headwise/kernels/dispatch.hpp"
#include "headwise/options.hpp"
#include "headwise/tensor.hpp"
#include "headwise/workspace.hpp"

#include "headwise/detail/internal_end.hpp"

namespace headwise {

template <class TQ, class TK, class TV, class TO, class TD, class TG>
void attention_backward(const tensor_view<TQ>& q, const tensor_view<TK>& k, const tensor_view<TV>& v,
                        const tensor_view<TO>& out, const tensor_view<const float>& lse,
                        const tensor_view<TD>& dout, const tensor_view<TG>& dq, const tensor_view<TG>& dk,
                        const tensor_view<TG>& dv, const attention_options& opt = {}) {
  using T = std::remove_const_t<TQ>;
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "q must hold float or double (the compute type)");
  static_assert(std::is_same_v<std::remove_const_t<TK>, T> && std::is_same_v<std::remove_const_t<TV>, T>,
                "attention_backward: k and v must hold q's type (16-bit K/V storage is not supported yet)");
  static_assert(std::is_same_v<std::remove_const_t<TO>, T> && std::is_same_v<std::remove_const_t<TD>, T>,
                "attention_backward: out and dout must hold q's type");
  static_assert(std::is_same_v<TG, T>, "attention_backward: dq, dk and dv must be mutable views of q's type");
  const tensor_view<const T> cq = q, ck = k, cv = v, cout = out, cdout = dout;
  const char* where = "attention_backward";
  detail::check_attention_backward(where, cq, ck, cv, cout, lse, cdout, dq, dk, dv, opt);
  const simd_isa isa = detail::resolve_isa(opt.isa, where);
  if (q.batch() == 0) return;
  const detail::score_rules<T> rules(opt, q.seq(), k.seq(), q.dim());
  const detail::backward_call<T> call{cq, ck, cv, cout, lse, cdout, dq, dk, dv, rules, opt.threads,
                                      opt.scratch ? *opt.scratch : detail::thread_workspace()};
  detail::with_kernel_path<T, T>(isa, opt.force_scalar, [&](auto path, auto* pack) {
    using P = std::remove_pointer_t<decltype(pack)>;
    decltype(path)::template backward<P>(call);
  });
}

}  // namespace headwise
