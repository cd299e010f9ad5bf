// Tests of detail::parallel_for and its worker pool (detail/parallel.hpp): every
// task runs exactly once whatever the worker count, on back-to-back calls (helpers
// still spinning) and after a pause longer than the spin (helpers parked); an
// exception reaches the caller and the pool keeps working; a nested call and two
// user threads calling at once (the pool busy) run on threads of their own.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <headwise/headwise.hpp>

namespace {

using headwise::detail::parallel_for;

/// Runs `tasks` tasks on `workers` workers; fails unless each ran once, on a worker in range.
void expect_each_task_once(std::size_t tasks, unsigned workers) {
  std::vector<std::atomic<int>> runs(tasks);
  std::atomic<bool> worker_in_range{true};
  parallel_for(tasks, workers, [&](std::size_t t, unsigned w) {
    runs[t].fetch_add(1, std::memory_order_relaxed);
    if (w >= workers) worker_in_range = false;
  });
  for (std::size_t t = 0; t < tasks; ++t)
    ASSERT_EQ(runs[t].load(), 1) << "task " << t << " of " << tasks << ", " << workers << " workers";
  EXPECT_TRUE(worker_in_range.load());
}

TEST(parallel_for, back_to_back_calls_run_each_task_once) {
  for (int round = 0; round < 300; ++round)
    for (unsigned workers : {1u, 2u, 3u, 4u}) expect_each_task_once(std::size_t(round % 37), workers);
}

TEST(parallel_for, parked_helpers_wake_for_the_next_call) {
  for (int round = 0; round < 5; ++round) {
    expect_each_task_once(64, 2);
    std::this_thread::sleep_for(std::chrono::milliseconds(3));  // past the spin: helpers park
    expect_each_task_once(64, 3);
  }
}

TEST(parallel_for, helpers_share_the_work) {
  // Each task waits until two distinct workers have started one: with 2 workers this
  // finishes only if a helper really runs tasks beside the caller.
  std::atomic<unsigned> seen{0};
  parallel_for(2, 2, [&](std::size_t, unsigned w) {
    seen.fetch_or(1u << w);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (seen.load() != 3u && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
  });
  EXPECT_EQ(seen.load(), 3u);
}

TEST(parallel_for, an_exception_reaches_the_caller_and_the_pool_keeps_working) {
  for (unsigned workers : {1u, 2u, 3u}) {
    EXPECT_THROW(parallel_for(100, workers,
                              [](std::size_t t, unsigned) {
                                if (t == 17) throw std::runtime_error("task 17");
                              }),
                 std::runtime_error);
    expect_each_task_once(100, workers);
  }
}

TEST(parallel_for, nested_calls_and_concurrent_callers_run_every_task) {
  std::atomic<int> inner{0};
  parallel_for(4, 2, [&](std::size_t, unsigned) {
    parallel_for(8, 2, [&](std::size_t, unsigned) { inner.fetch_add(1); });
  });
  EXPECT_EQ(inner.load(), 32);

  std::atomic<int> total{0};
  std::vector<std::thread> callers;
  for (int c = 0; c < 3; ++c)
    callers.emplace_back([&] {
      for (int round = 0; round < 50; ++round)
        parallel_for(10, 2, [&](std::size_t, unsigned) { total.fetch_add(1); });
    });
  for (std::thread& t : callers) t.join();
  EXPECT_EQ(total.load(), 3 * 50 * 10);
}

}  // namespace
