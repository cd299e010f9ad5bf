// headwise/key_blocks.hpp — K stored in blocks of 16 keys, transposed within a block.
//
//   key_blocks_view<T>: K of shape [batch, heads, seq, dim] stored, per (batch, head),
//   as ceil(seq / 16) blocks of dim × 16 elements: element (b, h, s, d) sits at
//     data[b·batch_stride + h·head_stride + (s / 16)·16·dim + d·16 + s % 16]
//   so one 64-byte load (16 floats, or 16 halves widened) holds coordinate d of 16
//   consecutive keys. The last block is stored whole: its keys beyond seq are padding
//   that kernels read but never use (pack_key_blocks writes zeros there).
//
// Why. A decode step's scores are dot products of a few query rows with every key.
// With K in rows each dot product ends in a horizontal sum across a vector, and the
// score tile reads several rows pack by pack (out of address order, which some
// cores' prefetchers lose: docs/decode-notes.md). With K in these blocks the tile
// broadcasts q[r][d] against 16 keys at once: no horizontal sums, and each block is
// read front to back. Measured on a Zen 4: decode steps at KV 32768 13–20 % faster,
// fp16 and fp32 (docs/benchmarks.md).
//
// attention() takes a key_blocks_view in place of k; the decode kernel reads it
// directly, every other kernel from a row-major copy made for the call. So do the
// probabilities and statistics of inspect.hpp and diagnostics.hpp.
#pragma once

#ifndef HEADWISE_INTERNAL
#define HEADWISE_INTERNAL 1
#endif

#include <cstddef>
#include <type_traits>
#include <vector>

#include "headwise/detail/checks.hpp"
#include "headwise/tensor.hpp"

namespace headwise {

/// Keys per block of a key_blocks_view.
inline constexpr std::size_t key_block_keys = 16;

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
      : data_(data),
        batch_(batch),
        heads_(heads),
        seq_(seq),
        dim_(dim),
        batch_stride_(batch_stride),
        head_stride_(head_stride) {}

  /// A view of mutable data converts to a view of const data.
  template <class U, class = std::enable_if_t<std::is_same_v<const U, T> && !std::is_same_v<U, T>>>
  constexpr key_blocks_view(const key_blocks_view<U>& other) noexcept
      : key_blocks_view(other.data(), other.batch(), other.heads(), other.seq(), other.dim(),
                        other.batch_stride(), other.head_stride()) {}

  constexpr T* data() const noexcept { return data_; }
  constexpr std::size_t batch() const noexcept { return batch_; }
  constexpr std::size_t heads() const noexcept { return heads_; }
  constexpr std::size_t seq() const noexcept { return seq_; }
  constexpr std::size_t dim() const noexcept { return dim_; }
  constexpr index batch_stride() const noexcept { return batch_stride_; }
  constexpr index head_stride() const noexcept { return head_stride_; }
  /// Blocks per (batch, head): ceil(seq / key_block_keys).
  constexpr std::size_t blocks() const noexcept { return (seq_ + key_block_keys - 1) / key_block_keys; }

  /// Pointer to block i of (b, h): dim × key_block_keys elements, coordinate-major.
  constexpr T* block(std::size_t b, std::size_t h, std::size_t i) const noexcept {
    return data_ + static_cast<index>(b) * batch_stride_ + static_cast<index>(h) * head_stride_ +
           static_cast<index>(i * key_block_keys * dim_);
  }
  constexpr T& operator()(std::size_t b, std::size_t h, std::size_t s, std::size_t d) const noexcept {
    return block(b, h, s / key_block_keys)[d * key_block_keys + s % key_block_keys];
  }

  /// The memory the view spans, as a row-major view of blocks()·16 rows of dim
  /// elements per (batch, head): what it reads, for bounds and alias checks.
  constexpr tensor_view<T> storage() const noexcept {
    return tensor_view<T>(data_, batch_, heads_, blocks() * key_block_keys, dim_, batch_stride_, head_stride_,
                          static_cast<index>(dim_));
  }

 private:
  T* data_ = nullptr;
  std::size_t batch_ = 0, heads_ = 0, seq_ = 0, dim_ = 0;
  index batch_stride_ = 0, head_stride_ = 0;
};

/// Elements of dense key-block storage for [batch, heads, seq, dim] (padding included).
constexpr std::size_t key_blocks_elements(std::size_t batch, std::size_t heads, std::size_t seq,
                                          std::size_t dim) noexcept {
  return batch * heads * ((seq + key_block_keys - 1) / key_block_keys) * key_block_keys * dim;
}

/// View of dense key-block storage, heads after batches: key_blocks_elements(...) elements.
template <class T>
constexpr key_blocks_view<T> key_blocks_bhsd(T* data, std::size_t batch, std::size_t heads, std::size_t seq,
                                             std::size_t dim) noexcept {
  using index = std::ptrdiff_t;
  const auto per_head = static_cast<index>(key_blocks_elements(1, 1, seq, dim));
  return key_blocks_view<T>(data, batch, heads, seq, dim, static_cast<index>(heads) * per_head, per_head);
}

