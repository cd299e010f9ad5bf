// headwise/detail/parallel.hpp — a minimal parallel_for over independent tasks.
//
// Tasks are indices 0..n-1 handed out in order through one atomic counter (dynamic
// scheduling: causal tiles have unequal cost). Each task owns its output rows,
// so which worker runs a task never changes a result bit. A task may wait for a
// lower-numbered one (wait_until; the backward's key tiles): that one has been
// handed out, so it is running or done, and the wait ends. Worker w gets a
// stable index in [0, workers) to pick its own scratch buffer. The calling
// thread is worker 0, so threads = 1 runs inline with no thread created.
//
// Helper threads come from a persistent pool (worker_pool), created on first use.
// Between calls a helper first spins for spin_before_park, then parks on a
// condition variable; the caller spins the same way for the helpers to finish.
// Why: creating and joining a thread costs 30–60 µs, and on a VM waking a parked
// thread costs tens of µs more (the idle vCPU halts and the host must reschedule
// it): measured at KV 512 (a ~190 µs decode step), two threads ran 0.96× one
// thread with parking alone. Back-to-back calls (decode layer after layer) find
// the helpers awake; an idle process stops spinning after spin_before_park.
// A call that finds the pool busy (a nested parallel_for, or two user threads at
// once) spawns its own threads.
#pragma once

#ifndef HEADWISE_INTERNAL
#error "headwise/detail/* is internal: include <headwise/headwise.hpp>"
#endif

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace headwise::detail {

/// Threads to use for `requested` (0 = hardware) and `tasks` tasks; at least 1.
inline unsigned resolve_threads(unsigned requested, std::size_t tasks) {
  unsigned t = requested ? requested : std::max(1u, std::thread::hardware_concurrency());
  return static_cast<unsigned>(std::max<std::size_t>(1, std::min<std::size_t>(t, tasks)));
}

/// A non-owning reference to a callable void(unsigned): what std::function would
/// hold, without its allocation (a parallel_for's job outlives no call).
class worker_job {
 public:
  template <class Fn>
  explicit worker_job(Fn& fn) noexcept
      : object_(&fn), call_([](void* f, unsigned w) { (*static_cast<Fn*>(f))(w); }) {}
  void operator()(unsigned w) const { call_(object_, w); }

 private:
  void* object_;
  void (*call_)(void*, unsigned);
};

/// Spins until ready() holds or spin_before_park has passed; returns ready().
template <class Ready>
bool spin_until(Ready&& ready) {
  constexpr auto spin_before_park = std::chrono::microseconds(500);
  const auto deadline = std::chrono::steady_clock::now() + spin_before_park;
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (ready()) return true;
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
      __builtin_ia32_pause();  // yields the core's pipeline to a hyper-thread sibling
#endif
    }
    if (std::chrono::steady_clock::now() >= deadline) return ready();
  }
}

/// Spins, then yields, until ready() holds: a task waiting for a lower-numbered task's
/// progress (parallel_for hands tasks out in order, so that task is running or done).
template <class Ready>
void wait_until(Ready&& ready) {
  while (!spin_until(ready)) std::this_thread::yield();
}

/// Helper threads shared by every parallel_for of the process (see the top note).
class worker_pool {
 public:
  static worker_pool& instance() {
    static worker_pool pool;
    return pool;
  }

  /// Runs job(w) for w in [1, helpers] on pool threads while the caller runs job(0);
  /// returns when all are done. Returns false, running nothing, if the pool is in use.
  bool try_run(unsigned helpers, const worker_job& job) {
    if (busy_.exchange(true, std::memory_order_acquire)) return false;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      while (slots_.size() < helpers) slots_.push_back(std::make_unique<slot>());
      while (threads_.size() < helpers) {
        const auto w = static_cast<unsigned>(threads_.size()) + 1;
        threads_.emplace_back([this, w] { serve(w); });
      }
      job_ = &job;
      pending_.store(helpers, std::memory_order_relaxed);
      ++generation_;
      // A helper's ticket is published last (release): it then sees job_ and pending_.
      for (unsigned w = 1; w <= helpers; ++w)
        slots_[w - 1]->ticket.store(generation_, std::memory_order_release);
    }
    wake_.notify_all();
    job(0);
    if (!spin_until([this] { return pending_.load(std::memory_order_acquire) == 0; })) {
      std::unique_lock<std::mutex> lock(mutex_);
      done_.wait(lock, [this] { return pending_.load(std::memory_order_acquire) == 0; });
    }
    job_ = nullptr;
    busy_.store(false, std::memory_order_release);
    return true;
  }

  ~worker_pool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_.store(true, std::memory_order_release);
    }
    wake_.notify_all();
    for (std::thread& t : threads_) t.join();
  }

 private:
  /// Helper w's ticket: the generation of the last job it was given (own cache line).
  struct alignas(64) slot {
    std::atomic<std::uint64_t> ticket{0};
  };

  worker_pool() = default;

  void serve(unsigned w) {
    // threads_ and slots_ only grow, under mutex_, and slot w exists before thread w.
    std::atomic<std::uint64_t>* ticket;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ticket = &slots_[w - 1]->ticket;
    }
    std::uint64_t seen = 0;
    for (;;) {
      auto ready = [&] {
        return stop_.load(std::memory_order_acquire) || ticket->load(std::memory_order_acquire) != seen;
      };
      if (!spin_until(ready)) {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, ready);
      }
      if (stop_.load(std::memory_order_acquire)) return;
      seen = ticket->load(std::memory_order_acquire);
      (*job_)(w);  // job_ stays set until this helper's decrement below
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard<std::mutex> lock(mutex_);  // the caller may be about to wait
        done_.notify_one();
      }
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_, done_;
  std::vector<std::thread> threads_;
  std::vector<std::unique_ptr<slot>> slots_;
  const worker_job* job_ = nullptr;
  std::atomic<unsigned> pending_{0};
  std::uint64_t generation_ = 0;
  std::atomic<bool> stop_{false}, busy_{false};
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
  if (!worker_pool::instance().try_run(workers - 1, worker_job(work))) {
    std::vector<std::thread> pool;
    pool.reserve(workers - 1);
    for (unsigned w = 1; w < workers; ++w) pool.emplace_back(work, w);
    work(0);
    for (auto& th : pool) th.join();
  }
  if (failure) std::rethrow_exception(failure);
}

}  // namespace headwise::detail
