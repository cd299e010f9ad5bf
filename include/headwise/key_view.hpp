// headwise/key_view.hpp — the two layouts of K, and the one view kernels read K through.
//
//   tensor_view<T>      K in rows [batch, heads, seq, dim] (tensor.hpp)
//   key_blocks_view<T>  K in blocks of 16 keys, transposed within a block: element
//                       (b, h, s, d) sits at
//     data[b·batch_stride + h·head_stride + (s / 16)·16·dim + d·16 + s % 16]
//                       so one 64-byte load (16 floats, or 16 halves widened) holds
//                       coordinate d of 16 consecutive keys. The last block is stored
//                       whole: its keys beyond seq are padding that kernels may read
//                       but never use (pack_key_blocks writes zeros there).
//   key_view<T>         either of them: what attention(), the inspection functions and
//                       every kernel take for K. Key j of (b, h) is key(b, h, j), its
//                       coordinate d at key(b, h, j)[d · coordinate_stride()]
//                       (stride 1 in rows, 16 in blocks); kernels branch on blocked()
//                       once per tile to pick their fast path for the layout. Inside
//                       the kernels it may also hold rows in pages (paged_view.hpp:
//                       attention_varlen over a paged cache builds those).
//   value_view<T>       V as the kernels read it: rows in a tensor_view, or in pages.
//
// Why key blocks. A decode step's scores are dot products of a few query rows with
// every key. With K in rows each dot product ends in a horizontal sum across a vector;
// with K in blocks the score tile broadcasts q[r][d] against 16 keys at once, no
// horizontal sums, and each block is read front to back (decode steps at KV 32768
// 13–20 % faster on a Zen 4, docs/benchmarks.md). The flash kernel packs its K panels
// straight from either layout, so no call copies K.
#pragma once

#include <cstddef>
#include <type_traits>

#include "headwise/detail/internal_begin.hpp"

#include "headwise/detail/integer.hpp"
#include "headwise/paged_view.hpp"
#include "headwise/tensor.hpp"

#include "headwise/detail/internal_end.hpp"

namespace headwise {

/// Keys per block of a key_blocks_view.
inline constexpr std::size_t key_block_keys = 16;

/// K in key blocks: its storage is a row-major view of blocks()·16 rows of dim
/// elements per (batch, head), of which the first seq() are keys.
template <class T>
class key_blocks_view {
 public:
  using element_type = T;
  using value_type = std::remove_cv_t<T>;
  using index = std::ptrdiff_t;

  constexpr key_blocks_view() noexcept = default;

  /// data points at block 0 of (batch 0, head 0); batch_stride and head_stride are
  /// element strides between the blocks of consecutive batches and heads.
  constexpr key_blocks_view(T* data, std::size_t batch, std::size_t heads, std::size_t seq, std::size_t dim,
                            index batch_stride, index head_stride) noexcept
      : storage_(data, batch, heads, detail::round_up(seq, key_block_keys), dim, batch_stride, head_stride,
                 static_cast<index>(dim)),
        seq_(seq) {}

  /// A view of mutable data converts to a view of const data.
  template <class U, class = std::enable_if_t<std::is_same_v<const U, T> && !std::is_same_v<U, T>>>
  constexpr key_blocks_view(const key_blocks_view<U>& other) noexcept
      : storage_(other.storage()), seq_(other.seq()) {}

  constexpr T* data() const noexcept { return storage_.data(); }
  constexpr std::size_t batch() const noexcept { return storage_.batch(); }
  constexpr std::size_t heads() const noexcept { return storage_.heads(); }
  constexpr std::size_t seq() const noexcept { return seq_; }
  constexpr std::size_t dim() const noexcept { return storage_.dim(); }
  constexpr index batch_stride() const noexcept { return storage_.batch_stride(); }
  constexpr index head_stride() const noexcept { return storage_.head_stride(); }
  /// Blocks per (batch, head): ceil(seq / key_block_keys).
  constexpr std::size_t blocks() const noexcept { return storage_.seq() / key_block_keys; }

