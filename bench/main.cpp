// headwise_bench: every benchmark file of this binary registers its suites and
// declares its table metrics and plots (table_reporter.hpp); main runs them.
//
//   headwise_bench                          console output, then the comparison
//                                           tables and the SVG plots
//   headwise_bench --benchmark_format=json  plain Google Benchmark JSON, nothing else
//   --benchmark_filter=prefill/flash/ etc.  as usual
//
// Repetitions of all benchmarks run randomly interleaved unless the command line
// says otherwise (--benchmark_enable_random_interleaving=false). On a shared
// machine whose memory bandwidth drifts over minutes, a benchmark's repetitions
// then sample the whole run, not one stretch of it. So the ratios in a table
// (fp16 vs fp32 decode, % of the bandwidth row) compare runs taken over the same
// stretch of the machine's time.
#include <benchmark/benchmark.h>

#include <cstring>
#include <vector>

#include "table_reporter.hpp"

int main(int argc, char** argv) {
  bool console = true;
  for (int i = 1; i < argc; ++i)
    if (std::strncmp(argv[i], "--benchmark_format=", 19) == 0)
      console = std::strcmp(argv[i] + 19, "console") == 0;
  // The default goes first, so a flag the user gives (parsed later) wins.
  std::vector<char*> args(argv, argv + argc);
  char interleave[] = "--benchmark_enable_random_interleaving=true";
  args.insert(args.begin() + 1, interleave);
  args.push_back(nullptr);
  argc = static_cast<int>(args.size()) - 1;
  argv = args.data();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  if (console) {
    headwise_bench::table_reporter reporter(headwise_bench::metrics(), headwise_bench::plots());
    benchmark::RunSpecifiedBenchmarks(&reporter);
  } else {
    benchmark::RunSpecifiedBenchmarks();
  }
  benchmark::Shutdown();
  return 0;
}
