// headwise/attention.hpp — the public attention() entry.
//
//   attention(q, k, v, out, options)
//   q [B, Hq, Nq, Dk]  k [B, Hkv, Nk, Dk]  v [B, Hkv, Nk, Dv]  out [B, Hq, Nq, Dv]
//   k: a tensor_view (rows), a key_blocks_view or a key_view (key_view.hpp); every
//   kernel reads either layout in place.
//   Types: q/out float (K/V float, half, bfloat16 or std::int8_t with
//   options.k_scale/v_scale: quantize.hpp) or double; or q/K/V all half or all
//   bfloat16 with out of that type or float, computed in float.
//
// Flow: validate every argument (nothing is written before this passes) →
// resolve options into score_rules → choose a kernel (runs_decode below) and a SIMD
// path (isa.hpp, kernels/dispatch.hpp) → run it on threads, with scratch from
// options.scratch or the calling thread's workspace (workspace.hpp).
// Semantics are documented in options.hpp; reference.hpp is the oracle with the
// same signature.
#pragma once

#include <type_traits>
#include <vector>

#include "headwise/detail/internal_begin.hpp"

#include "headwise/detail/checks.hpp"
#include "headwise/detail/score_rules.hpp"
#include "headwise/isa.hpp"
#include "headwise/kernels/dispatch.hpp"
#include "headwise/kernels/plain.hpp"
#include "headwise/key_view.hpp"
#include "headwise/options.hpp"
#include "headwise/storage.hpp"
#include "headwise/tensor.hpp"
#include "headwise/workspace.hpp"

#include "headwise/detail/internal_end.hpp"

