// headwise/detail/aligned_allocator.hpp — std::allocator with a fixed alignment.
//
// kv_cache (and the benchmarks' K/V buffers) use 64-byte alignment: a plain large
// std::vector starts 16 bytes past a page boundary, so every 512-byte K/V row then
// spans 9 cache lines instead of 8 and every other 32-byte load splits a line
// (measured ~6% slower decode at Hq 32, Hkv 8, d 128, KV 32768).
#pragma once

#include <cstddef>
#include <new>
#include <vector>

namespace headwise::detail {

template <class T, std::size_t Align>
struct aligned_allocator {
  static_assert(Align >= alignof(T) && (Align & (Align - 1)) == 0, "alignment: a power of two >= alignof(T)");
  using value_type = T;
  template <class U>
  struct rebind {
    using other = aligned_allocator<U, Align>;
  };

  aligned_allocator() noexcept = default;
  template <class U>
  aligned_allocator(const aligned_allocator<U, Align>&) noexcept {}

  T* allocate(std::size_t n) {
    if (n > std::size_t(-1) / sizeof(T)) throw std::bad_array_new_length();
    return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(Align)));
  }
  void deallocate(T* p, std::size_t) noexcept { ::operator delete(p, std::align_val_t(Align)); }

  template <class U>
  bool operator==(const aligned_allocator<U, Align>&) const noexcept { return true; }
  template <class U>
  bool operator!=(const aligned_allocator<U, Align>&) const noexcept { return false; }
};

/// The K/V buffer type: a vector whose data starts on a cache line.
template <class T>
using cache_line_vector = std::vector<T, aligned_allocator<T, 64>>;

}  // namespace headwise::detail
