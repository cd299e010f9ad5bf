// bench/table_reporter.hpp — a Google Benchmark reporter that, after the normal
// console output, prints one comparison table per suite and writes SVG plots.
//
// Benchmark names follow  <suite>/<impl>/<shape>/threads:<t>  (the library may
// append min_time:, iterations:, real_time, which are ignored). Each benchmark
// file declares what its table shows by registering a `metric`: a rate counter
// it reports (GFLOPS, GBps, ...), the benchmark that measures this machine's
// peak of that counter per thread count (peak/fma/threads:t), the
// implementation speed-ups are measured against, and optionally the suites it
// is for. A run's row uses the first metric for its suite whose counter it
// has (suite-specific before generic), so suites with different counters
// (prefill GFLOP/s, decode GB/s, LoRA) share one binary and one table style:
//
//   suite prefill — GFLOP/s; % of peak/fma; speed-up over eigen; scaling over 1 thread
//   shape                 thr  impl          ms/iter   GFLOP/s  %peak  x eigen  x 1T
//
// Plots: `plot` entries name a suite, a counter and a shape key whose number is
// the x axis (N in "H8_N1024_d128"); one polyline per implementation, log2 x,
// and the peak run as a dashed line.
// Each row is the best of its repetitions (--benchmark_repetitions=N; the peak rows
// run 3, the bandwidth and DRAM-bound decode rows 5): on a shared machine the best run
// is the least disturbed one, and a peak is a maximum by definition. main.cpp
// interleaves the repetitions of all benchmarks at random, so every row's best
// comes from the same stretch of the machine's time; the tables still list the
// rows in registration order. Only the library's console reporter is
// replaced: --benchmark_format=json still goes through the stock JSON reporter
// (see main.cpp).
#pragma once

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <map>
#include <string>
#include <vector>

