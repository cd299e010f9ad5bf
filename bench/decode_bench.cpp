// bench/decode_bench.cpp — decode steps against a long KV cache, and this machine's
// DRAM read bandwidth, so the table reports decode as a % of what memory can give.
//
//   decode/<impl>/B<b>_H32x8_N<kv>_d128/threads:<t>
//     impl  headwise_f32, headwise_f16   the split-KV decode kernel, K/V in float / half
//           headwise_f32_kblocks, headwise_f16_kblocks   the same with K in key blocks
//                                        (key_blocks.hpp), as kv_layout::key_blocks
//                                        caches hold it
//           plain_f32                    the plain kernel (reads K/V once per *query*
//                                        head, 4× here), short KV only: the baseline
//     shape Hq 32, Hkv 8 (GQA group 4), d 128, one query token, KV 512 / 4096 / 32768
//           (L2-resident, LLC-sized, DRAM-bound), B 1 and 4; threads 1 and 2
//   counters GBps   K+V bytes of one step counted once (B·Hkv·N·2·d·sizeof) / time.
//                   At N 32768 K/V (256 MiB per batch entry in fp32) cannot stay in
//                   any cache, so a kernel that read them g times per step would be
//                   capped at bandwidth / g on this counter: headwise above 25% of
//                   peak/bandwidth means fewer than 4 (= Hq/Hkv) reads. plain reads
//                   them once per query head (run at N <= 4096 only, to stay short).
//            KV_MiB those bytes per step
//            copies K/V copies the step cycles through: at N 32768 enough that their
//                   total is twice the last-level cache, so every step reads DRAM
//   K, V and the bandwidth buffer are detail::kv_buffer, as kv_cache allocates them
//   (on a cache line; from 2 MiB on 2 MiB-aligned, in transparent huge pages where
//   Linux grants them).
//   peak/bandwidth/1GiB/threads:<t>: sum of a 1 GiB float buffer with vector loads
//            (the same GBps counter), the denominator of the %peak column.
//   peak/bandwidth_fma8/1GiB/threads:<t>: the same read with 8 independent FMAs per
//            64-B line, the decode's arithmetic per line of fp32 K+V (x-baseline: its
//            share of the plain bandwidth): whether a core that also computes keeps
//            fewer lines in flight. On Zen 5 it does not (99.6% of the plain row).
//   peak/bandwidth_dep4/1GiB/threads:<t>: the same read where every loaded pack
//            feeds 4 FMAs, as the decode's 4 query rows per K/V row do: arithmetic that
//            waits for its lines. On a Zen 5 VM it reads 93-104% of the plain row with
//            each pack loaded once (as the decode's pinned tiles do); a stream whose
//            packs GCC re-loaded for each FMA read ~75%.
//   The bandwidth rows and the N 32768 rows run dram_repetitions times, interleaved at
//   random with the other benchmarks (main.cpp), and the table keeps the best of
//   each: on a shared host both swing by ±20% between seconds (one run's three
//   bandwidth repetitions spread 1.45×).
// The x-baseline column is the speed-up over headwise_f32 at the same shape, a ratio
// of times: for headwise_f16 it is the fp16-over-fp32 speed-up (its GB/s counts the
// half-size bytes it reads); for the _kblocks rows, what key blocks gain over rows.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <unistd.h>

#include <headwise/headwise.hpp>

#include "headwise/detail/aligned_allocator.hpp"
#include "headwise/simd/pack.hpp"
#include "table_reporter.hpp"

