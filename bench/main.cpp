// headwise_bench: every benchmark file of this binary registers its suites and
// declares its table metrics and plots (table_reporter.hpp); main runs them.
//
//   headwise_bench                          console output, then the comparison
//                                           tables and the SVG plots
//   headwise_bench --benchmark_format=json  plain Google Benchmark JSON, nothing else
//   --benchmark_filter=prefill/flash/ etc.  as usual
#include <benchmark/benchmark.h>

#include <cstring>

#include "table_reporter.hpp"

int main(int argc, char** argv) {
  bool console = true;
  for (int i = 1; i < argc; ++i)
    if (std::strncmp(argv[i], "--benchmark_format=", 19) == 0)
      console = std::strcmp(argv[i] + 19, "console") == 0;
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
