// Tests of kv_cache (kv_cache.hpp): a prefill followed by decode steps, each with
// bottom-right causal attention over the cache, equals one causal attention over
// the whole sequence, with K in rows and in key blocks; appending past the capacity
// throws and changes nothing; a key-block cache holds the same keys as a row cache;
// the buffers start on a cache line (decode streams their rows line by line). int8:
// every row appended (from float, double, half and bfloat16, one token and many, in
// rows and key blocks) is stored as quantize_int8 stores it, bit for bit, codes and
// scale, within its bound of the value; past the capacity and a NaN or an infinity
// throw and change nothing (size, K, V and scales).
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "int8_check.hpp"
#include "kernel_harness.hpp"

namespace {

using namespace hwtest;

constexpr std::size_t Hq = 4, Hkv = 2, D = 16, Dv = 12, T = 41, prefill = 33;

/// Rows [begin, end) of t's sequence axis.
template <class V>
V seq_slice(const V& t, std::size_t begin, std::size_t end) {
  return V(t.row(0, 0, begin), t.batch(), t.heads(), end - begin, t.dim(), t.batch_stride(), t.head_stride(),
           t.seq_stride());
}

template <class S, kv_layout L = kv_layout::rows>
void check_prefill_then_steps() {
  tensor<float> q(2, Hq, T, D, layout::bshd), k(2, Hkv, T, D, layout::bshd), v(2, Hkv, T, Dv, layout::bshd);
  fill_uniform(q, 1);
  fill_uniform(k, 2);
  fill_uniform(v, 3);
  kv_cache<S, L> cache(2, Hkv, T + 3, D, Dv);

  // The oracle: causal attention of all T queries over K/V as the cache stores them.
  tensor<S> ks(2, Hkv, T, D), vs(2, Hkv, T, Dv);
  for (std::size_t b = 0; b < 2; ++b)
    for (std::size_t h = 0; h < Hkv; ++h)
      for (std::size_t s = 0; s < T; ++s) {
        for (std::size_t d = 0; d < D; ++d) ks(b, h, s, d) = static_cast<S>(k(b, h, s, d));
        for (std::size_t d = 0; d < Dv; ++d) vs(b, h, s, d) = static_cast<S>(v(b, h, s, d));
      }
  tensor<float> expected(2, Hq, T, Dv), got(2, Hq, T, Dv);
  attention_options opt;
  opt.causal = causal_mode::bottom_right;
  reference::attention(q.cview(), ks.cview(), vs.cview(), expected.view, opt);

  // prefill, then steps of 1, 2 and 1... tokens, each attending to the whole cache
  for (std::size_t t0 = 0; t0 < T;) {
    const std::size_t t1 = t0 == 0 ? prefill : std::min(T, t0 + 1 + (t0 % 2));
    cache.append(seq_slice(k.cview(), t0, t1), seq_slice(v.cview(), t0, t1));
    ASSERT_EQ(cache.size(), t1);
    attention(seq_slice(q.cview(), t0, t1), cache.keys(), cache.values(), seq_slice(got.view, t0, t1), opt);
    t0 = t1;
  }
  const double tol = attention_tolerance<float>(D, T, 1 / std::sqrt(double(D)), 1, 1, 1);
  const double err = max_abs_diff(got.view, expected.view);
  EXPECT_TRUE(err <= tol) << "max |steps - full| = " << err << " > " << tol;
}

TEST(kv_cache, prefill_then_decode_steps_equal_full_causal_attention) {
  check_prefill_then_steps<float>();
  check_prefill_then_steps<half>();
  check_prefill_then_steps<bfloat16>();
  check_prefill_then_steps<float, kv_layout::key_blocks>();
  check_prefill_then_steps<half, kv_layout::key_blocks>();
  check_prefill_then_steps<bfloat16, kv_layout::key_blocks>();
}

TEST(kv_cache, key_blocks_hold_the_keys_of_a_row_cache) {
  // capacity 37: three blocks, the last one part padding; appends of 5, 16 and 12
  // tokens start and end inside blocks
  kv_cache<half> rows(2, 3, 37, 6, 4);
  kv_cache<half, kv_layout::key_blocks> blocks(2, 3, 37, 6, 4);
  std::size_t seed = 20;
  for (std::size_t n : {5u, 16u, 12u}) {
    tensor<float> k(2, 3, n, 6, layout::bshd), v(2, 3, n, 4);
    fill_uniform(k, ++seed);
    fill_uniform(v, ++seed);
    rows.append(k.cview(), v.cview());
    blocks.append(k.cview(), v.cview());
    const tensor_view<const half> kr = rows.keys();
    const key_blocks_view<const half> kb = blocks.keys();
    ASSERT_EQ(kb.seq(), kr.seq());
    ASSERT_EQ(kb.blocks(), (kr.seq() + 15) / 16);
    for (std::size_t b = 0; b < 2; ++b)
      for (std::size_t h = 0; h < 3; ++h)
        for (std::size_t s = 0; s < kr.seq(); ++s)
          for (std::size_t d = 0; d < 6; ++d)
            ASSERT_EQ(kb(b, h, s, d).bits, kr(b, h, s, d).bits) << b << " " << h << " " << s << " " << d;
    EXPECT_EQ(0, std::memcmp(rows.values().data(), blocks.values().data(), 2 * 3 * 37 * 4 * sizeof(half)));
  }
  // past the capacity: an error, and the blocks unchanged
  const key_blocks_view<const half> kb = blocks.keys();
  const std::vector<half> before(kb.data(), kb.data() + key_blocks_elements(2, 3, 37, 6));
  tensor<float> k(2, 3, 5, 6), v(2, 3, 5, 4);
  EXPECT_THROW(blocks.append(k.cview(), v.cview()), error);
  EXPECT_EQ(blocks.size(), 33u);
  EXPECT_EQ(0, std::memcmp(before.data(), kb.data(), before.size() * sizeof(half)));
}

// Issue 25: the plain and flash kernels threw on an empty key-block cache (they
// unpacked the blocks into rows then, and the rows' view of seq 0 has zero strides,
// which the overlap check refused), where decode and a row cache gave zeros. Every
// kernel, path and thread count gives zeros and LSE −inf on an empty cache.
template <class S, kv_layout L>
void check_empty_cache() {
  using Tq = std::conditional_t<std::is_same_v<S, double>, double, float>;
  kv_cache<S, L> cache(2, Hkv, 20, D, Dv);
  tensor<Tq> q(2, Hq, 3, D);
  fill_uniform(q, 1);
  for (const variant& var : every_variant()) {
    tensor<Tq> out(2, Hq, 3, Dv);
    std::vector<float> lse(2 * Hq * 3, NAN);
    std::fill(out.storage.begin(), out.storage.end(), NAN);
    attention_options opt;
    opt.causal = causal_mode::bottom_right;
    opt.lse = lse_view(lse.data(), 2, Hq, 3);
    var.apply(opt);
    attention(q.cview(), cache.keys(), cache.values(), out.view, opt);
    for (std::size_t e = 1; e < out.storage.size(); ++e)
      if (!(out.storage[e] == Tq(0))) ADD_FAILURE() << var.name() << ": out " << out.storage[e];
    for (float l : lse)
      if (!(l == -INFINITY)) ADD_FAILURE() << var.name() << ": lse " << l;
  }
}

TEST(kv_cache, an_empty_cache_gives_zeros_on_every_kernel) {
  check_empty_cache<float, kv_layout::rows>();
  check_empty_cache<float, kv_layout::key_blocks>();
  check_empty_cache<half, kv_layout::key_blocks>();
  check_empty_cache<double, kv_layout::key_blocks>();
}

TEST(kv_cache, appending_past_capacity_throws_and_leaves_the_cache_unchanged) {
  kv_cache<half> cache(1, 2, 5, 4, 3);
  tensor<float> k(1, 2, 4, 4), v(1, 2, 4, 3);
  fill_uniform(k, 4);
  fill_uniform(v, 5);
  cache.append(k.cview(), v.cview());
  const std::vector<half> keys_before(cache.keys().data(), cache.keys().data() + 2 * 5 * 4);
  try {
    cache.append(k.cview(), v.cview());
    ADD_FAILURE() << "appending 4 tokens to a cache holding 4 of 5 did not throw";
  } catch (const error& e) {
    EXPECT_NE(std::string(e.what()).find("capacity"), std::string::npos) << e.what();
  }
  EXPECT_EQ(cache.size(), 4u);
  EXPECT_EQ(cache.keys().seq(), 4u);
  EXPECT_EQ(0, std::memcmp(keys_before.data(), cache.keys().data(), keys_before.size() * sizeof(half)));
  // a wrong shape throws too, before anything is written
  tensor<float> wrong_dim(1, 2, 1, 5), one_v(1, 2, 1, 3), wrong_heads(1, 1, 1, 4);
  EXPECT_THROW(cache.append(wrong_dim.cview(), one_v.cview()), error);
  EXPECT_THROW(cache.append(wrong_heads.cview(), one_v.cview()), error);
  EXPECT_EQ(cache.size(), 4u);
  // one more token fits exactly; clear() empties and keeps the capacity
  tensor<float> one_k(1, 2, 1, 4);
  cache.append(one_k.cview(), one_v.cview());
  EXPECT_EQ(cache.size(), 5u);
  cache.clear();
  EXPECT_EQ(cache.size(), 0u);
  EXPECT_EQ(cache.capacity(), 5u);
  EXPECT_EQ(cache.values().seq(), 0u);
  EXPECT_THROW(kv_cache<float>(1, 0, 4, 4), error);
}

/// An int8 cache (K in layout L) and its model: every value appended, as a double,
/// at [b, h, position, d].
template <kv_layout L>
struct int8_harness {
  static constexpr std::size_t B = 2, H = 3, capacity = 30;
  kv_cache<std::int8_t, L> cache;
  tensor<double> k, v;
  std::uint32_t seed = 0;