namespace {

using namespace headwise;

/// Repetitions of the DRAM-bound rows (bandwidth, decode N 32768); the table keeps
/// the best of each.
constexpr int dram_repetitions = 5;

[[maybe_unused]] const bool metrics_declared =
    headwise_bench::declare(
        headwise_bench::metric{"GBps", "GB/s", "peak/bandwidth", "headwise_f32", "decode"}) &&
    headwise_bench::declare(headwise_bench::metric{"GBps", "GB/s", "peak/bandwidth", "bandwidth", "peak"});

/// Cheap deterministic fill in [-1, 1): the buffers are up to 1 GiB.
template <class Vec>
void fill(Vec& x, std::uint32_t seed) {
  using T = typename Vec::value_type;
  std::uint32_t s = seed * 2654435761u + 1;
  for (T& e : x) {
    s = s * 1664525u + 1013904223u;
    e = static_cast<T>(float(s >> 8) * (2.0f / 16777216.0f) - 1.0f);
  }
}

/// The last-level cache's bytes (sysconf; 64 MiB when the system does not say).
std::size_t llc_bytes() {
  long l3 = -1;
#if defined(_SC_LEVEL3_CACHE_SIZE)
  l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
#endif
  return l3 > 0 ? std::size_t(l3) : std::size_t(64) << 20;
}

template <class S>
void bm_decode(benchmark::State& state, kernel_mode mode, std::size_t B, std::size_t N, unsigned threads,
               bool key_blocks) {
  constexpr std::size_t Hq = 32, Hkv = 8, d = 128;
  const std::size_t elems = B * Hkv * N * d, bytes = 2 * elems * sizeof(S);
  // DRAM-bound rows (N 32768) cycle through copies of K/V whose total is at least
  // twice the last-level cache, so no step finds its K/V left in cache by the step
  // before (this Xeon VM reports 480 MiB of L3: one fp16 B1 step's 128 MiB fits).
  const std::size_t copies =
      N >= 32768 ? std::clamp<std::size_t>((2 * llc_bytes() + bytes - 1) / bytes, 1, 16) : 1;
  std::vector<float> q(B * Hq * d), out(B * Hq * d);
  std::vector<detail::kv_buffer<S>> k(copies), v(copies);  // as kv_cache holds them
  fill(q, 1);
  for (std::size_t c = 0; c < copies; ++c) {
    k[c].resize(elems);
    v[c].resize(elems);
    fill(k[c], 2);
    fill(v[c], 3);
  }
  attention_options opt;
  opt.kernel = mode;
  opt.threads = threads;
  opt.causal = causal_mode::bottom_right;
  const auto qv = bhsd<const float>(q.data(), B, Hq, 1, d);
  const auto ov = bhsd(out.data(), B, Hq, 1, d);
  std::size_t c = 0;
  for (auto _ : state) {
    const auto vv = bhsd<const S>(v[c].data(), B, Hkv, N, d);
    if (key_blocks)  // N is a multiple of 16: the blocks have no padding
      attention(qv, key_blocks_bhsd<const S>(k[c].data(), B, Hkv, N, d), vv, ov, opt);
    else
      attention(qv, bhsd<const S>(k[c].data(), B, Hkv, N, d), vv, ov, opt);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
    c = (c + 1) % copies;
  }
  state.counters["GBps"] =
      benchmark::Counter(double(bytes) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["KV_MiB"] = double(bytes) / (1 << 20);
  state.counters["copies"] = double(copies);
}

/// What bm_bandwidth does with the packs it reads.
enum class stream_work {
  sum,               // adds them up: the plain read bandwidth
  independent_fma8,  // also 8 FMAs per 64-B line that do not use them
  dependent_fma4,    // feeds each pack to 4 FMAs, as decode's 4 query rows per K/V row do
};

/// Reads a 1 GiB buffer with vector loads on `threads` threads, doing Work with it.
/// A decode step at G = 4 query rows per K/V row does 128 8-wide FMAs per 1 KiB of
/// fp32 K+V, 8 per line: independent_fma8 is the bandwidth one core keeps while its
/// FMA pipes are as busy as the decode's, reading in the easiest order, and
/// dependent_fma4 the same order when that arithmetic consumes the loaded data, as
/// the decode's does (each FMA then waits for its line): references, not bounds.
template <stream_work Work>
void bm_bandwidth(benchmark::State& state, unsigned threads) {
  using P = simd::vector_pack<float>;
  using O = simd::ops<P>;
  constexpr std::size_t W = O::width, bytes = std::size_t(1) << 30, n = bytes / sizeof(float);
  constexpr int fma_per_step = 8 * int(4 * W * sizeof(float)) / 64;  // independent_fma8; a step reads 4 packs
  constexpr std::size_t dep_cols = simd::vector_registers >= 32 ? 4 : 2;  // 16 or 8 dependent_fma4 chains
  detail::kv_buffer<float> buf(n);  // the K/V buffers' pages, so % of bandwidth compares like with like
  fill(buf, 4);
  std::vector<float> sums(threads);
  for (auto _ : state) {
    detail::parallel_for(threads, threads, [&](std::size_t t, unsigned) {
      const float* p = buf.data() + n / threads * t;
      P a0(0.0f), a1(0.0f), a2(0.0f), a3(0.0f);  // 4 chains hide the add latency
      P f[8] = {P(0.0f), P(0.0f), P(0.0f), P(0.0f), P(0.0f), P(0.0f), P(0.0f), P(0.0f)};
      P dep[dep_cols][4];
      for (auto& col : dep)
        for (P& x : col) x = P(0.0f);
      const P m(0.999f), c(1e-3f), q[4] = {P(0.25f), P(0.5f), P(-0.25f), P(-0.5f)};
      for (std::size_t i = 0; i < n / threads; i += 4 * W) {
        if constexpr (Work == stream_work::dependent_fma4) {
          HEADWISE_UNROLL
          for (std::size_t k = 0; k < 4; ++k) {
            P x = O::load(p + i + k * W);
            O::keep_in_register(x);  // one load, as in the decode's tiles
            HEADWISE_UNROLL
            for (std::size_t r = 0; r < 4; ++r) dep[k % dep_cols][r] = O::fma(x, q[r], dep[k % dep_cols][r]);
          }
        } else {
          a0 = a0 + O::load(p + i), a1 = a1 + O::load(p + i + W);
          a2 = a2 + O::load(p + i + 2 * W), a3 = a3 + O::load(p + i + 3 * W);
          // Two fixed-trip loops, not one over k % 8: GCC unrolls at most 16 and a
          // 32-trip loop (AVX-512) left f[] on the stack, each FMA waiting on a
          // store-forward (the row read ~50% of the plain row on Zen 5, now ~100%).
          if constexpr (Work == stream_work::independent_fma8)
            HEADWISE_UNROLL
            for (int r = 0; r < fma_per_step / 8; ++r)
              HEADWISE_UNROLL
              for (P& x : f) x = O::fma(x, m, c);
        }
      }
      P total = (a0 + a1) + (a2 + a3);
      for (const P& x : f) total = total + x;
      for (const auto& col : dep)
        for (const P& x : col) total = total + x;
      sums[t] = O::reduce_add(total);
    });
    benchmark::DoNotOptimize(sums.data());
  }
  state.counters["GBps"] =
      benchmark::Counter(double(bytes) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

int register_all() {
  for (unsigned t : {1u, 2u})
    for (auto [name, fn] : {std::pair{"bandwidth", &bm_bandwidth<stream_work::sum>},
                            std::pair{"bandwidth_fma8", &bm_bandwidth<stream_work::independent_fma8>},
                            std::pair{"bandwidth_dep4", &bm_bandwidth<stream_work::dependent_fma4>}})
      benchmark::RegisterBenchmark(
          ("peak/" + std::string(name) + "/1GiB/threads:" + std::to_string(t)).c_str(), fn, t)
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond)
          ->Repetitions(dram_repetitions);  // the table keeps the best: the bandwidth is shared
  for (std::size_t N : {512, 4096, 32768})
    for (std::size_t B : {1, 4})
      for (unsigned t : {1u, 2u}) {
        const std::string shape =
            "/B" + std::to_string(B) + "_H32x8_N" + std::to_string(N) + "_d128/threads:" + std::to_string(t);
        // DRAM-bound rows swing with the neighbours' memory traffic: best of
        // dram_repetitions, like the bandwidth row they are divided by.
        const int repetitions = N >= 32768 ? dram_repetitions : 1;
        using decode_fn = void (*)(benchmark::State&, kernel_mode, std::size_t, std::size_t, unsigned, bool);
        const struct {
          const char* impl;
          decode_fn fn;
          bool key_blocks;
        } impls[] = {{"headwise_f32", bm_decode<float>, false},
                     {"headwise_f16", bm_decode<half>, false},
                     {"headwise_f32_kblocks", bm_decode<float>, true},
                     {"headwise_f16_kblocks", bm_decode<half>, true}};
        for (const auto& i : impls)
          benchmark::RegisterBenchmark(("decode/" + std::string(i.impl) + shape).c_str(), i.fn, kernel_mode::decode,
                                       B, N, t, i.key_blocks)
              ->UseRealTime()
              ->Unit(benchmark::kMillisecond)
              ->Repetitions(repetitions);
        if (N <= 4096)
          benchmark::RegisterBenchmark(("decode/plain_f32" + shape).c_str(), bm_decode<float>,
                                       kernel_mode::plain, B, N, t, false)
              ->UseRealTime()
              ->Unit(benchmark::kMillisecond);
      }
  return 0;
}

[[maybe_unused]] const int registered = register_all();

}  // namespace
