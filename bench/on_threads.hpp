// on_threads.hpp — the bench's own fork-join, for code that is not headwise's (the
// Eigen baselines, the peak loops): fn(t) on threads t = 0 .. n-1, the calling
// thread taking t = 0. One std::thread per extra thread per call: ~50 µs, against
// timed iterations of milliseconds.
#pragma once

#include <thread>
#include <vector>

namespace headwise_bench {

template <class Fn>
void on_threads(unsigned n, Fn fn) {
  std::vector<std::thread> others;
  for (unsigned t = 1; t < n; ++t) others.emplace_back(fn, t);
  fn(0u);
  for (std::thread& th : others) th.join();
}

}  // namespace headwise_bench
