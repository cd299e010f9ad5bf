// Tests of paged_kv_cache (paged_kv_cache.hpp), for float, half, bfloat16 and int8
// against a dense model of every sequence built from the same calls (each element as
// the cache must store it, rounded once to T; for int8 the value appended, which
// quantize_int8 must turn into the stored codes and scale): every live sequence's
// rows (and int8 scales), gathered through view() with paged_rows_view, equal the
// model bit for bit, across page
// boundaries (lengths 0, 1, 15, 16, 17, 33; page sizes 16 and 32; Hkv 2, Dk != Dv);
// multi-sequence appends with uneven counts (one of them 0) take pages in a fixed
// order; fork shares pages and copy-on-write keeps parent and child apart whichever
// appends first; truncate then append rolls back; free returns every page; out of
// pages and every bad argument throw headwise::error and leave the cache exactly as
// it was (lengths, table, free_pages, the bytes of every page in use, scales too). Each
// check also counts pages: those the live tables hold plus free_pages() must be
// num_pages(). int8 alone: a NaN or an infinity throws and changes nothing.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

#include "int8_check.hpp"

namespace {

using namespace hwtest;

/// A paged_kv_cache<S> and its model: per slot, K and V of every token as doubles
/// of S values (for int8: of the values appended), [token][head][d].
template <class S>
struct harness {
  paged_kv_cache<S> cache;
  std::size_t H, P, Dk, Dv;
  std::vector<std::vector<double>> k, v;
  std::vector<bool> live;
  std::uint32_t seed = 0;

  harness(std::size_t pages, std::size_t heads, std::size_t page_size, std::size_t dk, std::size_t dv,
          std::size_t slots, std::size_t row_pages)
      : cache(pages, heads, page_size, dk, dv, slots, row_pages),
        H(heads),
        P(page_size),
        Dk(dk),
        Dv(dv),
        k(slots),
        v(slots),
        live(slots, false) {}

  std::size_t length(std::int32_t s) const { return k[std::size_t(s)].size() / (H * Dk); }

  std::int32_t add() {
    const std::int32_t s = cache.add_sequence();
    EXPECT_FALSE(live[std::size_t(s)]) << "add_sequence gave live slot " << s;
    live[std::size_t(s)] = true;
    return s;
  }

  /// ns[i] new tokens for seqs[i], in one call. K comes in BSHD (rows Hkv·Dk apart),
  /// V in BHSD, both from float.
  void append(const std::vector<std::int32_t>& seqs, const std::vector<std::size_t>& ns) {
    std::vector<std::int32_t> cu{0};
    for (std::size_t n : ns) cu.push_back(cu.back() + std::int32_t(n));
    tensor<float> kt(1, H, std::size_t(cu.back()), Dk, layout::bshd), vt(1, H, std::size_t(cu.back()), Dv);
    fill_uniform(kt, ++seed);
    fill_uniform(vt, ++seed);
    cache.append(seqs, kt.cview(), vt.cview(), cu);
    for (std::size_t i = 0; i < seqs.size(); ++i) record(seqs[i], kt, vt, std::size_t(cu[i]), ns[i]);
  }

  /// n tokens for seq through the one-sequence append, from S itself (the copy path;
  /// half for int8, which appends no int8).
  void append_one(std::int32_t seq, std::size_t n) {
    using X = std::conditional_t<is_storage_int8<S>, half, S>;
    tensor<X> kt(1, H, n, Dk), vt(1, H, n, Dv, layout::bshd);
    fill_uniform(kt, ++seed);
    fill_uniform(vt, ++seed);
    cache.append(seq, kt.cview(), vt.cview());
    record(seq, kt, vt, 0, n);
  }

  std::int32_t fork(std::int32_t s) {
    const std::int32_t c = cache.fork(s);
    EXPECT_FALSE(live[std::size_t(c)]);
    live[std::size_t(c)] = true;
    k[std::size_t(c)] = k[std::size_t(s)];
    v[std::size_t(c)] = v[std::size_t(s)];
    return c;
  }

  void truncate(std::int32_t s, std::size_t n) {
    cache.truncate(s, n);
    k[std::size_t(s)].resize(n * H * Dk);
    v[std::size_t(s)].resize(n * H * Dv);
  }