namespace headwise_bench {

struct metric {
  std::string counter;   // user counter name, e.g. "GFLOPS"
  std::string unit;      // column header, e.g. "GFLOP/s"
  std::string peak;      // "<suite>/<impl>" of the peak run, e.g. "peak/fma"
  std::string baseline;  // implementation for the speed-up column, e.g. "eigen"
  std::string suites;    // suites it applies to (name prefix); empty = any suite
};

struct plot {
  std::string suite, counter, x_key, path, title;
  int threads = 1;
  std::string peak;  // "<suite>/<impl>" drawn as a dashed line at the same thread count
};

/// Declarations from each benchmark file (static registration), read by main.
inline std::vector<metric>& metrics() {
  static std::vector<metric> m;
  return m;
}
inline std::vector<plot>& plots() {
  static std::vector<plot> p;
  return p;
}
inline bool declare(const metric& m) { return metrics().push_back(m), true; }
inline bool declare(const plot& p) { return plots().push_back(p), true; }

/// One finished benchmark, with its name split into its parts.
struct result {
  std::string suite, impl, shape;
  std::int64_t family = 0, instance = 0;  // registration order of the benchmark
  int threads = 1;
  double ms = 0;      // real time per iteration
  double cpu_ms = 0;  // CPU time of the benchmark thread per iteration
  std::map<std::string, double> counters;
};

inline result parse_run(const benchmark::BenchmarkReporter::Run& run) {
  result r;
  std::vector<std::string> parts;
  const std::string name = run.benchmark_name();
  for (std::size_t at = 0; at <= name.size();) {
    const std::size_t slash = std::min(name.find('/', at), name.size());
    parts.push_back(name.substr(at, slash - at));
    at = slash + 1;
  }
  r.family = run.family_index;
  r.instance = run.per_family_instance_index;
  r.suite = parts[0];
  r.impl = parts.size() > 1 ? parts[1] : "";
  for (std::size_t i = 2; i < parts.size(); ++i) {
    const std::string& p = parts[i];
    if (p.rfind("threads:", 0) == 0) {
      r.threads = std::stoi(p.substr(8));
    } else if (p.rfind("min_time:", 0) != 0 && p.rfind("iterations:", 0) != 0 && p != "real_time" &&
               p.rfind("repeats:", 0) != 0) {
      r.shape += (r.shape.empty() ? "" : "/") + p;
    }
  }
  r.ms = run.iterations ? 1e3 * run.real_accumulated_time / double(run.iterations) : 0;
  r.cpu_ms = run.iterations ? 1e3 * run.cpu_accumulated_time / double(run.iterations) : 0;
  for (const auto& [key, counter] : run.counters) r.counters[key] = counter.value;
  return r;
}

/// The number after `key` in a shape such as "H8_N1024_d128" (key "N" → 1024), or -1.
inline double shape_value(const std::string& shape, const std::string& key) {
  for (std::size_t at = shape.find(key); at != std::string::npos; at = shape.find(key, at + 1)) {
    const bool starts = at == 0 || shape[at - 1] == '_' || shape[at - 1] == '/';
    const std::size_t d = at + key.size();
    if (starts && d < shape.size() && std::isdigit(static_cast<unsigned char>(shape[d])))
      return std::stod(shape.substr(d));
  }
  return -1;
}

class table_reporter : public benchmark::ConsoleReporter {
 public:
  table_reporter(std::vector<metric> ms, std::vector<plot> ps)
      : metrics_(std::move(ms)), plots_(std::move(ps)) {}

  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& run : runs)
      if (run.run_type == Run::RT_Iteration && !run.error_occurred) results_.push_back(parse_run(run));
  }

  void Finalize() override {
    ConsoleReporter::Finalize();
    // Tables in registration order: with random interleaving (main.cpp) the runs
    // arrive shuffled.
    std::stable_sort(results_.begin(), results_.end(), [](const result& a, const result& b) {
      return a.family != b.family ? a.family < b.family : a.instance < b.instance;
    });
    std::FILE* out = stdout;
    std::vector<std::string> suites;
    for (const result& r : results_)
      if (std::find(suites.begin(), suites.end(), r.suite) == suites.end()) suites.push_back(r.suite);
    for (const std::string& s : suites) print_suite(out, s);
    for (const plot& p : plots_) write_plot(p);
  }

 private:
  /// The first metric for the run's suite whose counter it reports; metrics
  /// naming a suite win over generic ones.
  const metric* metric_of(const result& r) const {
    for (bool specific : {true, false})
      for (const metric& m : metrics_)
        if (m.suites.empty() != specific && r.suite.rfind(m.suites, 0) == 0 && r.counters.count(m.counter))
          return &m;
    return nullptr;
  }

  /// The run (suite/impl, shape, threads) with the highest `counter`; null if none.
  const result* find_run(const std::string& suite_impl, const std::string& shape, int threads,
                         const std::string& counter, bool any_shape = false) const {
    const result* best = nullptr;
    for (const result& r : results_) {
      if (r.suite + "/" + r.impl != suite_impl || r.threads != threads) continue;
      if (!any_shape && r.shape != shape) continue;
      const auto it = r.counters.find(counter);
      if (it != r.counters.end() && (!best || it->second > best->counters.at(counter))) best = &r;
    }
    return best;
  }
  double find(const std::string& suite_impl, const std::string& shape, int threads,
              const std::string& counter, bool any_shape = false) const {
    const result* r = find_run(suite_impl, shape, threads, counter, any_shape);
    return r ? r->counters.at(counter) : NAN;
  }
  static double ms_of(const result* r) { return r ? r->ms : NAN; }
  /// 1-thread rate on CPU time instead of real time: what the run would show
  /// without time slicing on a shared machine (the benchmark thread's CPU time;
  /// meaningless with worker threads, so NaN for threads > 1).
  static double cpu_rate(const result* r, const std::string& counter) {
    if (!r || r->threads != 1 || !(r->cpu_ms > 0)) return NAN;
    return r->counters.at(counter) * r->ms / r->cpu_ms;
  }

  void print_suite(std::FILE* out, const std::string& suite) const {
    const metric* m = nullptr;
    for (const result& r : results_)
      if (r.suite == suite && (m = metric_of(r))) break;
    if (!m) return;
    std::fprintf(
        out,
        "\nsuite %s: %s; %% of %s at the same thread count; speed-up over %s; x1T = over 1 thread;\n"
        "  cpu%%pk = 1-thread %% of peak on CPU times (robust to time slicing on a shared machine)\n",
        suite.c_str(), m->unit.c_str(), m->peak.c_str(), m->baseline.c_str());
    std::fprintf(out, "%-34s %3s  %-14s %10s %10s %6s %8s %6s %6s\n", "shape", "thr", "impl", "ms/iter",
                 m->unit.c_str(), "%peak", ("x" + m->baseline).c_str(), "x1T", "cpu%pk");
    std::vector<std::string> keys;  // shape/threads in order of first appearance
    for (const result& r : results_) {
      if (r.suite != suite) continue;
      const std::string key = r.shape + "\t" + std::to_string(r.threads);
      if (std::find(keys.begin(), keys.end(), key) == keys.end()) keys.push_back(key);
    }
    for (const std::string& key : keys) {
      for (const result& r : results_) {
        if (r.suite != suite || r.shape + "\t" + std::to_string(r.threads) != key) continue;
        const metric* rm = metric_of(r);
        if (rm && find_run(suite + "/" + r.impl, r.shape, r.threads, rm->counter) != &r) continue;
        const double value = rm ? r.counters.at(rm->counter) : NAN;
        const double peak = rm ? find(rm->peak, "", r.threads, rm->counter, true) : NAN;
        // Speed-ups are ratios of times at the same shape: the rate counters of two
        // implementations may count different bytes (fp16 vs fp32 K/V).
        const double base = rm ? ms_of(find_run(suite + "/" + rm->baseline, r.shape, r.threads, rm->counter)) : NAN;
        const double one = rm ? ms_of(find_run(suite + "/" + r.impl, r.shape, 1, rm->counter)) : NAN;
        const double cpu_pk = rm ? cpu_rate(&r, rm->counter) /
                                       cpu_rate(find_run(rm->peak, "", 1, rm->counter, true), rm->counter)
                                 : NAN;
        std::fprintf(out, "%-34s %3d  %-14s %10.3f %10.2f %6s %8s %6s %6s\n", r.shape.c_str(), r.threads,
                     r.impl.c_str(), r.ms, value, fmt(100 * value / peak, "%.1f").c_str(),
                     fmt(base / r.ms, "%.2f").c_str(), fmt(one / r.ms, "%.2f").c_str(),
                     fmt(100 * cpu_pk, "%.1f").c_str());
      }
    }
  }

  static std::string fmt(double x, const char* f) {
    if (!std::isfinite(x)) return "-";
    char buf[32];
    std::snprintf(buf, sizeof buf, f, x);
    return buf;
  }

  void write_plot(const plot& p) const {
    std::map<std::string, std::map<double, double>> series;  // impl → x → best y over repetitions
    for (const result& r : results_) {
      const double x = shape_value(r.shape, p.x_key);
      const auto it = r.counters.find(p.counter);
      if (r.suite == p.suite && r.threads == p.threads && x > 0 && it != r.counters.end()) {
        double& y = series[r.impl].emplace(x, it->second).first->second;
        y = std::max(y, it->second);
      }
    }
    if (series.empty()) return;
    double x0 = 1e300, x1 = 0, y1 = 0;
    for (const auto& [impl, pts] : series)
      for (auto [x, y] : pts) x0 = std::min(x0, x), x1 = std::max(x1, x), y1 = std::max(y1, y);
    if (x1 <= x0) x1 = x0 * 2;
    const double peak = p.peak.empty() ? NAN : find(p.peak, "", p.threads, p.counter, true);
    if (peak > y1) y1 = peak;
    double step = std::pow(10.0, std::floor(std::log10(std::max(y1, 1.0) / 5)));  // 1-2-5 ticks
    for (double f : {1.0, 2.0, 5.0, 10.0})
      if (y1 / (step * f) <= 6) {
        step *= f;
        break;
      }
    y1 = std::ceil(y1 * 1.02 / step) * step;
    const double W = 720, H = 440, L = 70, R = 170, T = 40, B = 50;
    auto sx = [&](double x) {
      return L + (std::log2(x) - std::log2(x0)) / (std::log2(x1) - std::log2(x0)) * (W - L - R);
    };
    auto sy = [&](double y) { return H - B - y / y1 * (H - T - B); };
    std::ofstream f(p.path);
    f << "<svg xmlns='http://www.w3.org/2000/svg' width='" << W << "' height='" << H
      << "' font-family='sans-serif' font-size='12'>\n<rect width='100%' height='100%' fill='white'/>\n"
      << "<text x='" << L << "' y='22' font-size='15'>" << p.title << "</text>\n";
    for (double y = 0; y <= y1 * 1.0001; y += step) {  // y grid
      f << "<line x1='" << L << "' x2='" << W - R << "' y1='" << sy(y) << "' y2='" << sy(y)
        << "' stroke='#ddd'/><text x='" << L - 8 << "' y='" << sy(y) + 4 << "' text-anchor='end'>"
        << fmt(y, "%.0f") << "</text>\n";
    }
    for (double x = x0; x <= x1 * 1.0001; x *= 2)  // x ticks at powers of two
      f << "<text x='" << sx(x) << "' y='" << H - B + 18 << "' text-anchor='middle'>" << fmt(x, "%.0f")
        << "</text>\n";
    f << "<text x='" << (L + W - R) / 2 << "' y='" << H - 12 << "' text-anchor='middle'>" << p.x_key
      << "</text>\n<text x='16' y='" << (T + H - B) / 2 << "' transform='rotate(-90 16 " << (T + H - B) / 2
      << ")' text-anchor='middle'>" << p.counter << "</text>\n";
    if (std::isfinite(peak))
      f << "<line x1='" << L << "' x2='" << W - R << "' y1='" << sy(peak) << "' y2='" << sy(peak)
        << "' stroke='black' stroke-dasharray='6 4'/><text x='" << L + 6 << "' y='" << sy(peak) - 5 << "'>"
        << p.peak << "</text>\n";
    const char* colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf"};
    int k = 0;
    for (const auto& [impl, pts] : series) {
      const char* c = colors[k % 7];
      f << "<polyline fill='none' stroke='" << c << "' stroke-width='2' points='";
      for (auto [x, y] : pts) f << sx(x) << "," << sy(y) << " ";
      f << "'/>\n";
      for (auto [x, y] : pts)
        f << "<circle cx='" << sx(x) << "' cy='" << sy(y) << "' r='3' fill='" << c << "'/>\n";
      f << "<text x='" << W - R + 12 << "' y='" << T + 18 * k + 10 << "' fill='" << c << "'>" << impl
        << "</text>\n";
      ++k;
    }
    f << "</svg>\n";
    std::fprintf(stdout, "wrote %s\n", p.path.c_str());
  }

  std::vector<metric> metrics_;
  std::vector<plot> plots_;
  std::vector<result> results_;
};

}  // namespace headwise_bench
