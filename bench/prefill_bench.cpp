// prefill_bench: attention over prompts (Nq = Nk = N, batch 1, BHSD float tensors
// filled once, outside the timed loop), one function per implementation:
//
//   BM_reference       headwise::reference::attention: the oracle, double accumulation
//   BM_eigen_full      what an Eigen user writes first: per head S = scale·Q·Kᵀ (N × N),
//                      masked afterwards, a row softmax, O = P·V. Masked scores cost
//                      as much as visible ones.
//   BM_eigen_blocked   what a careful Eigen user writes: per block of 64 query rows, the
//                      GEMMs run only on the keys that block can see (causal: up to its
//                      last row's diagonal; window: from its first row's window start),
//                      K/V of a GQA group mapped in place, not copied.
//   BM_headwise_plain  attention_options::kernel = plain (one query row at a time)
//   BM_headwise_flash  kernel = flash on the default SIMD path (headwise::simd_path())
//   BM_headwise_flash_<isa>  the same on each narrower path of headwise::available_isas()
//                      (attention_options::isa): what a CPU without the wider one gets
//   BM_headwise_flash_bf16, BM_headwise_flash_f16  the same with q, k, v and out in
//                      bfloat16 / half (converted once, outside the timed loop); the
//                      label names the path and the unit its %peak is taken against
//                      (bf16_dot_peak on avx512_bf16, fma_peak where 16-bit inputs are
//                      converted to fp32 on load)
//   BM_headwise_backward  attention_backward (dq, dk, dv from out, LSE and dout) after
//                      one untimed forward; FLOPS counts 10·Hq·d per visible pair
//                      (FlashAttention's 2.5× the forward), so its % of peak compares
//                      with the forward rows'; counter bwd_fwd_ratio = backward time /
//                      forward time on the same shape, both measured in this run;
//                      scratch_bytes = the workspace the backward held (tiles, not N²)
//
// Args: Hq, Hkv (query and K/V heads), N, d, causal (0/1: top_left), window (keys a
// query sees, itself included; 0 = no window), threads (attention_options::threads;
// the Eigen baselines split their heads or row blocks over as many std::threads).
// Counter FLOPS = 4·Hq·d per visible (query, key) pair per second: 4·Hq·N²·d without
// a mask, half that causal (DESIGN.md's count), the exact visible pairs under a window.
#include <headwise/headwise.hpp>

#include <benchmark/benchmark.h>
#include <Eigen/Dense>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "on_threads.hpp"

namespace {

using Eigen::Index;
using headwise::kernel_mode;

/// One benchmark's shape and tensors, from its args.
struct prefill {
  std::size_t Hq, Hkv, N, d, window;
  bool causal;
  unsigned threads;
  std::vector<float> q_data, k_data, v_data, out_data;
  headwise::tensor_view<const float> q, k, v;
  headwise::tensor_view<float> out;

  explicit prefill(const benchmark::State& st)
      : Hq(std::size_t(st.range(0))),
        Hkv(std::size_t(st.range(1))),
        N(std::size_t(st.range(2))),
        d(std::size_t(st.range(3))),
        window(std::size_t(st.range(5))),
        causal(st.range(4) != 0),
        threads(unsigned(st.range(6))),
        q_data(Hq * N * d),
        k_data(Hkv * N * d),
        v_data(k_data.size()),
        out_data(q_data.size()) {
    std::mt19937 gen(1);
    std::normal_distribution<float> normal;
    for (auto* buf : {&q_data, &k_data, &v_data})
      for (float& x : *buf) x = normal(gen);
    q = headwise::bhsd<const float>(q_data.data(), 1, Hq, N, d);
    k = headwise::bhsd<const float>(k_data.data(), 1, Hkv, N, d);
    v = headwise::bhsd<const float>(v_data.data(), 1, Hkv, N, d);
    out = headwise::bhsd(out_data.data(), 1, Hq, N, d);
  }