  void free(std::int32_t s) {
    cache.free(s);
    live[std::size_t(s)] = false;
    k[std::size_t(s)].clear();
    v[std::size_t(s)].clear();
  }

  /// The table row of slot s, its first `held` entries.
  std::vector<std::int32_t> pages_of(std::int32_t s) const {
    const paged_kv_view<const S> view = cache.view();
    const std::int32_t* row = view.pages_of(std::size_t(s));
    return std::vector<std::int32_t>(row, row + (length(s) + P - 1) / P);
  }

  /// Every slot against the model: lengths, rows through the view, the table's unused
  /// entries (-1), and no page lost or double-counted.
  void check(const std::string& where) {
    SCOPED_TRACE(where);
    const paged_kv_view<const S> view = cache.view();
    ASSERT_EQ(view.k_pages.batch(), cache.num_pages());
    ASSERT_EQ(view.k_pages.seq(), P);
    ASSERT_EQ(view.v_pages.dim(), Dv);
    ASSERT_EQ(view.table_rows(), cache.max_sequences());
    ASSERT_EQ(cache.lengths().size(), cache.max_sequences());
    std::set<std::int32_t> held_pages;
    for (std::size_t s = 0; s < live.size(); ++s) {
      const std::size_t len = length(std::int32_t(s));
      ASSERT_EQ(std::size_t(cache.lengths()[s]), len) << "slot " << s;
      if (live[s]) {
        ASSERT_EQ(cache.length(std::int32_t(s)), len) << "slot " << s;
      }
      const std::int32_t* row = view.pages_of(s);
      const std::size_t held = (len + P - 1) / P;
      for (std::size_t j = 0; j < cache.max_pages_per_seq(); ++j) {
        if (j < held) {
          ASSERT_TRUE(row[j] >= 0 && std::size_t(row[j]) < cache.num_pages())
              << "slot " << s << " page " << j;
          held_pages.insert(row[j]);
        } else {
          ASSERT_EQ(row[j], -1) << "slot " << s << " entry " << j << " past its pages";
        }
      }
      const paged_rows_view<const S> kr(view.k_pages, row, 1, view.pages_per_seq, len),
          vr(view.v_pages, row, 1, view.pages_per_seq, len);
      if constexpr (is_storage_int8<S>) {
        check_int8_rows(view, s, kr, vr);
        continue;
      }
      for (std::size_t t = 0; t < len; ++t)
        for (std::size_t h = 0; h < H; ++h) {
          for (std::size_t d = 0; d < Dk; ++d)
            ASSERT_EQ(as_double(kr(0, h, t, d)), k[s][(t * H + h) * Dk + d])
                << "K slot " << s << " token " << t;
          for (std::size_t d = 0; d < Dv; ++d)
            ASSERT_EQ(as_double(vr(0, h, t, d)), v[s][(t * H + h) * Dv + d])
                << "V slot " << s << " token " << t;
        }
    }
    ASSERT_EQ(held_pages.size() + cache.free_pages(), cache.num_pages()) << "pages held + free != num_pages";
  }

 private:
  /// Slot s's int8 rows (kr, vr) and scales through the view's scale pools against
  /// quantize_int8 of the model's rows.
  void check_int8_rows(const paged_kv_view<const S>& view, std::size_t s, const paged_rows_view<const S>& kr,
                       const paged_rows_view<const S>& vr) const {
    ASSERT_EQ(view.k_scale_pages.batch(), cache.num_pages());
    ASSERT_EQ(view.k_scale_pages.seq(), P);
    ASSERT_EQ(view.v_scale_pages.dim(), 1u);
    const paged_rows_view<const float> ks(view.k_scale_pages, kr.table(), 1, view.pages_per_seq, kr.seq()),
        vs(view.v_scale_pages, vr.table(), 1, view.pages_per_seq, vr.seq());
    for (std::size_t t = 0; t < kr.seq(); ++t)
      for (std::size_t h = 0; h < H; ++h) {
        ASSERT_TRUE(int8_row_matches(
            &k[s][(t * H + h) * Dk], Dk, [&](std::size_t d) { return kr(0, h, t, d); }, ks(0, h, t, 0)))
            << "K slot " << s << " token " << t << " head " << h;
        ASSERT_TRUE(int8_row_matches(
            &v[s][(t * H + h) * Dv], Dv, [&](std::size_t d) { return vr(0, h, t, d); }, vs(0, h, t, 0)))
            << "V slot " << s << " token " << t << " head " << h;
      }
  }

