// headwise/mpi.hpp — ring attention: one sequence sharded across the ranks of an MPI
// communicator. The optional component headwise::mpi (find_package(headwise COMPONENTS
// mpi)); include this header yourself: headwise.hpp does not, as it needs <mpi.h>.
//
//   ring_attention(comm, q, k, v, out, options[, counters])
//   ring_attention_backward(comm, q, k, v, out, lse, dout, dq, dk, dv, options[, counters])
//   on each of the R ranks of comm, for its n tokens of a sequence of N = R·n:
//   q, dq [B, Hq, n, Dk]  k, dk [B, Hkv, n, Dk]  v, dv [B, Hkv, n, Dv]
//   out, dout [B, Hq, n, Dv]  lse [B, Hq, n, 1]  masks [B|1, Hq|1, n, N]
// Every rank calls with the same B, Hq, Hkv, n, Dk, Dv and options; the result on each
// rank is its rows of attention() over the whole sequence (the same rules, options.hpp).
//
// Layout (ring_shard cuts a rank's tokens out of a full [B, H, N, D] tensor, ring_unshard
// puts them back; masks are sharded by rows the same way, their N columns in global order):
//   causal none: contiguous; rank i holds tokens [i·n, (i+1)·n).
//   causal (top_left and bottom_right agree, Nq = Nk = N): zigzag; N is cut into 2R
//     chunks of c = n/2 tokens (n even) and rank i holds chunk i, then chunk 2R−1−i. For
//     a query chunk a and key chunk b, b = a is a causal diagonal, b < a full and b > a
//     skipped: every rank computes 2R − 1 full c×c blocks and two diagonals, the same
//     work (contiguous shards would give rank R−1 about 2R−1 times rank 0's).
//
// Ring: R steps; at step s rank i holds the K/V shard of rank i − s (mod R), sends it on
// to rank i + 1 and receives the next from rank i − 1 (MPI_Isend/MPI_Irecv into the
// second of two buffers, posted before the step's compute and waited after it; an
// MPI_Testall between pairs advances it, as MPI moves large messages only inside its
// calls unless it runs a progress thread), so the transfer of B·Hkv·n·(Dk + Dv) elements
// a step runs behind the compute on the shard in hand, 2·B·Hq·n²·(Dk + Dv) FLOPs (causal
// half: two full c×c pairs): n·Hq/Hkv FLOPs per element sent when causal, 16384 at
// n = 16384 and Hq = Hkv (4096 a float byte), where a 50 GFLOP/s core beside a
// 10 Gb/s link needs only 40 a byte to hide the link.
//   forward: each (q chunk, k chunk) pair is one attention() call with its LSE; the first
//     pair of a q chunk writes out, each later one a partial that merge_states folds into
//     out in place. One fixed order: the same bits for every thread count. The LSEs
//     merged are float (attention()'s and merge_states' type), so in double compute
//     each merge moves a weight by up to ~3·2⁻²⁴·|lse| relatively: the ring in double is
//     as exact as float LSEs allow (~1e-8 on |out| <= 1), not to double's epsilon.
//   backward: attention_backward on each pair with the global out and LSE of the q rows
//     (which give D = rowsum(dout ∘ out) and P exactly); dq sums in place; the dK/dV of a
//     shard travel with it: each step's pair gradients are summed into an accumulator
//     that arrived from rank i − 1 during the step's compute, then sent on to rank i + 1;
//     after R steps it reaches the shard's owner (that last hop follows the last step's
//     compute: the one transfer nothing hides). K/V and dK/dV are two exchanges.
// Sent per rank: forward (R − 1)·B·Hkv·n·(Dk + Dv) elements of K/V; the backward that plus
// R·B·Hkv·n·(Dk + Dv) of dK/dV, in T. Memory per rank: its inputs, 1/R of the whole,
// plus two K/V shards (the one in hand, the next in flight); the forward a partial output
// [B, Hq, c, Dv] and an LSE when options.lse is unset; the backward two dK/dV shards, a
// step's dK/dV and a pair's gradients. Those buffers are allocated once per call (none in
// the ring loop); the kernels' scratch comes from options.scratch as for attention().
//
// Options: scale, softcap, causal, boolean and additive masks (rows of the rank's q
// tokens, every key column), head_scale, lse, threads (per rank), kernel, isa, scratch.
// Not supported, an error: window_left/window_right and alibi_slopes, because they
// depend on the global query and key positions, which a pair's attention() call cannot
// offset; give a window as a boolean mask. sink_tokens act only through a window and
// have no effect. Forward K/V may be float, half or bfloat16 under float q (as for
// attention()); the backward takes K/V in q's type (as attention_backward does).
//
// Errors: every rank validates its own arguments, then one MPI_Allgather compares the
// shapes and options of every rank, before any message or any write: a bad argument on
// any rank, or ranks that disagree, make every rank throw headwise::error (the rank at
// fault its own message, the others one naming it), never a deadlock. MPI errors follow
// the communicator's error handler (by default fatal). The ring runs on a duplicate of
// comm, so its messages never meet the caller's.
#pragma once