  headwise::attention_options options() const {
    headwise::attention_options opt;
    opt.causal = causal ? headwise::causal_mode::top_left : headwise::causal_mode::none;
    if (window > 0) opt.window_left = std::int64_t(window) - 1;
    opt.threads = threads;
    return opt;
  }

  /// The keys query i sees: [first, last].
  std::size_t first_key(std::size_t i) const { return window > 0 && i + 1 > window ? i + 1 - window : 0; }
  std::size_t last_key(std::size_t i) const { return causal ? i : N - 1; }

  double flops(double per_pair_and_dim = 4.0) const {
    double pairs = double(N) * double(N) / (causal ? 2 : 1);
    if (window > 0) {
      pairs = 0;
      for (std::size_t i = 0; i < N; ++i) pairs += double(last_key(i) - first_key(i) + 1);
    }
    return per_pair_and_dim * double(Hq) * double(d) * pairs;
  }

  /// Times `step` (one attention call) and sets the FLOPS counter.
  template <class Step>
  void time(benchmark::State& state, Step step) {
    for (auto _ : state) {
      step();
      benchmark::DoNotOptimize(out_data.data());
      benchmark::ClobberMemory();
    }
    state.counters["FLOPS"] = benchmark::Counter(flops(), benchmark::Counter::kIsIterationInvariantRate);
  }
};

/// attention() with `opt`, once untimed: a path or kernel this build or CPU lacks
/// (headwise::error) skips the benchmark instead of ending the run.
void time_headwise(benchmark::State& state, prefill& p, const headwise::attention_options& opt) {
  try {
    headwise::attention(p.q, p.k, p.v, p.out, opt);
  } catch (const headwise::error& e) {
    state.SkipWithError(e.what());
    return;
  }
  p.time(state, [&] { headwise::attention(p.q, p.k, p.v, p.out, opt); });
}

void BM_headwise_flash(benchmark::State& state) {
  prefill p(state);
  headwise::attention_options opt = p.options();
  opt.kernel = kernel_mode::flash;
  time_headwise(state, p, opt);
}

void BM_headwise_flash_isa(benchmark::State& state, headwise::simd_isa isa) {
  prefill p(state);
  headwise::attention_options opt = p.options();
  opt.kernel = kernel_mode::flash;
  opt.isa = isa;
  time_headwise(state, p, opt);
}

/// BM_headwise_flash with q, k, v and out in X, on the default path.
template <class X>
void flash_16bit(benchmark::State& state) {
  prefill p(state);
  std::vector<X> q(p.q_data.size()), k(p.k_data.size()), v(p.v_data.size()), out(p.out_data.size());
  for (auto [from, to] : {std::pair{&p.q_data, &q}, std::pair{&p.k_data, &k}, std::pair{&p.v_data, &v}})
    std::transform(from->begin(), from->end(), to->begin(), [](float x) { return X(x); });
  const auto qv = headwise::bhsd<const X>(q.data(), 1, p.Hq, p.N, p.d);
  const auto kv = headwise::bhsd<const X>(k.data(), 1, p.Hkv, p.N, p.d);
  const auto vv = headwise::bhsd<const X>(v.data(), 1, p.Hkv, p.N, p.d);
  const auto ov = headwise::bhsd(out.data(), 1, p.Hq, p.N, p.d);
  headwise::attention_options opt = p.options();
  opt.kernel = kernel_mode::flash;
  // avx512_bf16 runs bfloat16 on vdpbf16ps and everything else on the avx512 kernels.
  const bool bf16_path = std::string(headwise::simd_path()) == "avx512_bf16";
  const bool dot = bf16_path && std::is_same_v<X, headwise::bfloat16>;
  state.SetLabel(std::string("path=") + (bf16_path && !dot ? "avx512" : headwise::simd_path()) +
                 " unit=" + (dot ? "bf16_dot_peak" : "fma_peak"));
  p.time(state, [&] { headwise::attention(qv, kv, vv, ov, opt); });
}
void BM_headwise_flash_bf16(benchmark::State& state) { flash_16bit<headwise::bfloat16>(state); }
void BM_headwise_flash_f16(benchmark::State& state) { flash_16bit<headwise::half>(state); }

void BM_headwise_backward(benchmark::State& state) {
  prefill p(state);
  headwise::workspace ws;
  headwise::attention_options opt = p.options();
  opt.scratch = &ws;
  std::vector<float> lse(p.Hq * p.N), dout(p.out_data.size()), dq(p.q_data.size()), dk(p.k_data.size()),
      dv(p.v_data.size());
  std::mt19937 gen(2);
  std::normal_distribution<float> normal;
  for (float& x : dout) x = normal(gen);
  opt.lse = headwise::lse_view(lse.data(), 1, p.Hq, p.N);
  const auto forward = [&] { headwise::attention(p.q, p.k, p.v, p.out, opt); };
  forward();
  const auto clse = headwise::lse_view(static_cast<const float*>(lse.data()), 1, p.Hq, p.N);
  const auto backward = [&] {
    headwise::attention_backward(p.q, p.k, p.v, headwise::tensor_view<const float>(p.out), clse,
                                 headwise::bhsd<const float>(dout.data(), 1, p.Hq, p.N, p.d),
                                 headwise::bhsd(dq.data(), 1, p.Hq, p.N, p.d),
                                 headwise::bhsd(dk.data(), 1, p.Hkv, p.N, p.d),
                                 headwise::bhsd(dv.data(), 1, p.Hkv, p.N, p.d), opt);
  };
  backward();
  ws.release();
  backward();
  const double scratch = double(ws.bytes());
  using clock = std::chrono::steady_clock;
  double backward_s = 0;
  std::int64_t iterations = 0;
  for (auto _ : state) {
    const auto t0 = clock::now();
    backward();
    backward_s += std::chrono::duration<double>(clock::now() - t0).count();
    ++iterations;
    benchmark::DoNotOptimize(dq.data());
    benchmark::ClobberMemory();
  }
  // The forward on the same shape and options, as many calls, right after.
  const auto t0 = clock::now();
  for (std::int64_t i = 0; i < iterations; ++i) forward();
  const double forward_s = std::chrono::duration<double>(clock::now() - t0).count();
  state.counters["FLOPS"] = benchmark::Counter(p.flops(10.0), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["bwd_fwd_ratio"] = forward_s > 0 ? backward_s / forward_s : 0;
  state.counters["scratch_bytes"] = scratch;
}

void BM_headwise_plain(benchmark::State& state) {
  prefill p(state);
  headwise::attention_options opt = p.options();
  opt.kernel = kernel_mode::plain;
  time_headwise(state, p, opt);
}

void BM_reference(benchmark::State& state) {
  prefill p(state);
  const headwise::attention_options opt = p.options();
  p.time(state, [&] { headwise::reference::attention(p.q, p.k, p.v, p.out, opt); });
}

using row_matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using const_rows = Eigen::Map<const row_matrix>;
using scores_ref = Eigen::Ref<row_matrix, 0, Eigen::OuterStride<>>;

/// Head h's rows [row0, row0 + rows) of a BHSD view, as an Eigen map (no copy).
const_rows rows_of(const headwise::tensor_view<const float>& t, std::size_t h, std::size_t row0,
                   std::size_t rows) {
  return const_rows(t.row(0, h, row0), Index(rows), Index(t.dim()));
}

/// S holds the scores of queries i0.. against keys k0..; hides the invisible ones
/// (-inf), then O = softmax(S)·V, the softmax taken row by row.
void masked_softmax_times_v(const prefill& p, scores_ref S, std::size_t i0, std::size_t k0,
                            const const_rows& V, Eigen::Map<row_matrix> O) {
  constexpr float hidden = -std::numeric_limits<float>::infinity();
  for (Index r = 0; r < S.rows(); ++r) {
    const std::size_t i = i0 + std::size_t(r);
    const Index first = Index(p.first_key(i)) - Index(k0), last = Index(p.last_key(i)) - Index(k0);
    if (first > 0) S.row(r).head(std::min(first, S.cols())).setConstant(hidden);
    if (last + 1 < S.cols()) S.row(r).tail(S.cols() - (last + 1)).setConstant(hidden);
  }
  const Eigen::VectorXf row_max = S.rowwise().maxCoeff();
  S = (S.array().colwise() - row_max.array()).exp().matrix();
  const Eigen::VectorXf row_sum = S.rowwise().sum();
  O.noalias() = S * V;
  O.array().colwise() /= row_sum.array();
}

void BM_eigen_full(benchmark::State& state) {
  prefill p(state);
  const float scale = 1.0f / std::sqrt(float(p.d));
  const std::size_t group = p.Hq / p.Hkv;
  std::vector<row_matrix> scores(p.threads, row_matrix(Index(p.N), Index(p.N)));  // N² floats per thread
  p.time(state, [&] {
    headwise_bench::on_threads(p.threads, [&](unsigned t) {
      for (std::size_t h = t; h < p.Hq; h += p.threads) {
        row_matrix& S = scores[t];
        S.noalias() = scale * rows_of(p.q, h, 0, p.N) * rows_of(p.k, h / group, 0, p.N).transpose();
        masked_softmax_times_v(p, S, 0, 0, rows_of(p.v, h / group, 0, p.N),
                               Eigen::Map<row_matrix>(p.out.row(0, h, 0), Index(p.N), Index(p.d)));
      }
    });
  });
}

// 64 query rows per block: the scores it computes above the diagonal are ~32 of
// each row's visible keys (3 % at N 2048), and a 64 × d block of Q is already
// several of the row panels Eigen's GEMM kernel works in.
constexpr std::size_t eigen_block_rows = 64;

void BM_eigen_blocked(benchmark::State& state) {
  prefill p(state);
  const float scale = 1.0f / std::sqrt(float(p.d));
  const std::size_t group = p.Hq / p.Hkv, blocks = (p.N + eigen_block_rows - 1) / eigen_block_rows;
  std::vector<row_matrix> scores(p.threads, row_matrix(Index(eigen_block_rows), Index(p.N)));
  p.time(state, [&] {
    headwise_bench::on_threads(p.threads, [&](unsigned t) {
      // Tasks (head, block) dealt round robin: causal blocks grow along the diagonal.
      for (std::size_t task = t; task < p.Hq * blocks; task += p.threads) {
        const std::size_t h = task / blocks, i0 = task % blocks * eigen_block_rows;
        const std::size_t rows = std::min(eigen_block_rows, p.N - i0);
        const std::size_t k0 = p.first_key(i0), k1 = p.last_key(i0 + rows - 1) + 1;
        scores_ref S = scores[t].topLeftCorner(Index(rows), Index(k1 - k0));
        S.noalias() = scale * rows_of(p.q, h, i0, rows) * rows_of(p.k, h / group, k0, k1 - k0).transpose();
        masked_softmax_times_v(p, S, i0, k0, rows_of(p.v, h / group, k0, k1 - k0),
                               Eigen::Map<row_matrix>(p.out.row(0, h, i0), Index(rows), Index(p.d)));
      }
    });
  });
}

// Shapes. Args {Hq, Hkv, N, d, causal, window, threads}; each implementation runs
// the sets it can finish in a few seconds.
const std::vector<std::string> prefill_args = {"Hq", "Hkv", "N", "d", "causal", "window", "threads"};

/// H8 N1024 at d 64 and 128: the plain multi-head shapes every implementation runs.
void square_heads(benchmark::internal::Benchmark* b) {
  b->ArgNames(prefill_args)->ArgsProduct({{8}, {8}, {1024}, {64, 128}, {0}, {0}, {1, 2}});
}

/// The shapes with a reason each; too big for the plain kernel and the reference.
void odd_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames(prefill_args);
  for (std::int64_t t : {1, 2}) {
    // N 2048 d 128 with and without the causal mask, side by side: skipping the
    // tiles above the diagonal should make causal take about half the time.
    b->Args({8, 8, 2048, 128, 0, 0, t});
    b->Args({8, 8, 2048, 128, 1, 0, t});
    // GQA 32/8 (Llama-3-8B's heads), causal: one K/V tile serves 4 query heads.
    b->Args({32, 8, 512, 128, 1, 0, t});
    // A sliding window of 512 keys (Mistral-style) at N 4096: eigen_full pays for
    // all N² scores, the blocked and fused kernels for about N·512.
    b->Args({8, 8, 4096, 64, 1, 512, t});
  }
}

/// One head, one long causal sequence: only the query rows give parallelism, and
/// eigen_full would need 1 GiB of scores per thread, so it does not run this one.
void long_sequence(benchmark::internal::Benchmark* b) {
  b->ArgNames(prefill_args)->ArgsProduct({{1}, {1}, {16384}, {64}, {1}, {0}, {1, 2}});
}

/// H8 N256 d64 on one thread: the only shape where the reference (~1 GFLOP/s)
/// finishes an iteration well under a second, so every implementation meets it.
void small(benchmark::internal::Benchmark* b) { b->ArgNames(prefill_args)->Args({8, 8, 256, 64, 0, 0, 1}); }

BENCHMARK(BM_reference)->Apply(small)->UseRealTime()->Unit(benchmark::kMillisecond);
/// Every shape an implementation can run in reasonable time and memory.
void up_to_odd_shapes(benchmark::internal::Benchmark* b) {
  b->Apply(small)
      ->Apply(square_heads)
      ->Apply(odd_shapes)
      ->MinTime(0.2)
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
}
void every_shape(benchmark::internal::Benchmark* b) {
  up_to_odd_shapes(b);
  b->Apply(long_sequence);
}

BENCHMARK(BM_eigen_full)->Apply(up_to_odd_shapes);
BENCHMARK(BM_eigen_blocked)->Apply(every_shape);
BENCHMARK(BM_headwise_plain)
    ->Apply(small)
    ->Apply(square_heads)
    ->MinTime(0.2)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_headwise_flash)->Apply(every_shape);
