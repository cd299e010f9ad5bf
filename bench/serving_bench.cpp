// serving_bench: what an inference server runs (attention_varlen, varlen.hpp).
//
//   BM_varlen_prefill            8 prompts of mixed lengths (9 to 1024 tokens, 2908 in
//                                all) packed in one call, causal, Hq 8 Hkv 2 d 128, fp32
//   BM_varlen_prefill_separate   the same prompts as 8 attention() calls: the same FLOPs
//   BM_varlen_prefill_one_prompt one prompt of the same 2908 tokens (more FLOPs: the
//                                GFLOP/s column compares, not the time)
//   BM_batched_decode            one decode step of 16 sequences whose lengths run from
//                                128 to 32768 (log-spaced, 105 k keys in all), Hq 32 Hkv 8
//                                d 128, K/V fp16: layout 0 contiguous (packed one after
//                                another, cu_seqlens_k), 16 and 128 pages of that many keys
//                                handed out in a shuffled order (a pool after churn)
//   BM_dram_read_runs            the bound of a paged step: 400 MiB read as runs of 4 KiB
//                                (a 16-key page of one kv head, fp16 d 128), 32 KiB (the
//                                8 heads of such a page, or one head of a 128-key page)
//                                and 256 KiB (a 128-key page) in a shuffled order, and
//                                in address order (run 0)
// Counters: FLOPS (visible FLOPs, 4·d per query-key pair, per second) for prefill;
// bytes_per_second (K+V bytes, once) for decode, a share of BM_dram_read_runs with
// the runs its layout reads.
#include <headwise/headwise.hpp>

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <thread>
#include <vector>

