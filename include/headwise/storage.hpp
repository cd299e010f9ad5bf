// headwise/storage.hpp — 16-bit storage types for K/V: half (IEEE binary16) and bfloat16.
//
// Decode reads every K/V element once per step, so halving the bytes per element
// halves the step time (see kernels/decode.hpp). These types only *store*: there is
// no arithmetic on them; kernels widen to float on load (F16C or a shift, in
// simd/convert.hpp) and accumulate in fp32. Both are one template, storage16: a
// trivially copyable 2-byte struct holding the raw bits, so a std::vector<half> is
// the same memory as a uint16_t buffer from PyTorch, ggml or safetensors (from_bits
// / bits). Its Format (detail::binary16_format, bfloat16_format) converts:
//
//   half(float)      round to nearest, ties to even; |x| >= 65520 → ±Inf; results
//                    below 2^-14 become subnormals (steps of 2^-24), below 2^-25 → ±0;
//                    NaN stays NaN (quiet, top payload bits kept), ±Inf stays ±Inf.
//   float(half)      exact (every binary16 value is a float); a signalling NaN comes
//                    back quiet, as F16C's vcvtph2ps does.
//   bfloat16(float)  round to nearest even on the top 16 bits of the float; overflow
//                    rounds to ±Inf naturally; NaN stays a quiet NaN.
//   float(bfloat16)  exact: the 16 bits are the top half of the float.
// The conversions are portable bit manipulation (no FPU rounding mode, no SIMD), so
// they are the oracle for the vector converters.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

namespace headwise {

namespace detail {

inline std::uint32_t float_bits(float f) noexcept {
  std::uint32_t x;
  std::memcpy(&x, &f, sizeof x);
  return x;
}

inline float bits_float(std::uint32_t x) noexcept {
  float f;
  std::memcpy(&f, &x, sizeof f);
  return f;
}

/// Shifts m right by s (1 <= s <= 31) rounding to nearest, ties to even.
inline std::uint32_t shift_round_even(std::uint32_t m, unsigned s) noexcept {
  const std::uint32_t kept = m >> s, rest = m & ((1u << s) - 1), halfway = 1u << (s - 1);
  return kept + ((rest > halfway || (rest == halfway && (kept & 1u))) ? 1u : 0u);
}

/// IEEE 754 binary16: 1 sign, 5 exponent, 10 mantissa bits; max 65504, eps 2^-10.
struct binary16_format {
  static constexpr int digits = 11;  ///< significand bits, the implicit one included

  static std::uint16_t from_float(float f) noexcept {
    const std::uint32_t x = float_bits(f);
    const auto sign = static_cast<std::uint16_t>((x >> 16) & 0x8000u);
    const std::uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u)  // Inf, or NaN made quiet with its top 9 payload bits
      return static_cast<std::uint16_t>(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u | ((ax >> 13) & 0x3ffu) : 0u));
    if (ax >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // >= 65520: rounds past 65504
    if (ax >= 0x38800000u)  // normal half: rebias the exponent (127 → 15), round 13 bits away
      return static_cast<std::uint16_t>(sign | shift_round_even(ax - (112u << 23), 13));
    if (ax <= 0x33000000u) return sign;  // <= 2^-25: the tie at 2^-25 goes to the even 0
    // subnormal half: n · 2^-24 with n = mantissa · 2^(e − 126), e = biased float exponent
    const std::uint32_t e = ax >> 23, m = (ax & 0x7fffffu) | 0x800000u;
    return static_cast<std::uint16_t>(sign | shift_round_even(m, 126u - e));
  }

  static float to_float(std::uint16_t h) noexcept {
    const std::uint32_t sign = std::uint32_t(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0x1f) return bits_float(sign | 0x7f800000u | (m ? 0x400000u | (m << 13) : 0u));
    if (e == 0) {  // ±0 or subnormal m · 2^-24, exact in float
      const float mag = static_cast<float>(m) * 5.9604644775390625e-8f;
      return bits_float(sign | float_bits(mag));
    }
    return bits_float(sign | ((e + 112u) << 23) | (m << 13));
  }
};

/// bfloat16: the top 16 bits of a float (8 exponent, 7 mantissa bits); eps 2^-7.
struct bfloat16_format {
  static constexpr int digits = 8;

  static std::uint16_t from_float(float f) noexcept {
    const std::uint32_t x = float_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((x >> 16) | 0x40u);  // quiet NaN
    return static_cast<std::uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
  }

  static float to_float(std::uint16_t b) noexcept { return bits_float(std::uint32_t(b) << 16); }
};

}  // namespace detail

/// A 16-bit storage type: the raw bits of Format, converted to and from float only.
/// half and bfloat16 derive from it (CRTP, so that from_bits returns them) rather
/// than alias it: a type alias would make GCC's -Wshadow flag every local `half`.
template <class Derived, class Format>
struct storage16 {
  using format = Format;
  std::uint16_t bits;

  storage16() noexcept = default;  // uninitialised, like float
  explicit storage16(float f) noexcept : bits(Format::from_float(f)) {}
  explicit operator float() const noexcept { return Format::to_float(bits); }
  static Derived from_bits(std::uint16_t b) noexcept {
    Derived s;
    s.bits = b;
    return s;
  }
};

struct half : storage16<half, detail::binary16_format> {
  using storage16::storage16;
};

struct bfloat16 : storage16<bfloat16, detail::bfloat16_format> {
  using storage16::storage16;
};

static_assert(sizeof(half) == 2 && std::is_trivially_copyable_v<half> && std::is_standard_layout_v<half>);
static_assert(sizeof(bfloat16) == 2 && std::is_trivially_copyable_v<bfloat16> &&
              std::is_standard_layout_v<bfloat16>);

/// True for the 16-bit storage types (never a compute type).
template <class T>
inline constexpr bool is_storage_16 = std::is_same_v<T, half> || std::is_same_v<T, bfloat16>;

/// True for int8 K/V storage (quantize.hpp): std::int8_t with one fp32 scale per row.
template <class T>
inline constexpr bool is_storage_int8 = std::is_same_v<T, std::int8_t>;

namespace detail {

/// x as element type E: to a 16-bit type through float (one rounding, to nearest
/// even), from one exactly, between arithmetic types by static_cast.
template <class E, class X>
inline E convert_element(X x) noexcept {
  if constexpr (is_storage_16<E>)
    return E(static_cast<float>(x));
  else
    return static_cast<E>(x);
}

}  // namespace detail

}  // namespace headwise