  /// The values the cache must hold: rounded once to S, or for int8 as appended.
  template <class U>
  static double stored(U x) {
    if constexpr (is_storage_int8<S>)
      return as_double(x);
    else
      return as_double(static_cast<S>(x));
  }

  template <class U>
  void record(std::int32_t s, const tensor<U>& kt, const tensor<U>& vt, std::size_t first, std::size_t n) {
    for (std::size_t t = first; t < first + n; ++t)
      for (std::size_t h = 0; h < H; ++h) {
        for (std::size_t d = 0; d < Dk; ++d) k[std::size_t(s)].push_back(stored(kt.view(0, h, t, d)));
        for (std::size_t d = 0; d < Dv; ++d) v[std::size_t(s)].push_back(stored(vt.view(0, h, t, d)));
      }
  }
};

/// What a failed call must leave as it was: lengths, the whole block table,
/// free_pages, and the bytes of K and V (and int8 scales) of every page a live slot holds.
struct snapshot {
  std::vector<std::int32_t> lengths, table;
  std::size_t free_pages = 0;
  std::vector<unsigned char> bytes;
  bool operator==(const snapshot& o) const {
    return lengths == o.lengths && table == o.table && free_pages == o.free_pages && bytes == o.bytes;
  }
};

template <class S>
snapshot take_snapshot(const paged_kv_cache<S>& c) {
  snapshot s;
  const paged_kv_view<const S> view = c.view();
  s.lengths.assign(c.lengths().begin(), c.lengths().end());
  s.table.assign(view.block_table.begin(), view.block_table.end());
  s.free_pages = c.free_pages();
  for (std::size_t slot = 0; slot < c.max_sequences(); ++slot)
    for (std::size_t j = 0; j * c.page_size() < std::size_t(s.lengths[slot]); ++j) {
      const std::size_t page = std::size_t(view.pages_of(slot)[j]);
      for (const tensor_view<const S>* pool : {&view.k_pages, &view.v_pages}) {
        const auto* first = reinterpret_cast<const unsigned char*>(pool->row(page, 0, 0));
        s.bytes.insert(s.bytes.end(), first, first + c.heads() * c.page_size() * pool->dim() * sizeof(S));
      }
      if constexpr (is_storage_int8<S>)
        for (const tensor_view<const float>* pool : {&view.k_scale_pages, &view.v_scale_pages}) {
          const auto* first = reinterpret_cast<const unsigned char*>(pool->row(page, 0, 0));
          s.bytes.insert(s.bytes.end(), first, first + c.heads() * c.page_size() * sizeof(float));
        }
    }
  return s;
}

/// fn() must throw headwise::error whose message contains every one of parts.
void expect_error(const std::function<void()>& fn, const std::vector<std::string>& parts, const char* what) {
  try {
    fn();
    ADD_FAILURE() << what << ": no error";
  } catch (const error& e) {
    for (const std::string& p : parts)
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos)
          << what << ": \"" << e.what() << "\" lacks \"" << p << "\"";
  }
}

template <class S>
class paged_kv_cache_typed : public ::testing::Test {};
using storage_types = ::testing::Types<float, half, bfloat16, std::int8_t>;
TYPED_TEST_SUITE(paged_kv_cache_typed, storage_types, element_type_name);

