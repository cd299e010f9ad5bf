// headwise/detail/kv_buffer.hpp — kv_cache's and paged_kv_cache's K/V storage: a
// vector on cache lines, and on huge pages from 2 MiB on; and the storing of an
// appended row as the cache's type (converted, or quantized to int8 with its scale).
//
// Cache lines: a plain large std::vector starts 16 bytes past a page boundary, so
// every 512-byte K/V row then spans 9 cache lines instead of 8 and every other
// 32-byte load splits a line (measured ~6% slower decode at Hq 32, Hkv 8, d 128,
// KV 32768). (Kernel scratch comes 64-byte aligned from the workspace.)
//
// Huge pages: decode streams the whole K/V cache every step, one 4 KiB page per 8
// fp32 rows at d 128, and on a VM every TLB miss is a two-level (guest and host)
// page walk. kv_buffer (kv_cache's storage, and the benchmarks' K/V and bandwidth
// buffers) therefore aligns buffers of 2 MiB and more to 2 MiB and asks Linux for
// transparent huge pages (madvise MADV_HUGEPAGE, which THP's default "madvise" mode
// honours; elsewhere, or when refused, the buffer simply stays in 4 KiB pages).
// Measured on a Zen 5 VM, Hq 32 Hkv 8 d 128 KV 32768, one thread, steps on 4 KiB
// and 2 MiB pages alternating in one process (medians): B 1 fp32 12.9 -> 11.6 ms,
// fp16 7.1 -> 6.5; B 2 fp16 30.4 -> 14.2 (fp32 alike); B 4 fp32 85 -> 50, fp16
// 48 -> 27. Steps on 4 KiB pages varied up to 2x between runs, on huge pages ~20%.
#pragma once

#ifndef HEADWISE_INTERNAL
#error "headwise/detail/* is internal: include <headwise/headwise.hpp>"
#endif

#include <cstddef>
#include <new>
#include <type_traits>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "headwise/quantize.hpp"
#include "headwise/storage.hpp"

namespace headwise::detail {

/// 64-byte alignment, and for buffers of at least huge_page_bytes 2 MiB alignment plus
/// madvise(MADV_HUGEPAGE) before the vector first touches them (see the top).
template <class T>
struct kv_allocator {
  static constexpr std::size_t line_bytes = 64, huge_page_bytes = std::size_t(2) << 20;
  static_assert(alignof(T) <= line_bytes);
  using value_type = T;
  template <class U>
  struct rebind {
    using other = kv_allocator<U>;
  };

  kv_allocator() noexcept = default;
  template <class U>
  kv_allocator(const kv_allocator<U>&) noexcept {}

  T* allocate(std::size_t n) {
    if (n > std::size_t(-1) / sizeof(T)) throw std::bad_array_new_length();
    const std::size_t bytes = n * sizeof(T);
    void* p = ::operator new(bytes, std::align_val_t(alignment(bytes)));
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (bytes >= huge_page_bytes) madvise(p, bytes, MADV_HUGEPAGE);  // advice only: failure leaves 4 KiB pages
#endif
    return static_cast<T*>(p);
  }
  void deallocate(T* p, std::size_t n) noexcept { ::operator delete(p, std::align_val_t(alignment(n * sizeof(T)))); }

  template <class U>
  bool operator==(const kv_allocator<U>&) const noexcept { return true; }
  template <class U>
  bool operator!=(const kv_allocator<U>&) const noexcept { return false; }

 private:
  static constexpr std::size_t alignment(std::size_t bytes) noexcept {
    return bytes < huge_page_bytes ? line_bytes : huge_page_bytes;
  }
};

/// The K/V buffer type: kv_cache's storage.
template <class T>
using kv_buffer = std::vector<T, kv_allocator<T>>;

/// An appended K/V element as the cache's T (kv_cache, paged_kv_cache): T itself
/// copied, a 16-bit type through float, anything else by static_cast (float → half
/// rounds to nearest even, as half(float) does).
template <class T, class U>
T kv_element(const U& x) noexcept {
  if constexpr (std::is_same_v<std::remove_const_t<U>, T>)
    return x;
  else if constexpr (is_storage_16<std::remove_const_t<U>>)
    return static_cast<T>(static_cast<float>(x));
  else
    return static_cast<T>(x);
}

/// Stores an appended row of n elements at to[0..n) as T: converted element by
/// element, or for int8 T quantized (quantize.hpp) with its scale at scales[row].
template <class T, class U>
void store_kv_row(const U* from, std::size_t n, T* to, kv_buffer<float>& scales, std::size_t row) noexcept {
  if constexpr (is_storage_int8<T>) {
    using X = std::remove_const_t<U>;
    static_assert(std::is_same_v<X, float> || std::is_same_v<X, double> || is_storage_16<X>,
                  "an int8 K/V cache appends float, double, half or bfloat16 K/V and quantizes it: "
                  "int8 input carries no scale");
    scales[row] = quantize_row_int8(from, n, to);
  } else {
    for (std::size_t d = 0; d < n; ++d) to[d] = kv_element<T>(from[d]);
  }
}

}  // namespace headwise::detail
