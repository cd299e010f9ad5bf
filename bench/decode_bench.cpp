// decode_bench: one decode step (one query token per sequence) against a long KV
// cache, as a model's generation loop runs it: K/V in headwise::kv_cache, the query
// at the cache's end (causal_mode::bottom_right).
//
//   BM_headwise_decode_f32          attention_options::kernel = decode, K/V in float
//   BM_headwise_decode_f16          the same, K/V stored as headwise::half (half the bytes)
//   BM_headwise_decode_i8           K/V stored as int8 with one fp32 scale per row
//                                   (quantize.hpp): a quarter of fp32's bytes, plus 4
//                                   per row
//   BM_headwise_decode_f32_kblocks  K in key blocks (kv_cache<T, kv_layout::key_blocks>)
//   BM_headwise_decode_f16_kblocks
//   BM_headwise_decode_i8_kblocks
//   BM_headwise_decode_bf16         q, K/V and out all bfloat16 (on avx512_bf16: vdpbf16ps)
//   BM_headwise_decode_bf16_widened the same on the avx512 path, widening to fp32 (only
//                                   where the CPU has avx512_bf16: the A/B of its tiles)
//   BM_headwise_plain_f32           kernel = plain: reads K/V once per *query* head (4×
//                                   here), the baseline; KV <= 4096 only, to stay short
//
// Args: B (sequences), Hq, Hkv (GQA group 4), KV (cached tokens), d, threads.
// Counters: bytes_per_second  K+V bytes of one step, counted once (B·Hkv·KV·2·d·
//             sizeof, and int8's scales), per second. At KV 32768 they live in DRAM, so this reads as a
//             share of BM_dram_read: a kernel reading them g times per step would be
//             capped at 1/g of it.
//           KV_MiB  those bytes; copies  the K/V copies the steps cycle through (below).
// KV 32768 rows cycle through copies of the cache totalling at least twice the
// last-level cache, so no step finds its K/V left in cache by the step before.
// Those rows, like BM_dram_read, swing by ±20 % between seconds on a shared host:
// they run 5 repetitions, and bench_table keeps the best of each.
#include <headwise/headwise.hpp>

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <unistd.h>