TYPED_TEST(paged_kv_cache_typed, rows_through_the_view_equal_the_appends_across_page_boundaries) {
  for (std::size_t P : {16u, 32u}) {
    SCOPED_TRACE("page_size " + std::to_string(P));
    harness<TypeParam> hw(24, 2, P, 8, 3, 6, 64 / P);
    std::vector<std::int32_t> ids;
    for (int i = 0; i < 6; ++i) ids.push_back(hw.add());
    EXPECT_EQ(ids, (std::vector<std::int32_t>{0, 1, 2, 3, 4, 5}));
    hw.check("empty");
    hw.append(ids, {0, 1, 15, 16, 17, 33});
    hw.check("prefill 0, 1, 15, 16, 17, 33");
    hw.append(ids, {1, 1, 1, 1, 1, 1});  // 1 → 2, 15 → 16 (fills a page), 16 → 17 (opens one)
    hw.check("one step each");
    hw.append(ids, {16, 0, 17, 1, 15, 14});
    hw.check("uneven counts");
    for (std::int32_t s : ids) hw.append_one(s, 3);  // the one-sequence append, from T
    hw.check("three more each, one sequence at a time");
    EXPECT_EQ(hw.length(5), 51u);
  }
}

TYPED_TEST(paged_kv_cache_typed, a_multi_sequence_append_takes_pages_in_call_order) {
  harness<TypeParam> hw(12, 2, 16, 5, 7, 4, 4);
  for (int i = 0; i < 4; ++i) hw.add();
  // slot 3: 5 tokens (page 0); slot 0: none; slot 2: 20 (pages 1, 2); slot 1: 16 (page 3)
  hw.append({3, 0, 2, 1}, {5, 0, 20, 16});
  hw.check("first call");
  EXPECT_EQ(hw.pages_of(3), (std::vector<std::int32_t>{0}));
  EXPECT_EQ(hw.pages_of(2), (std::vector<std::int32_t>{1, 2}));
  EXPECT_EQ(hw.pages_of(1), (std::vector<std::int32_t>{3}));
  EXPECT_EQ(hw.pages_of(0), (std::vector<std::int32_t>{}));
  EXPECT_EQ(hw.cache.free_pages(), 8u);
  // slot 1 opens page 4, slot 3 stays in page 0, slot 0 takes 5 and 6
  hw.append({1, 3, 0}, {1, 11, 17});
  hw.check("second call");
  EXPECT_EQ(hw.pages_of(1), (std::vector<std::int32_t>{3, 4}));
  EXPECT_EQ(hw.pages_of(3), (std::vector<std::int32_t>{0}));
  EXPECT_EQ(hw.pages_of(0), (std::vector<std::int32_t>{5, 6}));
  // a view of chosen slots reads their rows in the order given
  const std::vector<std::int32_t> pick{2, 0};
  const paged_kv_view<const TypeParam> view = hw.cache.view(pick);
  EXPECT_EQ(view.pages_of(0), hw.cache.view().pages_of(2));
  EXPECT_EQ(view.pages_of(1), hw.cache.view().pages_of(0));
  EXPECT_EQ(view.k_pages.data(), hw.cache.view().k_pages.data());
  // an empty call, and one whose every count is 0, change nothing
  const snapshot before = take_snapshot(hw.cache);
  hw.append({}, {});
  hw.append({0, 1}, {0, 0});
  EXPECT_TRUE(before == take_snapshot(hw.cache));
}

