// headwise/kernels/instances.hpp — every kernel instance attention() can call, on
// this path: declared `extern template` under HEADWISE_COMPILED_KERNELS (the
// consumer's translation units then compile none of them), defined under
// HEADWISE_INSTANTIATE_KERNELS (src/headwise_kernels.cpp, compiled once: CMake's
// headwise::kernels target). Neither macro: header-only, each TU compiles what it calls.
// HEADWISE_INSTANTIATE_KERNELS is a mask of paths (bit 0 baseline, 1 avx2, 2 avx512;
// 1 without dispatch), so a build can compile the paths in parallel translation units.
//
// The set: q/out float with K/V float, half or bfloat16, and double with double
// (K in rows or key blocks: the kernels take either through key_view); the path's
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
#else
#define HEADWISE_INSTANCE_HERE 1
#define HEADWISE_INSTANCE extern template
#endif

#define HEADWISE_KERNEL_INSTANCES(P, T, S)                                                    \
  HEADWISE_INSTANCE void kernel_path::flash<P, T, S>(const detail::kernel_call<T, S>&); \
  HEADWISE_INSTANCE void kernel_path::decode<P, T, S>(const detail::kernel_call<T, S>&);
#define HEADWISE_BACKWARD_INSTANCE(P, T) \
  HEADWISE_INSTANCE void kernel_path::backward<P, T>(const detail::backward_call<T>&);
#define HEADWISE_TYPE_INSTANCES(F, D)              \
  HEADWISE_BACKWARD_INSTANCE(F, float)             \
  HEADWISE_BACKWARD_INSTANCE(D, double)            \
  HEADWISE_KERNEL_INSTANCES(F, float, float)       \
  HEADWISE_KERNEL_INSTANCES(F, float, half)        \
  HEADWISE_KERNEL_INSTANCES(F, float, bfloat16)    \
  HEADWISE_KERNEL_INSTANCES(D, double, double)

#if HEADWISE_INSTANCE_HERE
namespace headwise::HEADWISE_ISA_NS {
HEADWISE_TYPE_INSTANCES(simd::vector_pack<float>, simd::vector_pack<double>)
#if HEADWISE_ISA_INDEX == 0
HEADWISE_TYPE_INSTANCES(float, double)
#endif
}  // namespace headwise::HEADWISE_ISA_NS
#endif

#undef HEADWISE_TYPE_INSTANCES
#undef HEADWISE_KERNEL_INSTANCES
#undef HEADWISE_BACKWARD_INSTANCE
#undef HEADWISE_INSTANCE
#undef HEADWISE_INSTANCE_HERE

#endif