#include <mpi.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "headwise/detail/internal_begin.hpp"

#include "headwise/attention.hpp"
#include "headwise/backward.hpp"
#include "headwise/detail/checks.hpp"
#include "headwise/error.hpp"
#include "headwise/merge.hpp"
#include "headwise/options.hpp"
#include "headwise/tensor.hpp"

#include "headwise/detail/internal_end.hpp"

namespace headwise {

/// What one ring call did on the calling rank (the optional last argument).
struct ring_counters {
  std::uint64_t bytes_sent = 0;  ///< bytes this rank sent: K/V shards, and dK/dV in the backward
  double seconds = 0;            ///< wall time of the call
  double seconds_waiting = 0;    ///< of which in MPI_Waitall: communication the compute did not hide
};

namespace detail {

/// The chunks rank `rank` of `ranks` holds of a sequence sharded n tokens a rank:
/// global chunk index[x] (in tokens, index[x]·len) at local offset x·len.
struct ring_chunks {
  std::size_t count, len, index[2];
};

inline ring_chunks ring_chunks_of(std::size_t rank, std::size_t ranks, std::size_t n, bool causal) {
  if (causal) return {2, n / 2, {rank, 2 * ranks - 1 - rank}};
  return {1, n, {rank, 0}};
}

/// Columns [from, from + count) of a [B, H, rows, cols] view (a mask): its last axis
/// is contiguous, so the narrower view keeps the strides.
template <class U>
tensor_view<U> columns(const tensor_view<U>& m, std::size_t from, std::size_t count) {
  if (!m.is_set()) return m;
  return tensor_view<U>(m.data() + from, m.batch(), m.heads(), m.seq(), count, m.batch_stride(),
                        m.head_stride(), m.seq_stride());
}

/// Applies f(from_row, to_row, dim) to each row of two views of one shape.
template <class A, class B, class F>
void for_each_row(const tensor_view<A>& from, const tensor_view<B>& to, F f) {
  for (std::size_t b = 0; b < to.batch(); ++b)
    for (std::size_t h = 0; h < to.heads(); ++h)
      for (std::size_t s = 0; s < to.seq(); ++s) f(from.row(b, h, s), to.row(b, h, s), to.dim());
}

template <class A, class B>
void copy_rows(const tensor_view<A>& from, const tensor_view<B>& to) {
  for_each_row(from, to, [](auto* x, auto* y, std::size_t d) { std::copy(x, x + d, y); });
}

template <class A, class B>
void add_rows(const tensor_view<A>& from, const tensor_view<B>& to) {
  for_each_row(from, to, [](auto* x, auto* y, std::size_t d) {
    for (std::size_t e = 0; e < d; ++e) y[e] += x[e];
  });
}

/// ring_shard / ring_unshard: the full tensor's rows of the rank's chunks against the shard's.
template <class TF, class TS>
void check_ring_shard(const char* where, const tensor_view<TF>& full, const tensor_view<TS>& shard,
                      std::size_t rank, std::size_t ranks, causal_mode causal) {
  check_enum(where, "causal", "causal_mode", causal, causal_mode::bottom_right);
  check_view(where, "full", full);
  check_view(where, "shard", shard);
  if (ranks == 0 || rank >= ranks)
    fail(where, "rank must be < ranks (got rank ", rank, ", ranks ", ranks, ")");
  check_broadcast(where, "shard", shard, full.batch(), full.heads(), shard.seq(), full.dim(), false);
  expect_equal(where, "full.seq() must equal ranks · shard.seq()", ranks * shard.seq(), full.seq());
  if (causal != causal_mode::none && shard.seq() % 2 != 0)
    fail(where, "shard.seq() must be even with causal: the zigzag layout gives each rank two chunks (got ",
         shard.seq(), ")");
}

/// Calls f(full rows, shard rows) for each chunk the rank holds.
template <class TF, class TS, class F>
void for_each_ring_chunk(const tensor_view<TF>& full, const tensor_view<TS>& shard, std::size_t rank,
                         std::size_t ranks, causal_mode causal, F f) {
  const ring_chunks c = ring_chunks_of(rank, ranks, shard.seq(), causal != causal_mode::none);
  for (std::size_t x = 0; x < c.count; ++x)
    f(full.seq_slice(c.index[x] * c.len, c.len), shard.seq_slice(x * c.len, c.len));
}

/// A duplicate of the caller's communicator (the ring's messages never meet theirs),
/// with the two neighbours of this rank.
struct ring_comm {
  MPI_Comm comm = MPI_COMM_NULL;
  std::size_t rank = 0, ranks = 1;
  int next = 0, prev = 0;

