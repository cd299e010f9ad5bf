// headwise/kv_cache.hpp — an owning K/V cache for decode.
//
//   kv_cache<T> cache(B, Hkv, capacity, Dk, Dv);    T: float, double, half, bfloat16, int8_t
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
//   kv_cache<std::int8_t>: append quantizes each (token, kv head) row of float,
//   double, half or bfloat16 K/V (quantize.hpp: round(x / s), s = max|row| / 127) and
//   keeps s in fp32 beside it; the call then also sets
//     opts.k_scale = cache.key_scales();  opts.v_scale = cache.value_scales();  // [B, Hkv, size, 1]
//   A row costs D bytes plus 4 for its scale: 132 bytes at d 128, against 256 in
//   fp16. A NaN or ±inf in the input is an error (no int8 code holds it).
//
// Storage is [B, Hkv, capacity, D] (BHSD) for K and for V, allocated once: each
// (batch, kv head) owns a contiguous run of capacity rows, so keys() / values() of the
// filled part are plain strided views whose rows the decode kernel streams in order,
// and appending n tokens copies B·Hkv·n rows without moving old ones; int8 scales are
// [B, Hkv, capacity] alike. Decode with the cache uses causal_mode::bottom_right:
// query i of an n-token step sits at position size − n + i, the convention that makes
// prefill + steps equal one call. append() checks everything first and throws
// headwise::error (nothing written) on a shape mismatch, a non-finite value for int8,
// or when size + n would exceed capacity; the cache never reallocates (nor allocates
// after its constructor), so views taken earlier stay valid (their seq() is the size
// when taken). The K/V buffers start on a 64-byte boundary, and from 2 MiB on a 2 MiB
// one in transparent huge pages where Linux grants them (see detail/kv_buffer.hpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "headwise/detail/internal_begin.hpp"

#include "headwise/detail/checks.hpp"
#include "headwise/detail/integer.hpp"
#include "headwise/detail/kv_buffer.hpp"
#include "headwise/key_view.hpp"
#include "headwise/quantize.hpp"
#include "headwise/storage.hpp"
#include "headwise/tensor.hpp"

#include "headwise/detail/internal_end.hpp"

namespace headwise {

/// How a kv_cache stores K: in rows [B, Hkv, capacity, Dk], or in key blocks.
enum class kv_layout { rows, key_blocks };

template <class T, kv_layout Layout = kv_layout::rows>
class kv_cache {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double> || is_storage_16<T> ||
                    is_storage_int8<T>,
                "kv_cache holds float, double, half, bfloat16 or std::int8_t");

 public:
  using value_type = T;

