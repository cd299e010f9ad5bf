// headwise/attention.hpp — the public attention() entry.
//
//   attention(q, k, v, out, options)
//   q [B, Hq, Nq, Dk]  k [B, Hkv, Nk, Dk]  v [B, Hkv, Nk, Dv]  out [B, Hq, Nq, Dv]
//   k: a tensor_view (rows), or a key_blocks_view (key_blocks.hpp): the decode
//   kernel reads key blocks as they are, the others a row-major copy of them.
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
#include <vector>

#include "headwise/detail/checks.hpp"
#include "headwise/detail/score_rules.hpp"
#include "headwise/kernels/decode.hpp"
#include "headwise/kernels/flash_prefill.hpp"
#include "headwise/kernels/plain.hpp"
#include "headwise/key_blocks.hpp"
#include "headwise/options.hpp"
#include "headwise/storage.hpp"
#include "headwise/tensor.hpp"

namespace headwise {

namespace detail {

template <class TQ, class TK, class TV, class TO>
constexpr void check_attention_types() {
  using T = std::remove_const_t<TQ>;
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "q must hold float or double (the compute type)");
  static_assert(std::is_same_v<TO, T>, "out must be a mutable view of q's element type");
  static_assert(std::is_same_v<std::remove_const_t<TK>, std::remove_const_t<TV>>,
                "k and v must share one storage type");
  static_assert(std::is_same_v<std::remove_const_t<TK>, T> ||
                    (std::is_same_v<T, float> && is_storage_16<std::remove_const_t<TK>>),
                "k/v must hold q's type, or half/bfloat16 when q is float");
}

/// Whether a call with these options runs the decode kernel.
inline bool runs_decode(const attention_options& opt, std::size_t nq, std::size_t group) {
  return opt.kernel == kernel_mode::decode ||
         (opt.kernel == kernel_mode::automatic && kernels::decode_preferred(nq, group));
}

}  // namespace detail

template <class TQ, class TK, class TV, class TO>
void attention(const tensor_view<TQ>& q, const tensor_view<TK>& k, const tensor_view<TV>& v,
               const tensor_view<TO>& out, const attention_options& opt = {}) {
  using T = std::remove_const_t<TQ>;
  detail::check_attention_types<TQ, TK, TV, TO>();
  detail::check_attention("attention", q, k, v, out, opt);
  if (q.batch() == 0 || q.seq() == 0) return;

  const detail::score_rules<T> rules(opt, q.seq(), k.seq(), q.dim());
  const tensor_view<const T> cq = q;
  const tensor_view<const std::remove_const_t<TK>> ck = k;
  const tensor_view<const std::remove_const_t<TV>> cv = v;
  if (detail::runs_decode(opt, q.seq(), q.heads() / k.heads())) {
    kernels::decode_attention<T>(cq, ck, cv, out, opt.lse, rules, opt.threads, opt.force_scalar);
    return;
  }
  if (opt.kernel == kernel_mode::plain)
    kernels::plain_attention<T>(cq, ck, cv, out, opt.lse, rules, opt.threads);
  else
    kernels::flash_attention<T>(cq, ck, cv, out, opt.lse, rules, opt.threads, opt.force_scalar);
}

/// attention() with K in key blocks. The decode kernel reads them directly; any
/// other kernel runs on a row-major copy of K made for the call (Nk·Dk element
/// moves per kv head against ≥ 4·Nq·Nk·Dk flops: small beside a prefill).
template <class TQ, class TK, class TV, class TO>
void attention(const tensor_view<TQ>& q, const key_blocks_view<TK>& k, const tensor_view<TV>& v,
               const tensor_view<TO>& out, const attention_options& opt = {}) {
  using T = std::remove_const_t<TQ>;
  using S = std::remove_const_t<TK>;
  detail::check_attention_types<TQ, TK, TV, TO>();
  detail::check_attention("attention", q, k, v, out, opt);
  if (q.batch() == 0 || q.seq() == 0) return;

  if (detail::runs_decode(opt, q.seq(), q.heads() / k.heads())) {
    const detail::score_rules<T> rules(opt, q.seq(), k.seq(), q.dim());
    kernels::decode_attention<T>(tensor_view<const T>(q), key_blocks_view<const S>(k),
                                 tensor_view<const std::remove_const_t<TV>>(v), out, opt.lse, rules, opt.threads,
                                 opt.force_scalar);
    return;
  }
  attention(q, detail::key_rows<S>("attention", k).view(), v, out, opt);
}

}  // namespace headwise
