// Tests of ring attention (mpi.hpp), run by mpirun on R = 1, 2, 3 and 4 ranks
// (tests/CMakeLists.txt). Every rank builds the whole problem from the same seeds, runs
// the ring on its shard (ring_shard), and the shards are gathered on every rank
// (MPI_Allgather, then ring_unshard) and compared over the whole sequence:
//   - forward: out and LSE within attention_tolerance / lse_tolerance (test_util.hpp) of
//     the oracle over all N = R·n keys, plus the merges' share (ring_tolerance); out
//     within twice that of single-process attention() (both are within it of the
//     oracle); the same bits for threads 1, 2, 3;
//     causal none, top_left and bottom_right, MHA/GQA/MQA, float, double and fp16 K/V,
//     masks, softcap and head scales, shards whose chunks straddle the 64-row tiles;
//   - backward: dq, dk, dv within backward_tolerance of reference::attention_backward
//     and twice that of attention_backward, the same bits for threads 1 and 3;
//   - errors: ranks that disagree, one rank's bad argument, unsupported options: every
//     rank throws headwise::error, nothing is written, and the next call works;
//   - ring_shard / ring_unshard: the zigzag and contiguous layouts, and their checks.
// main() runs the tests on every rank and gives every rank the worst exit code, so one
// failing rank fails mpirun.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include <headwise/mpi.hpp>

#include "kernel_harness.hpp"

namespace {

using namespace hwtest;

struct world {
  std::size_t rank, ranks;
};

world comm_world() {
  int r = 0, s = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  MPI_Comm_size(MPI_COMM_WORLD, &s);
  return {std::size_t(r), std::size_t(s)};
}

/// Every rank's shard gathered and put back in order: the whole [B, H, R·n, D] tensor.
template <class T>
tensor<T> gathered(const tensor<T>& shard, causal_mode causal) {
  const world w = comm_world();
  const auto& v = shard.view;
  const std::size_t count = v.batch() * v.heads() * v.seq() * v.dim();
  std::vector<T> all(w.ranks * count);
  MPI_Allgather(v.data(), int(count * sizeof(T)), MPI_BYTE, all.data(), int(count * sizeof(T)), MPI_BYTE,
                MPI_COMM_WORLD);
  tensor<T> full(v.batch(), v.heads(), w.ranks * v.seq(), v.dim());
  for (std::size_t r = 0; r < w.ranks; ++r)
    ring_unshard(bhsd<const T>(all.data() + r * count, v.batch(), v.heads(), v.seq(), v.dim()), full.view, r,
                 w.ranks, causal);
  return full;
}

/// This rank's shard of a whole tensor.
template <class T>
tensor<T> shard_of(const tensor<T>& full, causal_mode causal) {
  const world w = comm_world();
  const auto& v = full.view;
  tensor<T> s(v.batch(), v.heads(), v.seq() / w.ranks, v.dim());
  ring_shard(full.cview(), s.view, w.rank, w.ranks, causal);
  return s;
}

/// The rows of this rank of a [B|1, H|1, N, N] mask, every column kept: `shard` views
/// the memory returned.
template <class M>
std::unique_ptr<M[]> mask_rows(const tensor_view<const M>& m, causal_mode causal,
                               tensor_view<const M>& shard) {
  const world w = comm_world();
  const std::size_t n = m.seq() / w.ranks;
  std::unique_ptr<M[]> rows(new M[m.batch() * m.heads() * n * m.dim()]);
  const tensor_view<M> view = mask_view(rows.get(), m.batch(), m.heads(), n, m.dim());
  ring_shard(m, view, w.rank, w.ranks, causal);
  shard = view;
  return rows;
}

/// The options of a masked_options over the whole sequence, with the masks cut to this
/// rank's rows (owned here).
struct ring_masks {
  std::unique_ptr<bool[]> boolean;
  std::unique_ptr<float[]> additive;
  attention_options opt;

  ring_masks(const masked_options& m, causal_mode causal) : opt(m.opt) {
    if (m.opt.boolean_mask.is_set()) boolean = mask_rows(m.opt.boolean_mask, causal, opt.boolean_mask);
    if (m.opt.additive_mask.is_set()) additive = mask_rows(m.opt.additive_mask, causal, opt.additive_mask);
  }
};

template <class T>
bool same_bits(const tensor<T>& a, const tensor<T>& b) {
  return std::memcmp(a.storage.data(), b.storage.data(), a.storage.size() * sizeof(T)) == 0;
}

/// One ring problem: n tokens a rank, so N = R·n in all.
struct ring_case {
  std::size_t n = 8, Dk = 16, Dv = 16;
  heads h = mha;
  mask_spec mask;
  kv_type kv = kv_type::f32;
  std::size_t B = 1;
};

std::string ring_case_name(const ::testing::TestParamInfo<ring_case>& info) {
  const ring_case& c = info.param;
  return std::string(kv_name(c.kv)) + "_B" + std::to_string(c.B) + "_n" + std::to_string(c.n) + "_d" +
         std::to_string(c.Dk) + "x" + std::to_string(c.Dv) + "_" + c.h.name + "_" + c.mask.name();
}

/// What the ring adds to attention_tolerance / lse_tolerance: a row's partials are
/// folded by at most `merges` merges, each reading two LSEs rounded to float (the LSE
/// type of attention() and merge_states) and writing one, so each exponent of a weight
/// moves by at most 3·u_f·L per merge (L bounds |lse|), and each merge's two products
/// and sum add 3u (merge.hpp). With head scale hs and |v| <= vmax:
///   out: hs·vmax·(expm1(2·merges·3·u_f·L) + 3·merges·u);  lse: merges·2·u_f·L.
/// For float compute this is of the order of the tolerance's own weight term; for
/// double it dominates: the ring in double is as exact as float LSEs make it.
struct ring_bounds {
  double out, lse;
};
template <class T>
ring_bounds ring_tolerance(const error_model& m, std::size_t merges) {
  const double uf = unit_roundoff<float>(), L = detail_tolerance::logit_error<T>(m).lse_max,
               k = double(merges);
  return {attention_tolerance<T>(m) +
              m.head_scale * m.vmax * (std::expm1(2 * k * 3 * uf * L) + 3 * k * unit_roundoff<T>()),
          lse_tolerance<T>(m) + k * 2 * uf * L};
}

template <class T, class S>
void check_forward(const ring_case& c) {
  const world w = comm_world();
  const std::size_t N = w.ranks * c.n;
  const causal_mode causal = c.mask.causal;
  tensor<T> q(c.B, c.h.Hq, N, c.Dk), kd(c.B, c.h.Hkv, N, c.Dk), vd(c.B, c.h.Hkv, N, c.Dv);
  fill_uniform(q, 1), fill_uniform(kd, 2), fill_uniform(vd, 3);
  const tensor<S> k = converted<S>(kd, layout::bhsd), v = converted<S>(vd, layout::bhsd);
  const masked_options masks(c.mask, c.B, c.h.Hq, N, N, 4);

  // The oracle and single-process attention() over the whole sequence.
  tensor<T> ref(c.B, c.h.Hq, N, c.Dv), single(c.B, c.h.Hq, N, c.Dv);
  std::vector<float> ref_lse(c.B * c.h.Hq * N);
  attention_options whole = masks.opt;
  whole.lse = lse_view(ref_lse.data(), c.B, c.h.Hq, N);
  reference::attention(q.cview(), k.cview(), v.cview(), ref.view, whole);
  whole.lse = {};
  attention(q.cview(), k.cview(), v.cview(), single.view, whole);
  // A q chunk meets at most 2 k chunks a step (causal; 1 otherwise), R steps.
  const ring_bounds bounds = ring_tolerance<T>(masks.model(c.Dk, N), 2 * w.ranks);
  const double tol = bounds.out, lse_tol = bounds.lse;

  const tensor<T> q_shard = shard_of(q, causal);
  const tensor<S> k_shard = shard_of(k, causal), v_shard = shard_of(v, causal);
  ring_masks ring_opt(masks, causal);
  tensor<T> first_out;
  tensor<float> first_lse;
  for (unsigned threads : {1u, 2u, 3u}) {
    tensor<T> out(c.B, c.h.Hq, c.n, c.Dv);
    tensor<float> lse(c.B, c.h.Hq, c.n, 1);
    attention_options opt = ring_opt.opt;
    opt.threads = threads;
    opt.lse = lse.view;
    ring_counters counters;
    ring_attention(MPI_COMM_WORLD, q_shard.cview(), k_shard.cview(), v_shard.cview(), out.view, opt,
                   &counters);
    const std::size_t shard_bytes = c.B * c.h.Hkv * c.n * (c.Dk + c.Dv) * sizeof(S);
    EXPECT_EQ(counters.bytes_sent, (w.ranks - 1) * shard_bytes);
    if (threads == 1) {
      const tensor<T> all = gathered(out, causal);
      const tensor<float> all_lse = gathered(lse, causal);
      const double err = max_abs_diff(all.view, ref.view), err_single = max_abs_diff(all.view, single.view);
      const double lse_err = max_abs_diff(all_lse.view, lse_view(ref_lse.data(), c.B, c.h.Hq, N));
      EXPECT_TRUE(err <= tol) << "max |ring - oracle| = " << err << " > " << tol;
      EXPECT_TRUE(err_single <= 2 * tol) << "max |ring - attention()| = " << err_single << " > " << 2 * tol;
      EXPECT_TRUE(lse_err <= lse_tol) << "max |lse - oracle| = " << lse_err << " > " << lse_tol;
      if (w.rank == 0)
        std::printf(
            "[ ring     ] R=%zu N=%zu: max |ring - attention()| %.3g, |ring - oracle| %.3g, tol %.3g\n",
            w.ranks, N, err_single, err, tol);
      first_out = out, first_lse = lse;
    } else {
      EXPECT_TRUE(same_bits(out, first_out) && same_bits(lse, first_lse))
          << threads << " threads: not the same bits as 1 thread";
    }
  }
}

class ring_forward : public ::testing::TestWithParam<ring_case> {};

TEST_P(ring_forward, equals_attention_over_the_whole_sequence) {
  const ring_case& c = GetParam();
  switch (c.kv) {
    case kv_type::f32:
      return check_forward<float, float>(c);
    case kv_type::f64:
      return check_forward<double, double>(c);
    case kv_type::f16:
      return check_forward<float, half>(c);
    case kv_type::bf16:
      return check_forward<float, bfloat16>(c);
    case kv_type::f16_qkv:
    case kv_type::bf16_qkv:
    case kv_type::i8:
      break;
  }
  FAIL() << "ring cases hold q in float or double and K/V in float, double or 16 bits (" << kv_name(c.kv) << ")";
}

mask_spec causal_spec(causal_mode m) {
  mask_spec s;
  s.causal = m;
  return s;
}

/// Shards of 2·35 tokens: each chunk straddles one 64-row tile on 2+ ranks; chunks of 1.
std::vector<ring_case> forward_cases() {
  std::vector<ring_case> cases;
  for (causal_mode m : {causal_mode::none, causal_mode::top_left, causal_mode::bottom_right})
    for (heads h : {mha, gqa, mqa}) {
      ring_case c;
      c.n = 70, c.Dk = 9, c.Dv = 17, c.h = h, c.mask = causal_spec(m);
      cases.push_back(c);
    }
  ring_case tiny;  // one token a chunk
  tiny.n = 2, tiny.Dk = tiny.Dv = 4, tiny.mask = causal_spec(causal_mode::top_left), tiny.B = 2;
  cases.push_back(tiny);
  ring_case f64 = tiny;
  f64.n = 12, f64.kv = kv_type::f64, f64.h = gqa;
  cases.push_back(f64);
  ring_case f16 = f64;
  f16.kv = kv_type::f16, f16.mask.causal = causal_mode::none;
  cases.push_back(f16);
  for (causal_mode m : {causal_mode::none, causal_mode::top_left}) {
    ring_case all;  // every option the ring supports at once
    all.n = 24, all.Dk = all.Dv = 8, all.h = gqa, all.B = 2, all.mask = causal_spec(m);
    all.mask.boolean = all.mask.additive = all.mask.head_scale = true;
    all.mask.softcap = 0.6;
    cases.push_back(all);
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Ring, ring_forward, ::testing::ValuesIn(forward_cases()), ring_case_name);

template <class T>
void check_backward(const ring_case& c) {
  const world w = comm_world();
  const std::size_t N = w.ranks * c.n;
  const causal_mode causal = c.mask.causal;
  tensor<T> q(c.B, c.h.Hq, N, c.Dk), k(c.B, c.h.Hkv, N, c.Dk), v(c.B, c.h.Hkv, N, c.Dv),
      dout(c.B, c.h.Hq, N, c.Dv);
  fill_uniform(q, 1), fill_uniform(k, 2), fill_uniform(v, 3), fill_uniform(dout, 5);
  const masked_options masks(c.mask, c.B, c.h.Hq, N, N, 4);

  // The oracle and single-process attention_backward over the whole sequence.
  tensor<T> rq(c.B, c.h.Hq, N, c.Dk), rk(c.B, c.h.Hkv, N, c.Dk), rv(c.B, c.h.Hkv, N, c.Dv);
  reference::attention_backward(q.cview(), k.cview(), v.cview(), dout.cview(), rq.view, rk.view, rv.view,
                                masks.opt);
  tensor<T> out(c.B, c.h.Hq, N, c.Dv), sq = rq, sk = rk, sv = rv;
  tensor<float> lse(c.B, c.h.Hq, N, 1);
  attention_options fwd = masks.opt;
  fwd.lse = lse.view;
  attention(q.cview(), k.cview(), v.cview(), out.view, fwd);
  attention_backward(q.cview(), k.cview(), v.cview(), out.cview(), lse.cview(), dout.cview(), sq.view,
                     sk.view, sv.view, masks.opt);
  const backward_bounds tol =
      backward_tolerance<T>(masks.model(c.Dk, N), c.h.Hq / c.h.Hkv * N, c.Dv, column_mass(q, k, masks.opt));

  // The ring: forward for this rank's out and LSE, then the backward.
  const tensor<T> q_s = shard_of(q, causal), k_s = shard_of(k, causal), v_s = shard_of(v, causal),
                  dout_s = shard_of(dout, causal);
  ring_masks ring_opt(masks, causal);
  tensor<T> out_s(c.B, c.h.Hq, c.n, c.Dv);
  tensor<float> lse_s(c.B, c.h.Hq, c.n, 1);
  attention_options opt = ring_opt.opt;
  opt.lse = lse_s.view;
  ring_attention(MPI_COMM_WORLD, q_s.cview(), k_s.cview(), v_s.cview(), out_s.view, opt);
  opt.lse = {};
  tensor<T> first[3];
  for (unsigned threads : {1u, 3u}) {
    tensor<T> dq(c.B, c.h.Hq, c.n, c.Dk), dk(c.B, c.h.Hkv, c.n, c.Dk), dv(c.B, c.h.Hkv, c.n, c.Dv);
    for (auto* t : {&dq, &dk, &dv}) std::fill(t->storage.begin(), t->storage.end(), T(NAN));
    opt.threads = threads;
    ring_counters counters;
    ring_attention_backward(MPI_COMM_WORLD, q_s.cview(), k_s.cview(), v_s.cview(), out_s.cview(),
                            lse_s.cview(), dout_s.cview(), dq.view, dk.view, dv.view, opt, &counters);
    EXPECT_EQ(counters.bytes_sent,
              (2 * w.ranks - 1) * c.B * c.h.Hkv * c.n * (c.Dk + c.Dv) * sizeof(T) * (w.ranks > 1));
    if (threads != 1) {
      EXPECT_TRUE(same_bits(dq, first[0]) && same_bits(dk, first[1]) && same_bits(dv, first[2]))
          << threads << " threads: not the same bits as 1 thread";
      continue;
    }
    const tensor<T> all[] = {gathered(dq, causal), gathered(dk, causal), gathered(dv, causal)};
    const tensor<T>* oracle[] = {&rq, &rk, &rv};
    const tensor<T>* single[] = {&sq, &sk, &sv};
    const double bounds[] = {tol.dq, tol.dk, tol.dv};
    const char* names[] = {"dq", "dk", "dv"};
    for (int g = 0; g < 3; ++g) {
      const double err = max_abs_diff(all[g].view, oracle[g]->view),
                   err_single = max_abs_diff(all[g].view, single[g]->view);
      EXPECT_TRUE(err <= bounds[g]) << names[g] << ": max |ring - oracle| = " << err << " > " << bounds[g];
      EXPECT_TRUE(err_single <= 2 * bounds[g])
          << names[g] << ": max |ring - attention_backward()| = " << err_single << " > " << 2 * bounds[g];
      if (w.rank == 0)
        std::printf(
            "[ ring     ] R=%zu N=%zu %s: max |ring - attention_backward()| %.3g, |ring - oracle| %.3g, "
            "tol %.3g\n",
            w.ranks, N, names[g], err_single, err, bounds[g]);
    }
    first[0] = dq, first[1] = dk, first[2] = dv;
  }
}

class ring_backward : public ::testing::TestWithParam<ring_case> {};

TEST_P(ring_backward, equals_attention_backward_over_the_whole_sequence) {
  const ring_case& c = GetParam();
  if (c.kv == kv_type::f64) return check_backward<double>(c);
  check_backward<float>(c);
}

std::vector<ring_case> backward_cases() {
  std::vector<ring_case> cases;
  for (causal_mode m : {causal_mode::none, causal_mode::top_left}) {
    ring_case c;
    c.n = 40, c.Dk = 9, c.Dv = 17, c.h = gqa, c.mask = causal_spec(m);
    cases.push_back(c);
  }
  ring_case masked;
  masked.n = 12, masked.Dk = masked.Dv = 8, masked.h = mqa, masked.B = 2, masked.kv = kv_type::f64;
  masked.mask = causal_spec(causal_mode::bottom_right);
  masked.mask.boolean = masked.mask.additive = masked.mask.head_scale = true;
  masked.mask.softcap = 0.6;
  cases.push_back(masked);
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Ring, ring_backward, ::testing::ValuesIn(backward_cases()), ring_case_name);

/// A small valid problem on each rank: q, k, v of n tokens, out NaN.
struct small_problem {
  tensor<float> q, k, v, out;
  explicit small_problem(std::size_t n, std::size_t dk = 4)
      : q(1, 2, n, dk), k(1, 2, n, dk), v(1, 2, n, 4), out(1, 2, n, 4) {
    fill_uniform(q, 1), fill_uniform(k, 2), fill_uniform(v, 3);
    std::fill(out.storage.begin(), out.storage.end(), NAN);
  }
  void run(const attention_options& opt = {}) {
    ring_attention(MPI_COMM_WORLD, q.cview(), k.cview(), v.cview(), out.view, opt);
  }
  bool untouched() const {
    for (float x : out.storage)
      if (!std::isnan(x)) return false;
    return true;
  }
};

/// Runs `call` and expects a headwise::error whose message holds `expected`; then a
/// valid call on every rank must still work (no message left in flight).
template <class F>
void expect_ring_error(F call, const std::string& expected) {
  try {
    call();
    ADD_FAILURE() << "no headwise::error (expected \"" << expected << "\")";
  } catch (const headwise::error& e) {
    EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << e.what();
  }
  small_problem after(4);
  after.run();
  EXPECT_FALSE(after.untouched());
}

TEST(ring_errors, ranks_that_disagree_all_throw) {
  const world w = comm_world();
  if (w.ranks == 1) GTEST_SKIP() << "one rank cannot disagree";
  const bool last = w.rank + 1 == w.ranks;
  small_problem p(4, last ? 8 : 4);  // Dk 8 on the last rank, 4 elsewhere
  expect_ring_error([&] { p.run(); }, "q.dim() (Dk) must be the same on every rank");
  EXPECT_TRUE(p.untouched());
  small_problem causal(4);
  attention_options opt;
  opt.causal = last ? causal_mode::none : causal_mode::top_left;
  expect_ring_error([&] { causal.run(opt); }, "options.causal must be the same on every rank");
}

TEST(ring_errors, one_bad_rank_makes_every_rank_throw) {
  const world w = comm_world();
  const bool last = w.rank + 1 == w.ranks;
  small_problem p(4);
  const tensor_view<float> out =
      last ? tensor_view<float>(p.q.view.data(), 1, 2, 4, 4, 32, 16, 4) : p.out.view;
  const std::string expected = last ? "out overlaps the memory of q"
                                    : "rank " + std::to_string(w.ranks - 1) + " of " +
                                          std::to_string(w.ranks) + " passed invalid arguments";
  expect_ring_error([&] { ring_attention(MPI_COMM_WORLD, p.q.cview(), p.k.cview(), p.v.cview(), out); },
                    expected);
  EXPECT_TRUE(p.untouched());
}

TEST(ring_errors, unsupported_options_and_odd_causal_shards) {
  small_problem p(4);
  attention_options window;
  window.window_left = 3;
  expect_ring_error([&] { p.run(window); }, "options.window_left and window_right are not supported");
  attention_options alibi;
  const std::vector<float> slopes = {0.5f, 0.25f};
  alibi.alibi_slopes = slopes;
  expect_ring_error([&] { p.run(alibi); }, "options.alibi_slopes are not supported");
  small_problem odd(5);
  attention_options causal;
  causal.causal = causal_mode::top_left;
  expect_ring_error([&] { odd.run(causal); }, "q.seq() must be even with causal");
  EXPECT_TRUE(p.untouched() && odd.untouched());
}

TEST(ring_layout, zigzag_and_contiguous_shards) {
  // 2 ranks, N = 8: zigzag chunks of 2, rank 0 holds tokens 0 1 6 7, rank 1 2 3 4 5.
  std::vector<float> full(8), shard(4), back(8, -1);
  for (int i = 0; i < 8; ++i) full[std::size_t(i)] = float(i);
  const auto full_view = bhsd<float>(full.data(), 1, 1, 8, 1),
             back_view = bhsd<float>(back.data(), 1, 1, 8, 1);
  const auto shard_view = bhsd<float>(shard.data(), 1, 1, 4, 1);
  const std::vector<std::vector<float>> zigzag = {{0, 1, 6, 7}, {2, 3, 4, 5}},
                                        contiguous = {{0, 1, 2, 3}, {4, 5, 6, 7}};
  for (std::size_t r = 0; r < 2; ++r) {
    ring_shard(tensor_view<const float>(full_view), shard_view, r, 2, causal_mode::top_left);
    EXPECT_EQ(shard, zigzag[r]);
    ring_unshard(tensor_view<const float>(shard_view), back_view, r, 2, causal_mode::top_left);
    ring_shard(tensor_view<const float>(full_view), shard_view, r, 2, causal_mode::none);
    EXPECT_EQ(shard, contiguous[r]);
  }
  EXPECT_EQ(back, full);
  EXPECT_THROW(ring_shard(full_view, bhsd<float>(shard.data(), 1, 1, 3, 1), 0, 2, causal_mode::none), error);
  EXPECT_THROW(ring_shard(full_view, bhsd<float>(shard.data(), 1, 1, 1, 1), 0, 8, causal_mode::top_left),
               error);
  EXPECT_THROW(ring_shard(full_view, shard_view, 2, 2, causal_mode::none), error);
}

}  // namespace

/// On ranks other than 0: only failures, each line prefixed with the rank.
class failure_printer : public ::testing::EmptyTestEventListener {
 public:
  explicit failure_printer(std::size_t rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& r) override {
    if (r.failed())
      std::printf("[ rank %zu ] %s:%d: %s\n", rank_, r.file_name() ? r.file_name() : "?", r.line_number(),
                  r.summary());
  }

 private:
  std::size_t rank_;
};

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  const world w = comm_world();
  if (w.rank != 0) {
    ::testing::TestEventListeners& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new failure_printer(w.rank));
  }
  int failed = RUN_ALL_TESTS() != 0, any = 0;
  MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (any && !failed) std::printf("[ rank %zu ] passed, but another rank failed\n", w.rank);
  MPI_Finalize();
  return any;
}