  int8_harness(std::size_t dk, std::size_t dv)
      : cache(B, H, capacity, dk, dv), k(B, H, capacity, dk), v(B, H, capacity, dv) {}

  /// n new tokens, K in BSHD and V in BHSD, both of type X.
  template <class X>
  void append(std::size_t n) {
    tensor<double> kd(B, H, n, cache.key_dim(), layout::bshd), vd(B, H, n, cache.value_dim());
    fill_uniform(kd, ++seed, 2.0);
    fill_uniform(vd, ++seed, 0.5);
    const tensor<X> kx = converted<X>(kd, layout::bshd), vx = converted<X>(vd, layout::bhsd);
    const std::size_t at = cache.size();
    cache.append(kx.cview(), vx.cview());
    for (std::size_t b = 0; b < B; ++b)
      for (std::size_t h = 0; h < H; ++h)
        for (std::size_t s = 0; s < n; ++s) {
          for (std::size_t d = 0; d < cache.key_dim(); ++d)
            k(b, h, at + s, d) = as_double(kx.view(b, h, s, d));
          for (std::size_t d = 0; d < cache.value_dim(); ++d)
            v(b, h, at + s, d) = as_double(vx.view(b, h, s, d));
        }
  }

  /// Every row held against the model.
  void check(const std::string& where) const {
    SCOPED_TRACE(where);
    const auto keys = cache.keys();
    const tensor_view<const std::int8_t> values = cache.values();
    const tensor_view<const float> ks = cache.key_scales(), vs = cache.value_scales();
    ASSERT_EQ(keys.seq(), cache.size());
    ASSERT_EQ(ks.seq(), cache.size());
    ASSERT_EQ(vs.seq(), cache.size());
    ASSERT_EQ(ks.dim(), 1u);
    ASSERT_EQ(vs.heads(), H);
    for (std::size_t b = 0; b < B; ++b)
      for (std::size_t h = 0; h < H; ++h)
        for (std::size_t s = 0; s < cache.size(); ++s) {
          ASSERT_TRUE(int8_row_matches(
              k.view.row(b, h, s), cache.key_dim(), [&](std::size_t d) { return keys(b, h, s, d); },
              ks(b, h, s, 0)))
              << "K " << b << " " << h << " " << s;
          ASSERT_TRUE(int8_row_matches(
              v.view.row(b, h, s), cache.value_dim(), [&](std::size_t d) { return values(b, h, s, d); },
              vs(b, h, s, 0)))
              << "V " << b << " " << h << " " << s;
        }
  }

  /// The bytes of K, V and both scale buffers, over the whole capacity.
  std::vector<unsigned char> bytes() const {
    const std::size_t rows = B * H * capacity;
    const std::size_t k_elements =
        L == kv_layout::rows ? rows * cache.key_dim() : key_blocks_elements(B, H, capacity, cache.key_dim());
    std::vector<unsigned char> all;
    auto add = [&all](const void* p, std::size_t n) {
      all.insert(all.end(), static_cast<const unsigned char*>(p), static_cast<const unsigned char*>(p) + n);
    };
    add(cache.keys().data(), k_elements);
    add(cache.values().data(), rows * cache.value_dim());
    add(cache.key_scales().data(), rows * sizeof(float));
    add(cache.value_scales().data(), rows * sizeof(float));
    return all;
  }
};

template <kv_layout L>
void check_int8_appends(std::size_t dk, std::size_t dv) {
  SCOPED_TRACE("Dk " + std::to_string(dk) + ", Dv " + std::to_string(dv));
  int8_harness<L> hw(dk, dv);
  hw.check("empty");
  hw.template append<float>(1);
  hw.check("1 float");
  hw.template append<double>(5);
  hw.check("+ 5 double");
  hw.template append<half>(1);
  hw.check("+ 1 half");
  hw.template append<bfloat16>(16);
  hw.check("+ 16 bfloat16");
  hw.template append<float>(7);
  hw.check("+ 7 float: full");
  EXPECT_EQ(hw.cache.size(), hw.capacity);
}

TEST(kv_cache, int8_rows_equal_quantize_int8_of_the_appends) {
  const std::size_t dims[][2] = {{16, 16}, {17, 9}, {1, 31}};
  for (const auto& [dk, dv] : dims) {
    check_int8_appends<kv_layout::rows>(dk, dv);
    check_int8_appends<kv_layout::key_blocks>(dk, dv);
  }
}

template <kv_layout L>
void check_int8_errors() {
  int8_harness<L> hw(17, 9);
  hw.template append<float>(20);
  const std::vector<unsigned char> before = hw.bytes();
  auto expect_error = [&](auto&& call, const std::vector<std::string>& parts, const char* what) {
    try {
      call();
      ADD_FAILURE() << what << ": no error";
    } catch (const error& e) {
      for (const std::string& p : parts)
        EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << what << ": " << e.what();
    }
    EXPECT_EQ(hw.cache.size(), 20u) << what;
    EXPECT_TRUE(before == hw.bytes()) << what << " changed the cache";
  };
  for (float bad : {NAN, INFINITY, -INFINITY}) {
    tensor<float> k(2, 3, 4, 17), v(2, 3, 4, 9);
    fill_uniform(k, 1), fill_uniform(v, 2);
    k(1, 2, 3, 16) = bad;  // the last row K, its last element
    expect_error([&] { hw.cache.append(k.cview(), v.cview()); },
                 {"kv_cache::append", "k", "(1, 2, 3)", "NaN"}, "non-finite k");
    k(1, 2, 3, 16) = 0;
    v(0, 1, 0, 0) = bad;
    expect_error([&] { hw.cache.append(k.cview(), v.cview()); }, {"kv_cache::append", "v", "(0, 1, 0)"},
                 "non-finite v");
  }
  tensor<half> k(2, 3, 11, 17), v(2, 3, 11, 9);
  expect_error([&] { hw.cache.append(k.cview(), v.cview()); }, {"capacity"}, "past the capacity");
  hw.check("after the failed appends");
  hw.template append<half>(10);
  hw.check("then a good one to the brim");
}

TEST(kv_cache, int8_overflow_and_non_finite_input_throw_and_change_nothing) {
  check_int8_errors<kv_layout::rows>();
  check_int8_errors<kv_layout::key_blocks>();
}

TEST(kv_cache, buffers_start_on_a_cache_line_and_from_2_MiB_on_a_huge_page_boundary) {
  auto offset = [](const void* p, std::uintptr_t a) { return reinterpret_cast<std::uintptr_t>(p) % a; };
  constexpr std::uintptr_t huge = 2u << 20;
  for (std::size_t capacity : {1u, 7u, 4096u}) {
    kv_cache<float> f(2, 3, capacity, 128, 64);  // K 12 MiB, V 6 MiB at capacity 4096
    kv_cache<half> h(1, 1, capacity, 5);
    EXPECT_EQ(offset(f.keys().data(), 64), 0u);
    EXPECT_EQ(offset(f.values().data(), 64), 0u);
    EXPECT_EQ(offset(h.keys().data(), 64), 0u);
    EXPECT_EQ(offset(h.values().data(), 64), 0u);
    if (capacity == 4096) {
      EXPECT_EQ(offset(f.keys().data(), huge), 0u);
      EXPECT_EQ(offset(f.values().data(), huge), 0u);
    }
  }
  // the allocator itself: both paths give zeroed, writable, correctly freed storage
  for (std::size_t n : {std::size_t(1), (huge - 1) / 4, huge / 4, 3 * huge / 4 + 5}) {
    detail::kv_buffer<float> b(n);
    EXPECT_EQ(offset(b.data(), n * 4 >= huge ? huge : 64), 0u) << n;
    EXPECT_EQ(b.front(), 0.0f);
    EXPECT_EQ(b.back(), 0.0f);
    b.back() = 1.0f;
  }
}

}  // namespace
