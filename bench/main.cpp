// The main of headwise_bench and headwise_lora_bench: Google Benchmark's, plus the
// SIMD paths of this CPU and build in the run's context (the JSON's "context" and
// the console header), so a table read later says which kernels it timed.
//
//   headwise_bench --benchmark_out=run.json --benchmark_out_format=json
//   headwise_bench_table run.json         the comparison table and an SVG (bench_table.cpp)
// scripts/bench does both, with the repetitions interleaved at random.
#include <headwise/headwise.hpp>

#include <benchmark/benchmark.h>
#include <xsimd/xsimd.hpp>

#include <string>

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  std::string isas;
  for (headwise::simd_isa isa : headwise::available_isas())
    isas += (isas.empty() ? "" : ",") + std::string(headwise::isa_name(isa));
  benchmark::AddCustomContext("headwise_version", std::to_string(HEADWISE_VERSION_MAJOR) + "." +
                                                      std::to_string(HEADWISE_VERSION_MINOR) + "." +
                                                      std::to_string(HEADWISE_VERSION_PATCH));
  benchmark::AddCustomContext("headwise_simd_path",
                              headwise::simd_path());  // what attention() runs by default
  benchmark::AddCustomContext("headwise_isas", isas);  // what attention_options::isa accepts
  benchmark::AddCustomContext("fma_peak_arch", xsimd::default_arch::name());  // BM_fma_peak's batches
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