  explicit ring_comm(MPI_Comm parent) {
    MPI_Comm_dup(parent, &comm);
    int r = 0, size = 1;
    MPI_Comm_rank(comm, &r);
    MPI_Comm_size(comm, &size);
    rank = std::size_t(r), ranks = std::size_t(size);
    next = (r + 1) % size, prev = (r + size - 1) % size;
  }
  ring_comm(const ring_comm&) = delete;
  ring_comm& operator=(const ring_comm&) = delete;
  ~ring_comm() { MPI_Comm_free(&comm); }
};

/// One exchange around the ring: `bytes` sent to the next rank while as many arrive
/// from the previous one, in messages of at most 1 GiB (an int counts MPI_BYTEs).
/// Requests are sized once; start() and wait() allocate nothing.
class ring_exchange {
 public:
  ring_exchange(const ring_comm& ring, int tag, std::size_t bytes, ring_counters& counters)
      : ring_(ring), tag_(tag), bytes_(bytes), counters_(counters), requests_(2 * (bytes / piece + 1)) {}

  void start(const void* send, void* receive) {
    active_ = 0;
    for (std::size_t at = 0; at < bytes_; at += piece) {
      const int count = int(std::min(piece, bytes_ - at));
      MPI_Irecv(static_cast<char*>(receive) + at, count, MPI_BYTE, ring_.prev, tag_, ring_.comm,
                &requests_[active_++]);
      MPI_Isend(static_cast<const char*>(send) + at, count, MPI_BYTE, ring_.next, tag_, ring_.comm,
                &requests_[active_++]);
    }
    counters_.bytes_sent += bytes_;
  }

  /// Lets the transfer advance: MPI moves a large message (rendezvous) only inside MPI
  /// calls unless the library runs a progress thread, so the ring tests between pairs.
  void progress() {
    int done = 0;
    MPI_Testall(int(active_), requests_.data(), &done, MPI_STATUSES_IGNORE);
  }

