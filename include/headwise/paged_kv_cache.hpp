// headwise/paged_kv_cache.hpp — an owning paged K/V cache for serving many sequences
// at once (the block tables of vLLM and FlashInfer): the data structure only; the
// kernels read its view() (paged_view.hpp).
//
//   paged_kv_cache<T> cache(num_pages, Hkv, page_size, Dk, Dv, max_sequences, max_pages_per_seq);
//                                       T: float, double, half, bfloat16, int8_t
//   std::int32_t a = cache.add_sequence();   a free slot, length 0
//   cache.append(seqs, k, v, cu_tokens);     k [1, Hkv, total, Dk], v [1, Hkv, total, Dv], any
//                                            strides and element type (as kv_cache::append):
//                                            seqs[i] gets tokens [cu_tokens[i], cu_tokens[i+1])
//   cache.append(a, k, v);                   one sequence: k [1, Hkv, n, Dk]
//   std::int32_t c = cache.fork(a);          c shares every page of a, nothing copied
//   cache.truncate(a, n);  cache.free(a);
//   cache.view(), cache.view(seqs)           paged_kv_view<const T>: table rows = slots
//   cache.lengths()                          one int32 per slot (0 when free): seqused_k
//
// int8 (paged_kv_cache<std::int8_t>): append quantizes each (token, kv head) row of
// float, double, half or bfloat16 K/V (quantize.hpp) and keeps its fp32 scale in a
// scale pool [num_pages, Hkv, page_size] beside each row pool, paged as the rows are:
// view() sets k_scale_pages and v_scale_pages, copy-on-write copies the scales with
// the rows, and a NaN or ±inf in the input is an error that changes nothing.
//
// Layout. K [num_pages, Hkv, page_size, Dk] and V [num_pages, Hkv, page_size, Dv],
// dense (FlashInfer's HND page layout): a page holds page_size consecutive tokens of
// one sequence, and in it each kv head's rows are one run of page_size·D elements, so
// decode streams a page head by head in blocks of key_block_keys (16) that never cross
// a page: page_size must be a multiple of 16. The block table is int32
// [max_sequences, max_pages_per_seq]; row r lists slot r's pages in order, and
// entries past its ceil(length / page_size) are -1. Page numbers, slot ids and
// lengths are int32 because block_table and seqused_k are int32 in vLLM and
// FlashAttention, and the kernels take exactly that. Everything (the pools, table,
// refcounts, the free-page stack at full capacity, append's scratch) is allocated in
// the constructor: add_sequence, append, fork, truncate and free allocate nothing,
// and the pools never move, so views taken earlier keep valid pointers (they see
// the table as it is now: mutate and read in turns, not concurrently).
//
// Why pages. kv_cache reserves its capacity for every batch entry; a server does not
// know how long a request will run. Here memory is taken a page at a time as a
// sequence grows, so the most one sequence wastes is its last page's unused rows
// (page_size − 1 of them), and a fork shares its parent's prefix instead of copying
// it (parallel sampling, beam search). A page costs page_size·Hkv·(Dk + Dv)·sizeof(T),
// plus page_size·Hkv·2·4 bytes of scales for int8: 64 KiB at 16 tokens, Hkv 8, D 128,
// fp16; 33 KiB in int8.
//
// Semantics.
// - Page choice is deterministic: free pages form a stack, page 0 on top at the
//   start; a released page goes back on top and is the next one taken (the most
//   recently used memory). add_sequence and fork take the lowest free slot. The
//   same calls give the same tables.
// - append checks everything before writing anything: ids in range, live, distinct;
//   cu_tokens; shapes; each sequence within max_pages_per_seq; and the pages the call
//   needs (new pages plus copy-on-write copies) <= free_pages(). Out of pages is a
//   headwise::error naming both counts, and the cache is exactly as before (a
//   scheduler then frees or preempts a sequence and retries, as vLLM's does); so is
//   a NaN or an infinity for int8, checked last, in one pass over k and v.
// - fork(s) gives a new slot whose table row is s's (refcount + 1 on each page):
//   no copy, free_pages() unchanged. Copy-on-write: a sequence writes only into its
//   last page, at row length % page_size and on; when that page is partly filled and
//   also held by another slot, the append first copies its filled rows (K and V, every
//   head, int8 scales with their rows) into a fresh page and moves to it, so parent
//   and child never see each other's new tokens, whichever appends first or both. A
//   full shared last page is never copied: new tokens start a new page. When k
//   holders of one page with refcount r append in one call, each copies while another
//   still holds the page and the last writes in place: min(k, r − 1) copies, which is
//   what the check counts.
// - truncate(s, n), n <= length (rollback of rejected speculative tokens): the pages
//   wholly past n are released (refcount − 1, free at 0); the page holding row n − 1
//   stays, shared or not (a later append copies it if shared). Rows past n are stale
//   and the next append overwrites them.
// - free(s) releases s's pages the same way and the slot; a fork's child keeps the
//   pages it still holds.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "headwise/detail/internal_begin.hpp"