TYPED_TEST(paged_kv_cache_typed, fork_shares_pages_and_each_side_copies_a_shared_last_page_on_write) {
  harness<TypeParam> hw(16, 2, 16, 4, 6, 8, 4);
  const std::int32_t a = hw.add();
  hw.append({a}, {20});
  EXPECT_EQ(hw.cache.free_pages(), 14u);

  // child appends first: it copies page 1's 4 filled rows; the parent then writes in place
  const std::int32_t c = hw.fork(a);
  EXPECT_EQ(hw.pages_of(c), hw.pages_of(a));
  EXPECT_EQ(hw.cache.free_pages(), 14u) << "fork copies nothing";
  hw.check("forked");
  const std::vector<std::int32_t> parent_pages = hw.pages_of(a);
  hw.append_one(c, 3);
  EXPECT_EQ(hw.cache.free_pages(), 13u);
  EXPECT_EQ(hw.pages_of(a), parent_pages);
  EXPECT_EQ(hw.pages_of(c)[0], parent_pages[0]) << "the full first page stays shared";
  EXPECT_NE(hw.pages_of(c)[1], parent_pages[1]);
  hw.check("child appended");
  hw.append_one(a, 2);
  EXPECT_EQ(hw.pages_of(a), parent_pages) << "page 1 is the parent's alone now";
  EXPECT_EQ(hw.cache.free_pages(), 13u);
  hw.check("then the parent");

  // parent appends first: it copies, the child keeps the old page and then writes in place
  const std::int32_t d = hw.fork(a);  // length 22
  hw.append_one(a, 1);
  EXPECT_EQ(hw.pages_of(d), parent_pages);
  EXPECT_NE(hw.pages_of(a)[1], parent_pages[1]);
  EXPECT_EQ(hw.cache.free_pages(), 12u);
  hw.check("parent appended");
  hw.append_one(d, 12);  // 22 → 34: page 1 in place, one new page
  EXPECT_EQ(hw.cache.free_pages(), 11u);
  hw.check("then the child");

  // both holders append in one call: one copy, the second writes in place
  const std::int32_t e = hw.fork(d);  // length 34, last page partly filled
  hw.append({e, d}, {1, 2});
  EXPECT_EQ(hw.cache.free_pages(), 10u);
  EXPECT_EQ(hw.pages_of(e)[1], hw.pages_of(d)[1]);
  EXPECT_NE(hw.pages_of(e)[2], hw.pages_of(d)[2]);
  hw.check("both in one call");

  // three holders in one call: two copies
  const std::int32_t f = hw.fork(e), g = hw.fork(e);
  hw.append({g, e, f}, {1, 1, 1});
  EXPECT_EQ(hw.cache.free_pages(), 8u);
  hw.check("three holders in one call");

  // a full shared last page is not copied: each side opens a new page
  const std::int32_t x = hw.add();
  hw.append_one(x, 32);
  const std::int32_t y = hw.fork(x);
  const std::size_t free_before = hw.cache.free_pages();
  hw.append({y, x}, {1, 1});
  EXPECT_EQ(hw.cache.free_pages(), free_before - 2);
  const std::vector<std::int32_t> xp = hw.pages_of(x), yp = hw.pages_of(y);
  EXPECT_EQ(xp[0], yp[0]);
  EXPECT_EQ(xp[1], yp[1]);
  EXPECT_NE(xp[2], yp[2]);
  hw.check("full shared page");
}

TYPED_TEST(paged_kv_cache_typed, truncate_then_append_rolls_back_and_returns_pages) {
  harness<TypeParam> hw(10, 2, 16, 4, 3, 3, 4);
  const std::int32_t a = hw.add();
  hw.append_one(a, 40);
  EXPECT_EQ(hw.cache.free_pages(), 7u);
  hw.truncate(a, 18);  // rejects 22 speculative tokens: page 2 goes back
  EXPECT_EQ(hw.cache.free_pages(), 8u);
  hw.check("truncated to 18");
  hw.append({a}, {10});  // rows 18..27 overwrite the stale ones in page 1
  EXPECT_EQ(hw.cache.free_pages(), 8u);
  hw.check("18 + 10");
  hw.truncate(a, 16);  // exactly one page
  EXPECT_EQ(hw.cache.free_pages(), 9u);
  hw.truncate(a, 16);  // no-op
  hw.check("truncated to 16");
  hw.truncate(a, 0);
  EXPECT_EQ(hw.cache.free_pages(), 10u);
  hw.check("truncated to 0");
  hw.append_one(a, 20);
  hw.check("refilled");

  // truncating into a shared page keeps it shared; the next append copies it and the
  // parent keeps its own rows past the cut
  const std::int32_t b = hw.fork(a);
  hw.truncate(b, 17);
  EXPECT_EQ(hw.pages_of(b), hw.pages_of(a));
  EXPECT_EQ(hw.cache.free_pages(), 8u);
  hw.append_one(b, 4);
  EXPECT_NE(hw.pages_of(b)[1], hw.pages_of(a)[1]);
  EXPECT_EQ(hw.cache.free_pages(), 7u);
  hw.check("child truncated into the shared page, then appended");

  const snapshot before = take_snapshot(hw.cache);
  expect_error([&] { hw.cache.truncate(a, 21); }, {"paged_kv_cache::truncate", "<= 20", "got 21"},
               "past the end");
  EXPECT_TRUE(before == take_snapshot(hw.cache));
}