  void wait() {
    const double t0 = MPI_Wtime();
    MPI_Waitall(int(active_), requests_.data(), MPI_STATUSES_IGNORE);
    counters_.seconds_waiting += MPI_Wtime() - t0;
  }

 private:
  static constexpr std::size_t piece = std::size_t(1) << 30;
  const ring_comm& ring_;
  int tag_;
  std::size_t bytes_;
  ring_counters& counters_;
  std::vector<MPI_Request> requests_;
  std::size_t active_ = 0;
};

/// Options of a ring call that cannot be applied shard pair by shard pair.
inline void check_ring_options(const char* where, const attention_options& opt) {
  if (opt.window_left || opt.window_right)
    fail(where,
         "options.window_left and window_right are not supported: a window is measured from the "
         "global diagonal, which a shard pair cannot offset (give it as options.boolean_mask)");
  if (!opt.alibi_slopes.empty())
    fail(where,
         "options.alibi_slopes are not supported: ALiBi's |i - j| needs global positions, which a "
         "shard pair cannot offset (give the bias as options.additive_mask)");
}

/// The rank's own arguments: q, k, v of the same n tokens (even when causal), the
/// options the ring supports, masks [B|1, Hq|1, n, N]; then attention()'s own checks
/// (`check`) on the call with the masks narrowed to n columns.
template <class TQ, class TK, class F>
void check_ring_local(const char* where, const tensor_view<TQ>& q, const tensor_view<TK>& k,
                      const attention_options& opt, std::size_t ranks, F check) {
  check_ring_options(where, opt);
  check_option_enums(where, opt);
  const std::size_t n = q.seq();
  expect_equal(where, "k.seq() must equal q.seq(): a rank holds q, k and v of the same tokens", n, k.seq());
  if (opt.causal != causal_mode::none && n % 2 != 0)
    fail(where,
         "q.seq() must be even with causal: the zigzag layout gives each rank two chunks of n/2 tokens (got ",
         n, ")");
  attention_options local = opt;
  if (opt.boolean_mask.is_set()) {
    check_view(where, "options.boolean_mask", opt.boolean_mask);
    check_broadcast(where, "options.boolean_mask", opt.boolean_mask, q.batch(), q.heads(), n, ranks * n, true,
                    {"B", "Hq", "n", "N"});
    local.boolean_mask = columns(opt.boolean_mask, 0, n);
  }
  if (opt.additive_mask.is_set()) {
    check_view(where, "options.additive_mask", opt.additive_mask);
    check_broadcast(where, "options.additive_mask", opt.additive_mask, q.batch(), q.heads(), n, ranks * n,
                    true, {"B", "Hq", "n", "N"});
    local.additive_mask = columns(opt.additive_mask, 0, n);
  }
  check(local);
}

/// The collective check: `local` validates this rank's arguments; one MPI_Allgather
/// shares each rank's verdict and the values every rank must agree on. Every rank then
/// throws, or none does.
template <class F>
void check_ring_collective(const char* where, const ring_comm& ring, F local, std::size_t B, std::size_t Hq,
                           std::size_t Hkv, std::size_t n, std::size_t Dk, std::size_t Dv,
                           const attention_options& opt) {
  std::string own_error;
  try {
    local();
  } catch (const error& e) {
    own_error = e.what();
  }
  double scale = opt.scale ? *opt.scale : -1.0, softcap = opt.softcap;
  std::uint64_t scale_bits, softcap_bits;
  std::memcpy(&scale_bits, &scale, sizeof scale);
  std::memcpy(&softcap_bits, &softcap, sizeof softcap);
  static const char* const names[] = {"q.batch() (B)",
                                      "q.heads() (Hq)",
                                      "k.heads() (Hkv)",
                                      "q.seq() (n)",
                                      "q.dim() (Dk)",
                                      "v.dim() (Dv)",
                                      "options.causal",
                                      "options.scale",
                                      "options.softcap",
                                      "options.boolean_mask (given or not)",
                                      "options.additive_mask (given or not)",
                                      "options.head_scale (given or not)"};
  constexpr int fields = int(sizeof names / sizeof names[0]);
  const std::uint64_t mine[fields + 1] = {B,
                                          Hq,
                                          Hkv,
                                          n,
                                          Dk,
                                          Dv,
                                          opt.causal != causal_mode::none,
                                          scale_bits,
                                          softcap_bits,
                                          opt.boolean_mask.is_set(),
                                          opt.additive_mask.is_set(),
                                          !opt.head_scale.empty(),
                                          own_error.empty()};
  std::vector<std::uint64_t> all(ring.ranks * (fields + 1));
  MPI_Allgather(mine, fields + 1, MPI_UINT64_T, all.data(), fields + 1, MPI_UINT64_T, ring.comm);
  if (!own_error.empty()) throw error(own_error);
  for (std::size_t r = 0; r < ring.ranks; ++r)
    if (!all[r * (fields + 1) + fields])
      fail(where, "rank ", r, " of ", ring.ranks, " passed invalid arguments (its own error names them)");
  for (std::size_t r = 1; r < ring.ranks; ++r)
    for (int f = 0; f < fields; ++f)
      if (all[r * (fields + 1) + f] != all[std::size_t(f)])
        fail(where, names[f], " must be the same on every rank (rank 0 and rank ", r, " differ",
             f == 7 || f == 8 ? ""
                              : ": " + std::to_string(all[std::size_t(f)]) + " against " +
                                    std::to_string(all[r * (fields + 1) + f]),
             ")");
}

/// How query chunk a meets key chunk b (global chunk indices).
enum class pair_kind { skipped, diagonal, full };

inline pair_kind pair_of(bool causal, std::size_t a, std::size_t b) {
  if (!causal) return pair_kind::full;
  return b == a ? pair_kind::diagonal : b < a ? pair_kind::full : pair_kind::skipped;
}

/// The options of one (q chunk, k chunk) pair: the causal diagonal or none, and the
/// masks' rows of the q chunk and columns of the k chunk.
inline attention_options pair_options(const attention_options& opt, pair_kind kind, std::size_t q_from,
                                      std::size_t k_from, std::size_t len) {
  attention_options p = opt;
  p.causal = kind == pair_kind::diagonal ? causal_mode::top_left : causal_mode::none;
  if (opt.boolean_mask.is_set())
    p.boolean_mask = columns(opt.boolean_mask.seq_slice(q_from, len), k_from, len);
  if (opt.additive_mask.is_set())
    p.additive_mask = columns(opt.additive_mask.seq_slice(q_from, len), k_from, len);
  p.lse = {};
  return p;
}

/// A K/V shard (and its gradient) packed in one buffer: K [B, Hkv, n, Dk], then V.
template <class U>
struct packed_kv {
  tensor_view<U> k, v;
  packed_kv(U* data, std::size_t B, std::size_t Hkv, std::size_t n, std::size_t Dk, std::size_t Dv)
      : k(bhsd(data, B, Hkv, n, Dk)), v(bhsd(data + B * Hkv * n * Dk, B, Hkv, n, Dv)) {}
};

/// One (q chunk, k chunk) pair of a step: the q chunk's index x among the rank's
/// chunks and its local rows [q_from, q_from + len), the k chunk's local rows in the
/// shard in hand [k_at, k_at + len) and its global columns [k_from, k_from + len).
struct ring_pair {
  std::size_t x, q_from, k_at, k_from, len;
  pair_kind kind;
};

/// Times a ring call and hands its counters to the caller's (when given), however it ends.
struct ring_timer {
  ring_counters count;
  ring_counters* out;
  double t0 = MPI_Wtime();
  explicit ring_timer(ring_counters* counters) : out(counters) {}
  ring_timer(const ring_timer&) = delete;
  ring_timer& operator=(const ring_timer&) = delete;
  ~ring_timer() {
    count.seconds = MPI_Wtime() - t0;
    if (out) *out = count;
  }
};

/// The common part of ring_attention and its backward: the timer, the ring's
/// communicator, the collective check (check_ring_local, then attention()'s own checks
/// in `check`), the sizes, the K/V buffers and the ring loop.
struct ring_call {
  ring_timer timer;
  ring_comm ring;
  std::size_t B, Hq, Hkv, n, Dk, Dv;
  bool causal;
  std::size_t len, kv_elements;  // the chunk length; the elements of a K/V shard

