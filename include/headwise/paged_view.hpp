// headwise/paged_view.hpp — K and V of many sequences in fixed-size pages of one pool
// (the layout of vLLM's and FlashInfer's paged KV cache), and the row view kernels
// read one sequence of it through.
//
//   k_pages [num_pages, Hkv, page_size, Dk]   v_pages [num_pages, Hkv, page_size, Dv]
//   block_table [rows, pages_per_seq] int32   row r lists sequence r's pages in order
//   key s of batch entry b, head h:
//     k_pages(block_table[row_b][s / page_size], h, s % page_size, ·)
//   where row_b = seq_ids[b] when seq_ids is given, else b.
//
// The pools are tensor_views whose axes [batch, heads, seq, dim] hold [page, head,
// slot in page, coordinate], any strides. Sequence lengths are not part of the view:
// attention_varlen takes them as varlen_batch::seqused_k (varlen.hpp), and
// paged_kv_cache (paged_kv_cache.hpp) keeps them. A page size must be a multiple of
// key_block_keys (16): the decode kernel reads a page in blocks of 16 to 64 keys that
// never cross a page, so a page is read in place, front to back, and no call gathers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "headwise/detail/internal_begin.hpp"

#include "headwise/tensor.hpp"

#include "headwise/detail/internal_end.hpp"

namespace headwise {

/// K/V of a batch of sequences in pages; see the top of this header.
template <class T>
struct paged_kv_view {
  tensor_view<T> k_pages;                 ///< [num_pages, Hkv, page_size, Dk]
  tensor_view<T> v_pages;                 ///< [num_pages, Hkv, page_size, Dv]
  span<const std::int32_t> block_table;   ///< [rows][pages_per_seq], row-major
  std::size_t pages_per_seq = 0;          ///< the table's row length
  span<const std::int32_t> seq_ids;       ///< batch entry b reads table row seq_ids[b]; empty = row b
  /// int8 K/V only (quantize.hpp): each row's fp32 scale, [num_pages, Hkv, page_size, 1],
  /// paged as the rows are. Unset for any other storage.
  tensor_view<const float> k_scale_pages;
  tensor_view<const float> v_scale_pages;

  std::size_t page_size() const noexcept { return k_pages.seq(); }
  std::size_t heads() const noexcept { return k_pages.heads(); }
  std::size_t table_rows() const noexcept { return pages_per_seq ? block_table.size() / pages_per_seq : 0; }
  /// The table row of batch entry b.
  const std::int32_t* pages_of(std::size_t b) const noexcept {
    return block_table.data() + (seq_ids.empty() ? b : std::size_t(seq_ids[b])) * pages_per_seq;
  }
};

/// The rows of one sequence (or of several of equal length) in pages of a pool: the
/// view of K or V a kernel reads when the cache is paged. row(b, h, s) is the row of
/// key s, and the rows from s to the end of its page are contiguous at seq_stride().
template <class T>
class paged_rows_view {
 public:
  using element_type = T;
  using value_type = std::remove_cv_t<T>;
  using index = std::ptrdiff_t;

  constexpr paged_rows_view() noexcept = default;
  /// pool: [num_pages, heads, page_size, dim]; table: batch rows of table_stride page
  /// numbers each; seq: keys per batch entry.
  constexpr paged_rows_view(const tensor_view<T>& pool, const std::int32_t* table, std::size_t batch,
                            std::size_t table_stride, std::size_t seq) noexcept
      : pool_(pool), table_(table), batch_(batch), table_stride_(table_stride), seq_(seq) {}

  template <class U, class = std::enable_if_t<std::is_same_v<const U, T> && !std::is_same_v<U, T>>>
  constexpr paged_rows_view(const paged_rows_view<U>& o) noexcept
      : pool_(o.pool()), table_(o.table()), batch_(o.batch()), table_stride_(o.table_stride()), seq_(o.seq()) {}

  constexpr const tensor_view<T>& pool() const noexcept { return pool_; }
  constexpr const std::int32_t* table() const noexcept { return table_; }
  constexpr std::size_t table_stride() const noexcept { return table_stride_; }
  constexpr std::size_t batch() const noexcept { return batch_; }
  constexpr std::size_t heads() const noexcept { return pool_.heads(); }
  constexpr std::size_t seq() const noexcept { return seq_; }
  constexpr std::size_t dim() const noexcept { return pool_.dim(); }
  constexpr std::size_t page_size() const noexcept { return pool_.seq(); }
  /// Elements between consecutive rows within a page.
  constexpr index seq_stride() const noexcept { return pool_.seq_stride(); }
  /// Rows from s to the end of its page: contiguous at seq_stride().
  constexpr std::size_t contiguous_rows(std::size_t s) const noexcept { return page_size() - s % page_size(); }

  constexpr T* row(std::size_t b, std::size_t h, std::size_t s) const noexcept {
    const std::size_t ps = page_size();
    return pool_.row(std::size_t(table_[b * table_stride_ + s / ps]), h, s % ps);
  }
  constexpr T& operator()(std::size_t b, std::size_t h, std::size_t s, std::size_t d) const noexcept {
    return row(b, h, s)[d];
  }

 private:
  tensor_view<T> pool_;
  const std::int32_t* table_ = nullptr;
  std::size_t batch_ = 0, table_stride_ = 0, seq_ = 0;
};

}  // namespace headwise