#include "headwise/detail/checks.hpp"
#include "headwise/detail/integer.hpp"
#include "headwise/detail/kv_buffer.hpp"
#include "headwise/key_view.hpp"
#include "headwise/paged_view.hpp"
#include "headwise/quantize.hpp"
#include "headwise/storage.hpp"
#include "headwise/tensor.hpp"

#include "headwise/detail/internal_end.hpp"

namespace headwise {

/// K/V of many sequences in pages of one pool; see the top of this header.
template <class T>
class paged_kv_cache {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double> || is_storage_16<T> ||
                    is_storage_int8<T>,
                "paged_kv_cache holds float, double, half, bfloat16 or std::int8_t");

 public:
  using value_type = T;

  paged_kv_cache(std::size_t num_pages, std::size_t kv_heads, std::size_t page_size, std::size_t key_dim,
                 std::size_t value_dim, std::size_t max_sequences, std::size_t max_pages_per_seq)
      : pages_(num_pages),
        heads_(kv_heads),
        page_size_(page_size),
        dk_(key_dim),
        dv_(value_dim),
        slots_(max_sequences),
        row_pages_(max_pages_per_seq) {
    constexpr const char* where = "paged_kv_cache";
    detail::check_paged_kv_cache_shape(num_pages, kv_heads, page_size, key_dim, value_dim, max_sequences,
                                       max_pages_per_seq);
    const auto k_size =
        detail::checked_product(where, "the K pool", {num_pages, kv_heads, page_size, key_dim});
    const auto v_size =
        detail::checked_product(where, "the V pool", {num_pages, kv_heads, page_size, value_dim});
    const auto table_size =
        detail::checked_product(where, "the block table", {max_sequences, max_pages_per_seq});
    k_pool_.resize(std::size_t(k_size));
    v_pool_.resize(std::size_t(v_size));
    if constexpr (is_storage_int8<T>) {
      const auto rows =
          std::size_t(detail::checked_product(where, "the scale pools", {num_pages, kv_heads, page_size}));
      k_scale_pool_.resize(rows);
      v_scale_pool_.resize(rows);
    }
    table_.assign(std::size_t(table_size), -1);
    lengths_.assign(max_sequences, 0);
    live_.assign(max_sequences, 0);
    seq_stamp_.assign(max_sequences, 0);
    refcount_.assign(num_pages, 0);
    page_stamp_.assign(num_pages, 0);
    page_claims_.assign(num_pages, 0);
    free_.reserve(num_pages);
    for (std::size_t p = num_pages; p-- > 0;) free_.push_back(std::int32_t(p));  // page 0 on top
  }

  std::size_t num_pages() const noexcept { return pages_; }
  std::size_t page_size() const noexcept { return page_size_; }
  std::size_t heads() const noexcept { return heads_; }
  std::size_t key_dim() const noexcept { return dk_; }
  std::size_t value_dim() const noexcept { return dv_; }
  std::size_t max_sequences() const noexcept { return slots_; }
  std::size_t max_pages_per_seq() const noexcept { return row_pages_; }
  std::size_t free_pages() const noexcept { return free_.size(); }

  /// The lowest free slot, now live with length 0; an error when every slot is live.
  std::int32_t add_sequence() {
    const std::int32_t s = free_slot("paged_kv_cache::add_sequence");
    live_[std::size_t(s)] = 1;
    return s;
  }

