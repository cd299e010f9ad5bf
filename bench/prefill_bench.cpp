// prefill_bench: attention over prefill shapes (Nq = Nk), one benchmark per
// implementation × shape × thread count, named prefill/<impl>/<shape>/threads:<t>.
//
//   reference     headwise::reference (double accumulation; ~1 GFLOP/s, so only
//                 where one iteration takes < ~2 s)
//   eigen         what an Eigen user writes: per head S = Q·Kᵀ (Eigen GEMM), a row
//                 softmax, O = P·V; causal computes the full S and masks it
//   plain         kernel_mode::plain (one query row at a time)
//   flash_scalar  kernel_mode::flash with force_scalar (the 1-wide build)
//   flash         kernel_mode::flash on the SIMD path
// Counter GFLOPS = 4·B·Hq·Nq·Nk·d / time, halved for causal (the visible half).
// Tensors are BHSD floats filled once per benchmark, outside the timed loop.
#include <headwise/headwise.hpp>

#include <benchmark/benchmark.h>
#include <Eigen/Dense>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "table_reporter.hpp"

namespace {

using headwise::kernel_mode;

struct shape {
  std::string tag;  // "", "causal_" or "gqa_causal_"
  std::size_t Hq, Hkv, N, d;
  bool causal;

  std::string name() const {
    std::string s = tag + (Hq == Hkv ? "H" + std::to_string(Hq)
                                     : "Hq" + std::to_string(Hq) + "_Hkv" + std::to_string(Hkv));
    return s + "_N" + std::to_string(N) + "_d" + std::to_string(d);
  }
  double flops() const { return 4.0 * double(Hq) * double(N) * double(N) * double(d) / (causal ? 2 : 1); }
};

struct problem {
  std::vector<float> q, k, v, o;
  headwise::tensor_view<const float> qv, kv, vv;
  headwise::tensor_view<float> ov;
  explicit problem(const shape& s) : q(s.Hq * s.N * s.d), k(s.Hkv * s.N * s.d), v(k.size()), o(q.size()) {
    std::mt19937 gen(1);
    std::normal_distribution<float> normal;
    for (auto* buf : {&q, &k, &v})
      for (float& x : *buf) x = normal(gen);
    qv = headwise::bhsd<const float>(q.data(), 1, s.Hq, s.N, s.d);
    kv = headwise::bhsd<const float>(k.data(), 1, s.Hkv, s.N, s.d);
    vv = headwise::bhsd<const float>(v.data(), 1, s.Hkv, s.N, s.d);
    ov = headwise::bhsd(o.data(), 1, s.Hq, s.N, s.d);
  }
};

void set_counters(benchmark::State& st, const shape& s) {
  st.counters["GFLOPS"] = benchmark::Counter(s.flops() / 1e9, benchmark::Counter::kIsIterationInvariantRate);
}

void run_headwise(benchmark::State& st, const shape& s, const char* impl, unsigned threads) {
  problem p(s);
  headwise::attention_options opt;
  opt.causal = s.causal ? headwise::causal_mode::top_left : headwise::causal_mode::none;
  opt.threads = threads;
  const std::string name = impl;
  opt.kernel = name == "plain" ? kernel_mode::plain : kernel_mode::flash;
  opt.force_scalar = name == "flash_scalar";
  for (auto _ : st) {
    if (name == "reference")
      headwise::reference::attention(p.qv, p.kv, p.vv, p.ov, opt);
    else
      headwise::attention(p.qv, p.kv, p.vv, p.ov, opt);
    benchmark::DoNotOptimize(p.o.data());
    benchmark::ClobberMemory();
  }
  set_counters(st, s);
}

using row_matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

void run_eigen(benchmark::State& st, const shape& s, unsigned threads) {
  problem p(s);
  const float scale = 1.0f / std::sqrt(float(s.d));
  const std::size_t group = s.Hq / s.Hkv;
  std::vector<row_matrix> scores(threads, row_matrix(s.N, s.N));
  const auto head = [&](std::size_t h, unsigned worker) {
    using cmap = Eigen::Map<const row_matrix>;
    cmap Q(p.qv.row(0, h, 0), Eigen::Index(s.N), Eigen::Index(s.d));
    cmap K(p.kv.row(0, h / group, 0), Eigen::Index(s.N), Eigen::Index(s.d));
    cmap V(p.vv.row(0, h / group, 0), Eigen::Index(s.N), Eigen::Index(s.d));
    Eigen::Map<row_matrix> O(p.ov.row(0, h, 0), Eigen::Index(s.N), Eigen::Index(s.d));
    row_matrix& S = scores[worker];
    S.noalias() = scale * Q * K.transpose();
    if (s.causal)
      for (Eigen::Index i = 0; i + 1 < S.rows(); ++i)
        S.row(i).tail(S.cols() - i - 1).setConstant(-std::numeric_limits<float>::infinity());
    const Eigen::VectorXf row_max = S.rowwise().maxCoeff();
    S = (S.array().colwise() - row_max.array()).exp().matrix();
    const Eigen::VectorXf row_sum = S.rowwise().sum();
    O.noalias() = S * V;
    O.array().colwise() /= row_sum.array();
  };
  for (auto _ : st) {
    headwise::detail::parallel_for(s.Hq, threads, head);
    benchmark::DoNotOptimize(p.o.data());
    benchmark::ClobberMemory();
  }
  set_counters(st, s);
}

// Shapes of issue 3; H8 N256 d64 is there so the reference appears in the
// table (it is the only shape where one reference iteration stays well under 2 s).
// Causal and non-causal H8 N2048 d128 sit side by side to compare their times.
const shape table_shapes[] = {
    {"", 8, 8, 256, 64, false},         {"", 8, 8, 1024, 64, false},  {"", 8, 8, 1024, 128, false},
    {"causal_", 8, 8, 2048, 128, true}, {"", 8, 8, 2048, 128, false}, {"gqa_causal_", 32, 8, 512, 128, true},
    {"causal_", 1, 1, 16384, 64, true},
};
const std::size_t sweep_n[] = {256, 512, 1024, 2048, 4096};  // for the plot, H8 d128, 1 thread

/// Seconds per iteration at which an implementation is left out of a shape.
bool too_slow(const std::string& impl, const shape& s) {
  const double gflops_guess = impl == "reference" ? 1 : impl == "plain" || impl == "flash_scalar" ? 2 : 20;
  const double eigen_bytes = impl == "eigen" ? 4.0 * double(s.N) * double(s.N) : 0;
  return s.flops() / 1e9 / gflops_guess > (impl == "reference" ? 2.0 : 6.0) ||
         eigen_bytes > 512.0 * (1 << 20);
}

void add(const std::string& suite, const std::string& impl, const shape& s, unsigned threads) {
  if (too_slow(impl, s)) return;
  const std::string name = suite + "/" + impl + "/" + s.name() + "/threads:" + std::to_string(threads);
  benchmark::internal::Benchmark* b =
      impl == "eigen" ? benchmark::RegisterBenchmark(
                            name.c_str(), [s, threads](benchmark::State& st) { run_eigen(st, s, threads); })
                      : benchmark::RegisterBenchmark(name.c_str(), [s, impl, threads](benchmark::State& st) {
                          run_headwise(st, s, impl.c_str(), threads);
                        });
  b->UseRealTime()->Unit(benchmark::kMillisecond)->MinTime(0.2);
}

const char* const impls[] = {"reference", "eigen", "plain", "flash_scalar", "flash"};

bool register_prefill() {
  for (const shape& s : table_shapes)
    for (unsigned t : {1u, 2u})
      for (const char* impl : impls)
        if (t == 1 || std::string(impl) != "reference") add("prefill", impl, s, t);
  for (std::size_t n : sweep_n)
    for (const char* impl : impls) add("prefill_sweep", impl, {"", 8, 8, n, 128, false}, 1);
  return true;
}

const bool registered =
    register_prefill() &&
    headwise_bench::declare(headwise_bench::metric{"GFLOPS", "GFLOP/s", "peak/fma", "eigen", "prefill"}) &&
    headwise_bench::declare(headwise_bench::plot{"prefill_sweep", "GFLOPS", "N", "headwise_prefill.svg",
                                                 "prefill H8 d128, 1 thread: GFLOP/s vs N", 1, "peak/fma"});

}  // namespace
