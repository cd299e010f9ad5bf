// bench/ring_bench.cpp — ring_attention (mpi.hpp) across the ranks of mpiexec against
// attention() in one process, on one sequence. A plain program, not Google Benchmark:
// the ranks must time the same calls together.
//
//   mpiexec -n 2 bench/ring_bench --threads 1   the ring: 2 ranks, 1 thread each
//   bench/ring_bench --threads 2                one process (no mpiexec): attention() over
//                                               the whole sequence on 2 threads
//   options (defaults): --n 32768 --d 128 --heads 8 --causal 1 --reps 3 --threads 1
//
// Each rank allocates and fills its own shard only (1/R of q, k, v, out), as it would
// on its own machine. A repetition's time is the slowest rank's (MPI_Allreduce MAX); the
// best repetition is printed, with its counters (ring_counters): bytes sent per rank, the
// time in MPI_Waitall (communication the compute did not hide), and the time a bare
// exchange of the same bytes takes around the ring with nothing to compute
// (MPI_Sendrecv): hidden = 1 − waiting / (bare · (R − 1)), the share of the transfer
// time the compute covered. FLOPs = 4·H·N²·d, halved when causal (DESIGN.md).
#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <headwise/headwise.hpp>
#include <headwise/mpi.hpp>

namespace {

struct config {
  std::size_t n = 32768, d = 128, heads = 8, reps = 3;
  bool causal = true;
  unsigned threads = 1;
};

config parse(int argc, char** argv) {
  config c;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string key = argv[i];
    const unsigned long value = std::strtoul(argv[i + 1], nullptr, 10);
    if (key == "--n")
      c.n = value;
    else if (key == "--d")
      c.d = value;
    else if (key == "--heads")
      c.heads = value;
    else if (key == "--reps")
      c.reps = value;
    else if (key == "--causal")
      c.causal = value != 0;
    else if (key == "--threads")
      c.threads = unsigned(value);
    else
      std::fprintf(stderr, "ring_bench: unknown option %s\n", key.c_str()), std::exit(2);
  }
  return c;
}

std::vector<float> random_values(std::size_t count, unsigned seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(-1, 1);
  std::vector<float> v(count);
  for (float& x : v) x = dist(gen);
  return v;
}

/// Seconds of the slowest rank.
double slowest(double seconds) {
  double worst = 0;
  MPI_Allreduce(&seconds, &worst, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return worst;
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  const config c = parse(argc, argv);
  int rank = 0, ranks = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &ranks);
  const std::size_t R = std::size_t(ranks), n = c.n / R, H = c.heads, d = c.d;
  const std::size_t elements = H * n * d;
  std::vector<float> q = random_values(elements, 1 + 3 * unsigned(rank)),
                     k = random_values(elements, 2 + 3 * unsigned(rank)),
                     v = random_values(elements, 3 + 3 * unsigned(rank)), out(elements);
  const auto view = [&](std::vector<float>& x) { return headwise::bshd(x.data(), 1, n, H, d); };
  headwise::attention_options opt;
  opt.causal = c.causal ? headwise::causal_mode::top_left : headwise::causal_mode::none;
  opt.threads = c.threads;
  headwise::workspace scratch;
  opt.scratch = &scratch;

  double best = 1e300;
  headwise::ring_counters best_counters;
  for (std::size_t rep = 0; rep < c.reps; ++rep) {
    MPI_Barrier(MPI_COMM_WORLD);
    headwise::ring_counters counters;
    const double t0 = MPI_Wtime();
    if (R == 1)
      headwise::attention(headwise::tensor_view<const float>(view(q)),
                          headwise::tensor_view<const float>(view(k)),
                          headwise::tensor_view<const float>(view(v)), view(out), opt);
    else
      headwise::ring_attention(MPI_COMM_WORLD, headwise::tensor_view<const float>(view(q)),
                               headwise::tensor_view<const float>(view(k)),
                               headwise::tensor_view<const float>(view(v)), view(out), opt, &counters);
    const double t = slowest(MPI_Wtime() - t0);
    counters.seconds_waiting = slowest(counters.seconds_waiting);
    if (t < best) best = t, best_counters = counters;
  }

  // A bare exchange of one K/V shard around the ring, nothing to compute.
  double bare = 0;
  if (R > 1) {
    std::vector<char> send(2 * elements * sizeof(float)), receive(send.size());
    MPI_Barrier(MPI_COMM_WORLD);
    const double t0 = MPI_Wtime();
    MPI_Sendrecv(send.data(), int(send.size()), MPI_BYTE, (rank + 1) % ranks, 0, receive.data(),
                 int(receive.size()), MPI_BYTE, (rank + ranks - 1) % ranks, 0, MPI_COMM_WORLD,
                 MPI_STATUS_IGNORE);
    bare = slowest(MPI_Wtime() - t0);
  }

  if (rank == 0) {
    const double flops = 4.0 * double(H) * double(c.n) * double(c.n) * double(d) / (c.causal ? 2 : 1);
    std::printf("%s R=%zu threads/rank=%u N=%zu d=%zu H=%zu %s: %.3f s (best of %zu), %.1f GFLOP/s",
                R == 1 ? "single" : "ring", R, c.threads, c.n, d, H, c.causal ? "causal" : "full", best,
                c.reps, flops / best * 1e-9);
    if (R > 1) {
      const double exposed = bare * double(R - 1);
      std::printf(
          ", sent/rank %.1f MB, waiting %.3f s (%.2f %% of the call), bare exchange %.3f s/step, hidden %.0f "
          "%%",
          double(best_counters.bytes_sent) * 1e-6, best_counters.seconds_waiting,
          100 * best_counters.seconds_waiting / best, bare,
          100 * std::max(0.0, 1 - best_counters.seconds_waiting / exposed));
    }
    std::printf("\n");
  }
  MPI_Finalize();
  return 0;
}