BENCHMARK(BM_headwise_flash_bf16)->Apply(every_shape);
BENCHMARK(BM_headwise_flash_f16)
    ->Apply(square_heads)
    ->MinTime(0.2)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

/// The backward on the README's S2 (H8 N1024, d 64 and 128) and causal S3 (H8 N2048
/// d128), 1 and 2 threads; and MQA (Hkv 1, one whole task at B 1), where two threads
/// run its key tiles as tasks (flash_backward.hpp).
void backward_shapes(benchmark::internal::Benchmark* b) {
  b->Apply(square_heads);
  for (std::int64_t t : {1, 2}) b->Args({8, 8, 2048, 128, 1, 0, t});
  for (std::int64_t t : {1, 2}) b->Args({8, 1, 1024, 128, 0, 0, t});
  for (std::int64_t t : {1, 2}) b->Args({8, 1, 2048, 128, 1, 0, t});
  b->MinTime(0.2)->UseRealTime()->Unit(benchmark::kMillisecond);
}
BENCHMARK(BM_headwise_backward)->Apply(backward_shapes);

/// BM_headwise_flash_<isa> for every path narrower than the widest this CPU runs,
/// on H8 N1024 at one thread: what the runtime dispatch gains.
const bool narrower_paths_registered = [] {
  const std::vector<headwise::simd_isa> isas = headwise::available_isas();
  for (std::size_t i = 0; i + 1 < isas.size(); ++i)
    benchmark::RegisterBenchmark(("BM_headwise_flash_" + std::string(headwise::isa_name(isas[i]))).c_str(),
                                 BM_headwise_flash_isa, isas[i])
        ->ArgNames(prefill_args)
        ->ArgsProduct({{8}, {8}, {1024}, {64, 128}, {0}, {0}, {1}})
        ->MinTime(0.2)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  return true;
}();

}  // namespace
