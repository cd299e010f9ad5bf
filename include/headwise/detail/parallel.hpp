// headwise/detail/parallel.hpp — a minimal parallel_for over independent tasks.
//
// Tasks are indices 0..n-1 handed out through one atomic counter (dynamic
// scheduling: causal tiles have unequal cost). Each task owns its output rows,
// so which worker runs a task never changes a result bit. Worker w gets a
// stable index in [0, workers) to pick its own scratch buffer. The calling
// thread is worker 0, so threads = 1 runs inline with no thread created.
#pragma once

#ifndef HEADWISE_INTERNAL
#error "headwise/detail/* is internal: include <headwise/headwise.hpp>"
#endif

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <exception>
#include <thread>
#include <vector>

namespace headwise::detail {

/// Threads to use for `requested` (0 = hardware) and `tasks` tasks; at least 1.
inline unsigned resolve_threads(unsigned requested, std::size_t tasks) {
  unsigned t = requested ? requested : std::max(1u, std::thread::hardware_concurrency());
  return static_cast<unsigned>(std::max<std::size_t>(1, std::min<std::size_t>(t, tasks)));
}

/// Runs fn(task, worker) for task in [0, tasks) on `workers` threads.
template <class Fn>
void parallel_for(std::size_t tasks, unsigned workers, Fn&& fn) {
  if (tasks == 0) return;
  if (workers <= 1) {
    for (std::size_t t = 0; t < tasks; ++t) fn(t, 0u);
    return;
  }
  std::atomic<std::size_t> next{0};
  std::exception_ptr failure;
  std::atomic<bool> failed{false};
  auto work = [&](unsigned w) {
    try {
      for (std::size_t t; (t = next.fetch_add(1, std::memory_order_relaxed)) < tasks;) fn(t, w);
    } catch (...) {
      if (!failed.exchange(true)) failure = std::current_exception();
      next.store(tasks, std::memory_order_relaxed);
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(workers - 1);
  for (unsigned w = 1; w < workers; ++w) pool.emplace_back(work, w);
  work(0);
  for (auto& th : pool) th.join();
  if (failure) std::rethrow_exception(failure);
}

}  // namespace headwise::detail
