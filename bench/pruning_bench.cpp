// pruning_bench: attention time against the number of active heads, on the flash
// path. Named pruning/<impl>/H8_active<a>_N1024_d128/threads:<t>.
//
//   flash           head_scale = 0 for the 8 − a pruned heads: the kernel skips them
//   flash_unpruned  every head computed, the pruned heads' outputs zeroed afterwards
//                   (what pruning costs without kernel support: the baseline)
// Counter GFLOPS counts only the useful FLOPs, 4·a·N²·d: if time is proportional
// to the active heads, flash's GFLOP/s stays flat from a = 8 down to a = 2 while
// flash_unpruned's falls as a/8, and the "x flash_unpruned" column reads ≈ 8/a.
// Counter ms_per_active_head = time / a makes the same point per row.
// N = 1024, d = 128: a prefill shape where one head costs ~0.5 GFLOP, so each run
// is long enough to time and the 2-thread runs split 2…8 heads evenly.
#include <headwise/headwise.hpp>

#include <benchmark/benchmark.h>

#include <random>
#include <string>
#include <vector>

#include "table_reporter.hpp"

namespace {

constexpr std::size_t kHeads = 8, kN = 1024, kD = 128;

void run(benchmark::State& st, std::size_t active, bool in_kernel, unsigned threads) {
  std::vector<float> q(kHeads * kN * kD), k(q.size()), v(q.size()), o(q.size());
  std::mt19937 gen(1);
  std::normal_distribution<float> normal;
  for (auto* buf : {&q, &k, &v})
    for (float& x : *buf) x = normal(gen);
  const auto qv = headwise::bhsd<const float>(q.data(), 1, kHeads, kN, kD);
  const auto kv = headwise::bhsd<const float>(k.data(), 1, kHeads, kN, kD);
  const auto vv = headwise::bhsd<const float>(v.data(), 1, kHeads, kN, kD);
  const auto ov = headwise::bhsd(o.data(), 1, kHeads, kN, kD);
  std::vector<float> scale(kHeads, 0.f);
  for (std::size_t h = 0; h < active; ++h) scale[h * kHeads / active] = 1.f;  // spread the active heads
  headwise::attention_options opt;
  opt.kernel = headwise::kernel_mode::flash;
  opt.threads = threads;
  if (in_kernel) opt.head_scale = scale;
  for (auto _ : st) {
    headwise::attention(qv, kv, vv, ov, opt);
    if (!in_kernel)
      for (std::size_t h = 0; h < kHeads; ++h)
        if (scale[h] == 0.f)
          for (std::size_t i = 0; i < kN; ++i)
            for (std::size_t d = 0; d < kD; ++d) ov(0, h, i, d) = 0.f;
    benchmark::DoNotOptimize(o.data());
    benchmark::ClobberMemory();
  }
  const double useful = 4.0 * double(active) * double(kN) * double(kN) * double(kD);
  st.counters["GFLOPS"] = benchmark::Counter(useful / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  st.counters["ms_per_active_head"] =
      benchmark::Counter(double(active) / 1e3, benchmark::Counter::kIsIterationInvariantRate |
                                                   benchmark::Counter::kInvert);
}

bool register_pruning() {
  for (unsigned threads : {1u, 2u})
    for (std::size_t active : {8u, 6u, 4u, 2u})
      for (bool in_kernel : {true, false}) {
        const std::string name = std::string("pruning/") + (in_kernel ? "flash" : "flash_unpruned") + "/H8_active" +
                                 std::to_string(active) + "_N1024_d128/threads:" + std::to_string(threads);
        benchmark::RegisterBenchmark(name.c_str(), [=](benchmark::State& st) { run(st, active, in_kernel, threads); })
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond)
            ->MinTime(0.3);
      }
  return true;
}

[[maybe_unused]] const bool registered =
    register_pruning() &&
    headwise_bench::declare(headwise_bench::metric{"GFLOPS", "GFLOP/s", "peak/fma", "flash_unpruned", "pruning"});

}  // namespace
