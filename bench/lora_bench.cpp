// bench/lora_bench.cpp — what a LoRA adapter costs on a 4096 × 4096 projection, and
// the multi-head attention layer's throughput on a Llama-like shape.
//
//   lora/<impl>/T<t>_4096x4096/threads:1     y = x·Wᵀ for t tokens, x [t × 4096]
//     impl  base           the frozen projection: one Eigen GEMM (GEMV at t = 1)
//           merged         the same GEMM on W + s·B·A (r = 16): the merged price
//           unmerged_r<r>  base GEMM, then lora_delta::apply (two skinny GEMMs), r 4..64
//     t     1 (decode: bound by reading W, 64 MiB), 128 (a short prompt), 2048 (prefill)
//   counters GFLOPS       2·t·4096·4096 (the base projection's FLOPs, for every impl)
//                         per second, so the x-base column is the base time over this
//                         one — across separate runs, so it carries the machine's noise
//            overhead_pct unmerged only: time of apply / time of the base GEMM, both
//                         timed inside the same iteration, so load from other processes
//                         hits both halves alike (the target is <= 5% at r 16, t 2048);
//                         FLOPs alone predict r·(in + out)/(in·out) = 0.78% at r 16
//   lora_mixed/<impl>/T128_4096x4096_r16x4/threads:1   a mixed batch: 128 rows, four
//     rank-16 adapters, row t uses adapter t % 4 (every run of rows is one long)
//     impl  grouped   lora_adapter_set::apply with per-row ids (gathered in chunks)
//           per_row   one lora_delta::apply per row (GEMVs): the baseline
//   counters GFLOPS   the LoRA FLOPs 2·T·r·(in + out) per second
//   mha/<impl>/model4096_H32x8_d128_T<t>/threads:<a>   one layer, float, RoPE neox
//     impl  prefill, prefill_lora   t = 512 prompt tokens into an empty KV cache
//           decode, decode_lora     one token per iteration after a 512-token prefill
//           (_lora: a rank-16 adapter on q and v, unmerged)
//     a     mha_config::threads: attention and the projection GEMMs (the layer cuts
//           each GEMM into 512-column tasks; the adapters' small GEMMs stay on one)
//   counters tok_s        tokens per second; the x-prefill column is over prefill
// Eigen itself runs single-threaded here: it only threads with OpenMP, which the
// build does not enable. peak/fma (peak_bench.cpp) gives the %peak column.
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include <headwise/kv_cache.hpp>
#include <headwise/mha.hpp>

#include "table_reporter.hpp"

