// tests/fuzz/byte_source.hpp — the fuzzer's bytes, read as choices.
//
// Every structural choice of a case (shapes, layouts, options, which kernel) is a
// few bytes read in order, so libFuzzer's mutations move one choice at a time and a
// crash file replays exactly; once the bytes run out every choice reads 0 (the
// smallest case). Tensor values are not bytes: they come from a generator seeded
// by four of them, so a case stays a few dozen bytes whatever its size.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <random>

namespace hwfuzz {

class byte_source {
 public:
  byte_source(const std::uint8_t* data, std::size_t size) : p_(data), end_(data + size) {}

  std::uint8_t byte() { return p_ < end_ ? *p_++ : 0; }
  bool flag() { return byte() & 1; }
  /// One of n choices (n >= 1): a byte, or two when n > 256.
  std::size_t below(std::size_t n) {
    const std::size_t x = n > 256 ? std::size_t(byte()) << 8 | byte() : byte();
    return x % n;
  }
  /// A value in [lo, hi].
  std::size_t in(std::size_t lo, std::size_t hi) { return lo + below(hi - lo + 1); }
  /// true with probability k/256 (false once the bytes run out).
  bool chance(unsigned k) { return byte() >= 256 - k; }
  std::uint32_t word() {
    std::uint32_t w = 0;
    for (int i = 0; i < 4; ++i) w = w << 8 | byte();
    return w;
  }

 private:
  const std::uint8_t* p_;
  const std::uint8_t* end_;
};

/// The values of one case: uniform in [-amp, amp], from a seed the bytes chose.
class value_source {
 public:
  explicit value_source(std::uint32_t seed) : gen_(seed) {}
  double uniform(double amp) { return std::uniform_real_distribution<double>(-amp, amp)(gen_); }
  std::size_t below(std::size_t n) { return std::uniform_int_distribution<std::size_t>(0, n - 1)(gen_); }
  bool chance(double p) { return std::uniform_real_distribution<double>(0, 1)(gen_) < p; }

 private:
  std::minstd_rand gen_;
};

}  // namespace hwfuzz
