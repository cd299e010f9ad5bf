// Tests of the SIMD layer (simd/*.hpp) on every SIMD path this build carries: the
// horizontal reductions the decode kernel uses (reduce_add_rows, reduce_add,
// reduce_max, store_rows), keep_in_register, the selects, exp, the W×W block
// transpose of the flash packing and the 16-bit widening loads, against plain loops
// and the 1-wide path, on unaligned pointers (tests/simd_path_checks.inl).
// xsimd 8.1's AVX-512 float haddp put rows 2–5 and 10–13 in the wrong lanes: the
// row sums here are distinct integers, so any lane swap fails exactly.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include <headwise/headwise.hpp>

#define HEADWISE_TEST_PATH isa_baseline
#include "simd_path_checks.inl"
#undef HEADWISE_TEST_PATH

#if defined(HEADWISE_X86_DISPATCH)
HEADWISE_TARGET_BEGIN(HEADWISE_TARGETS_AVX2)
#define HEADWISE_TEST_PATH isa_avx2
#include "simd_path_checks.inl"
#undef HEADWISE_TEST_PATH
HEADWISE_TARGET_END

HEADWISE_TARGET_BEGIN(HEADWISE_TARGETS_AVX512)
#define HEADWISE_TEST_PATH isa_avx512
#include "simd_path_checks.inl"
#undef HEADWISE_TEST_PATH
HEADWISE_TARGET_END
#endif

namespace {

using headwise::simd_isa;

bool runs(simd_isa isa) {
  const auto a = headwise::available_isas();
  return std::find(a.begin(), a.end(), isa) != a.end();
}

TEST(simd_layer, baseline_path) { path_checks::isa_baseline::all(); }

#if defined(HEADWISE_X86_DISPATCH)
TEST(simd_layer, avx2_path) {
  if (!runs(simd_isa::avx2)) GTEST_SKIP() << "this CPU has no AVX2 + FMA + F16C";
  path_checks::isa_avx2::all();
}

TEST(simd_layer, avx512_path) {
  if (!runs(simd_isa::avx512)) GTEST_SKIP() << "this CPU has no AVX-512 F/BW/VL/DQ";
  path_checks::isa_avx512::all();
}
#endif

TEST(simd_layer, every_path_the_cpu_runs_is_available) {
  const auto& f = headwise::detail::this_cpu().features;
#if defined(HEADWISE_X86_DISPATCH)
  EXPECT_EQ(runs(simd_isa::avx2), f.avx2 && f.fma && f.f16c);
  EXPECT_EQ(runs(simd_isa::avx512), f.avx2 && f.fma && f.f16c && f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq);
  EXPECT_EQ(runs(simd_isa::avx512_bf16), runs(simd_isa::avx512) && f.avx512bf16);
#else
  (void)f;
  EXPECT_EQ(headwise::available_isas().size(), 1u);
#endif
  EXPECT_TRUE(runs(simd_isa::baseline));
}

}  // namespace
