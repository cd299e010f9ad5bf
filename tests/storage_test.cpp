// Tests of the 16-bit storage types (storage.hpp) and their vector widening loads
// (simd/convert.hpp).
//
// The portable converter must round-trip all 65536 bit patterns (the vector
// widening loads of every SIMD path are checked against it in pack_test). Narrowing
// is checked at every rounding decision: for every finite half (and bfloat16) h, the
// value itself, the midpoint to the next value (ties go to the even neighbour) and
// one float ulp either side of that midpoint; and against F16C's vcvtps2ph when the
// build has it.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "test_util.hpp"

namespace {

using namespace hwtest;

float next_up(float f) { return std::nextafter(f, std::numeric_limits<float>::infinity()); }
float next_down(float f) { return std::nextafter(f, -std::numeric_limits<float>::infinity()); }

template <class S>
void check_round_trip() {
  for (std::uint32_t i = 0; i < 65536; ++i) {
    const S h = S::from_bits(std::uint16_t(i));
    const float f = static_cast<float>(h);
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(static_cast<float>(S(f)))) << i;
      EXPECT_EQ(S(f).bits & 0x8000u, i & 0x8000u) << "NaN sign, pattern " << i;
    } else {
      EXPECT_EQ(S(f).bits, i) << "pattern " << i << " = " << f;
    }
  }
}

TEST(storage_round_trip, every_non_nan_pattern_survives_float_and_back) {
  check_round_trip<half>();
  check_round_trip<bfloat16>();
}

/// Every rounding decision: midpoints between consecutive finite values of S go to
/// the one with an even last bit; one float ulp off a midpoint goes to the nearer.
/// (Overflow past the largest finite value is checked with the specials.)
template <class S>
void check_rounding(std::uint16_t largest_finite) {
  for (std::uint32_t i = 0; i < largest_finite; ++i) {
    const float lo = static_cast<float>(S::from_bits(std::uint16_t(i)));
    const float hi = static_cast<float>(S::from_bits(std::uint16_t(i + 1)));
    const float mid = lo + (hi - lo) / 2;  // exact: S has fewer mantissa bits than float
    const std::uint32_t even = (i & 1u) ? i + 1 : i;
    for (float sign : {1.0f, -1.0f}) {
      const std::uint32_t s = sign < 0 ? 0x8000u : 0u;
      EXPECT_EQ(S(sign * lo).bits, i | s) << lo;
      EXPECT_EQ(S(sign * mid).bits, even | s) << "midpoint " << mid;
      EXPECT_EQ(S(sign * next_down(mid)).bits, i | s) << "below midpoint " << mid;
      EXPECT_EQ(S(sign * next_up(mid)).bits, (i + 1) | s) << "above midpoint " << mid;
    }
  }
}

TEST(storage_narrow, rounds_to_nearest_even_at_every_midpoint) {
  check_rounding<half>(0x7bff);
  check_rounding<bfloat16>(0x7f7f);
}

TEST(storage_narrow, specials_overflow_and_subnormals) {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(half(inf).bits, 0x7c00u);
  EXPECT_EQ(half(-inf).bits, 0xfc00u);
  EXPECT_EQ(half(65504.0f).bits, 0x7bffu);
  EXPECT_EQ(half(next_down(65520.0f)).bits, 0x7bffu);
  EXPECT_EQ(half(65520.0f).bits, 0x7c00u);  // the midpoint to 2^16 ties to the even Inf
  EXPECT_EQ(half(1e30f).bits, 0x7c00u);
  EXPECT_EQ(half(-1e30f).bits, 0xfc00u);
  EXPECT_TRUE(std::isnan(static_cast<float>(half(nan))));
  EXPECT_TRUE(std::isnan(static_cast<float>(half(-nan))));
  std::uint32_t signalling = 0x7f800001u;  // payload only in bits a half drops: must stay NaN
  float snan;
  std::memcpy(&snan, &signalling, sizeof snan);
  EXPECT_TRUE(std::isnan(static_cast<float>(half(snan))));
  EXPECT_TRUE(std::isnan(static_cast<float>(bfloat16(snan))));
  const float tiny = std::ldexp(1.0f, -24);  // smallest half subnormal
  EXPECT_EQ(half(tiny).bits, 0x0001u);
  EXPECT_EQ(half(tiny / 2).bits, 0x0000u);           // tie to even 0
  EXPECT_EQ(half(next_up(tiny / 2)).bits, 0x0001u);
  EXPECT_EQ(half(-3 * tiny / 2).bits, 0x8002u);      // 1.5 ulp ties to 2
  EXPECT_EQ(half(std::ldexp(1.0f, -14)).bits, 0x0400u);  // smallest normal
  EXPECT_EQ(half(next_down(std::ldexp(1.0f, -14))).bits, 0x0400u);
  EXPECT_EQ(half(-0.0f).bits, 0x8000u);
  EXPECT_EQ(static_cast<float>(half::from_bits(0x03ff)), 1023 * tiny);
  EXPECT_EQ(bfloat16(std::numeric_limits<float>::max()).bits, 0x7f80u);
  EXPECT_EQ(bfloat16(-inf).bits, 0xff80u);
  EXPECT_EQ(bfloat16(std::numeric_limits<float>::denorm_min()).bits, 0x0000u);
  EXPECT_EQ(static_cast<float>(bfloat16(1.0f)), 1.0f);
}

#if defined(__F16C__)
// The hardware converter (round to nearest even) agrees on random floats spanning
// the half range, subnormals and overflow.
TEST(storage_narrow, matches_f16c_on_random_floats) {
  std::mt19937 gen(11);
  std::uniform_int_distribution<std::uint32_t> any_bits;
  std::size_t mismatches = 0;
  for (int n = 0; n < 200000; ++n) {
    std::uint32_t b = any_bits(gen);
    b = (b & 0x807fffffu) | ((100u + (b >> 23) % 60u) << 23);  // exponents 2^-27 .. 2^32
    float f;
    std::memcpy(&f, &b, sizeof f);
    const auto hw = std::uint16_t(_mm_extract_epi16(_mm_cvtps_ph(_mm_set1_ps(f), _MM_FROUND_TO_NEAREST_INT), 0));
    mismatches += half(f).bits != hw;
  }
  EXPECT_EQ(mismatches, 0u);
}
#endif

}  // namespace