namespace {

using headwise::kernel_mode;
using headwise::kv_layout;

/// Cheap deterministic fill in [-1, 1): the caches are up to 1 GiB.
void fill(std::vector<float>& x, std::uint32_t seed) {
  std::uint32_t s = seed * 2654435761u + 1;
  for (float& e : x) {
    s = s * 1664525u + 1013904223u;
    e = float(s >> 8) * (2.0f / 16777216.0f) - 1.0f;
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

template <class S, kv_layout Layout, kernel_mode Kernel, class Q = float,
          headwise::simd_isa Isa = headwise::simd_isa::automatic>
void decode_steps(benchmark::State& state) {
  const auto B = std::size_t(state.range(0)), Hq = std::size_t(state.range(1)),
             Hkv = std::size_t(state.range(2)), N = std::size_t(state.range(3)),
             d = std::size_t(state.range(4));
  const std::size_t bytes = B * Hkv * N * 2 * (d * sizeof(S) + (headwise::is_storage_int8<S> ? sizeof(float) : 0));
  const std::size_t copies =
      N >= 32768 ? std::clamp<std::size_t>((2 * llc_bytes() + bytes - 1) / bytes, 1, 16) : 1;
  using cache = headwise::kv_cache<S, Layout>;
  std::vector<std::unique_ptr<cache>> caches;
  // Filled 512 tokens at a time, the same 512 over and over: the time of a step does
  // not depend on the values, and the DRAM rows rebuild up to 1 GiB per repetition.
  const std::size_t chunk = std::min<std::size_t>(N, 512);
  std::vector<float> k_new(B * Hkv * chunk * d), v_new(k_new.size());
  fill(k_new, 1), fill(v_new, 2);
  for (std::size_t c = 0; c < copies; ++c) {
    caches.push_back(std::make_unique<cache>(B, Hkv, N, d));
    for (std::size_t n = 0; n < N; n += chunk)
      caches.back()->append(headwise::bhsd<const float>(k_new.data(), B, Hkv, chunk, d),
                            headwise::bhsd<const float>(v_new.data(), B, Hkv, chunk, d));
  }
  std::vector<float> q_drawn(B * Hq * d);
  fill(q_drawn, 3);
  const std::vector<Q> q(q_drawn.begin(), q_drawn.end());
  std::vector<Q> out(q.size());
  const auto qv = headwise::bhsd<const Q>(q.data(), B, Hq, 1, d);
  const auto ov = headwise::bhsd(out.data(), B, Hq, 1, d);
  headwise::attention_options opt;
  opt.kernel = Kernel;
  opt.threads = unsigned(state.range(5));
  opt.causal = headwise::causal_mode::bottom_right;
  opt.isa = Isa;
  // avx512_bf16 runs bfloat16 on its tiles and every other type on the avx512 kernels.
  const std::string path = Isa == headwise::simd_isa::automatic ? headwise::simd_path() : headwise::isa_name(Isa);
  state.SetLabel("path=" + (path == "avx512_bf16" && !std::is_same_v<Q, headwise::bfloat16> ? "avx512" : path));
  std::size_t c = 0;
  for (auto _ : state) {
    if constexpr (headwise::is_storage_int8<S>) opt.k_scale = caches[c]->key_scales(), opt.v_scale = caches[c]->value_scales();
    headwise::attention(qv, caches[c]->keys(), caches[c]->values(), ov, opt);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
    c = (c + 1) % copies;
  }
  state.SetBytesProcessed(std::int64_t(state.iterations()) * std::int64_t(bytes));
  state.counters["KV_MiB"] = double(bytes) / (1 << 20);
  state.counters["copies"] = double(copies);
}

void BM_headwise_decode_f32(benchmark::State& state) {
  decode_steps<float, kv_layout::rows, kernel_mode::decode>(state);
}
void BM_headwise_decode_f16(benchmark::State& state) {
  decode_steps<headwise::half, kv_layout::rows, kernel_mode::decode>(state);
}
void BM_headwise_decode_i8(benchmark::State& state) {
  decode_steps<std::int8_t, kv_layout::rows, kernel_mode::decode>(state);
}
void BM_headwise_decode_f32_kblocks(benchmark::State& state) {
  decode_steps<float, kv_layout::key_blocks, kernel_mode::decode>(state);
}
void BM_headwise_decode_f16_kblocks(benchmark::State& state) {
  decode_steps<headwise::half, kv_layout::key_blocks, kernel_mode::decode>(state);
}
void BM_headwise_decode_i8_kblocks(benchmark::State& state) {
  decode_steps<std::int8_t, kv_layout::key_blocks, kernel_mode::decode>(state);
}
void BM_headwise_decode_bf16(benchmark::State& state) {
  decode_steps<headwise::bfloat16, kv_layout::rows, kernel_mode::decode, headwise::bfloat16>(state);
}
void BM_headwise_decode_bf16_widened(benchmark::State& state) {
  decode_steps<headwise::bfloat16, kv_layout::rows, kernel_mode::decode, headwise::bfloat16,
               headwise::simd_isa::avx512>(state);
}
void BM_headwise_plain_f32(benchmark::State& state) {
  decode_steps<float, kv_layout::rows, kernel_mode::plain>(state);
}

const std::vector<std::string> decode_args = {"B", "Hq", "Hkv", "KV", "d", "threads"};

/// Llama-3-8B's attention (32 query heads, 8 K/V heads, d 128) at KV 512 (K/V in L2)
/// and 4096 (about the size of the last-level cache), 1 and 4 sequences.
void cache_sized(benchmark::internal::Benchmark* b) {
  b->ArgNames(decode_args)->ArgsProduct({{1, 4}, {32}, {8}, {512, 4096}, {128}, {1, 2}});
}

/// The same at KV 32768: 256 MiB of fp32 K/V per sequence, from DRAM every step.
void dram_sized(benchmark::internal::Benchmark* b) {
  b->ArgNames(decode_args)->ArgsProduct({{1, 4}, {32}, {8}, {32768}, {128}, {1, 2}});
}

/// Each decode benchmark at both sizes; the DRAM-bound steps repeat 5 times (their
/// spread is the VM's, not the kernel's).
const bool decode_registered = [] {
  const std::pair<const char*, void (*)(benchmark::State&)> kernels[] = {
      {"BM_headwise_decode_f32", BM_headwise_decode_f32},
      {"BM_headwise_decode_f16", BM_headwise_decode_f16},
      {"BM_headwise_decode_i8", BM_headwise_decode_i8},
      {"BM_headwise_decode_f32_kblocks", BM_headwise_decode_f32_kblocks},
      {"BM_headwise_decode_f16_kblocks", BM_headwise_decode_f16_kblocks},
      {"BM_headwise_decode_i8_kblocks", BM_headwise_decode_i8_kblocks},
      {"BM_headwise_decode_bf16", BM_headwise_decode_bf16},
      {"BM_headwise_decode_bf16_widened", BM_headwise_decode_bf16_widened}};
  const std::vector<headwise::simd_isa> isas = headwise::available_isas();
  const bool bf16_tiles = std::find(isas.begin(), isas.end(), headwise::simd_isa::avx512_bf16) != isas.end();
  for (const auto& [name, fn] : kernels) {
    if (fn == BM_headwise_decode_bf16_widened && !bf16_tiles) continue;
    benchmark::RegisterBenchmark(name, fn)->Apply(cache_sized)->UseRealTime()->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(name, fn)
        ->Apply(dram_sized)
        ->Repetitions(5)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  }
  return true;
}();
BENCHMARK(BM_headwise_plain_f32)->Apply(cache_sized)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace
