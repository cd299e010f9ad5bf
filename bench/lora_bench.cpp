// bench/lora_bench.cpp — what a LoRA adapter costs on a 4096 × 4096 projection, and
// the multi-head attention layer's throughput on a Llama-like shape.
//
//   BM_lora_base/T        y = x·Wᵀ for T tokens, x [T × 4096]: the frozen projection,
//                         one Eigen GEMM (GEMV at T = 1)
//   BM_lora_merged/T      the same GEMM on W + s·B·A (r = 16): the merged price
//   BM_lora_unmerged/T/r  base GEMM, then lora_delta::apply (two skinny GEMMs), r 4..64
//     T  1 (decode: bound by reading W, 64 MiB), 128 (a short prompt), 2048 (prefill)
//     FLOPS         2·T·4096·4096 (the base projection's FLOPs, for every one of the
//                   three) per second, so their ratio is a ratio of times
//     overhead_pct  unmerged only: time of apply / time of the base GEMM, both timed
//                   inside the same iteration, so load from other processes hits both
//                   halves alike (the target is <= 5 % at r 16, T 2048); FLOPs alone
//                   predict r·(in + out)/(in·out) = 0.78 % at r 16
//   BM_lora_mixed_grouped/T/r/adapters   a mixed batch: 128 rows, four rank-16
//                   adapters, row t uses adapter t % 4: lora_adapter_set::apply with
//                   per-row ids (gathered in chunks)
//   BM_lora_mixed_per_row/...            one lora_delta::apply per row (GEMVs): the baseline
//     FLOPS         the LoRA FLOPs 2·T·r·(in + out) per second
//   BM_mha_prefill/T/lora/threads   one layer (model 4096, 32/8 heads, d 128, float,
//                   RoPE neox): T = 512 prompt tokens into an empty KV cache
//   BM_mha_decode/T/lora/threads    one token per iteration after a 512-token prefill
//     lora          1: a rank-16 adapter on q and v, unmerged
//     threads       mha_config::threads: attention and the projection GEMMs (the layer
//                   cuts each GEMM into 512-column tasks; the adapters' stay on one)
//     items_per_second   tokens per second
// 16-bit activations and weights, one thread, each beside its float row (ratios of one run):
//   BM_lora_apply_<f32|bf16>/T/r     lora_delta::apply alone on float or bfloat16 x, y
//                   (bf16: widened in chunks of 128 rows, y rounded once), FLOPS as above
//   BM_mha_prefill_<f32|bf16|bf16_w16>/T   the Llama-like layer, no adapter, T = 1024
//   BM_mha_decode_<f32|bf16|bf16_w16>/T    a step after a T = 512 prefill
//     f32: the float layer; bf16: bfloat16 x, y and KV cache, float weights; bf16_w16:
//     the same with the weights stored in bfloat16 (multi_head_attention<float, Eigen::bfloat16>)
// Eigen itself runs single-threaded here: it only threads with OpenMP, which the
// build does not enable. BM_fma_peak (peak_bench.cpp) gives the % of peak.
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include <headwise/kv_cache.hpp>
#include <headwise/mha.hpp>