  /// Pointer to block i of (b, h): dim × key_block_keys elements, coordinate-major.
  constexpr T* block(std::size_t b, std::size_t h, std::size_t i) const noexcept {
    return storage_.row(b, h, i * key_block_keys);
  }
  constexpr T& operator()(std::size_t b, std::size_t h, std::size_t s, std::size_t d) const noexcept {
    return block(b, h, s / key_block_keys)[d * key_block_keys + s % key_block_keys];
  }

  /// The memory the view spans: what it reads, for bounds and alias checks.
  constexpr const tensor_view<T>& storage() const noexcept { return storage_; }

 private:
  tensor_view<T> storage_;
  std::size_t seq_ = 0;
};

/// Elements of dense key-block storage for [batch, heads, seq, dim] (padding included).
constexpr std::size_t key_blocks_elements(std::size_t batch, std::size_t heads, std::size_t seq,
                                          std::size_t dim) noexcept {
  return batch * heads * detail::round_up(seq, key_block_keys) * dim;
}

/// View of dense key-block storage, heads after batches: key_blocks_elements(...) elements.
template <class T>
constexpr key_blocks_view<T> key_blocks_bhsd(T* data, std::size_t batch, std::size_t heads, std::size_t seq,
                                             std::size_t dim) noexcept {
  using index = std::ptrdiff_t;
  const auto per_head = static_cast<index>(key_blocks_elements(1, 1, seq, dim));
  return key_blocks_view<T>(data, batch, heads, seq, dim, static_cast<index>(heads) * per_head, per_head);
}

/// K in rows, in key blocks or (inside the kernels) in pages: a tensor_view, a
/// key_blocks_view or a paged_rows_view, converted implicitly.
template <class T>
class key_view {
 public:
  using element_type = T;
  using value_type = std::remove_cv_t<T>;
  using index = std::ptrdiff_t;

  constexpr key_view() noexcept = default;
  template <class U, class = std::enable_if_t<std::is_convertible_v<U*, T*>>>
  constexpr key_view(const tensor_view<U>& rows) noexcept : rows_(rows) {}
  template <class U, class = std::enable_if_t<std::is_convertible_v<U*, T*>>>
  constexpr key_view(const key_blocks_view<U>& blocks) noexcept : blocks_(blocks), layout_(layout::blocks) {}
  template <class U, class = std::enable_if_t<std::is_convertible_v<U*, T*>>>
  constexpr key_view(const paged_rows_view<U>& pages) noexcept : pages_(pages), layout_(layout::pages) {}
  template <class U, class = std::enable_if_t<std::is_convertible_v<U*, T*> && !std::is_same_v<U, T>>>
  constexpr key_view(const key_view<U>& other) noexcept
      : rows_(other.rows_), blocks_(other.blocks_), pages_(other.pages_), layout_(layout(int(other.layout_))) {}

  /// Whether K is in key blocks (blocks() holds it), in pages (pages() holds it) or
  /// in rows (rows() holds it).
  constexpr bool blocked() const noexcept { return layout_ == layout::blocks; }
  constexpr bool paged() const noexcept { return layout_ == layout::pages; }
  constexpr const tensor_view<T>& rows() const noexcept { return rows_; }
  constexpr const key_blocks_view<T>& blocks() const noexcept { return blocks_; }
  constexpr const paged_rows_view<T>& pages() const noexcept { return pages_; }

  constexpr std::size_t batch() const noexcept { return pick(&tensor_view<T>::batch, &key_blocks_view<T>::batch, &paged_rows_view<T>::batch); }
  constexpr std::size_t heads() const noexcept { return pick(&tensor_view<T>::heads, &key_blocks_view<T>::heads, &paged_rows_view<T>::heads); }
  constexpr std::size_t seq() const noexcept { return pick(&tensor_view<T>::seq, &key_blocks_view<T>::seq, &paged_rows_view<T>::seq); }
  constexpr std::size_t dim() const noexcept { return pick(&tensor_view<T>::dim, &key_blocks_view<T>::dim, &paged_rows_view<T>::dim); }

  /// Coordinate 0 of key s of (b, h); coordinate d is at key(b, h, s)[d · coordinate_stride()].
  constexpr T* key(std::size_t b, std::size_t h, std::size_t s) const noexcept {
    if (layout_ == layout::blocks) return blocks_.block(b, h, s / key_block_keys) + s % key_block_keys;
    return layout_ == layout::pages ? pages_.row(b, h, s) : rows_.row(b, h, s);
  }
  constexpr index coordinate_stride() const noexcept { return blocked() ? index(key_block_keys) : 1; }
  constexpr T& operator()(std::size_t b, std::size_t h, std::size_t s, std::size_t d) const noexcept {
    return key(b, h, s)[index(d) * coordinate_stride()];
  }

 private:
  template <class>
  friend class key_view;  // the converting constructor reads another key_view's layout
  enum class layout { rows, blocks, pages };
  template <class R, class B, class G>
  constexpr std::size_t pick(R r, B b, G g) const noexcept {
    if (layout_ == layout::blocks) return (blocks_.*b)();
    return layout_ == layout::pages ? (pages_.*g)() : (rows_.*r)();
  }

  tensor_view<T> rows_;
  key_blocks_view<T> blocks_;
  paged_rows_view<T> pages_;
  layout layout_ = layout::rows;
};

/// V as the kernels read it: rows in a tensor_view, or in pages; converted implicitly.
template <class T>
class value_view {
 public:
  using element_type = T;
  using value_type = std::remove_cv_t<T>;
  using index = std::ptrdiff_t;

  constexpr value_view() noexcept = default;
  template <class U, class = std::enable_if_t<std::is_convertible_v<U*, T*>>>
  constexpr value_view(const tensor_view<U>& rows) noexcept : rows_(rows) {}
  template <class U, class = std::enable_if_t<std::is_convertible_v<U*, T*>>>
  constexpr value_view(const paged_rows_view<U>& pages) noexcept : pages_(pages), paged_(true) {}

  constexpr bool paged() const noexcept { return paged_; }
  constexpr const tensor_view<T>& rows() const noexcept { return rows_; }
  constexpr const paged_rows_view<T>& pages() const noexcept { return pages_; }
  constexpr std::size_t batch() const noexcept { return paged_ ? pages_.batch() : rows_.batch(); }
  constexpr std::size_t heads() const noexcept { return paged_ ? pages_.heads() : rows_.heads(); }
  constexpr std::size_t seq() const noexcept { return paged_ ? pages_.seq() : rows_.seq(); }
  constexpr std::size_t dim() const noexcept { return paged_ ? pages_.dim() : rows_.dim(); }
  /// Elements between consecutive rows of one run (a page, or the whole sequence).
  constexpr index seq_stride() const noexcept { return paged_ ? pages_.seq_stride() : rows_.seq_stride(); }
  constexpr T* row(std::size_t b, std::size_t h, std::size_t s) const noexcept {
    return paged_ ? pages_.row(b, h, s) : rows_.row(b, h, s);
  }
  constexpr T& operator()(std::size_t b, std::size_t h, std::size_t s, std::size_t d) const noexcept {
    return row(b, h, s)[d];
  }

 private:
  tensor_view<T> rows_;
  paged_rows_view<T> pages_;
  bool paged_ = false;
};

namespace detail {

/// K arguments the public functions take: key_view_of<K> is the key_view a K converts to.
template <class K>
struct key_argument : std::false_type {};
template <class T>
struct key_argument<tensor_view<T>> : std::true_type {
  using element_type = T;
};
template <class T>
struct key_argument<key_blocks_view<T>> : key_argument<tensor_view<T>> {};
template <class T>
struct key_argument<key_view<T>> : key_argument<tensor_view<T>> {};

template <class K>
inline constexpr bool is_key_argument = key_argument<K>::value;

/// The const key_view of a K argument: what kernels and checks read.
template <class K>
using key_view_of = key_view<const std::remove_const_t<typename key_argument<K>::element_type>>;

}  // namespace detail

}  // namespace headwise