namespace detail {

/// Validates a key-block view as the memory it spans (its storage()); returns its extent.
template <class T>
extent check_view(const char* where, const char* name, const key_blocks_view<T>& k) {
  return check_view(where, name, k.storage());
}

/// check_attention with K in key blocks: k's shape and options as for rows, its
/// extent the blocks' whole storage (padding included).
template <class TQ, class TK, class TV, class TO>
void check_attention(const char* where, const tensor_view<TQ>& q, const key_blocks_view<TK>& k,
                     const tensor_view<TV>& v, const tensor_view<TO>& out, const attention_options& opt) {
  const extent storage = check_view(where, "k", k);
  check_pairs(where, q, k.heads(), k.seq(), v, out, &opt);  // the views agree before the options are read
  const tensor_view<TK> shape(k.data(), k.batch(), k.heads(), k.seq(), k.dim(), k.batch_stride(), k.head_stride(),
                              static_cast<std::ptrdiff_t>(k.dim()));  // k's shape, inside that storage
  score_extents e = check_scores(where, q, shape, opt);
  e.k = storage;
  check_values_and_outputs(where, e, q, v, out);
}

template <class TR, class TB>
void check_same_keys(const char* where, const tensor_view<TR>& rows, const key_blocks_view<TB>& blocks) {
  expect_equal(where, "rows.batch() must equal blocks.batch()", blocks.batch(), rows.batch());
  expect_equal(where, "rows.heads() must equal blocks.heads()", blocks.heads(), rows.heads());
  expect_equal(where, "rows.seq() must equal blocks.seq()", blocks.seq(), rows.seq());
  expect_equal(where, "rows.dim() must equal blocks.dim()", blocks.dim(), rows.dim());
}

}  // namespace detail

/// Copies K from rows into key blocks, zeros in the last block's padding keys.
/// The two must not overlap.
template <class TR, class T>
void pack_key_blocks(const tensor_view<TR>& rows, const key_blocks_view<T>& blocks) {
  static_assert(std::is_same_v<std::remove_const_t<TR>, T>, "rows and blocks must hold one element type");
  const char* where = "pack_key_blocks";
  detail::check_same_keys(where, rows, blocks);
  const detail::extent in = detail::check_view(where, "rows", rows), out = detail::check_view(where, "blocks", blocks);
  detail::check_no_self_overlap(where, "blocks", blocks.storage());
  if (out.overlaps(in)) detail::fail(where, "blocks overlaps the memory of rows");
  const std::size_t S = rows.seq(), D = rows.dim(), Sp = blocks.blocks() * key_block_keys;
  for (std::size_t b = 0; b < rows.batch(); ++b)
    for (std::size_t h = 0; h < rows.heads(); ++h)
      for (std::size_t s = 0; s < Sp; ++s)
        for (std::size_t d = 0; d < D; ++d) blocks(b, h, s, d) = s < S ? rows(b, h, s, d) : T(0.0f);
}

/// Copies K from key blocks into rows. The two must not overlap.
template <class TB, class T>
void unpack_key_blocks(const key_blocks_view<TB>& blocks, const tensor_view<T>& rows) {
  static_assert(std::is_same_v<std::remove_const_t<TB>, T>, "blocks and rows must hold one element type");
  const char* where = "unpack_key_blocks";
  detail::check_same_keys(where, rows, blocks);
  const detail::extent in = detail::check_view(where, "blocks", blocks), out = detail::check_view(where, "rows", rows);
  detail::check_no_self_overlap(where, "rows", rows);
  if (out.overlaps(in)) detail::fail(where, "rows overlaps the memory of blocks");
  for (std::size_t b = 0; b < rows.batch(); ++b)
    for (std::size_t h = 0; h < rows.heads(); ++h)
      for (std::size_t s = 0; s < rows.seq(); ++s)
        for (std::size_t d = 0; d < rows.dim(); ++d) rows(b, h, s, d) = blocks(b, h, s, d);
}

namespace detail {

/// K of a key_blocks_view copied into dense rows that it owns, for the code that
/// reads K by rows: the kernels other than decode, inspect.hpp and diagnostics.hpp.
/// Checks the blocks first (an error names `where`), since the copy reads all of
/// them. Nk·Dk element moves per kv head, small beside what the callers compute.
template <class S>
class key_rows {
 public:
  template <class TB>
  key_rows(const char* where, const key_blocks_view<TB>& blocks)
      : values_(checked_elements(where, blocks)),
        rows_(bhsd(values_.data(), blocks.batch(), blocks.heads(), blocks.seq(), blocks.dim())) {
    unpack_key_blocks(blocks, rows_);
  }
  key_rows(const key_rows&) = delete;
  key_rows& operator=(const key_rows&) = delete;

  tensor_view<const S> view() const noexcept { return rows_; }

 private:
  template <class TB>
  static std::size_t checked_elements(const char* where, const key_blocks_view<TB>& blocks) {
    check_view(where, "k", blocks);
    return blocks.batch() * blocks.heads() * blocks.seq() * blocks.dim();
  }

  std::vector<S> values_;
  tensor_view<S> rows_;
};

template <class TB>
key_rows(const char*, const key_blocks_view<TB>&) -> key_rows<std::remove_const_t<TB>>;

}  // namespace detail

}  // namespace headwise