namespace {

using namespace headwise;
using matrix = row_matrix<float>;

// lora_mixed first: suites match metrics by name prefix, and "lora" prefixes it.
[[maybe_unused]] const bool metrics_declared =
    headwise_bench::declare(headwise_bench::metric{"GFLOPS", "GFLOP/s", "peak/fma", "per_row", "lora_mixed"}) &&
    headwise_bench::declare(headwise_bench::metric{"GFLOPS", "GFLOP/s", "peak/fma", "base", "lora"}) &&
    headwise_bench::declare(headwise_bench::metric{"tok_s", "tokens/s", "-", "prefill", "mha"});

/// Cheap deterministic fill in [-amp, amp): the weights are up to 64 MiB.
template <class M>
void fill(M&& m, std::uint32_t seed, float amp) {
  std::uint32_t s = seed * 2654435761u + 1;
  for (Eigen::Index i = 0; i < m.size(); ++i) {
    s = s * 1664525u + 1013904223u;
    m.data()[i] = amp * (float(s >> 8) * (2.0f / 16777216.0f) - 1.0f);
  }
}

matrix random_matrix(Eigen::Index rows, Eigen::Index cols, std::uint32_t seed, float amp) {
  matrix m(rows, cols);
  fill(m, seed, amp);
  return m;
}

constexpr Eigen::Index features = 4096;

/// The frozen W [4096 × 4096] (64 MiB), built on first use and shared by every run.
const matrix& frozen_weight() {
  static const matrix W = random_matrix(features, features, 1, 1.0f / 64);
  return W;
}

lora_delta<float> make_delta(Eigen::Index r) {
  return lora_delta<float>(random_matrix(r, features, 3, 0.02f), random_matrix(features, r, 4, 0.02f),
                           2.0 * double(r));
}

void set_gflops(benchmark::State& state, Eigen::Index tokens) {
  state.counters["GFLOPS"] = benchmark::Counter(2e-9 * double(tokens) * double(features * features),
                                                benchmark::Counter::kIsIterationInvariantRate);
}

/// W + s·B·A for the rank-16 delta, the weights a merged adapter leaves behind.
const matrix& merged_weight() {
  static const matrix W = [] {
    matrix m = frozen_weight();
    make_delta(16).merge(m);
    return m;
  }();
  return W;
}

void bm_gemm(benchmark::State& state, Eigen::Index tokens, bool merged) {
  const matrix& W = merged ? merged_weight() : frozen_weight();
  const matrix x = random_matrix(tokens, features, 2, 1.0f);
  matrix y(tokens, features);
  for (auto _ : state) {
    y.noalias() = x * W.transpose();
    benchmark::DoNotOptimize(y.data());
  }
  set_gflops(state, tokens);
}

void bm_unmerged(benchmark::State& state, Eigen::Index tokens, Eigen::Index r) {
  const matrix& W = frozen_weight();
  const matrix x = random_matrix(tokens, features, 2, 1.0f);
  matrix y = matrix::Zero(tokens, features);
  lora_delta<float> d = make_delta(r);
  d.apply(x, y);  // sizes the workspace outside the timed loop
  using clock = std::chrono::steady_clock;
  double base_s = 0, lora_s = 0;
  for (auto _ : state) {
    const auto t0 = clock::now();
    y.noalias() = x * W.transpose();
    const auto t1 = clock::now();
    d.apply(x, y);
    const auto t2 = clock::now();
    benchmark::DoNotOptimize(y.data());
    base_s += std::chrono::duration<double>(t1 - t0).count();
    lora_s += std::chrono::duration<double>(t2 - t1).count();
  }
  set_gflops(state, tokens);
  state.counters["overhead_pct"] = 100.0 * lora_s / base_s;
}

/// Four rank-16 adapters on q of a 4096 → 4096 set; row t of a mixed batch uses t % 4.
void bm_mixed(benchmark::State& state, bool grouped) {
  constexpr Eigen::Index tokens = 128, r = 16, adapters = 4;
  lora_adapter_set<float> set({projection_shape{features, features}, projection_shape{features, features},
                               projection_shape{features, features}, projection_shape{features, features}});
  std::vector<lora_adapter_set<float>::adapter_id> ids(tokens);
  for (Eigen::Index a = 0; a < adapters; ++a) {
    const auto id = set.add("a" + std::to_string(a));
    set.attach(id, projection::q,
               lora_delta<float>(random_matrix(r, features, 20 + std::uint32_t(a), 0.02f),
                                 random_matrix(features, r, 30 + std::uint32_t(a), 0.02f), 32.0));
  }
  for (Eigen::Index t = 0; t < tokens; ++t)
    ids[std::size_t(t)] = lora_adapter_set<float>::adapter_id(t % adapters);
  const matrix x = random_matrix(tokens, features, 7, 1.0f);
  matrix y = matrix::Zero(tokens, features), h(1, r);
  for (auto _ : state) {
    if (grouped) {
      set.apply(projection::q, x, y, ids);
    } else {
      for (Eigen::Index t = 0; t < tokens; ++t)
        set.delta(ids[std::size_t(t)], projection::q)->apply(x.row(t), y.row(t), h);
    }
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["GFLOPS"] = benchmark::Counter(2e-9 * double(tokens * r * 2 * features),
                                                benchmark::Counter::kIsIterationInvariantRate);
}

mha_config llama_layer(unsigned threads) {
  mha_config cfg;
  cfg.model_dim = 4096;
  cfg.num_heads = 32;
  cfg.num_kv_heads = 8;
  cfg.head_dim = 128;
  cfg.rope = {rope_style::neox, 500000.0, 1.0};
  cfg.causal = true;
  cfg.threads = threads;
  return cfg;
}

/// A Llama-like layer with random weights, optionally a rank-16 q/v adapter active.
multi_head_attention<float> make_layer(unsigned threads, bool lora) {
  multi_head_attention<float> layer(llama_layer(threads));
  std::uint32_t seed = 10;
  for (projection p : {projection::q, projection::k, projection::v, projection::o})
    fill(layer.weight(p), seed++, 1.0f / 64);
  if (lora) {
    const auto id = layer.adapters().add("qv-r16");
    for (projection p : {projection::q, projection::v}) {
      const projection_shape s = layer.adapters().shape(p);
      layer.adapters().attach(id, p,
                              lora_delta<float>(random_matrix(16, s.in, seed, 0.02f),
                                                random_matrix(s.out, 16, seed + 1, 0.02f), 32.0));
      seed += 2;
    }
    layer.adapters().activate("qv-r16");
  }
  return layer;
}

constexpr Eigen::Index prompt = 512;
constexpr int decode_steps = 24;  // fixed, so the cache's capacity is known

void bm_prefill(benchmark::State& state, unsigned threads, bool lora) {
  multi_head_attention<float> layer = make_layer(threads, lora);
  const matrix x = random_matrix(prompt, 4096, 5, 1.0f);
  matrix y(prompt, 4096);
  kv_cache<float> cache(1, 8, prompt, 128);
  for (auto _ : state) {
    cache.clear();
    layer.prefill(x, y, cache);
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["tok_s"] = benchmark::Counter(double(prompt), benchmark::Counter::kIsIterationInvariantRate);
}

void bm_decode(benchmark::State& state, unsigned threads, bool lora) {
  multi_head_attention<float> layer = make_layer(threads, lora);
  const matrix x = random_matrix(prompt, 4096, 6, 1.0f);
  matrix y(prompt, 4096), y_t(1, 4096);
  kv_cache<float> cache(1, 8, prompt + decode_steps + 1, 128);
  layer.prefill(x, y, cache);
  for (auto _ : state) {
    layer.step(y.row(prompt - 1), y_t, cache);  // the previous output stands in for the next token
    benchmark::DoNotOptimize(y_t.data());
  }
  state.counters["tok_s"] = benchmark::Counter(1.0, benchmark::Counter::kIsIterationInvariantRate);
}

int register_all() {
  for (Eigen::Index t : {1, 128, 2048}) {
    const std::string shape = "/T" + std::to_string(t) + "_4096x4096/threads:1";
    const int iterations = t == 2048 ? 3 : t == 128 ? 20 : 100;  // ~1-4 s per row
    for (bool merged : {false, true})
      benchmark::RegisterBenchmark(((merged ? "lora/merged" : "lora/base") + shape).c_str(), bm_gemm, t,
                                   merged)
          ->Iterations(iterations)
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
    for (Eigen::Index r : {4, 8, 16, 64})
      benchmark::RegisterBenchmark(("lora/unmerged_r" + std::to_string(r) + shape).c_str(), bm_unmerged, t, r)
          ->Iterations(iterations)
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
  }
  for (bool grouped : {false, true})
    benchmark::RegisterBenchmark(grouped ? "lora_mixed/grouped/T128_4096x4096_r16x4/threads:1"
                                         : "lora_mixed/per_row/T128_4096x4096_r16x4/threads:1",
                                 bm_mixed, grouped)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  for (unsigned a : {1u, 2u}) {
    const std::string suffix = "/model4096_H32x8_d128_T512/threads:" + std::to_string(a);
    for (bool lora : {false, true}) {
      benchmark::RegisterBenchmark(("mha/prefill" + std::string(lora ? "_lora" : "") + suffix).c_str(),
                                   bm_prefill, a, lora)
          ->Iterations(2)
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
      benchmark::RegisterBenchmark(("mha/decode" + std::string(lora ? "_lora" : "") + suffix).c_str(),
                                   bm_decode, a, lora)
          ->Iterations(decode_steps)
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
    }
  }
  return 0;
}

[[maybe_unused]] const int registered = register_all();

}  // namespace