namespace {

using namespace headwise;
using matrix = row_matrix<float>;

/// Cheap deterministic fill in [-amp, amp): the weights are up to 64 MiB.
template <class M>
void fill(M&& m, std::uint32_t seed, float amp) {
  using scalar = typename std::decay_t<M>::Scalar;
  std::uint32_t s = seed * 2654435761u + 1;
  for (Eigen::Index i = 0; i < m.size(); ++i) {
    s = s * 1664525u + 1013904223u;
    m.data()[i] = scalar(amp * (float(s >> 8) * (2.0f / 16777216.0f) - 1.0f));
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

void set_flops(benchmark::State& state, Eigen::Index tokens) {
  state.counters["FLOPS"] = benchmark::Counter(2.0 * double(tokens) * double(features * features),
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

template <bool Merged>
void projection_gemm(benchmark::State& state) {
  const Eigen::Index tokens = state.range(0);
  const matrix& W = Merged ? merged_weight() : frozen_weight();
  const matrix x = random_matrix(tokens, features, 2, 1.0f);
  matrix y(tokens, features);
  for (auto _ : state) {
    y.noalias() = x * W.transpose();
    benchmark::DoNotOptimize(y.data());
  }
  set_flops(state, tokens);
}

void BM_lora_base(benchmark::State& state) { projection_gemm<false>(state); }
void BM_lora_merged(benchmark::State& state) { projection_gemm<true>(state); }
/// T = 1 (a decode step), 128 and 2048 tokens.
void token_counts(benchmark::internal::Benchmark* b) {
  b->ArgName("T")->Arg(1)->Arg(128)->Arg(2048)->UseRealTime()->Unit(benchmark::kMillisecond);
}
BENCHMARK(BM_lora_base)->Apply(token_counts);
BENCHMARK(BM_lora_merged)->Apply(token_counts);

void BM_lora_unmerged(benchmark::State& state) {
  const Eigen::Index tokens = state.range(0), r = state.range(1);
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
  set_flops(state, tokens);
  state.counters["overhead_pct"] = 100.0 * lora_s / base_s;
}
BENCHMARK(BM_lora_unmerged)
    ->ArgNames({"T", "r"})
    ->ArgsProduct({{1, 128, 2048}, {4, 8, 16, 64}})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

/// `adapters` rank-r adapters on q of a 4096 → 4096 set; row t of a mixed batch uses
/// t % adapters.
template <bool Grouped>
void mixed_batch(benchmark::State& state) {
  const Eigen::Index tokens = state.range(0), r = state.range(1), adapters = state.range(2);
  lora_adapter_set<float> set({projection_shape{features, features}, projection_shape{features, features},
                               projection_shape{features, features}, projection_shape{features, features}});
  std::vector<lora_adapter_set<float>::adapter_id> ids(std::size_t(tokens), 0);
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
    if (Grouped) {
      set.apply(projection::q, x, y, ids);
    } else {
      for (Eigen::Index t = 0; t < tokens; ++t)
        set.delta(ids[std::size_t(t)], projection::q)->apply(x.row(t), y.row(t), h);
    }
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["FLOPS"] = benchmark::Counter(2.0 * double(tokens * r * 2 * features),
                                               benchmark::Counter::kIsIterationInvariantRate);
}

void BM_lora_mixed_grouped(benchmark::State& state) { mixed_batch<true>(state); }
void BM_lora_mixed_per_row(benchmark::State& state) { mixed_batch<false>(state); }
BENCHMARK(BM_lora_mixed_grouped)
    ->ArgNames({"T", "r", "adapters"})
    ->Args({128, 16, 4})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_lora_mixed_per_row)
    ->ArgNames({"T", "r", "adapters"})
    ->Args({128, 16, 4})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

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

/// A Llama-like layer with random weights W, optionally a rank-16 q/v adapter active.
template <class W = float>
multi_head_attention<float, W> make_layer(unsigned threads, bool lora) {
  multi_head_attention<float, W> layer(llama_layer(threads));
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

constexpr int decode_steps = 24;

/// x [rows × cols] of A, values as random_matrix's.
template <class A>
row_matrix<A> activations(Eigen::Index rows, Eigen::Index cols, std::uint32_t seed) {
  row_matrix<A> m(rows, cols);
  fill(m, seed, 1.0f);
  return m;
}

/// The KV cache of a layer on activations A: what attention() reads with A's q.
template <class A>
using cache_of = kv_cache<std::conditional_t<std::is_same_v<A, float>, float, storage_16<A>>>;

/// Activations A, weights W: T-token prefill into an empty cache.
template <class A, class W>
void mha_prefill(benchmark::State& state, unsigned threads, bool lora) {
  const Eigen::Index prompt = state.range(0);
  auto layer = make_layer<W>(threads, lora);
  const row_matrix<A> x = activations<A>(prompt, 4096, 5);
  row_matrix<A> y(prompt, 4096);
  cache_of<A> cache(1, 8, std::size_t(prompt), 128);
  for (auto _ : state) {
    cache.clear();
    layer.prefill(x, y, cache);
    benchmark::DoNotOptimize(y.data());
  }
  state.SetItemsProcessed(std::int64_t(state.iterations()) * prompt);
}

/// Activations A, weights W: one decode step after a T-token prefill.
template <class A, class W>
void mha_decode(benchmark::State& state, unsigned threads, bool lora) {
  const Eigen::Index prompt = state.range(0);
  auto layer = make_layer<W>(threads, lora);
  const row_matrix<A> x = activations<A>(prompt, 4096, 6);
  row_matrix<A> y(prompt, 4096), y_t(1, 4096);
  cache_of<A> cache(1, 8, std::size_t(prompt) + decode_steps + 1, 128);
  layer.prefill(x, y, cache);
  for (auto _ : state) {
    layer.step(y.row(prompt - 1), y_t, cache);  // the previous output stands in for the next token
    benchmark::DoNotOptimize(y_t.data());
  }
  state.SetItemsProcessed(std::int64_t(state.iterations()));
}

void BM_mha_prefill(benchmark::State& state) {
  mha_prefill<float, float>(state, unsigned(state.range(2)), state.range(1) != 0);
}
void BM_mha_decode(benchmark::State& state) {
  mha_decode<float, float>(state, unsigned(state.range(2)), state.range(1) != 0);
}

void layer_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"T", "lora", "threads"})->ArgsProduct({{512}, {0, 1}, {1, 2}});
}
BENCHMARK(BM_mha_prefill)->Apply(layer_shapes)->Iterations(2)->UseRealTime()->Unit(benchmark::kMillisecond);
// A fixed number of steps, so the cache's capacity is known in advance.
BENCHMARK(BM_mha_decode)
    ->Apply(layer_shapes)
    ->Iterations(decode_steps)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// ---- 16-bit activations and weights beside float, one thread

using bf16 = Eigen::bfloat16;

template <class A>
void lora_apply(benchmark::State& state) {
  const Eigen::Index tokens = state.range(0), r = state.range(1);
  const row_matrix<A> x = activations<A>(tokens, features, 2);
  row_matrix<A> y = activations<A>(tokens, features, 3);
  lora_delta<float> d = make_delta(r);
  d.apply(x, y);  // sizes the workspace outside the timed loop
  for (auto _ : state) {
    d.apply(x, y);
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["FLOPS"] = benchmark::Counter(2.0 * double(tokens * r * 2 * features),
                                               benchmark::Counter::kIsIterationInvariantRate);
}
void BM_lora_apply_f32(benchmark::State& state) { lora_apply<float>(state); }
void BM_lora_apply_bf16(benchmark::State& state) { lora_apply<bf16>(state); }
void apply_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"T", "r"})->ArgsProduct({{1, 128, 2048}, {16}})->UseRealTime()->Unit(benchmark::kMillisecond);
}
BENCHMARK(BM_lora_apply_f32)->Apply(apply_shapes);
BENCHMARK(BM_lora_apply_bf16)->Apply(apply_shapes);

void BM_mha_prefill_f32(benchmark::State& state) { mha_prefill<float, float>(state, 1, false); }
void BM_mha_prefill_bf16(benchmark::State& state) { mha_prefill<bf16, float>(state, 1, false); }
void BM_mha_prefill_bf16_w16(benchmark::State& state) { mha_prefill<bf16, bf16>(state, 1, false); }
void BM_mha_decode_f32(benchmark::State& state) { mha_decode<float, float>(state, 1, false); }
void BM_mha_decode_bf16(benchmark::State& state) { mha_decode<bf16, float>(state, 1, false); }
void BM_mha_decode_bf16_w16(benchmark::State& state) { mha_decode<bf16, bf16>(state, 1, false); }
/// One thread: a 1024-token prefill, run twice; decode steps after a 512-token one.
void prefill_1024(benchmark::internal::Benchmark* b) {
  b->ArgName("T")->Arg(1024)->Iterations(2)->UseRealTime()->Unit(benchmark::kMillisecond);
}
void decode_512(benchmark::internal::Benchmark* b) {
  b->ArgName("T")->Arg(512)->Iterations(decode_steps)->UseRealTime()->Unit(benchmark::kMillisecond);
}
BENCHMARK(BM_mha_prefill_f32)->Apply(prefill_1024);
BENCHMARK(BM_mha_prefill_bf16)->Apply(prefill_1024);
BENCHMARK(BM_mha_prefill_bf16_w16)->Apply(prefill_1024);
BENCHMARK(BM_mha_decode_f32)->Apply(decode_512);
BENCHMARK(BM_mha_decode_bf16)->Apply(decode_512);
BENCHMARK(BM_mha_decode_bf16_w16)->Apply(decode_512);

}  // namespace
