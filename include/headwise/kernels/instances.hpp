// headwise/kernels/instances.hpp — every kernel instance attention() can call, on
// this path: declared `extern template` under HEADWISE_COMPILED_KERNELS (the
// consumer's translation units then compile none of them), defined under
// HEADWISE_INSTANTIATE_KERNELS (src/headwise_kernels.cpp, compiled once: CMake's
// headwise::kernels target). Neither macro: header-only, each TU compiles what it calls.
// HEADWISE_INSTANTIATE_KERNELS is a mask of paths (bit 0 baseline, 1 avx2, 2 avx512,
// 3 avx512_bf16, which holds the bfloat16 instances only; 1 without dispatch) and of
// the 1-wide scalar build (bit 4), so a build can compile them in parallel
// translation units: the baseline vector and scalar instances together took ~110 s
// under ASan, twice any other path.
//
// The set: q/out float with K/V float, half, bfloat16 or int8; q/K/V half or bfloat16 with
// out of that type or float; double with double (K in rows or key blocks: the kernels
// take either through key_view); the path's
// vector, and on the baseline path the 1-wide scalar build (force_scalar); the
// backward for float and double (K/V in q's type).
//
// Per-path header (kernels/paths.hpp): no include guard, namespace headwise::<path>.
#ifndef HEADWISE_ISA_NS
#error "headwise/kernels/* is internal: include <headwise/headwise.hpp>"
#endif

#if defined(HEADWISE_INSTANTIATE_KERNELS) || defined(HEADWISE_COMPILED_KERNELS)

#if defined(HEADWISE_INSTANTIATE_KERNELS)
#define HEADWISE_INSTANCE template
#define HEADWISE_INSTANCE_HERE ((HEADWISE_INSTANTIATE_KERNELS >> HEADWISE_ISA_INDEX) & 1)
#define HEADWISE_SCALAR_INSTANCE_HERE ((HEADWISE_INSTANTIATE_KERNELS >> 4) & 1)
#else
#define HEADWISE_INSTANCE_HERE 1
#define HEADWISE_SCALAR_INSTANCE_HERE 1
#define HEADWISE_INSTANCE extern template
#endif

#define HEADWISE_KERNEL_INSTANCES(P, T, S, Q, O)                                                    \
  HEADWISE_INSTANCE void kernel_path::flash<P, T, S, Q, O>(detail::kernel_calls<T, S, Q, O>); \
  HEADWISE_INSTANCE void kernel_path::decode<P, T, S, Q, O>(detail::kernel_calls<T, S, Q, O>);
#define HEADWISE_BACKWARD_INSTANCE(P, T) \
  HEADWISE_INSTANCE void kernel_path::backward<P, T>(const detail::backward_call<T>&);
#define HEADWISE_TYPE_INSTANCES(F, D)              \
  HEADWISE_BACKWARD_INSTANCE(F, float)             \
  HEADWISE_BACKWARD_INSTANCE(D, double)            \
  HEADWISE_KERNEL_INSTANCES(F, float, float, float, float)          \
  HEADWISE_KERNEL_INSTANCES(F, float, half, float, float)           \
  HEADWISE_KERNEL_INSTANCES(F, float, bfloat16, float, float)       \
  HEADWISE_KERNEL_INSTANCES(F, float, std::int8_t, float, float)    \
  HEADWISE_KERNEL_INSTANCES(F, float, half, half, half)             \
  HEADWISE_KERNEL_INSTANCES(F, float, half, half, float)            \
  HEADWISE_KERNEL_INSTANCES(F, float, bfloat16, bfloat16, bfloat16) \
  HEADWISE_KERNEL_INSTANCES(F, float, bfloat16, bfloat16, float)    \
  HEADWISE_KERNEL_INSTANCES(D, double, double, double, double)

#if HEADWISE_INSTANCE_HERE && HEADWISE_PATH_AVX512_BF16
namespace headwise::HEADWISE_ISA_NS {  // bfloat16 inputs only (kernels/dispatch.hpp)
HEADWISE_KERNEL_INSTANCES(simd::vector_pack<float>, float, bfloat16, bfloat16, bfloat16)
HEADWISE_KERNEL_INSTANCES(simd::vector_pack<float>, float, bfloat16, bfloat16, float)
}  // namespace headwise::HEADWISE_ISA_NS
#elif HEADWISE_INSTANCE_HERE
namespace headwise::HEADWISE_ISA_NS {
HEADWISE_TYPE_INSTANCES(simd::vector_pack<float>, simd::vector_pack<double>)
}  // namespace headwise::HEADWISE_ISA_NS
#endif
#if HEADWISE_ISA_INDEX == 0 && HEADWISE_SCALAR_INSTANCE_HERE
namespace headwise::HEADWISE_ISA_NS {
HEADWISE_TYPE_INSTANCES(float, double)
}  // namespace headwise::HEADWISE_ISA_NS
#endif

#undef HEADWISE_TYPE_INSTANCES
#undef HEADWISE_KERNEL_INSTANCES
#undef HEADWISE_BACKWARD_INSTANCE
#undef HEADWISE_INSTANCE
#undef HEADWISE_INSTANCE_HERE
#undef HEADWISE_SCALAR_INSTANCE_HERE

#endif