TYPED_TEST(paged_kv_cache_typed, free_returns_every_page_and_the_slot) {
  harness<TypeParam> hw(8, 2, 16, 4, 5, 3, 4);
  const std::int32_t a = hw.add();
  hw.append_one(a, 40);               // pages 0, 1, 2
  const std::int32_t b = hw.fork(a);  // shares all three
  hw.append_one(b, 10);               // copies page 2, opens one: 4 + 1 held
  EXPECT_EQ(hw.cache.free_pages(), 3u);
  hw.free(a);  // pages 0 and 1 stay with b; a's own page 2 is free again
  EXPECT_EQ(hw.cache.free_pages(), 4u);
  hw.check("parent freed, child holds the shared prefix");
  const std::int32_t c = hw.add();
  EXPECT_EQ(c, a) << "the lowest free slot";
  EXPECT_EQ(hw.cache.length(c), 0u);
  hw.append_one(c, 17);
  hw.check("slot reused");
  hw.free(b);
  hw.free(c);
  EXPECT_EQ(hw.cache.free_pages(), 8u);
  hw.check("all freed");
  expect_error([&] { hw.cache.length(b); }, {"paged_kv_cache::length", "not live"}, "length of a freed slot");
  expect_error([&] { hw.cache.free(b); }, {"paged_kv_cache::free", "not live"}, "double free");
}

TYPED_TEST(paged_kv_cache_typed, out_of_pages_throws_the_counts_and_changes_nothing) {
  harness<TypeParam> hw(6, 2, 16, 4, 3, 4, 5);
  const std::int32_t a = hw.add();
  hw.append_one(a, 33);               // pages 0, 1, 2 (one row in page 2)
  const std::int32_t b = hw.fork(a);  // shares them
  const std::int32_t c = hw.add();
  hw.append_one(c, 16);  // page 3, full
  ASSERT_EQ(hw.cache.free_pages(), 2u);
  const snapshot before = take_snapshot(hw.cache);
  const void* k_pool = hw.cache.view().k_pages.data();
  // a: 33 + 20 needs a 4th page and a copy of page 2; b then writes page 2 in place;
  // c opens a page: 3 pages, 2 free
  expect_error(
      [&] {
        hw.append({a, b, c}, {20, 1, 1});
      },
      {"paged_kv_cache::append", "out of pages", "needs 3", "2 new", "1 copy-on-write", "2 are free"},
      "three pages for two");
  EXPECT_TRUE(before == take_snapshot(hw.cache));
  hw.check("after the failed append");
  expect_error([&] { hw.append_one(b, 40); }, {"needs 3", "2 new", "1 copy-on-write", "2 are free"},
               "one sequence");
  EXPECT_TRUE(before == take_snapshot(hw.cache));
  // exactly two: one copy (the second holder writes in place) and c's new page
  hw.append({a, b, c}, {14, 1, 1});
  EXPECT_EQ(hw.cache.free_pages(), 0u);
  EXPECT_EQ(hw.cache.view().k_pages.data(), k_pool) << "the pools never move";
  hw.check("two pages for two");
  hw.append({a, b, c}, {1, 0, 15});  // the last rows of their pages need nothing
  hw.check("filled to the brim");
  const snapshot full = take_snapshot(hw.cache);
  expect_error([&] { hw.append({c}, {1}); }, {"needs 1 (1 new, 0", "0 are free"}, "a full cache");
  EXPECT_TRUE(full == take_snapshot(hw.cache));
}

TYPED_TEST(paged_kv_cache_typed, bad_arguments_throw_and_change_nothing) {
  using S = TypeParam;
  harness<S> hw(8, 2, 16, 4, 3, 3, 2);
  const std::int32_t a = hw.add(), b = hw.add();
  hw.append({a, b}, {5, 3});
  const snapshot before = take_snapshot(hw.cache);
  tensor<float> k(1, 2, 4, 4), v(1, 2, 4, 3);
  fill_uniform(k, 7), fill_uniform(v, 8);
  auto append = [&](std::vector<std::int32_t> seqs, std::vector<std::int32_t> cu) {
    return [&hw, &k, &v, seqs, cu] { hw.cache.append(seqs, k.cview(), v.cview(), cu); };
  };
  struct bad {
    std::function<void()> call;
    std::vector<std::string> parts;
    const char* what;
  };
  tensor<float> k3(1, 3, 4, 4), k5(1, 2, 4, 5), v4(1, 2, 4, 4), k2(2, 2, 4, 4), v_short(1, 2, 3, 3),
      k29(1, 2, 29, 4), v29(1, 2, 29, 3);
  const std::vector<std::int32_t> one_a{a}, cu4{0, 4};
  const std::vector<bad> cases{
      {append({a, 3}, {0, 2, 4}),
       {"sequence id must be in [0, max_sequences) = [0, 3)", "got 3"},
       "id past the slots"},
      {append({-1}, {0, 4}), {"got -1"}, "negative id"},
      {append({2}, {0, 4}), {"sequence 2 is not live"}, "free slot"},
      {append({a, b, a}, {0, 1, 2, 4}), {"distinct", "sequence 0 appears twice"}, "duplicate"},
      {append({a, b}, {0, 4}),
       {"cu_tokens.size() must equal seqs.size() + 1", "expected 3, got 2"},
       "short cu"},
      {append({a, b}, {1, 2, 4}), {"cu_tokens[0] must be 0"}, "cu from 1"},
      {append({a, b}, {0, 3, 2}), {"non-decreasing"}, "decreasing cu"},
      {append({a, b}, {0, 1, 3}), {"must equal k.seq()", "expected 4, got 3"}, "cu short of k"},
      {[&] { hw.cache.append(one_a, k3.cview(), v.cview(), cu4); }, {"k: shape", "Hkv=2"}, "k heads"},
      {[&] { hw.cache.append(one_a, k5.cview(), v.cview(), cu4); }, {"k: shape", "Dk=4"}, "k dim"},
      {[&] { hw.cache.append(one_a, k.cview(), v4.cview(), cu4); }, {"v: shape", "Dv=3"}, "v dim"},
      {[&] { hw.cache.append(one_a, k2.cview(), v.cview(), cu4); }, {"k: shape", "B=1"}, "batch 2"},
      {[&] { hw.cache.append(one_a, k.cview(), v_short.cview(), cu4); },
       {"v: shape", "N=4"},
       "v shorter than k"},
      {[&] { hw.cache.append(a, k29.cview(), v29.cview()); },
       {"sequence 0 would hold 3 pages", "max_pages_per_seq is 2"},
       "past max_pages_per_seq"},
      {[&] { hw.cache.truncate(b, 4); }, {"paged_kv_cache::truncate", "<= 3"}, "truncate past the end"},
      {[&] { hw.cache.truncate(2, 0); }, {"sequence 2 is not live"}, "truncate a free slot"},
      {[&] { hw.cache.free(7); }, {"paged_kv_cache::free", "got 7"}, "free past the slots"},
      {[&] { hw.cache.fork(2); }, {"paged_kv_cache::fork", "not live"}, "fork a free slot"},
      {[&] { hw.cache.length(-3); }, {"paged_kv_cache::length", "got -3"}, "length of a bad id"},
  };
  for (const bad& c : cases) {
    expect_error(c.call, c.parts, c.what);
    EXPECT_TRUE(before == take_snapshot(hw.cache)) << c.what << " changed the cache";
  }
  hw.check("after every bad call");
  // every slot live: add_sequence and fork have none to give
  hw.add();
  const snapshot full = take_snapshot(hw.cache);
  expect_error([&] { hw.cache.add_sequence(); }, {"paged_kv_cache::add_sequence", "no free sequence slot"},
               "add");
  expect_error([&] { hw.cache.fork(a); }, {"paged_kv_cache::fork", "no free sequence slot"}, "fork");
  EXPECT_TRUE(full == take_snapshot(hw.cache));

  // the constructor
  using cache = paged_kv_cache<S>;
  const std::size_t int32_max = std::size_t(std::numeric_limits<std::int32_t>::max());
  expect_error([] { cache(4, 2, 0, 4, 4, 2, 2); }, {"paged_kv_cache", "page_size", "multiple", "got 0"},
               "page 0");
  expect_error([] { cache(4, 2, 8, 4, 4, 2, 2); }, {"page_size", "(16)", "got 8"}, "page 8");
  expect_error([] { cache(4, 2, 24, 4, 4, 2, 2); }, {"page_size", "got 24"}, "page 24");
  expect_error([] { cache(0, 2, 16, 4, 4, 2, 2); }, {"num_pages must be >= 1"}, "no pages");
  expect_error([] { cache(4, 0, 16, 4, 4, 2, 2); }, {"kv_heads must be >= 1"}, "no heads");
  expect_error([] { cache(4, 2, 16, 0, 4, 2, 2); }, {"key_dim must be >= 1"}, "Dk 0");
  expect_error([] { cache(4, 2, 16, 4, 0, 2, 2); }, {"value_dim must be >= 1"}, "Dv 0");
  expect_error([] { cache(4, 2, 16, 4, 4, 0, 2); }, {"max_sequences must be >= 1"}, "no slots");
  expect_error([] { cache(4, 2, 16, 4, 4, 2, 0); }, {"max_pages_per_seq must be >= 1"}, "no table columns");
  expect_error([&] { cache(int32_max + 1, 2, 16, 4, 4, 2, 2); }, {"num_pages must be <= 2147483647"},
               "int32 pages");
  expect_error([&] { cache(4, 2, 16, 4, 4, int32_max + 1, 2); }, {"max_sequences must be <= 2147483647"},
               "int32 slots");
  expect_error([&] { cache(4, 2, 16, 4, 4, 2, int32_max / 16 + 1); }, {"int32 lengths"}, "int32 lengths");
  expect_error([&] { cache(int32_max, std::size_t(1) << 40, 16, std::size_t(1) << 20, 4, 2, 2); },
               {"the K pool", "overflows"}, "K pool size");
}