  template <class TQ, class TK, class TV, class F>
  ring_call(const char* where, MPI_Comm comm, ring_counters* counters, const tensor_view<TQ>& q,
            const tensor_view<TK>& k, const tensor_view<TV>& v, const attention_options& opt, F check)
      : timer(counters),
        ring(comm),
        B(q.batch()),
        Hq(q.heads()),
        Hkv(k.heads()),
        n(q.seq()),
        Dk(q.dim()),
        Dv(v.dim()),
        causal(opt.causal != causal_mode::none),
        len(causal ? n / 2 : n),
        kv_elements(B * Hkv * n * (Dk + Dv)) {
    check_ring_collective(
        where, ring, [&] { check_ring_local(where, q, k, opt, ring.ranks, check); }, B, Hq, Hkv, n, Dk, Dv,
        opt);
  }

  /// Two K/V shard buffers, this rank's own K/V packed in the first.
  template <class U, class TK, class TV>
  std::vector<U> kv_buffers(const tensor_view<TK>& k, const tensor_view<TV>& v) const {
    std::vector<U> buffers(2 * kv_elements);
    const packed_kv<U> own(buffers.data(), B, Hkv, n, Dk, Dv);
    copy_rows(k, own.k);
    copy_rows(v, own.v);
    return buffers;
  }

