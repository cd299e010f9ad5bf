// headwise/attention.hpp — the public attention() entry.
//
//   attention(q, k, v, out, options)
//   q [B, Hq, Nq, Dk]  k [B, Hkv, Nk, Dk]  v [B, Hkv, Nk, Dv]  out [B, Hq, Nq, Dv]
//
// Flow: validate every argument (nothing is written before this passes) →
// resolve options into score_rules → choose a kernel → run it on threads.
// Semantics are documented in options.hpp; reference.hpp is the oracle with the
// same signature.
#pragma once

#ifndef HEADWISE_INTERNAL
#define HEADWISE_INTERNAL 1
#endif

#include <type_traits>

#include "headwise/detail/checks.hpp"
#include "headwise/detail/score_rules.hpp"
#include "headwise/kernels/decode.hpp"
#include "headwise/kernels/flash_prefill.hpp"
#include "headwise/kernels/plain.hpp"
#include "headwise/options.hpp"
#include "headwise/storage.hpp"
#include "headwise/tensor.hpp"

namespace headwise {

template <class TQ, class TK, class TV, class TO>
void attention(const tensor_view<TQ>& q, const tensor_view<TK>& k, const tensor_view<TV>& v,
               const tensor_view<TO>& out, const attention_options& opt = {}) {
  using T = std::remove_const_t<TQ>;
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "q must hold float or double (the compute type)");
  static_assert(std::is_same_v<TO, T>, "out must be a mutable view of q's element type");
  static_assert(std::is_same_v<std::remove_const_t<TK>, std::remove_const_t<TV>>,
                "k and v must share one storage type");
  static_assert(std::is_same_v<std::remove_const_t<TK>, T> ||
                    (std::is_same_v<T, float> && is_storage_16<std::remove_const_t<TK>>),
                "k/v must hold q's type, or half/bfloat16 when q is float");
  detail::check_attention("attention", q, k, v, out, opt);
  if (q.batch() == 0 || q.seq() == 0) return;

  const detail::score_rules<T> rules(opt, q.seq(), k.seq(), q.dim());
  const tensor_view<const T> cq = q;
  const tensor_view<const std::remove_const_t<TK>> ck = k;
  const tensor_view<const std::remove_const_t<TV>> cv = v;
  switch (opt.kernel) {
    case kernel_mode::automatic:
      if (kernels::decode_preferred(q.seq(), q.heads() / k.heads())) {
        kernels::decode_attention<T>(cq, ck, cv, out, opt.lse, rules, opt.threads, opt.force_scalar);
        break;
      }
      [[fallthrough]];
    case kernel_mode::flash:
      kernels::flash_attention<T>(cq, ck, cv, out, opt.lse, rules, opt.threads, opt.force_scalar);
      break;
    case kernel_mode::decode:
      kernels::decode_attention<T>(cq, ck, cv, out, opt.lse, rules, opt.threads, opt.force_scalar);
      break;
    case kernel_mode::plain:
      kernels::plain_attention<T>(cq, ck, cv, out, opt.lse, rules, opt.threads);
      break;
  }
}

}  // namespace headwise