namespace {

using headwise::attention_options;
using headwise::causal_mode;

const std::vector<std::size_t> prompt_lengths = {48, 512, 150, 1024, 9, 350, 65, 750};
constexpr std::size_t pf_hq = 8, pf_hkv = 2, pf_d = 128;

void fill(std::vector<float>& x, std::uint32_t seed) {
  std::uint32_t s = seed * 2654435761u + 1;
  for (float& e : x) {
    s = s * 1664525u + 1013904223u;
    e = float(s >> 8) * (2.0f / 16777216.0f) - 1.0f;
  }
}

double causal_flops(std::size_t n) { return 4.0 * pf_d * pf_hq * double(n) * double(n + 1) / 2; }

/// Packed [1, H, T, d] token-major buffers of the prompts.
struct packed_prompts {
  std::size_t total = std::accumulate(prompt_lengths.begin(), prompt_lengths.end(), std::size_t(0));
  std::vector<float> q = std::vector<float>(total * pf_hq * pf_d), k = std::vector<float>(total * pf_hkv * pf_d),
                     v = k, out = q;
  std::vector<std::int32_t> cu{0};
  packed_prompts() {
    fill(q, 1), fill(k, 2), fill(v, 3);
    for (std::size_t n : prompt_lengths) cu.push_back(cu.back() + std::int32_t(n));
  }
  template <class T>
  headwise::tensor_view<T> view(T* p, std::size_t heads, std::size_t from, std::size_t n) const {
    return headwise::bshd(p + from * heads * pf_d, 1, n, heads, pf_d).seq_slice(0, n);
  }
};

attention_options prefill_options(benchmark::State& state) {
  attention_options opt;
  opt.causal = causal_mode::bottom_right;
  opt.threads = unsigned(state.range(0));
  return opt;
}

void BM_varlen_prefill(benchmark::State& state) {
  packed_prompts p;
  const attention_options opt = prefill_options(state);
  const headwise::varlen_batch batch{p.cu, p.cu, {}};
  double flops = 0;
  for (std::size_t n : prompt_lengths) flops += causal_flops(n);
  for (auto _ : state) {
    headwise::attention_varlen(p.view<const float>(p.q.data(), pf_hq, 0, p.total),
                               p.view<const float>(p.k.data(), pf_hkv, 0, p.total),
                               p.view<const float>(p.v.data(), pf_hkv, 0, p.total),
                               p.view(p.out.data(), pf_hq, 0, p.total), batch, opt);
    benchmark::ClobberMemory();
  }
  state.counters["FLOPS"] = benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_varlen_prefill_separate(benchmark::State& state) {
  packed_prompts p;
  const attention_options opt = prefill_options(state);
  double flops = 0;
  for (std::size_t n : prompt_lengths) flops += causal_flops(n);
  for (auto _ : state) {
    for (std::size_t b = 0; b < prompt_lengths.size(); ++b) {
      const std::size_t at = std::size_t(p.cu[b]), n = prompt_lengths[b];
      headwise::attention(p.view<const float>(p.q.data(), pf_hq, at, n), p.view<const float>(p.k.data(), pf_hkv, at, n),
                          p.view<const float>(p.v.data(), pf_hkv, at, n), p.view(p.out.data(), pf_hq, at, n), opt);
    }
    benchmark::ClobberMemory();
  }
  state.counters["FLOPS"] = benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_varlen_prefill_one_prompt(benchmark::State& state) {
  packed_prompts p;
  const attention_options opt = prefill_options(state);
  for (auto _ : state) {
    headwise::attention(p.view<const float>(p.q.data(), pf_hq, 0, p.total),
                        p.view<const float>(p.k.data(), pf_hkv, 0, p.total),
                        p.view<const float>(p.v.data(), pf_hkv, 0, p.total), p.view(p.out.data(), pf_hq, 0, p.total),
                        opt);
    benchmark::ClobberMemory();
  }
  state.counters["FLOPS"] = benchmark::Counter(causal_flops(p.total), benchmark::Counter::kIsIterationInvariantRate);
}

// ---- batched decode ------------------------------------------------------------

constexpr std::size_t dc_b = 16, dc_hq = 32, dc_hkv = 8, dc_d = 128;
using kv_t = headwise::half;

std::vector<std::int32_t> decode_lengths() {
  std::vector<std::int32_t> n;
  for (std::size_t b = 0; b < dc_b; ++b)
    n.push_back(std::int32_t(std::lround(128.0 * std::pow(256.0, double(b) / double(dc_b - 1)))));
  return n;
}

void fill_half(headwise::detail::kv_buffer<kv_t>& x, std::uint32_t seed) {
  std::vector<float> f(4096);
  fill(f, seed);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = kv_t(f[i % f.size()]);
}

void BM_batched_decode(benchmark::State& state) {
  const auto page = std::size_t(state.range(0));
  const std::vector<std::int32_t> lengths = decode_lengths();
  std::vector<std::int32_t> cu{0};
  for (std::int32_t n : lengths) cu.push_back(cu.back() + n);
  const auto total = std::size_t(cu.back());
  std::vector<float> q(dc_b * dc_hq * dc_d), out(q.size());
  fill(q, 4);
  attention_options opt;
  opt.causal = causal_mode::bottom_right;
  opt.threads = unsigned(state.range(1));
  const auto qv = headwise::bhsd<const float>(q.data(), dc_b, dc_hq, 1, dc_d);
  const auto ov = headwise::bhsd(out.data(), dc_b, dc_hq, 1, dc_d);
  headwise::detail::kv_buffer<kv_t> k, v;
  std::vector<std::int32_t> table;
  std::size_t pages = 0, per_seq = 0;
  if (page == 0) {  // contiguous: the sequences packed one after another, [Hkv][total][d]
    k.resize(dc_hkv * total * dc_d), v.resize(k.size());
  } else {
    for (std::int32_t n : lengths) pages += (std::size_t(n) + page - 1) / page;
    per_seq = (std::size_t(lengths.back()) + page - 1) / page;
    k.resize(pages * dc_hkv * page * dc_d), v.resize(k.size());
    std::vector<std::int32_t> order(pages);
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), std::mt19937(5));
    table.assign(dc_b * per_seq, 0);
    std::size_t next = 0;
    for (std::size_t b = 0; b < dc_b; ++b)
      for (std::size_t p = 0; p * page < std::size_t(lengths[b]); ++p) table[b * per_seq + p] = order[next++];
  }
  fill_half(k, 1), fill_half(v, 2);
  headwise::varlen_batch batch;
  batch.seqused_k = lengths;
  headwise::paged_kv_view<const kv_t> kv;
  if (page == 0) {
    batch.cu_seqlens_k = cu;
  } else {
    kv.k_pages = headwise::bhsd<const kv_t>(k.data(), pages, dc_hkv, page, dc_d);
    kv.v_pages = headwise::bhsd<const kv_t>(v.data(), pages, dc_hkv, page, dc_d);
    kv.block_table = table;
    kv.pages_per_seq = per_seq;
  }
  const auto kc = headwise::bhsd<const kv_t>(k.data(), 1, dc_hkv, total, dc_d);
  const auto vc = headwise::bhsd<const kv_t>(v.data(), 1, dc_hkv, total, dc_d);
  for (auto _ : state) {
    if (page == 0)
      headwise::attention_varlen(qv, kc, vc, ov, batch, opt);
    else
      headwise::attention_varlen(qv, kv, ov, batch, opt);
    benchmark::ClobberMemory();
  }
  const std::size_t bytes = total * dc_hkv * 2 * dc_d * sizeof(kv_t);
  state.SetBytesProcessed(std::int64_t(state.iterations()) * std::int64_t(bytes));
  state.counters["KV_MiB"] = double(bytes) / (1 << 20);
}

/// Sums every 64-byte line of `bytes` of memory read as runs of `run` bytes in a
/// shuffled order, on the bench's threads (run 0: 2 MiB runs in address order).
void BM_dram_read_runs(benchmark::State& state) {
  const std::size_t bytes = std::size_t(400) << 20, run = state.range(0) ? std::size_t(state.range(0)) : 2 << 20;
  const auto threads = unsigned(state.range(1));
  headwise::detail::kv_buffer<float> data(bytes / sizeof(float), 1.0f);
  std::vector<std::size_t> order(bytes / run);
  std::iota(order.begin(), order.end(), std::size_t(0));
  if (state.range(0)) std::shuffle(order.begin(), order.end(), std::mt19937(3));
  std::vector<float> sums(threads * 16);
  for (auto _ : state) {
    std::vector<std::thread> others;
    auto part = [&](unsigned t) {
      float acc[16] = {};
      const std::size_t n = order.size();  // thread t: the t-th slice of the order
      for (std::size_t i = n * t / threads; i < n * (t + 1) / threads; ++i) {
        const float* x = data.data() + order[i] * (run / sizeof(float));
        for (std::size_t e = 0; e < run / sizeof(float); e += 16)
          for (std::size_t l = 0; l < 16; ++l) acc[l] += x[e + l];
      }
      std::copy(acc, acc + 16, sums.begin() + t * 16);
    };
    for (unsigned t = 1; t < threads; ++t) others.emplace_back(part, t);
    part(0);
    for (std::thread& th : others) th.join();
    benchmark::DoNotOptimize(sums.data());
  }
  state.SetBytesProcessed(std::int64_t(state.iterations()) * std::int64_t(bytes));
}
BENCHMARK(BM_dram_read_runs)
    ->ArgNames({"run", "threads"})
    ->ArgsProduct({{0, 4096, 32768, 262144}, {1, 2}})
    ->Repetitions(3)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

void prefill_threads(benchmark::internal::Benchmark* b) {
  // Three repetitions: bench_table keeps the best, so one disturbed run does not decide a ratio.
  b->ArgNames({"threads"})->Args({1})->Args({2})->Repetitions(3)->UseRealTime()->Unit(benchmark::kMillisecond);
}
BENCHMARK(BM_varlen_prefill)->Apply(prefill_threads);
BENCHMARK(BM_varlen_prefill_separate)->Apply(prefill_threads);
BENCHMARK(BM_varlen_prefill_one_prompt)->Apply(prefill_threads);
BENCHMARK(BM_batched_decode)
    ->ArgNames({"page", "threads"})
    ->ArgsProduct({{0, 16, 128}, {1, 2}})
    ->Repetitions(3)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace
