// tests/kernel_instances.hpp — compile time only: the attention kernels are compiled
// once, in kernel_instances.cpp (the headwise_test_kernels library every test links),
// instead of in every test file that reaches attention().
//
// attention() dispatches at run time to the decode, flash and plain kernels, each with
// a SIMD and a scalar path, so every test file calling it compiled all of them for each
// K/V type it used. Measured in the test preset (ASan + UBSan, -O2 -g), CPU seconds of
// one core: attention_test 114 -> 34, all test and example files 1525 -> 873, of which
// kernel_instances.cpp is ~100 (the machine is shared: ±15%).
// The explicit instantiation declarations below stop that: the kernel entries are not
// inline, so GCC does not instantiate them for inlining either. A kernel or K/V type not
// listed here is still instantiated where it is used; a changed kernel signature fails
// to compile here until it is changed here too.
#pragma once

#include <headwise/headwise.hpp>

// HWTEST_KERNEL_INSTANCES(extern) declares, HWTEST_KERNEL_INSTANCES() defines, the three
// kernel entries for each (compute type, K/V type) pair attention() accepts (decode also
// with K in key blocks).
#define HWTEST_KERNEL_ENTRIES(EXTERN, T, S)                                                                  \
  EXTERN template void headwise::kernels::decode_attention<T, S, tensor_view<const S>>(                     \
      const tensor_view<const T>&, const tensor_view<const S>&, const tensor_view<const S>&,                 \
      const tensor_view<T>&, const tensor_view<float>&, const detail::score_rules<T>&, unsigned, bool);      \
  EXTERN template void headwise::kernels::decode_attention<T, S, key_blocks_view<const S>>(                  \
      const tensor_view<const T>&, const key_blocks_view<const S>&, const tensor_view<const S>&,             \
      const tensor_view<T>&, const tensor_view<float>&, const detail::score_rules<T>&, unsigned, bool);      \
  EXTERN template void headwise::kernels::flash_attention<T, S, S>(                                          \
      const tensor_view<const T>&, const tensor_view<const S>&, const tensor_view<const S>&,                 \
      const tensor_view<T>&, const tensor_view<float>&, const detail::score_rules<T>&, unsigned, bool);      \
  EXTERN template void headwise::kernels::plain_attention<T, S, S>(                                          \
      const tensor_view<const T>&, const tensor_view<const S>&, const tensor_view<const S>&,                 \
      const tensor_view<T>&, const tensor_view<float>&, const detail::score_rules<T>&, unsigned)

#define HWTEST_KERNEL_INSTANCES(EXTERN)                       \
  HWTEST_KERNEL_ENTRIES(EXTERN, float, float);                \
  HWTEST_KERNEL_ENTRIES(EXTERN, double, double);              \
  HWTEST_KERNEL_ENTRIES(EXTERN, float, headwise::half);       \
  HWTEST_KERNEL_ENTRIES(EXTERN, float, headwise::bfloat16)

namespace headwise {
HWTEST_KERNEL_INSTANCES(extern);
}  // namespace headwise
