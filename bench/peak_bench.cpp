// peak_bench: this machine's own ceilings, measured in the same run as the kernels,
// the denominators of every "% of peak" in bench_table's tables.
//
//   BM_fma_peak/threads:t     t threads each run FMAs on xsimd's widest batch for this
//                             build (-march=native: AVX-512 where the CPU has it) in 12
//                             independent chains: 2 FMA ports × 4–5 cycles of latency
//                             need 8–10 in flight, so the loop is bound by throughput.
//                             FLOPS counts 2 per lane per FMA.
//   BM_bf16_dot_peak/threads:t  the same with vdpbf16ps (AVX512-BF16) on zmm registers:
//                             two bf16 products summed into each fp32 lane, so FLOPS
//                             counts 4 per lane per instruction; the unit the
//                             avx512_bf16 path's bf16 rows are a share of. Skipped on
//                             CPUs without it.
//   BM_eigen_gemm/M/N/K       a 1024³ Eigen GEMM: what a tuned BLAS-like kernel reaches
//                             on one thread (Eigen threads only with OpenMP, off here).
//   BM_dram_read/MiB/threads  t threads sum a 1 GiB buffer with vector loads: the read
//                             bandwidth decode is compared to (bytes_per_second). The
//                             buffer sits in 2 MiB-aligned transparent huge pages, as
//                             kv_cache's buffers do, so the two compare like with like.
// Each peak runs several repetitions, and bench_table keeps the best: a peak is a
// maximum, and on a shared host the best repetition is the least disturbed one.
// Threads are on_threads.hpp's plain std::threads, not a pool with dynamic scheduling,
// which could let the calling thread run both halves and report 1 thread's peak as 2's.
#include <headwise/headwise.hpp>

#include <benchmark/benchmark.h>
#include <Eigen/Dense>
#include <xsimd/xsimd.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "on_threads.hpp"

namespace {

using headwise_bench::on_threads;

using batch = xsimd::batch<float>;  // the build's widest arch (xsimd::default_arch)

constexpr int chains = 12;
constexpr std::int64_t fma_steps = 1 << 22;  // per thread and iteration: ~7 ms at 4 GHz

float fma_loop(float seed) {
  batch acc[chains];
  for (int c = 0; c < chains; ++c) acc[c] = batch(seed + float(c));
  const batch a(0.999999f), b(1e-6f);  // converges: never denormal, never infinite
  for (std::int64_t i = 0; i < fma_steps; ++i)
    for (batch& x : acc) x = xsimd::fma(x, a, b);
  for (int c = 1; c < chains; ++c) acc[0] = acc[0] + acc[c];
  alignas(64) float lanes[batch::size];
  acc[0].store_unaligned(lanes);
  float sum = 0;
  for (float x : lanes) sum += x;
  return sum;
}

void BM_fma_peak(benchmark::State& state) {
  const auto threads = unsigned(state.range(0));
  std::vector<float> sink(threads);
  for (auto _ : state) {
    on_threads(threads, [&](unsigned t) { sink[t] = fma_loop(float(t)); });
    benchmark::DoNotOptimize(sink.data());
  }
  const double flops = 2.0 * double(batch::size) * chains * double(fma_steps) * threads;
  state.counters["FLOPS"] = benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_fma_peak)
    ->ArgName("threads")
    ->DenseRange(1, 2)
    ->Repetitions(3)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(HEADWISE_NO_DISPATCH)
#define HEADWISE_BENCH_BF16_DOT 1
/// fma_loop's 12 chains on vdpbf16ps: acc += 1·2^-20 + 1·2^-20 per lane and step.
__attribute__((target("avx512f,avx512bf16"))) float bf16_dot_loop(float seed) {
  __m512 acc[chains];
  for (int c = 0; c < chains; ++c) acc[c] = _mm512_set1_ps(seed + float(c));
  const __m512bh one = (__m512bh)_mm512_set1_epi32(0x3f803f80), tiny = (__m512bh)_mm512_set1_epi32(0x35803580);
  for (std::int64_t i = 0; i < fma_steps; ++i)
    for (__m512& x : acc) x = _mm512_dpbf16_ps(x, one, tiny);
  for (int c = 1; c < chains; ++c) acc[0] = _mm512_add_ps(acc[0], acc[c]);
  // Summed through memory: GCC 12's _mm512_reduce_add_ps warns -Wuninitialized (PR 105593).
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, acc[0]);
  float sum = 0.0f;
  for (const float x : lanes) sum += x;
  return sum;
}
#endif