  /// The ring: for each step s, posts the exchange of the K/V shard in hand (if a step
  /// follows), calls pair(ring_pair, k chunk, v chunk) for each pair not skipped, then
  /// end_step(s), then waits for the next shard.
  template <class U, class Pair, class EndStep>
  void run(ring_exchange& exchange, std::vector<U>& buffers, Pair pair, EndStep end_step) const {
    const std::size_t R = ring.ranks;
    const ring_chunks mine = ring_chunks_of(ring.rank, R, n, causal);
    for (std::size_t s = 0; s < R; ++s) {
      U* in_hand = buffers.data() + (s % 2) * kv_elements;
      if (s + 1 < R) exchange.start(in_hand, buffers.data() + ((s + 1) % 2) * kv_elements);
      const ring_chunks theirs = ring_chunks_of((ring.rank + R - s) % R, R, n, causal);
      const packed_kv<const U> kv(in_hand, B, Hkv, n, Dk, Dv);
      for (std::size_t x = 0; x < mine.count; ++x)
        for (std::size_t y = 0; y < theirs.count; ++y) {
          const pair_kind kind = pair_of(causal, mine.index[x], theirs.index[y]);
          if (kind == pair_kind::skipped) continue;
          pair(ring_pair{x, x * len, y * len, theirs.index[y] * len, len, kind}, kv.k.seq_slice(y * len, len),
               kv.v.seq_slice(y * len, len));
          if (s + 1 < R) exchange.progress();
        }
      end_step(s);
      if (s + 1 < R) exchange.wait();
    }
  }
};

}  // namespace detail

/// Copies the rows of rank `rank` of `ranks` (the layout above: zigzag when causal,
/// contiguous otherwise) from full [B, H, ranks·n, D] into shard [B, H, n, D].
template <class TF, class TS>
void ring_shard(const tensor_view<TF>& full, const tensor_view<TS>& shard, std::size_t rank,
                std::size_t ranks, causal_mode causal) {
  detail::check_ring_shard("ring_shard", full, shard, rank, ranks, causal);
  detail::for_each_ring_chunk(full, shard, rank, ranks, causal,
                              [](const auto& f, const auto& s) { detail::copy_rows(f, s); });
}

/// The inverse: copies shard into the rows of rank `rank` in full.
template <class TS, class TF>
void ring_unshard(const tensor_view<TS>& shard, const tensor_view<TF>& full, std::size_t rank,
                  std::size_t ranks, causal_mode causal) {
  detail::check_ring_shard("ring_unshard", full, shard, rank, ranks, causal);
  detail::for_each_ring_chunk(full, shard, rank, ranks, causal,
                              [](const auto& f, const auto& s) { detail::copy_rows(s, f); });
}

/// attention() over the sequence sharded across comm's ranks; out (and options.lse)
/// gets this rank's rows. See the header comment.
template <class TQ, class TK, class TV, class TO>
void ring_attention(MPI_Comm comm, const tensor_view<TQ>& q, const tensor_view<TK>& k,
                    const tensor_view<TV>& v, const tensor_view<TO>& out, const attention_options& opt = {},
                    ring_counters* counters = nullptr) {
  using T = std::remove_const_t<TQ>;
  using S = std::remove_const_t<TK>;
  detail::check_attention_types<TQ, TK, TV, TO>();
  detail::ring_call call("ring_attention", comm, counters, q, k, v, opt, [&](const attention_options& local) {
    detail::check_attention("ring_attention", q, k, v, out, local);
  });
  if (call.B == 0 || call.n == 0) return;
  const std::size_t B = call.B, Hq = call.Hq, n = call.n, len = call.len;
  std::vector<S> buffers = call.kv_buffers<S>(k, v);
  std::vector<T> partial(B * Hq * len * call.Dv);
  std::vector<float> partial_lse(B * Hq * len), own_lse(opt.lse.is_set() ? 0 : B * Hq * n);
  const tensor_view<float> lse = opt.lse.is_set() ? opt.lse : lse_view(own_lse.data(), B, Hq, n);
  const tensor_view<T> part = bhsd(partial.data(), B, Hq, len, call.Dv);
  const tensor_view<float> part_lse = lse_view(partial_lse.data(), B, Hq, len);

  bool written[2] = {false, false};  // per q chunk: whether out holds a first pair
  detail::ring_exchange exchange(call.ring, 0, call.kv_elements * sizeof(S), call.timer.count);
  call.run(
      exchange, buffers,
      [&](const detail::ring_pair& pr, const auto& kc, const auto& vc) {
        attention_options p = detail::pair_options(opt, pr.kind, pr.q_from, pr.k_from, len);
        const tensor_view<T> o = out.seq_slice(pr.q_from, len);
        const tensor_view<float> l = lse.seq_slice(pr.q_from, len);
        p.lse = written[pr.x] ? part_lse : l;
        attention(q.seq_slice(pr.q_from, len), kc, vc, written[pr.x] ? part : o, p);
        if (written[pr.x]) merge_states(o, l, part, part_lse, o, l);
        written[pr.x] = true;
      },
      [](std::size_t) {});
}

/// The gradients of ring_attention: dq, dk, dv of this rank's tokens (overwritten), from
/// its q, k, v, its rows of the forward's out and LSE (options.lse of ring_attention),
/// and dout. See the header comment.
template <class TQ, class TK, class TV, class TO, class TD, class TG>
void ring_attention_backward(MPI_Comm comm, const tensor_view<TQ>& q, const tensor_view<TK>& k,
                             const tensor_view<TV>& v, const tensor_view<TO>& out,
                             const tensor_view<const float>& lse, const tensor_view<TD>& dout,
                             const tensor_view<TG>& dq, const tensor_view<TG>& dk, const tensor_view<TG>& dv,
                             const attention_options& opt = {}, ring_counters* counters = nullptr) {
  using T = std::remove_const_t<TQ>;
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "q must hold float or double (the compute type)");
  static_assert(std::is_same_v<std::remove_const_t<TK>, T> && std::is_same_v<std::remove_const_t<TV>, T> &&
                    std::is_same_v<std::remove_const_t<TO>, T> &&
                    std::is_same_v<std::remove_const_t<TD>, T> && std::is_same_v<TG, T>,
                "ring_attention_backward: k, v, out, dout in q's type; dq, dk, dv mutable views of it");
  const tensor_view<const T> cq = q, ck = k, cv = v, cout = out, cdout = dout;
  const char* where = "ring_attention_backward";
  detail::ring_call call(where, comm, counters, q, k, v, opt, [&](const attention_options& local) {
    detail::check_attention_backward(where, cq, ck, cv, cout, lse, cdout, dq, dk, dv, local);
  });
  if (call.B == 0 || call.n == 0) return;
  const std::size_t B = call.B, Hq = call.Hq, Hkv = call.Hkv, n = call.n, Dk = call.Dk, Dv = call.Dv,
                    len = call.len, kv_elements = call.kv_elements, R = call.ring.ranks;
  std::vector<T> buffers = call.kv_buffers<T>(k, v), grads(2 * kv_elements, T(0)), step(kv_elements);
  std::vector<T> pair_grads(B * Hq * len * Dk + B * Hkv * len * (Dk + Dv));
  const tensor_view<T> pair_dq = bhsd(pair_grads.data(), B, Hq, len, Dk);
  const detail::packed_kv<T> pair_dkv(pair_grads.data() + B * Hq * len * Dk, B, Hkv, len, Dk, Dv);
  const detail::packed_kv<T> step_dkv(step.data(), B, Hkv, n, Dk, Dv);
  detail::for_each_row(dq, dq, [](T*, T* y, std::size_t d) { std::fill(y, y + d, T(0)); });

  detail::ring_exchange exchange(call.ring, 0, kv_elements * sizeof(T), call.timer.count);
  detail::ring_exchange grad_exchange(call.ring, 1, kv_elements * sizeof(T), call.timer.count);
  call.run(
      exchange, buffers,
      [&](const detail::ring_pair& pr, const auto& kc, const auto& vc) {
        const attention_options p = detail::pair_options(opt, pr.kind, pr.q_from, pr.k_from, len);
        attention_backward(cq.seq_slice(pr.q_from, len), kc, vc, cout.seq_slice(pr.q_from, len),
                           lse.seq_slice(pr.q_from, len), cdout.seq_slice(pr.q_from, len), pair_dq,
                           pair_dkv.k, pair_dkv.v, p);
        detail::add_rows(pair_dq, dq.seq_slice(pr.q_from, len));
        detail::add_rows(pair_dkv.k, step_dkv.k.seq_slice(pr.k_at, len));
        detail::add_rows(pair_dkv.v, step_dkv.v.seq_slice(pr.k_at, len));
        grad_exchange.progress();
      },
      [&](std::size_t s) {
        // The accumulator of the shard in hand arrived from rank i − 1 during this
        // step (none at step 0: grads starts at zero); add the step's part, send it on.
        T* acc = grads.data() + (s % 2) * kv_elements;
        if (s > 0) grad_exchange.wait();
        for (std::size_t e = 0; e < kv_elements; ++e) acc[e] += step[e];
        std::fill(step.begin(), step.end(), T(0));
        if (R > 1) grad_exchange.start(acc, grads.data() + ((s + 1) % 2) * kv_elements);
      });
  // After R steps and R hops, the accumulator that arrived last is this rank's own.
  if (R > 1) grad_exchange.wait();
  const detail::packed_kv<const T> mine(grads.data() + (R > 1 ? R % 2 : 0) * kv_elements, B, Hkv, n, Dk, Dv);
  detail::copy_rows(mine.k, dk);
  detail::copy_rows(mine.v, dv);
}

}  // namespace headwise
