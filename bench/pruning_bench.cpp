// pruning_bench: attention time against the number of active heads, flash kernel.
//
//   BM_headwise_pruned    head_scale = 0 for the 8 − a pruned heads: the kernel skips them
//   BM_headwise_unpruned  every head computed, the pruned heads' outputs zeroed
//                         afterwards: what pruning costs without kernel support
// Args: H (heads), active (a), N, d, threads. N 1024, d 128: one head is ~0.5 GFLOP,
// long enough to time, and 2 threads split 2…8 heads evenly.
// Counter FLOPS counts only the useful FLOPs, 4·a·N²·d: if time follows the active
// heads, pruned's FLOPS stays flat from a = 8 down to 2 while unpruned's falls as
// a/8, and pruned × unpruned reads ≈ 8/a. ms_per_active_head says the same per row.
#include <headwise/headwise.hpp>

#include <benchmark/benchmark.h>

#include <random>
#include <vector>

namespace {

template <bool InKernel>
void prune_heads(benchmark::State& state) {
  const auto H = std::size_t(state.range(0)), active = std::size_t(state.range(1)),
             N = std::size_t(state.range(2)), D = std::size_t(state.range(3));
  std::vector<float> q(H * N * D), k(q.size()), v(q.size()), o(q.size());
  std::mt19937 gen(1);
  std::normal_distribution<float> normal;
  for (auto* buf : {&q, &k, &v})
    for (float& x : *buf) x = normal(gen);
  const auto qv = headwise::bhsd<const float>(q.data(), 1, H, N, D);
  const auto kv = headwise::bhsd<const float>(k.data(), 1, H, N, D);
  const auto vv = headwise::bhsd<const float>(v.data(), 1, H, N, D);
  const auto ov = headwise::bhsd(o.data(), 1, H, N, D);
  std::vector<float> scale(H, 0.f);
  for (std::size_t h = 0; h < active; ++h) scale[h * H / active] = 1.f;  // spread the active heads
  headwise::attention_options opt;
  opt.kernel = headwise::kernel_mode::flash;
  opt.threads = unsigned(state.range(4));
  if (InKernel) opt.head_scale = scale;
  for (auto _ : state) {
    headwise::attention(qv, kv, vv, ov, opt);
    if (!InKernel)
      for (std::size_t h = 0; h < H; ++h)
        if (scale[h] == 0.f)
          for (std::size_t i = 0; i < N; ++i)
            for (std::size_t d = 0; d < D; ++d) ov(0, h, i, d) = 0.f;
    benchmark::DoNotOptimize(o.data());
    benchmark::ClobberMemory();
  }
  const double useful = 4.0 * double(active) * double(N) * double(N) * double(D);
  state.counters["FLOPS"] = benchmark::Counter(useful, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["ms_per_active_head"] = benchmark::Counter(
      double(active) / 1e3, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}

void BM_headwise_pruned(benchmark::State& state) { prune_heads<true>(state); }
void BM_headwise_unpruned(benchmark::State& state) { prune_heads<false>(state); }

void active_heads(benchmark::internal::Benchmark* b) {
  b->ArgNames({"H", "active", "N", "d", "threads"})->ArgsProduct({{8}, {8, 6, 4, 2}, {1024}, {128}, {1, 2}});
}

BENCHMARK(BM_headwise_pruned)
    ->Apply(active_heads)
    ->MinTime(0.3)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_headwise_unpruned)
    ->Apply(active_heads)
    ->MinTime(0.3)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace
