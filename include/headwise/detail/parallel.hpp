// headwise/detail/parallel.hpp — a minimal parallel_for over independent tasks.
//
// Tasks are indices 0..n-1 handed out through one atomic counter (dynamic
// scheduling: causal tiles have unequal cost). Each task owns its output rows,
// so which worker runs a task never changes a result bit. Worker w gets a
// stable index in [0, workers) to pick its own scratch buffer. The calling
// thread is worker 0, so threads = 1 runs inline with no thread created.
//
// Helper threads come from a persistent pool (worker_pool), created on first use
// and parked on a condition variable between calls: creating and joining a thread
// costs 30–60 µs here, as much as a whole decode step at KV 512 (~150 µs), while
// waking a parked one costs a few µs. A call that finds the pool busy (a nested
// parallel_for, or two user threads at once) spawns its own threads as before.
#pragma once

#ifndef HEADWISE_INTERNAL
#error "headwise/detail/* is internal: include <headwise/headwise.hpp>"
#endif

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace headwise::detail {

/// Threads to use for `requested` (0 = hardware) and `tasks` tasks; at least 1.
inline unsigned resolve_threads(unsigned requested, std::size_t tasks) {
  unsigned t = requested ? requested : std::max(1u, std::thread::hardware_concurrency());
  return static_cast<unsigned>(std::max<std::size_t>(1, std::min<std::size_t>(t, tasks)));
}

/// Parked helper threads, shared by every parallel_for of the process.
class worker_pool {
 public:
  static worker_pool& instance() {
    static worker_pool pool;
    return pool;
  }

  /// Runs job(w) for w in [1, helpers] on pool threads while the caller runs job(0);
  /// returns when all are done. Returns false, running nothing, if the pool is in use.
  bool try_run(unsigned helpers, const std::function<void(unsigned)>& job) {
    if (busy_.exchange(true, std::memory_order_acquire)) return false;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      while (threads_.size() < helpers) {
        const auto w = static_cast<unsigned>(threads_.size()) + 1;
        threads_.emplace_back([this, w] { serve(w); });
      }
      job_ = &job;
      helpers_ = helpers;
      pending_ = helpers;
      ++generation_;
    }
    wake_.notify_all();
    job(0);
    {
      std::unique_lock<std::mutex> lock(mutex_);
      done_.wait(lock, [this] { return pending_ == 0; });
      job_ = nullptr;
    }
    busy_.store(false, std::memory_order_release);
    return true;
  }

  ~worker_pool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    for (std::thread& t : threads_) t.join();
  }

 private:
  worker_pool() = default;

  void serve(unsigned w) {
    std::uint64_t seen = 0;
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      wake_.wait(lock, [&] { return stop_ || (generation_ != seen && w <= helpers_); });
      if (stop_) return;
      seen = generation_;
      const std::function<void(unsigned)>* job = job_;
      lock.unlock();
      (*job)(w);
      lock.lock();
      if (--pending_ == 0) done_.notify_one();
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_, done_;
  std::vector<std::thread> threads_;
  const std::function<void(unsigned)>* job_ = nullptr;
  unsigned helpers_ = 0, pending_ = 0;
  std::uint64_t generation_ = 0;
  bool stop_ = false;
  std::atomic<bool> busy_{false};
};

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
  if (!worker_pool::instance().try_run(workers - 1, std::function<void(unsigned)>(work))) {
    std::vector<std::thread> pool;
    pool.reserve(workers - 1);
    for (unsigned w = 1; w < workers; ++w) pool.emplace_back(work, w);
    work(0);
    for (auto& th : pool) th.join();
  }
  if (failure) std::rethrow_exception(failure);
}

}  // namespace headwise::detail