namespace headwise {

namespace detail {

/// Whether attention() takes these element types: q float or double (the compute
/// type) with out the same, k and v one storage type: q's, or half/bfloat16/int8 when
/// q is float; or q, k and v one 16-bit type with out of that type or float (computed in
/// float, the softmax and the sums in float).
template <class TQ, class TK, class TV, class TO>
inline constexpr bool attention_types_ok = [] {
  using Q = std::remove_const_t<TQ>;
  using S = std::remove_const_t<TK>;
  if (!std::is_same_v<S, std::remove_const_t<TV>> || std::is_const_v<TO>) return false;
  if (is_storage_16<Q>) return std::is_same_v<S, Q> && (std::is_same_v<TO, Q> || std::is_same_v<TO, float>);
  return (std::is_same_v<Q, float> || std::is_same_v<Q, double>) && std::is_same_v<TO, Q> &&
         (std::is_same_v<S, Q> || (std::is_same_v<Q, float> && (is_storage_16<S> || is_storage_int8<S>)));
}();

/// attention_types_ok as one static_assert per rule, so the error names the rule
/// broken. attention() on other types resolves to an overload whose body is only
/// this call: the kernels are never instantiated on a type they cannot compute in,
/// and this assertion is the one error the compiler prints.
template <class TQ, class TK, class TV, class TO>
constexpr void check_attention_types() {
  using Q = std::remove_const_t<TQ>;
  using S = std::remove_const_t<TK>;
  static_assert(std::is_same_v<Q, float> || std::is_same_v<Q, double> || is_storage_16<Q>,
                "q must hold float, double, half or bfloat16");
  static_assert(std::is_same_v<S, std::remove_const_t<TV>>, "k and v must share one storage type");
  static_assert(!std::is_const_v<TO>, "out must be a mutable view");
  if constexpr (is_storage_16<Q>) {
    static_assert(std::is_same_v<S, Q>, "with 16-bit q, k and v must hold q's type");
    static_assert(std::is_same_v<TO, Q> || std::is_same_v<TO, float>, "with 16-bit q, out must hold q's type or float");
  } else {
    static_assert(std::is_same_v<TO, Q>, "out must be a mutable view of q's element type");
    static_assert(std::is_same_v<S, Q> || (std::is_same_v<Q, float> && (is_storage_16<S> || is_storage_int8<S>)),
                  "k/v must hold q's type, or half/bfloat16/std::int8_t when q is float");
  }
}

/// The type attention() computes in: q's, float for 16-bit q.
template <class Q>
using compute_type = std::conditional_t<is_storage_16<Q>, float, Q>;

/// Whether a call with these options runs the decode kernel: kernel_mode::automatic
/// takes it when nq == 1 or nq·group <= 32. The cost
/// grows with G = group·Nq, the query rows per K/V row. Measured against flash, one
/// thread, d 128, bottom-right causal, ms decode/flash (G in brackets; Zen 5 AVX-512,
/// 2026-12-02, the chunk-pass kernel):
///   Hq 32 Hkv 8, Nk 4096: Nq 1 (4) 1.23/3.09, Nq 4 (16) 2.65/4.21, Nq 8 (32) 4.43/5.67, Nq 16 (64) 8.24/8.76
///   Hq 32 Hkv 8, Nk  512: Nq 4 (16) 0.25/0.32, Nq 8 (32) 0.51/0.52, Nq 16 (64) 1.01/0.93
///   Hq 8 Hkv 8,  Nk 4096: Nq 16 (16) 2.59/4.34, Nq 32 (32) 4.38/5.59
///   Hq 32 Hkv 4, Nk 4096: Nq 4 (32) 2.06/2.67, Nq 8 (64) 4.07/4.27
/// so decode up to G = 32 (a tie at short KV; at G = 64 a tie at Nk 4096, a loss at
/// 512). One query token always decodes: split-KV is its only parallelism when B·Hkv
/// is small.
inline bool runs_decode(const attention_options& opt, std::size_t nq, std::size_t group) {
  return opt.kernel == kernel_mode::decode ||
         (opt.kernel == kernel_mode::automatic && (nq == 1 || nq * group <= 32));
}

/// Runs the kernels the options and shapes choose, on the chosen path: the first
/// `decodes` calls run decode (runs_decode holds for each), the others flash (or
/// plain); each group runs as one kernel run over all its calls.
template <class T, class S, class Q, class O>
void run_kernels(kernel_calls<T, S, Q, O> calls, std::size_t decodes, const attention_options& opt) {
  const simd_isa isa = resolve_isa(opt.isa, "attention");
  const kernel_calls<T, S, Q, O> decode(calls.data(), decodes), rest(calls.data() + decodes, calls.size() - decodes);
  const bool plain = opt.kernel == kernel_mode::plain;
  if (plain)
    for (const auto& c : rest) kernels::plain::run(c);
  if (decode.empty() && (rest.empty() || plain)) return;
  with_kernel_path<T, Q>(isa, opt.force_scalar, [&](auto path, auto* pack) {
    using path_t = decltype(path);
    using P = std::remove_pointer_t<decltype(pack)>;
    if (!decode.empty()) path_t::template decode<P>(decode);
    if (!rest.empty() && !plain) path_t::template flash<P>(rest);
  });
}

}  // namespace detail

/// k: a tensor_view, key_blocks_view or key_view of K.
template <class TQ, class K, class TV, class TO,
          std::enable_if_t<detail::is_key_argument<K> &&
                               detail::attention_types_ok<TQ, typename K::element_type, TV, TO>,
                           int> = 0>
void attention(const tensor_view<TQ>& q, const K& k, const tensor_view<TV>& v, const tensor_view<TO>& out,
               const attention_options& opt = {}) {
  using Q = std::remove_const_t<TQ>;
  using T = detail::compute_type<Q>;
  using S = std::remove_const_t<TV>;
  detail::check_attention_types<TQ, typename K::element_type, TV, TO>();
  const detail::key_view_of<K> keys(k);
  detail::check_attention("attention", q, keys, v, out, opt);
  if (q.batch() == 0 || q.seq() == 0) return;
  const detail::score_rules<T> rules(opt, q.seq(), keys.seq(), q.dim());
  const detail::kernel_call<T, S, Q, TO> call{q,           keys,     v,         out,        opt.lse, rules,
                                              opt.threads, opt.scratch ? *opt.scratch : detail::thread_workspace(),
                                              opt.k_scale, opt.v_scale};
  detail::run_kernels(detail::kernel_calls<T, S, Q, TO>(&call, 1), detail::runs_decode(opt, q.seq(), call.group()),
                      opt);
}

/// attention() on element types it does not compute with: check_attention_types
/// says which rule the call breaks.
template <class TQ, class K, class TV, class TO,
          std::enable_if_t<detail::is_key_argument<K> &&
                               !detail::attention_types_ok<TQ, typename K::element_type, TV, TO>,
                           int> = 0>
void attention(const tensor_view<TQ>&, const K&, const tensor_view<TV>&, const tensor_view<TO>&,
               const attention_options& = {}) {
  detail::check_attention_types<TQ, typename K::element_type, TV, TO>();
}

}  // namespace headwise
