// peak_bench: this machine's FP32 peak, the denominator of every "% of peak".
//
//   peak/fma/threads:<t>   t threads each run an FMA loop on the SIMD path's
//                          packs (AVX2: 8 floats) with 12 independent chains:
//                          2 FMA ports × 4–5 cycles latency need >= 8–10 in
//                          flight, so the loop is bound by FMA throughput
//   peak/eigen_gemm/...    a 1024³ Eigen GEMM: what a tuned BLAS-like kernel
//                          reaches, a second reference point (Eigen runs it on 1 thread)
// GFLOPS counts 2 FLOPs per FMA lane. The 2-thread row's "x1T" column is the
// 2-thread / 1-thread peak ratio: below 2 when the 2 vCPUs share a core.
#include <headwise/headwise.hpp>
#include <headwise/simd/pack.hpp>

#include <benchmark/benchmark.h>
#include <Eigen/Dense>

#include <string>
#include <thread>
#include <vector>

#include "table_reporter.hpp"

namespace {

using pack = headwise::simd::vector_pack<float>;
using ops = headwise::simd::ops<pack>;
constexpr int chains = 12;
constexpr long fma_steps = 1 << 22;  // per thread per iteration: ~7 ms, >> a thread start

float fma_loop(float seed) {
  pack acc[chains];
  for (int c = 0; c < chains; ++c) acc[c] = pack(seed + float(c));
  const pack a(0.999999f), b(1e-6f);  // converges, never denormal or infinite
  for (long i = 0; i < fma_steps; ++i)
    for (int c = 0; c < chains; ++c) acc[c] = ops::fma(acc[c], a, b);
  pack sum(0.0f);
  for (int c = 0; c < chains; ++c) sum = sum + acc[c];
  return ops::reduce_add(sum);
}

void peak_fma(benchmark::State& st, unsigned threads) {
  // One std::thread per extra chain, not parallel_for: its dynamic scheduling
  // lets the calling thread take both tasks when a worker wakes late, which
  // would report the 1-thread peak as the 2-thread one.
  std::vector<float> sink(threads);
  for (auto _ : st) {
    std::vector<std::thread> others;
    for (unsigned t = 1; t < threads; ++t) others.emplace_back([&sink, t] { sink[t] = fma_loop(float(t)); });
    sink[0] = fma_loop(0.0f);
    for (std::thread& th : others) th.join();
    benchmark::DoNotOptimize(sink.data());
  }
  const double flops = 2.0 * double(ops::width) * chains * double(fma_steps) * threads;
  st.counters["GFLOPS"] = benchmark::Counter(flops / 1e9, benchmark::Counter::kIsIterationInvariantRate);
}

void peak_gemm(benchmark::State& st) {
  const Eigen::Index n = 1024;
  const Eigen::MatrixXf a = Eigen::MatrixXf::Random(n, n), b = Eigen::MatrixXf::Random(n, n);
  Eigen::MatrixXf c(n, n);
  for (auto _ : st) {
    c.noalias() = a * b;
    benchmark::DoNotOptimize(c.data());
  }
  st.counters["GFLOPS"] =
      benchmark::Counter(2.0 * n * n * n / 1e9, benchmark::Counter::kIsIterationInvariantRate);
}

bool register_peak() {
  for (unsigned t : {1u, 2u})
    benchmark::RegisterBenchmark(("peak/fma/threads:" + std::to_string(t)).c_str(), peak_fma, t)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond)
        ->MinTime(0.2)
        ->Repetitions(3);  // the table keeps the best: a peak is a maximum
  benchmark::RegisterBenchmark("peak/eigen_gemm/M1024_N1024_K1024/threads:1", peak_gemm)
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond)
      ->MinTime(0.3);
  return true;
}

const bool registered = register_peak() && headwise_bench::declare(headwise_bench::metric{
                                               "GFLOPS", "GFLOP/s", "peak/fma", "fma", "peak"});

}  // namespace