  /// A new slot holding every page of seq (refcounts, no copy); see the top.
  std::int32_t fork(std::int32_t seq) {
    constexpr const char* where = "paged_kv_cache::fork";
    check_live(where, seq);
    const std::int32_t child = free_slot(where);
    const std::size_t held = pages_held(seq);
    const std::int32_t* from = row(seq);
    std::int32_t* to = row(child);
    for (std::size_t j = 0; j < held; ++j) {
      to[j] = from[j];
      ++refcount_[std::size_t(from[j])];
    }
    lengths_[std::size_t(child)] = lengths_[std::size_t(seq)];
    live_[std::size_t(child)] = 1;
    return child;
  }

  /// Releases seq's pages (a page shared with another slot stays with it) and the slot.
  void free(std::int32_t seq) {
    check_live("paged_kv_cache::free", seq);
    release_from(seq, 0);
    lengths_[std::size_t(seq)] = 0;
    live_[std::size_t(seq)] = 0;
  }

  /// Shortens seq to length <= length(seq), releasing the pages wholly past it.
  void truncate(std::int32_t seq, std::size_t length) {
    constexpr const char* where = "paged_kv_cache::truncate";
    check_live(where, seq);
    const std::size_t now = std::size_t(lengths_[std::size_t(seq)]);
    if (length > now)
      detail::fail(where, "length must be <= the length of sequence ", seq, " (expected <= ", now, ", got ",
                   length, ")");
    release_from(seq, detail::ceil_div(length, page_size_));
    lengths_[std::size_t(seq)] = std::int32_t(length);
  }

  /// The length of live sequence seq.
  std::size_t length(std::int32_t seq) const {
    check_live("paged_kv_cache::length", seq);
    return std::size_t(lengths_[std::size_t(seq)]);
  }
  /// One length per slot, 0 for a free one: the seqused_k of view().
  span<const std::int32_t> lengths() const noexcept {
    return span<const std::int32_t>(lengths_.data(), slots_);
  }

  /// Every slot's table row, batch entry b = slot b.
  paged_kv_view<const T> view() const noexcept { return view(span<const std::int32_t>()); }
  /// Batch entry b reads slot seqs[b] (not checked here: pass live slots).
  paged_kv_view<const T> view(span<const std::int32_t> seqs) const noexcept {
    paged_kv_view<const T> v;
    v.k_pages = pool(k_pool_.data(), dk_);
    v.v_pages = pool(v_pool_.data(), dv_);
    if constexpr (is_storage_int8<T>) {
      v.k_scale_pages = pool(k_scale_pool_.data(), 1);
      v.v_scale_pages = pool(v_scale_pool_.data(), 1);
    }
    v.block_table = span<const std::int32_t>(table_.data(), table_.size());
    v.pages_per_seq = row_pages_;
    v.seq_ids = seqs;
    return v;
  }

  /// Appends tokens [cu_tokens[i], cu_tokens[i+1]) of k and v to sequence seqs[i];
  /// checks everything first (for int8 also that every value is finite) and throws
  /// (changing nothing); see the top.
  template <class K, class V>
  void append(span<const std::int32_t> seqs, const tensor_view<K>& k, const tensor_view<V>& v,
              span<const std::int32_t> cu_tokens) {
    constexpr const char* where = "paged_kv_cache::append";
    detail::check_paged_append(k, v, heads_, dk_, dv_, seqs, cu_tokens);
    // Ids and pages: one stamp per call marks the slots seen (duplicates) and, per
    // shared last page, how many of its holders this call has already counted.
    const std::uint32_t stamp = next_stamp();
    std::size_t fresh = 0, copies = 0;
    for (std::size_t i = 0; i < seqs.size(); ++i) {
      const std::int32_t s = seqs[i];
      check_live(where, s);
      if (seq_stamp_[std::size_t(s)] == stamp)
        detail::fail(where, "seqs must be distinct (sequence ", s, " appears twice)");
      seq_stamp_[std::size_t(s)] = stamp;
      const std::size_t n = std::size_t(cu_tokens[i + 1] - cu_tokens[i]);
      if (n == 0) continue;
      const std::size_t len = std::size_t(lengths_[std::size_t(s)]), held = detail::ceil_div(len, page_size_);
      const std::size_t need = detail::ceil_div(len + n, page_size_);
      if (need > row_pages_)
        detail::fail(where, "sequence ", s, " would hold ", need, " pages (length ", len, " + ", n,
                     " tokens, page_size ", page_size_, ") but max_pages_per_seq is ", row_pages_);
      fresh += need - held;
      if (shared_partial_last_page(s)) {
        const auto p = std::size_t(row(s)[held - 1]);
        if (page_stamp_[p] != stamp) page_stamp_[p] = stamp, page_claims_[p] = 0;
        copies += ++page_claims_[p] < refcount_[p];  // the r-th holder writes in place
      }
    }
    if (fresh + copies > free_.size())
      detail::fail(where, "out of pages: the call needs ", fresh + copies, " (", fresh, " new, ", copies,
                   " copy-on-write copies of shared last pages) but ", free_.size(), " are free");
    if constexpr (is_storage_int8<T>) {
      detail::check_quantizable(where, "k", k);
      detail::check_quantizable(where, "v", v);
    }

    for (std::size_t i = 0; i < seqs.size(); ++i) {
      const std::size_t first = std::size_t(cu_tokens[i]), n = std::size_t(cu_tokens[i + 1]) - first;
      if (n > 0) append_one(seqs[i], k, v, first, n);
    }
  }

  /// Appends n = k.seq() tokens, k [1, Hkv, n, Dk] and v [1, Hkv, n, Dv], to seq.
  template <class K, class V>
  void append(std::int32_t seq, const tensor_view<K>& k, const tensor_view<V>& v) {
    if (k.seq() > std::size_t(std::numeric_limits<std::int32_t>::max()))
      detail::fail("paged_kv_cache::append", "k.seq() must be <= ", std::numeric_limits<std::int32_t>::max(),
                   " (got ", k.seq(), ")");
    const std::int32_t ids[1] = {seq}, cu[2] = {0, std::int32_t(k.seq())};
    append(span<const std::int32_t>(ids, 1), k, v, span<const std::int32_t>(cu, 2));
  }

 private:
  std::int32_t* row(std::int32_t seq) noexcept { return table_.data() + std::size_t(seq) * row_pages_; }
  const std::int32_t* row(std::int32_t seq) const noexcept {
    return table_.data() + std::size_t(seq) * row_pages_;
  }
  std::size_t pages_held(std::int32_t seq) const noexcept {
    return detail::ceil_div(std::size_t(lengths_[std::size_t(seq)]), page_size_);
  }
  /// Whether seq's next token lands in a partly filled page another slot also holds.
  bool shared_partial_last_page(std::int32_t seq) const noexcept {
    const std::size_t len = std::size_t(lengths_[std::size_t(seq)]);
    return len % page_size_ != 0 && refcount_[std::size_t(row(seq)[len / page_size_])] > 1;
  }

  void check_live(const char* where, std::int32_t seq) const {
    if (seq < 0 || std::size_t(seq) >= slots_)
      detail::fail(where, "sequence id must be in [0, max_sequences) = [0, ", slots_, ") (got ", seq, ")");
    if (!live_[std::size_t(seq)])
      detail::fail(where, "sequence ", seq, " is not live (free slot: add_sequence or fork first)");
  }

  std::int32_t free_slot(const char* where) const {
    for (std::size_t s = 0; s < slots_; ++s)
      if (!live_[s]) return std::int32_t(s);
    detail::fail(where, "no free sequence slot (all ", slots_, " of max_sequences are live)");
  }

  std::uint32_t next_stamp() noexcept {
    if (++stamp_ == 0) {  // wrapped after 2^32 calls: forget every old stamp
      std::fill(seq_stamp_.begin(), seq_stamp_.end(), 0u);
      std::fill(page_stamp_.begin(), page_stamp_.end(), 0u);
      stamp_ = 1;
    }
    return stamp_;
  }

  /// Releases seq's table entries [from, pages held), last first, so that the next
  /// pages taken are the released ones in sequence order.
  void release_from(std::int32_t seq, std::size_t from) noexcept {
    std::int32_t* r = row(seq);
    for (std::size_t j = pages_held(seq); j-- > from;) {
      const auto p = std::size_t(r[j]);
      if (--refcount_[p] == 0) free_.push_back(std::int32_t(p));
      r[j] = -1;
    }
  }

  std::int32_t take_page() noexcept {
    const std::int32_t p = free_.back();
    free_.pop_back();
    refcount_[std::size_t(p)] = 1;
    return p;
  }

  /// Tokens [first, first + n) of k and v onto seq, after append's checks: nothing throws.
  template <class K, class V>
  void append_one(std::int32_t seq, const tensor_view<K>& k, const tensor_view<V>& v, std::size_t first,
                  std::size_t n) noexcept {
    std::int32_t* r = row(seq);
    const std::size_t len = std::size_t(lengths_[std::size_t(seq)]), held = detail::ceil_div(len, page_size_);
    if (shared_partial_last_page(seq)) {  // copy-on-write: the filled rows of every head
      const std::int32_t from = r[held - 1], to = take_page();
      --refcount_[std::size_t(from)];
      copy_page_rows(k_pool_.data(), dk_, from, to, len % page_size_);
      copy_page_rows(v_pool_.data(), dv_, from, to, len % page_size_);
      if constexpr (is_storage_int8<T>) {
        copy_page_rows(k_scale_pool_.data(), 1, from, to, len % page_size_);
        copy_page_rows(v_scale_pool_.data(), 1, from, to, len % page_size_);
      }
      r[held - 1] = to;
    }
    for (std::size_t j = held, end = detail::ceil_div(len + n, page_size_); j < end; ++j) r[j] = take_page();
    copy_tokens(k, k_pool_.data(), dk_, k_scale_pool_, seq, first, n);
    copy_tokens(v, v_pool_.data(), dv_, v_scale_pool_, seq, first, n);
    lengths_[std::size_t(seq)] = std::int32_t(len + n);
  }

  /// The first `rows` rows of every head of page from into page to, in a pool of
  /// rows (E = T) or of scales (E = float, dim 1).
  template <class E>
  void copy_page_rows(E* pool, std::size_t dim, std::int32_t from, std::int32_t to,
                      std::size_t rows) noexcept {
    const std::size_t per_head = page_size_ * dim, per_page = heads_ * per_head;
    for (std::size_t h = 0; h < heads_; ++h) {
      const E* src = pool + std::size_t(from) * per_page + h * per_head;
      std::copy(src, src + rows * dim, pool + std::size_t(to) * per_page + h * per_head);
    }
  }

  /// Rows [first, first + n) of src (batch 0) to seq's positions length(seq) on,
  /// stored (converted, or quantized with the scales) by detail::store_kv_row.
  template <class U>
  void copy_tokens(const tensor_view<U>& src, T* pool, std::size_t dim, detail::kv_buffer<float>& scales,
                   std::int32_t seq, std::size_t first, std::size_t n) noexcept {
    const std::int32_t* r = row(seq);
    const std::size_t len = std::size_t(lengths_[std::size_t(seq)]);
    for (std::size_t h = 0; h < heads_; ++h)
      for (std::size_t t = 0; t < n; ++t) {
        const std::size_t pos = len + t;
        const std::size_t pool_row =
            (std::size_t(r[pos / page_size_]) * heads_ + h) * page_size_ + pos % page_size_;
        detail::store_kv_row(src.row(0, h, first + t), dim, pool + pool_row * dim, scales, pool_row);
      }
  }

  template <class E>
  tensor_view<const E> pool(const E* data, std::size_t dim) const noexcept {
    const auto d = std::ptrdiff_t(dim), ps = std::ptrdiff_t(page_size_);
    return tensor_view<const E>(data, pages_, heads_, page_size_, dim, std::ptrdiff_t(heads_) * ps * d,
                                ps * d, d);
  }

  std::size_t pages_, heads_, page_size_, dk_, dv_, slots_, row_pages_;
  detail::kv_buffer<T> k_pool_, v_pool_;  // [pages, Hkv, page_size, D]
  detail::kv_buffer<float> k_scale_pool_, v_scale_pool_;  // int8 only: [pages, Hkv, page_size]
  std::vector<std::int32_t> table_;       // [slots, row_pages], -1 past each slot's pages
  std::vector<std::int32_t> lengths_;     // per slot, 0 when free
  std::vector<char> live_;                // per slot
  std::vector<std::uint32_t> refcount_;   // per page: slots holding it (0: on the free stack)
  std::vector<std::int32_t> free_;        // free pages, the next one taken at the back
  // append's scratch (see append): the call's stamp per slot and per page, and claims per page
  std::vector<std::uint32_t> seq_stamp_, page_stamp_, page_claims_;
  std::uint32_t stamp_ = 0;
};

}  // namespace headwise