  kv_cache(std::size_t batch, std::size_t kv_heads, std::size_t capacity, std::size_t key_dim,
           std::size_t value_dim)
      : batch_(batch), heads_(kv_heads), capacity_(capacity), dk_(key_dim), dv_(value_dim) {
    detail::check_kv_cache_shape(kv_heads, key_dim, value_dim);
    keys_.resize(std::size_t(detail::checked_product("kv_cache", "keys", {batch, kv_heads, key_rows(), key_dim})));
    values_.resize(
        std::size_t(detail::checked_product("kv_cache", "values", {batch, kv_heads, capacity, value_dim})));
    if constexpr (is_storage_int8<T>) {
      const auto rows =
          std::size_t(detail::checked_product("kv_cache", "the scales", {batch, kv_heads, capacity}));
      key_scales_.resize(rows);
      value_scales_.resize(rows);
    }
    if constexpr (Layout == kv_layout::key_blocks) key_row_.resize(key_dim);
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
      return view<T>(keys_.data(), dk_);
    } else {
      const auto per_head = std::ptrdiff_t(key_rows() * dk_);
      return key_blocks_view<const T>(keys_.data(), batch_, heads_, size_, dk_, std::ptrdiff_t(heads_) * per_head,
                                      per_head);
    }
  }
  tensor_view<const T> values() const noexcept { return view<T>(values_.data(), dv_); }

  /// int8 only: the fp32 scale of each row of keys() / values(), [B, Hkv, size, 1],
  /// for attention_options::k_scale / v_scale.
  template <class U = T, class = std::enable_if_t<is_storage_int8<U>>>
  tensor_view<const float> key_scales() const noexcept {
    return view<float>(key_scales_.data(), 1);
  }
  template <class U = T, class = std::enable_if_t<is_storage_int8<U>>>
  tensor_view<const float> value_scales() const noexcept {
    return view<float>(value_scales_.data(), 1);
  }

  /// Appends n = k.seq() tokens; throws (and changes nothing) on bad shapes, overflow,
  /// or for int8 a NaN or an infinity.
  template <class K, class V>
  void append(const tensor_view<K>& k, const tensor_view<V>& v) {
    detail::check_kv_append(k, v, batch_, heads_, dk_, dv_, size_, capacity_);
    if constexpr (is_storage_int8<T>) {
      detail::check_quantizable("kv_cache::append", "k", k);
      detail::check_quantizable("kv_cache::append", "v", v);
    }
    const std::size_t n = k.seq();
    if constexpr (Layout == kv_layout::rows)
      copy_rows(k, keys_.data(), dk_, key_scales_);
    else
      copy_key_blocks(k);
    copy_rows(v, values_.data(), dv_, value_scales_);
    size_ += n;
  }

 private:
  /// Key rows of storage per (batch, head): the capacity, in whole blocks for key blocks.
  std::size_t key_rows() const noexcept {
    if constexpr (Layout == kv_layout::rows) return capacity_;
    return detail::round_up(capacity_, key_block_keys);
  }

  /// Row s of (b, h) in the [B, Hkv, capacity] order of the rows and the scales.
  std::size_t row_index(std::size_t b, std::size_t h, std::size_t s) const noexcept {
    return (b * heads_ + h) * capacity_ + s;
  }

  /// Each new key row stored (converted or quantized) into key_row_, then scattered
  /// into its block column.
  template <class U>
  void copy_key_blocks(const tensor_view<U>& src) {
    const std::size_t B = key_block_keys;
    for (std::size_t b = 0; b < batch_; ++b)
      for (std::size_t h = 0; h < heads_; ++h) {
        T* head = keys_.data() + (b * heads_ + h) * key_rows() * dk_;
        for (std::size_t s = 0; s < src.seq(); ++s) {
          const std::size_t p = size_ + s;
          detail::store_kv_row(src.row(b, h, s), dk_, key_row_.data(), key_scales_, row_index(b, h, p));
          T* to = head + p / B * B * dk_ + p % B;
          for (std::size_t d = 0; d < dk_; ++d) to[d * B] = key_row_[d];
        }
      }
  }

  template <class E>
  tensor_view<const E> view(const E* data, std::size_t dim) const noexcept {
    const auto d = std::ptrdiff_t(dim), cap = std::ptrdiff_t(capacity_);
    return tensor_view<const E>(data, batch_, heads_, size_, dim, std::ptrdiff_t(heads_) * cap * d, cap * d,
                                d);
  }

  template <class U>
  void copy_rows(const tensor_view<U>& src, T* dst, std::size_t dim, detail::kv_buffer<float>& scales) {
    for (std::size_t b = 0; b < batch_; ++b)
      for (std::size_t h = 0; h < heads_; ++h)
        for (std::size_t s = 0; s < src.seq(); ++s) {
          const std::size_t r = row_index(b, h, size_ + s);
          detail::store_kv_row(src.row(b, h, s), dim, dst + r * dim, scales, r);
        }
  }

  std::size_t batch_, heads_, capacity_, dk_, dv_, size_ = 0;
  detail::kv_buffer<T> keys_, values_;  // rows start on cache lines when D·sizeof(T) % 64 == 0
  detail::kv_buffer<float> key_scales_, value_scales_;  // int8 only: [B, Hkv, capacity]
  std::vector<T> key_row_;                              // key blocks only: a row before its scatter
};

}  // namespace headwise