void BM_bf16_dot_peak(benchmark::State& state) {
  const auto threads = unsigned(state.range(0));
  const std::vector<headwise::simd_isa> isas = headwise::available_isas();
#if defined(HEADWISE_BENCH_BF16_DOT)
  if (std::find(isas.begin(), isas.end(), headwise::simd_isa::avx512_bf16) != isas.end()) {
    std::vector<float> sink(threads);
    for (auto _ : state) {
      on_threads(threads, [&](unsigned t) { sink[t] = bf16_dot_loop(float(t)); });
      benchmark::DoNotOptimize(sink.data());
    }
    const double flops = 4.0 * 16 * chains * double(fma_steps) * threads;
    state.counters["FLOPS"] = benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate);
    return;
  }
#endif
  state.SkipWithError("this CPU or build has no AVX512-BF16");
}
BENCHMARK(BM_bf16_dot_peak)
    ->ArgName("threads")
    ->DenseRange(1, 2)
    ->Repetitions(3)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

void BM_eigen_gemm(benchmark::State& state) {
  const Eigen::Index m = state.range(0), n = state.range(1), k = state.range(2);
  const Eigen::MatrixXf a = Eigen::MatrixXf::Random(m, k), b = Eigen::MatrixXf::Random(k, n);
  Eigen::MatrixXf c(m, n);
  for (auto _ : state) {
    c.noalias() = a * b;
    benchmark::DoNotOptimize(c.data());
    benchmark::ClobberMemory();
  }
  state.counters["FLOPS"] =
      benchmark::Counter(2.0 * double(m * n * k), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_eigen_gemm)
    ->ArgNames({"M", "N", "K"})
    ->Args({1024, 1024, 1024})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

/// A float buffer on a 2 MiB boundary, advised for transparent huge pages (Linux).
struct huge_buffer {
  static constexpr std::size_t page = std::size_t(2) << 20;
  std::unique_ptr<float, decltype(&std::free)> data{nullptr, &std::free};
  explicit huge_buffer(std::size_t bytes) {
    bytes = (bytes + page - 1) / page * page;
    data.reset(static_cast<float*>(std::aligned_alloc(page, bytes)));
    if (!data) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    madvise(data.get(), bytes, MADV_HUGEPAGE);
#endif
  }
};

void BM_dram_read(benchmark::State& state) {
  const std::size_t bytes = std::size_t(state.range(0)) << 20, n = bytes / sizeof(float);
  const auto threads = unsigned(state.range(1));
  constexpr std::size_t W = batch::size;
  huge_buffer buf(bytes);
  for (std::size_t i = 0; i < n; ++i) buf.data.get()[i] = float(i % 1024) * 1e-3f;  // touch every page
  std::vector<float> sums(threads);
  for (auto _ : state) {
    on_threads(threads, [&](unsigned t) {
      const float* p = buf.data.get() + n / threads * t;
      batch a0(0.0f), a1(0.0f), a2(0.0f), a3(0.0f);  // 4 chains hide the add latency
      for (std::size_t i = 0; i < n / threads; i += 4 * W) {
        a0 = a0 + batch::load_unaligned(p + i), a1 = a1 + batch::load_unaligned(p + i + W);
        a2 = a2 + batch::load_unaligned(p + i + 2 * W), a3 = a3 + batch::load_unaligned(p + i + 3 * W);
      }
      alignas(64) float lanes[W];
      ((a0 + a1) + (a2 + a3)).store_unaligned(lanes);
      sums[t] = lanes[0] + lanes[W - 1];
    });
    benchmark::DoNotOptimize(sums.data());
  }
  state.SetBytesProcessed(std::int64_t(state.iterations()) * std::int64_t(bytes));
}
// 1 GiB: twice the largest last-level cache these VMs reported (480 MiB), so every
// line comes from DRAM.
BENCHMARK(BM_dram_read)
    ->ArgNames({"MiB", "threads"})
    ->ArgsProduct({{1024}, {1, 2}})
    ->Repetitions(5)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace
