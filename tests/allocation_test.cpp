// Tests that attention calls allocate nothing once their workspace has grown
// (workspace.hpp): this executable replaces the global operator new and delete with
// counting ones, warms a call up once, then counts the allocations of the calls that
// follow. A decode loop (append one token to a kv_cache, attend over it) runs 100
// steps after the first on every kernel, K layout, K/V type and thread count; the
// count must be zero. Also: a caller's workspace holds the scratch, release() frees it;
// paged_kv_cache's operations after its constructor allocate nothing; appends to the
// int8 caches (quantizing, with scales) allocate nothing.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>
#include <vector>

#include "test_util.hpp"

// The replacements below pair operator new with std::free on purpose.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace {

std::atomic<long> allocations{0};
std::atomic<bool> counting{false};

void* counted(std::size_t n, std::size_t align) {
  if (counting.load(std::memory_order_relaxed)) allocations.fetch_add(1, std::memory_order_relaxed);
  n = n ? n : 1;
  void* p = align <= alignof(std::max_align_t) ? std::malloc(n) : std::aligned_alloc(align, (n + align - 1) / align * align);
  return p;
}

}  // namespace

void* operator new(std::size_t n) {
  if (void* p = counted(n, 0)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return operator new(n); }
void* operator new(std::size_t n, std::align_val_t a) {
  if (void* p = counted(n, std::size_t(a))) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n, std::align_val_t a) { return operator new(n, a); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return counted(n, 0); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return counted(n, 0); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }

namespace {

using namespace hwtest;

/// Allocations made by fn(), counted on every thread.
template <class Fn>
long allocations_of(Fn&& fn) {
  allocations.store(0);
  counting.store(true);
  fn();
  counting.store(false);
  return allocations.load();
}

constexpr std::size_t B = 1, Hq = 8, Hkv = 2, D = 64, prompt = 300, steps = 100;

/// A prompt of 300 tokens, then 1 + 100 decode steps; returns the allocations of the
/// last 100 (each: append one token's K/V, attend with its query). The scratch that
/// follows Nk (the plain kernel's row of logits, 1.2–1.6 KiB here) stays within its
/// buffer's power of two, so the count is zero, not one per crossing.
template <class S, kv_layout L>
long decode_loop_allocations(kernel_mode mode, unsigned threads, workspace* scratch) {
  tensor<float> k(B, Hkv, prompt + steps + 1, D), v(B, Hkv, prompt + steps + 1, D), q(B, Hq, 1, D), out(B, Hq, 1, D);
  fill_uniform(k, 1);
  fill_uniform(v, 2);
  fill_uniform(q, 3);
  std::vector<float> lse(B * Hq);
  kv_cache<S, L> cache(B, Hkv, prompt + steps + 1, D);
  cache.append(k.cview().seq_slice(0, prompt), v.cview().seq_slice(0, prompt));
  attention_options opt;
  opt.causal = causal_mode::bottom_right;
  opt.kernel = mode;
  opt.threads = threads;
  opt.lse = lse_view(lse.data(), B, Hq, 1);
  opt.scratch = scratch;
  std::size_t t = prompt;
  auto step = [&] {
    cache.append(k.cview().seq_slice(t, 1), v.cview().seq_slice(t, 1));
    if constexpr (is_storage_int8<S>) opt.k_scale = cache.key_scales(), opt.v_scale = cache.value_scales();
    attention(q.cview(), cache.keys(), cache.values(), out.view, opt);
    ++t;
  };
  step();  // the first step grows the workspace (and starts the thread pool)
  return allocations_of([&] {
    for (std::size_t i = 0; i < steps; ++i) step();
  });
}

template <class S, kv_layout L>
void expect_no_allocations() {
  for (kernel_mode mode : {kernel_mode::automatic, kernel_mode::decode, kernel_mode::flash, kernel_mode::plain})
    for (unsigned threads : {1u, 2u}) {
      EXPECT_EQ((decode_loop_allocations<S, L>(mode, threads, nullptr)), 0)
          << "mode " << int(mode) << ", " << threads << " threads, the thread's workspace";
      workspace ws;
      EXPECT_EQ((decode_loop_allocations<S, L>(mode, threads, &ws)), 0)
          << "mode " << int(mode) << ", " << threads << " threads, a caller's workspace";
    }
}

TEST(allocations, decode_steps_after_the_first_allocate_nothing_rows_f32) {
  expect_no_allocations<float, kv_layout::rows>();
}
TEST(allocations, decode_steps_after_the_first_allocate_nothing_key_blocks_f32) {
  expect_no_allocations<float, kv_layout::key_blocks>();
}
TEST(allocations, decode_steps_after_the_first_allocate_nothing_rows_f16) {
  expect_no_allocations<half, kv_layout::rows>();
}
TEST(allocations, decode_steps_after_the_first_allocate_nothing_key_blocks_bf16) {
  expect_no_allocations<bfloat16, kv_layout::key_blocks>();
}
TEST(allocations, decode_steps_after_the_first_allocate_nothing_rows_int8) {
  expect_no_allocations<std::int8_t, kv_layout::rows>();
}

// A prefill repeated on one shape: the flash kernel's tiles come from the workspace.
TEST(allocations, repeated_prefill_allocates_nothing) {
  tensor<float> q(1, 4, 200, 64), k(1, 4, 200, 64), v(1, 4, 200, 64), out(1, 4, 200, 64);
  fill_uniform(q, 4);
  fill_uniform(k, 5);
  fill_uniform(v, 6);
  for (unsigned threads : {1u, 2u}) {
    attention_options opt;
    opt.causal = causal_mode::top_left;
    opt.threads = threads;
    attention(q.cview(), k.cview(), v.cview(), out.view, opt);
    EXPECT_EQ(allocations_of([&] {
                for (int i = 0; i < 5; ++i) attention(q.cview(), k.cview(), v.cview(), out.view, opt);
              }),
              0)
        << threads << " threads";
  }
}

// A backward repeated on one shape (GQA, causal, 1 and 2 threads): its tiles come
// from the workspace too.
TEST(allocations, repeated_backward_allocates_nothing) {
  tensor<float> q(1, 4, 200, 64), k(1, 2, 200, 64), v(1, 2, 200, 48), out(1, 4, 200, 48), dout(1, 4, 200, 48);
  tensor<float> dq(1, 4, 200, 64), dk(1, 2, 200, 64), dv(1, 2, 200, 48);
  std::vector<float> lse(4 * 200);
  fill_uniform(q, 4), fill_uniform(k, 5), fill_uniform(v, 6), fill_uniform(dout, 7);
  for (unsigned threads : {1u, 2u}) {
    attention_options opt;
    opt.causal = causal_mode::top_left;
    opt.threads = threads;
    opt.lse = lse_view(lse.data(), 1, 4, 200);
    attention(q.cview(), k.cview(), v.cview(), out.view, opt);
    const auto clse = lse_view(static_cast<const float*>(lse.data()), 1, 4, 200);
    auto backward = [&] {
      attention_backward(q.cview(), k.cview(), v.cview(), out.cview(), clse, dout.cview(), dq.view, dk.view, dv.view,
                         opt);
    };
    backward();
    EXPECT_EQ(allocations_of([&] {
                for (int i = 0; i < 5; ++i) backward();
              }),
              0)
        << threads << " threads";
  }
}

// paged_kv_cache (paged_kv_cache.hpp) allocates everything in its constructor: slots,
// multi-sequence appends across pages, fork, copy-on-write, truncate and free
// allocate nothing.
TEST(allocations, paged_kv_cache_operations_allocate_nothing) {
  paged_kv_cache<half> cache(16, 2, 16, 8, 4, 4, 4);
  tensor<float> k(1, 2, 40, 8), v(1, 2, 40, 4);
  fill_uniform(k, 10), fill_uniform(v, 11);
  const std::vector<std::int32_t> cu{0, 17, 17, 40}, one{0, 3};
  std::vector<std::int32_t> seqs(3), pair(1);
  EXPECT_EQ(allocations_of([&] {
              for (int round = 0; round < 3; ++round) {
                for (std::int32_t& s : seqs) s = cache.add_sequence();
                cache.append(seqs, k.cview(), v.cview(), cu);
                pair[0] = cache.fork(seqs[0]);  // then its first append copies page 1
                cache.append(pair, k.cview().seq_slice(0, 3), v.cview().seq_slice(0, 3), one);
                cache.append(seqs[0], k.cview().seq_slice(3, 2), v.cview().seq_slice(3, 2));
                cache.truncate(seqs[2], 5);
                (void)cache.view(seqs);
                for (std::int32_t s : seqs) cache.free(s);
                cache.free(pair[0]);
              }
            }),
            0);
  EXPECT_EQ(cache.free_pages(), 16u);
}

// The int8 caches quantize on append into what their constructors allocated (the
// scales; kv_cache's key-block row before its scatter; paged_kv_cache's scale pools,
// copied on write with their pages): appends of one token and of many, from float
// and half, in rows, key blocks and pages, allocate nothing.
TEST(allocations, int8_cache_appends_allocate_nothing) {
  kv_cache<std::int8_t> rows(2, 2, 64, 17, 8);
  kv_cache<std::int8_t, kv_layout::key_blocks> blocks(2, 2, 64, 17, 8);
  paged_kv_cache<std::int8_t> paged(16, 2, 16, 17, 8, 4, 4);
  tensor<float> k(2, 2, 5, 17), v(2, 2, 5, 8), pk(1, 2, 40, 17), pv(1, 2, 40, 8);
  tensor<half> hk(2, 2, 1, 17), hv(2, 2, 1, 8);
  fill_uniform(k, 1), fill_uniform(v, 2), fill_uniform(hk, 3), fill_uniform(hv, 4);
  fill_uniform(pk, 5), fill_uniform(pv, 6);
  const std::vector<std::int32_t> cu{0, 17, 17, 40}, one{0, 3};
  std::vector<std::int32_t> seqs(3), pair(1);
  EXPECT_EQ(allocations_of([&] {
              for (int i = 0; i < 10; ++i) {
                rows.append(k.cview(), v.cview());
                blocks.append(k.cview(), v.cview());
                rows.append(hk.cview(), hv.cview());
                blocks.append(hk.cview(), hv.cview());
              }
              for (int round = 0; round < 3; ++round) {
                for (std::int32_t& s : seqs) s = paged.add_sequence();
                paged.append(seqs, pk.cview(), pv.cview(), cu);
                pair[0] = paged.fork(seqs[0]);  // then its first append copies page 1 and its scales
                paged.append(pair, pk.cview().seq_slice(0, 3), pv.cview().seq_slice(0, 3), one);
                paged.append(seqs[0], pk.cview().seq_slice(3, 1), pv.cview().seq_slice(3, 1));
                for (std::int32_t s : seqs) paged.free(s);
                paged.free(pair[0]);
              }
            }),
            0);
  EXPECT_EQ(rows.size(), 60u);
  EXPECT_EQ(blocks.key_scales().seq(), 60u);
  EXPECT_EQ(paged.free_pages(), 16u);
}

// attention_varlen builds its per-sequence calls in the workspace: a serving loop of
// decode steps over a paged cache (one token appended to each sequence a step) and of
// mixed prefill allocates nothing after its first steps, on 1 and 2 threads, with
// float and int8 pages.
template <class S>
void expect_serving_loop_allocates_nothing(unsigned threads) {
  paged_kv_cache<S> cache(64, 2, 16, 8, 8, 4, 16);
  tensor<float> k(1, 2, 40, 8), v(1, 2, 40, 8), q(4, 4, 1, 8), out(4, 4, 1, 8);
  fill_uniform(k, 1), fill_uniform(v, 2), fill_uniform(q, 3);
  std::vector<std::int32_t> seqs(4), cu{0, 3, 9, 10, 40}, step{0, 1, 2, 3, 4};
  for (std::int32_t& s : seqs) s = cache.add_sequence();
  cache.append(seqs, k.cview(), v.cview(), cu);
  attention_options opt;
  opt.causal = causal_mode::bottom_right;
  opt.threads = threads;
  auto one_step = [&] {
    cache.append(seqs, k.cview().seq_slice(0, 4), v.cview().seq_slice(0, 4), step);
    attention_varlen(q.cview(), cache.view(seqs), out.view, varlen_batch{{}, {}, cache.lengths()}, opt);
  };
  for (int warm = 0; warm < 40; ++warm) one_step();  // the workspace reaches its size
  EXPECT_EQ(allocations_of([&] {
              for (int i = 0; i < 20; ++i) one_step();
            }),
            0)
      << threads << " threads";
}

TEST(allocations, varlen_serving_steps_allocate_nothing) {
  for (unsigned threads : {1u, 2u}) {
    expect_serving_loop_allocates_nothing<float>(threads);
    expect_serving_loop_allocates_nothing<std::int8_t>(threads);
  }
}

// A caller's workspace holds the scratch: it grows on the first call, keeps its size
// on a smaller call of the same kernel, and release() gives it back.
TEST(allocations, a_callers_workspace_holds_the_scratch_until_released) {
  tensor<float> q(1, 4, 256, 64), k(1, 4, 256, 64), v(1, 4, 256, 64), out(1, 4, 256, 64);
  fill_uniform(q, 7);
  fill_uniform(k, 8);
  fill_uniform(v, 9);
  workspace ws;
  EXPECT_EQ(ws.bytes(), 0u);
  attention_options opt;
  opt.scratch = &ws;
  opt.threads = 2;
  opt.kernel = kernel_mode::flash;
  attention(q.cview(), k.cview(), v.cview(), out.view, opt);
  const std::size_t grown = ws.bytes();
  EXPECT_GT(grown, 0u);
  attention(q.cview().seq_slice(0, 16), k.cview(), v.cview(), out.view.seq_slice(0, 16), opt);
  EXPECT_EQ(ws.bytes(), grown) << "a workspace never shrinks";
  ws.release();
  EXPECT_EQ(ws.bytes(), 0u);
}

}  // namespace
