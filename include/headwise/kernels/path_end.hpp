// headwise/kernels/path_end.hpp — forgets the macros that describe one SIMD path
// (set by kernels/dispatch.hpp before each inclusion of kernels/paths.hpp).
#undef HEADWISE_ISA_NS
#undef HEADWISE_ISA_ID
#undef HEADWISE_ISA_INDEX
#undef HEADWISE_PATH_BYTES
#undef HEADWISE_PATH_AVX
#undef HEADWISE_PATH_AVX2
#undef HEADWISE_PATH_AVX512
#undef HEADWISE_PATH_AVX512_BF16