// int8 (quantize.hpp): the scale pools sit beside the row pools (other types leave
// them unset); copy-on-write copies a shared page's scales with its rows, so the
// parent keeps its own; a NaN or an infinity anywhere in k or v throws, naming the
// row, and changes nothing.
TEST(paged_kv_cache_int8, scales_follow_their_rows_and_non_finite_input_changes_nothing) {
  EXPECT_FALSE(paged_kv_cache<half>(2, 1, 16, 4, 4, 1, 1).view().k_scale_pages.is_set());
  harness<std::int8_t> hw(8, 3, 16, 17, 9, 3, 4);
  const std::int32_t a = hw.add();
  hw.append({a}, {20});
  const std::int32_t c = hw.fork(a);
  const paged_kv_view<const std::int8_t> view = hw.cache.view();
  const std::int32_t shared_page = view.pages_of(std::size_t(a))[1];
  const std::vector<float> parent_scales(view.k_scale_pages.row(std::size_t(shared_page), 0, 0),
                                         view.k_scale_pages.row(std::size_t(shared_page), 0, 0) + 3 * 16);
  hw.append_one(c, 5);  // the child copies page 1 (rows and scales), then writes past row 4
  ASSERT_NE(view.pages_of(std::size_t(c))[1], shared_page);
  EXPECT_EQ(0, std::memcmp(parent_scales.data(), view.k_scale_pages.row(std::size_t(shared_page), 0, 0),
                           parent_scales.size() * sizeof(float)))
      << "the child's append changed the parent's scales";
  hw.check("child appended after the fork");

  const snapshot before = take_snapshot(hw.cache);
  const std::vector<std::int32_t> both{a, c}, cu{0, 2, 6};
  for (float bad : {NAN, INFINITY, -INFINITY}) {
    tensor<float> k(1, 3, 6, 17), v(1, 3, 6, 9);
    fill_uniform(k, 1), fill_uniform(v, 2);
    k(0, 2, 5, 16) = bad;
    expect_error([&] { hw.cache.append(both, k.cview(), v.cview(), cu); },
                 {"paged_kv_cache::append", "k", "(0, 2, 5)", "NaN or an infinity"}, "non-finite k");
    EXPECT_TRUE(before == take_snapshot(hw.cache));
    k(0, 2, 5, 16) = 0;
    v(0, 0, 1, 3) = bad;
    expect_error([&] { hw.cache.append(a, k.cview(), v.cview()); }, {"v", "(0, 0, 1)"}, "non-finite v");
    EXPECT_TRUE(before == take_snapshot(hw.cache));
  }
  hw.check("after the failed appends");
}

}  // namespace
