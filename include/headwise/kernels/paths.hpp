// headwise/kernels/paths.hpp — the per-path headers in dependency order, and the
// path's entry points. Included by kernels/dispatch.hpp once per SIMD path, with
// HEADWISE_ISA_NS naming the path's namespace; no include guard on purpose.
//
// The headers included here include nothing themselves: whatever they need from
// outside their path is included by dispatch.hpp before the first target pragma.
#ifndef HEADWISE_ISA_NS
#error "headwise/kernels/* is internal: include <headwise/headwise.hpp>"
#endif

#include "headwise/simd/pack.hpp"
#include "headwise/simd/x86_reduce.hpp"
#if defined(HEADWISE_X86_DISPATCH)
#include "headwise/simd/x86_pack.hpp"
#else
#include "headwise/simd/xsimd_pack.hpp"
#endif
#include "headwise/simd/exp.hpp"
#include "headwise/simd/convert.hpp"
#include "headwise/simd/transpose.hpp"
#include "headwise/kernels/row_tiles.hpp"
#include "headwise/kernels/online_softmax.hpp"
#include "headwise/kernels/flash_tiles.hpp"
#include "headwise/kernels/flash_bf16_tiles.hpp"
#include "headwise/kernels/flash.hpp"
#include "headwise/kernels/flash_backward.hpp"
#include "headwise/kernels/decode_stream.hpp"
#include "headwise/kernels/decode_tiles.hpp"
#include "headwise/kernels/decode_bf16_tiles.hpp"
#include "headwise/kernels/decode.hpp"

namespace headwise::HEADWISE_ISA_NS {

/// The path's kernels, as attention(), attention_varlen() and attention_backward() call them
/// (flash and decode over a list of calls: kernel_call.hpp) (the plain kernel, scalar, is not
/// per path: kernels/plain.hpp). P is simd::vector_pack<T> (the path's vector) or T
/// (the 1-wide scalar build of the same code). Defined out of the class, so not
/// inline: with HEADWISE_COMPILED_KERNELS a consumer's `extern template`
/// declarations (kernels/instances.hpp) keep it from compiling them.
struct kernel_path {
  static constexpr simd_isa isa = HEADWISE_ISA_ID;
  template <class T>
  using vector_pack = simd::vector_pack<T>;

  template <class P, class T, class S, class Q, class O>
  static void flash(detail::kernel_calls<T, S, Q, O> calls);
  template <class P, class T, class S, class Q, class O>
  static void decode(detail::kernel_calls<T, S, Q, O> calls);
  template <class P, class T>
  static void backward(const detail::backward_call<T>& call);
};

template <class P, class T, class S, class Q, class O>
void kernel_path::flash(detail::kernel_calls<T, S, Q, O> calls) {
  kernels::flash::run<P>(calls);
}

template <class P, class T, class S, class Q, class O>
void kernel_path::decode(detail::kernel_calls<T, S, Q, O> calls) {
  kernels::decode::run<P>(calls);
}

template <class P, class T>
void kernel_path::backward(const detail::backward_call<T>& call) {
  kernels::flash_backward::run<P>(call);
}

}  // namespace headwise::HEADWISE_ISA_NS

#include "headwise/kernels/instances.hpp"
