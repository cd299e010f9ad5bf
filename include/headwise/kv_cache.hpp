// headwise/kv_cache.hpp — an owning K/V cache for decode.
//
//   kv_cache<T> cache(B, Hkv, capacity, Dk, Dv);    T: float, double, half, bfloat16
//   cache.append(k_new, v_new);   k_new [B, Hkv, n, Dk], v_new [B, Hkv, n, Dv], any layout
//                                 and any element type convertible to T (float → half
//                                 rounds to nearest even, as half(float) does)
//   attention(q, cache.keys(), cache.values(), out, opts);   keys() [B, Hkv, size, Dk]
//
//   kv_cache<T, kv_layout::key_blocks>: K stored in key blocks (key_view.hpp), 16
//   keys per block, transposed within it; keys() is then a key_blocks_view, which
//   attention() and the inspection functions also take, reading it in place. Decode
//   steps read it without horizontal sums and front to back (13–20 % faster at KV
//   32768 on a Zen 4). V is stored in rows either way.
//
// Storage is [B, Hkv, capacity, D] (BHSD) for K and for V, allocated once: each
// (batch, kv head) owns a contiguous run of capacity rows, so keys() / values() of the
// filled part are plain strided views whose rows the decode kernel streams in order,
// and appending n tokens copies B·Hkv·n rows without moving old ones. Decode with
// the cache uses causal_mode::bottom_right: query i of an n-token step sits at
// position size − n + i, the convention that makes prefill + steps equal one call.
// append() checks everything first and throws headwise::error (nothing written) on a
// shape mismatch or when size + n would exceed capacity; the cache never reallocates,
// so views taken earlier stay valid (their seq() is the size when taken). Both
// buffers start on a 64-byte boundary, and from 2 MiB on a 2 MiB one in transparent
// huge pages where Linux grants them (see detail/kv_buffer.hpp).
#pragma once

#include <cstddef>
#include <type_traits>
#include <vector>

#include "headwise/detail/internal_begin.hpp"

#include "headwise/detail/kv_buffer.hpp"
#include "headwise/detail/checks.hpp"
#include "headwise/detail/integer.hpp"
#include "headwise/key_view.hpp"
#include "headwise/storage.hpp"
#include "headwise/tensor.hpp"

#include "headwise/detail/internal_end.hpp"

namespace headwise {

/// How a kv_cache stores K: in rows [B, Hkv, capacity, Dk], or in key blocks.
enum class kv_layout { rows, key_blocks };

template <class T, kv_layout Layout = kv_layout::rows>
class kv_cache {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double> || is_storage_16<T>,
                "kv_cache holds float, double, half or bfloat16");

 public:
  using value_type = T;

  kv_cache(std::size_t batch, std::size_t kv_heads, std::size_t capacity, std::size_t key_dim,
           std::size_t value_dim)
      : batch_(batch), heads_(kv_heads), capacity_(capacity), dk_(key_dim), dv_(value_dim) {
    detail::check_kv_cache_shape(kv_heads, key_dim, value_dim);
    keys_.resize(std::size_t(detail::checked_product("kv_cache", "keys", {batch, kv_heads, key_rows(), key_dim})));
    values_.resize(
        std::size_t(detail::checked_product("kv_cache", "values", {batch, kv_heads, capacity, value_dim})));
  }
  kv_cache(std::size_t batch, std::size_t kv_heads, std::size_t capacity, std::size_t dim)
      : kv_cache(batch, kv_heads, capacity, dim, dim) {}

  std::size_t size() const noexcept { return size_; }
  std::size_t capacity() const noexcept { return capacity_; }
  std::size_t batch() const noexcept { return batch_; }
  std::size_t heads() const noexcept { return heads_; }
  std::size_t key_dim() const noexcept { return dk_; }
  std::size_t value_dim() const noexcept { return dv_; }

  /// Forgets every token (capacity and memory are kept).
  void clear() noexcept { size_ = 0; }

  /// K of the filled part: a tensor_view, or a key_blocks_view for kv_layout::key_blocks.
  auto keys() const noexcept {
    if constexpr (Layout == kv_layout::rows) {
      return view(keys_.data(), dk_);
    } else {
      const auto per_head = std::ptrdiff_t(key_rows() * dk_);
      return key_blocks_view<const T>(keys_.data(), batch_, heads_, size_, dk_, std::ptrdiff_t(heads_) * per_head,
                                      per_head);
    }
  }
  tensor_view<const T> values() const noexcept { return view(values_.data(), dv_); }

  /// Appends n = k.seq() tokens; throws (and changes nothing) on bad shapes or overflow.
  template <class K, class V>
  void append(const tensor_view<K>& k, const tensor_view<V>& v) {
    detail::check_kv_append(k, v, batch_, heads_, dk_, dv_, size_, capacity_);
    const std::size_t n = k.seq();
    if constexpr (Layout == kv_layout::rows)
      copy_rows(k, keys_.data(), dk_);
    else
      copy_key_blocks(k);
    copy_rows(v, values_.data(), dv_);
    size_ += n;
  }

 private:
  /// Key rows of storage per (batch, head): the capacity, in whole blocks for key blocks.
  std::size_t key_rows() const noexcept {
    if constexpr (Layout == kv_layout::rows) return capacity_;
    return detail::round_up(capacity_, key_block_keys);
  }

  template <class U>
  void copy_key_blocks(const tensor_view<U>& src) {
    const std::size_t B = key_block_keys;
    for (std::size_t b = 0; b < batch_; ++b)
      for (std::size_t h = 0; h < heads_; ++h) {
        T* head = keys_.data() + (b * heads_ + h) * key_rows() * dk_;
        for (std::size_t s = 0; s < src.seq(); ++s) {
          const U* from = src.row(b, h, s);
          const std::size_t p = size_ + s;
          T* to = head + p / B * B * dk_ + p % B;
          for (std::size_t d = 0; d < dk_; ++d) to[d * B] = detail::kv_element<T>(from[d]);
        }
      }
  }

  tensor_view<const T> view(const T* data, std::size_t dim) const noexcept {
    const auto d = std::ptrdiff_t(dim), cap = std::ptrdiff_t(capacity_);
    return tensor_view<const T>(data, batch_, heads_, size_, dim, std::ptrdiff_t(heads_) * cap * d, cap * d, d);
  }

  template <class U>
  void copy_rows(const tensor_view<U>& src, T* dst, std::size_t dim) {
    for (std::size_t b = 0; b < batch_; ++b)
      for (std::size_t h = 0; h < heads_; ++h)
        for (std::size_t s = 0; s < src.seq(); ++s) {
          const U* from = src.row(b, h, s);
          T* to = dst + ((b * heads_ + h) * capacity_ + size_ + s) * dim;
          for (std::size_t d = 0; d < dim; ++d) to[d] = detail::kv_element<T>(from[d]);
        }
  }

  std::size_t batch_, heads_, capacity_, dk_, dv_, size_ = 0;
  detail::kv_buffer<T> keys_, values_;  // rows start on cache lines when D·sizeof(T) % 64 == 0
};

}  // namespace headwise
