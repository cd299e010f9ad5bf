// The kernels compiled once: every instance attention() can call, on every SIMD path
// (kernels/instances.hpp). The CMake target headwise::kernels builds this file and
// defines HEADWISE_COMPILED_KERNELS for its users, whose translation units then
// declare those instances extern instead of compiling them. Predefine
// HEADWISE_INSTANTIATE_KERNELS to a mask of paths (1 baseline, 2 avx2, 4 avx512, 8
// avx512_bf16) and of the 1-wide scalar build (16) to split the work over several
// compilations of this file.
#ifndef HEADWISE_INSTANTIATE_KERNELS
#define HEADWISE_INSTANTIATE_KERNELS 31
#endif
#include <headwise/headwise.hpp>
