// Tests of attention_backward (backward.hpp) and reference::attention_backward:
//   - the reference against central finite differences in double, every mask kind;
//   - every path (scalar build, each SIMD path) × threads 1, 2, 3 against the
//     reference, on shapes around the backward's tiles (64 query rows, 128 keys),
//     MHA/GQA/MQA, every mask kind, float and double, Dk ≠ Dv, with the tolerance
//     derived in test_util.hpp (backward_tolerance); every gradient element written;
//     the same bits at every thread count, so key tiles run as tasks (threads not
//     dividing B·Hkv) give the one pass's bits;
//   - bad arguments throw before anything is written; scratch bounded by the tiles.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kernel_harness.hpp"

namespace {

using namespace hwtest;

/// One backward problem: inputs, the forward by attention() (out, float LSE), dout,
/// and the reference gradients.
template <class T>
struct backward_problem {
  kernel_case c;
  tensor<T> q, k, v, out, dout, rq, rk, rv;
  std::vector<float> lse;
  masked_options masks;
  backward_bounds tol;

  explicit backward_problem(const kernel_case& kc)
      : c(kc),
        q(c.B, c.h.Hq, c.Nq, c.Dk, c.lay),
        k(c.B, c.h.Hkv, c.Nk, c.Dk, c.lay),
        v(c.B, c.h.Hkv, c.Nk, c.Dv, c.lay),
        out(c.B, c.h.Hq, c.Nq, c.Dv, c.lay),
        dout(c.B, c.h.Hq, c.Nq, c.Dv, c.lay),
        rq(c.B, c.h.Hq, c.Nq, c.Dk, c.lay),
        rk(c.B, c.h.Hkv, c.Nk, c.Dk, c.lay),
        rv(c.B, c.h.Hkv, c.Nk, c.Dv, c.lay),
        lse(c.B * c.h.Hq * c.Nq),
        masks(c.mask, c.B, c.h.Hq, c.Nq, c.Nk, 4) {
    fill_uniform(q, 1), fill_uniform(k, 2), fill_uniform(v, 3), fill_uniform(dout, 5);
    attention_options fwd = masks.opt;
    fwd.lse = lse_view(lse.data(), c.B, c.h.Hq, c.Nq);
    attention(q.cview(), k.cview(), v.cview(), out.view, fwd);
    reference::attention_backward(q.cview(), k.cview(), v.cview(), dout.cview(), rq.view, rk.view, rv.view,
                                  masks.opt);
    tol = backward_tolerance<T>(masks.model(c.Dk, c.Nk), c.h.Hq / c.h.Hkv * c.Nq, c.Dv,
                                column_mass(q, k, masks.opt));
  }

  struct grads {
    tensor<T> dq, dk, dv;
  };
  grads fresh() const {
    grads g{tensor<T>(c.B, c.h.Hq, c.Nq, c.Dk, c.lay), tensor<T>(c.B, c.h.Hkv, c.Nk, c.Dk, c.lay),
            tensor<T>(c.B, c.h.Hkv, c.Nk, c.Dv, c.lay)};
    for (auto* t : {&g.dq, &g.dk, &g.dv}) std::fill(t->storage.begin(), t->storage.end(), T(NAN));
    return g;
  }
  void run(const variant& var, grads& g) const {
    attention_options opt = masks.opt;
    var.apply(opt);
    attention_backward(q.cview(), k.cview(), v.cview(), out.cview(),
                       lse_view(static_cast<const float*>(lse.data()), c.B, c.h.Hq, c.Nq), dout.cview(),
                       g.dq.view, g.dk.view, g.dv.view, opt);
  }
};

template <class T>
bool same_bits(const tensor<T>& a, const tensor<T>& b) {
  return std::memcmp(a.storage.data(), b.storage.data(), a.storage.size() * sizeof(T)) == 0;
}

template <class T>
void check_backward(const kernel_case& c) {
  backward_problem<T> p(c);
  const variant* first = nullptr;
  typename backward_problem<T>::grads first_g;
  const auto variants = every_variant({kernel_mode::automatic});
  for (const variant& var : variants) {
    auto g = p.fresh();
    p.run(var, g);
    const std::pair<const tensor<T>*, const tensor<T>*> pairs[] = {
        {&g.dq, &p.rq}, {&g.dk, &p.rk}, {&g.dv, &p.rv}};
    const double bounds[] = {p.tol.dq, p.tol.dk, p.tol.dv};
    const char* names[] = {"dq", "dk", "dv"};
    for (int n = 0; n < 3; ++n) {
      const double err = max_abs_diff(pairs[n].first->view, pairs[n].second->view);
      if (!(err <= bounds[n]))
        ADD_FAILURE() << var.name() << ": max |" << names[n] << " - oracle| = " << err << " > " << bounds[n];
      if (!std::isnan(double(pairs[n].first->storage[0])))
        ADD_FAILURE() << var.name() << ": wrote the element before " << names[n];
    }
    if (first == nullptr || !first->same_path(var)) {
      first = &var, first_g = std::move(g);
      continue;
    }
    if (!same_bits(first_g.dq, g.dq) || !same_bits(first_g.dk, g.dk) || !same_bits(first_g.dv, g.dv))
      ADD_FAILURE() << var.name() << ": not the same bits as " << first->name();
  }
}

class backward_kernel : public kernel_test {};
TEST_P(backward_kernel, every_path_matches_the_oracle) {
  if (GetParam().kv == kv_type::f64)
    check_backward<double>(GetParam());
  else
    check_backward<float>(GetParam());
}

/// Around the backward's tiles (64 rows, 128 keys): one below, at, one above, and
/// two tiles and one; head_dim across the pack widths, Dk ≠ Dv; heads and types rotate.
std::vector<kernel_case> tile_cases() {
  const std::pair<std::size_t, std::size_t> seqs[] = {{1, 1},    {17, 3},   {63, 127},
                                                      {64, 128}, {65, 129}, {129, 257}};
  const std::pair<std::size_t, std::size_t> dims[] = {{1, 7}, {17, 16}, {64, 64}, {9, 33}};
  const heads hs[] = {mha, gqa, mqa};
  std::vector<kernel_case> cases;
  for (std::size_t s = 0; s < 6; ++s)
    for (std::size_t d = 0; d < 4; ++d) {
      kernel_case c{seqs[s].first, seqs[s].second, dims[d].first, dims[d].second, hs[(s + d) % 3]};
      c.kv = (s + d) % 2 ? kv_type::f64 : kv_type::f32;
      c.mask.causal = (s + d) % 3 == 1 ? causal_mode::bottom_right : causal_mode::none;
      c.lay = s % 2 ? layout::bshd : layout::bhsd;
      cases.push_back(c);
    }
  return cases;
}

/// Every mask kind on ragged shapes across the tiles, B = 2 (mask broadcast), GQA.
std::vector<kernel_case> rule_cases() {
  std::vector<kernel_case> cases;
  const std::vector<mask_spec> masks = every_mask_kind();
  const std::pair<std::size_t, std::size_t> seqs[] = {{65, 40}, {30, 130}};
  for (std::size_t m = 0; m < masks.size(); ++m)
    for (std::size_t s = 0; s < 2; ++s) {
      kernel_case c{seqs[s].first, seqs[s].second, 16, 24, s ? mqa : gqa};
      c.B = 2;
      c.mask = masks[m];
      c.kv = m % 2 ? kv_type::f64 : kv_type::f32;
      cases.push_back(c);
    }
  return cases;
}

/// Where the B·Hkv whole tasks do not share the threads evenly the backward runs key
/// tiles as tasks, each following the previous tile block by block
/// (flash_backward.hpp): B 1, MQA (at 2 and 3 threads) and GQA (at 3); causal both
/// ways and a sliding window (tiles whose first visible row is past row 0); several
/// blocks and tiles (600 × 600, causal), and one block (40 query rows). The same-bits
/// check above compares the tile tasks with the one pass.
std::vector<kernel_case> split_cases() {
  mask_spec window;
  window.causal = causal_mode::top_left, window.left = 100;
  mask_spec top_left, bottom_right;
  top_left.causal = causal_mode::top_left, bottom_right.causal = causal_mode::bottom_right;
  const mask_spec masks[] = {mask_spec{}, top_left, bottom_right, window, bottom_right, mask_spec{}};
  const std::pair<std::size_t, std::size_t> seqs[] = {{300, 200}, {300, 200}, {300, 140},
                                                      {300, 200}, {600, 600}, {40, 700}};
  std::vector<kernel_case> cases;
  for (std::size_t m = 0; m < 6; ++m) {
    kernel_case c{seqs[m].first, seqs[m].second, 16, 24, m % 2 ? gqa : mqa};
    c.mask = masks[m];
    c.kv = m == 3 ? kv_type::f64 : kv_type::f32;
    cases.push_back(c);
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(tiles, backward_kernel, ::testing::ValuesIn(tile_cases()), param_name);
INSTANTIATE_TEST_SUITE_P(rules, backward_kernel, ::testing::ValuesIn(rule_cases()), param_name);
INSTANTIATE_TEST_SUITE_P(split, backward_kernel, ::testing::ValuesIn(split_cases()), param_name);

// The reference against central differences of L = Σ dout ∘ reference::attention,
// in double, h = 1e-4, on a few keys and dims with |inputs| <= 1. The truncation
// error of a central difference is h²/6·|L'''|; along one input coordinate a logit
// moves at rate <= scale·Dk (|q|, |k| <= 1; through the softcap's tanh, whose
// derivatives add <= 2/c), and each derivative of exp or softmax multiplies by at most
// twice that rate, so |L'''| <= Hq·Nq·Dv·hs·(2·scale·Dk + 2/c)³ (every output term
// |dout·out| <= hs). Rounding adds ~2u·|L|/h ~ 1e-11; the bound adds 1e-9 for it.
class backward_fd : public ::testing::TestWithParam<mask_spec> {};
TEST_P(backward_fd, reference_matches_central_differences) {
  kernel_case c{5, 7, 3, 4, gqa};
  c.mask = GetParam();
  c.B = 2;
  backward_problem<double> p(c);
  auto loss = [&]() {
    tensor<double> o(c.B, c.h.Hq, c.Nq, c.Dv);
    reference::attention(p.q.cview(), p.k.cview(), p.v.cview(), o.view, p.masks.opt);
    double l = 0;
    for (std::size_t b = 0; b < c.B; ++b)
      for (std::size_t h = 0; h < c.h.Hq; ++h)
        for (std::size_t i = 0; i < c.Nq; ++i)
          for (std::size_t d = 0; d < c.Dv; ++d) l += p.dout(b, h, i, d) * o(b, h, i, d);
    return l;
  };
  const double step = 1e-4;
  const double hs = p.masks.max_head_scale, sc = 1 / std::sqrt(double(c.Dk));
  const double d3 = std::pow(2 * sc * double(c.Dk) + (c.mask.softcap > 0 ? 2 / c.mask.softcap : 0), 3);
  const double bound = step * step / 6 * double(c.Nq * c.Dv) * hs * d3 * double(c.h.Hq) + 1e-9;
  auto check = [&](tensor<double>& x, const tensor<double>& grad, const char* name) {
    for (std::size_t e = 1; e < x.storage.size(); ++e) {
      const double keep = x.storage[e];
      x.storage[e] = keep + step;
      const double up = loss();
      x.storage[e] = keep - step;
      const double down = loss();
      x.storage[e] = keep;
      const double fd = (up - down) / (2 * step), err = std::fabs(fd - grad.storage[e]);
      if (!(err <= bound))
        ADD_FAILURE() << name << "[" << e - 1 << "]: fd " << fd << " vs " << grad.storage[e];
    }
  };
  check(p.q, p.rq, "dq");
  check(p.k, p.rk, "dk");
  check(p.v, p.rv, "dv");
}
INSTANTIATE_TEST_SUITE_P(every_mask_kind, backward_fd, ::testing::ValuesIn(every_mask_kind()),
                         [](const ::testing::TestParamInfo<mask_spec>& p) { return p.param.name(); });

// Bad arguments throw headwise::error and leave every gradient untouched.
TEST(backward_checks, bad_arguments_throw_before_writing) {
  kernel_case c{8, 8, 4, 4, gqa};
  backward_problem<float> p(c);
  auto g = p.fresh();
  const auto lse = lse_view(static_cast<const float*>(p.lse.data()), c.B, c.h.Hq, c.Nq);
  auto untouched = [&] {
    for (auto* t : {&g.dq, &g.dk, &g.dv})
      for (float x : t->storage)
        if (!std::isnan(x)) return false;
    return true;
  };
  // dk shaped like dv's transpose partner: wrong Dk
  tensor<float> bad_dk(c.B, c.h.Hkv, c.Nk, c.Dk + 1);
  EXPECT_THROW(attention_backward(p.q.cview(), p.k.cview(), p.v.cview(), p.out.cview(), lse, p.dout.cview(),
                                  g.dq.view, bad_dk.view, g.dv.view),
               headwise::error);
  // dq aliasing q
  EXPECT_THROW(attention_backward(p.q.cview(), p.k.cview(), p.v.cview(), p.out.cview(), lse, p.dout.cview(),
                                  p.q.view, g.dk.view, g.dv.view),
               headwise::error);
  // dv overlapping dk
  EXPECT_THROW(attention_backward(p.q.cview(), p.k.cview(), p.v.cview(), p.out.cview(), lse, p.dout.cview(),
                                  g.dq.view, g.dk.view, g.dk.view),
               headwise::error);
  // lse of the wrong shape
  EXPECT_THROW(attention_backward(p.q.cview(), p.k.cview(), p.v.cview(), p.out.cview(),
                                  lse_view(static_cast<const float*>(p.lse.data()), c.B, c.h.Hkv, c.Nq),
                                  p.dout.cview(), g.dq.view, g.dk.view, g.dv.view),
               headwise::error);
  attention_options bad;
  bad.softcap = -1;
  EXPECT_THROW(attention_backward(p.q.cview(), p.k.cview(), p.v.cview(), p.out.cview(), lse, p.dout.cview(),
                                  g.dq.view, g.dk.view, g.dv.view, bad),
               headwise::error);
  EXPECT_TRUE(untouched());
  // a gradient over a per-head option the call reads: ALiBi slopes stored in dq's first row
  tensor<float> dq_and_slopes(c.B, c.h.Hq, c.Nq, c.Dk);
  std::fill(dq_and_slopes.storage.begin(), dq_and_slopes.storage.end(), 0.5f);
  attention_options over_slopes;
  over_slopes.alibi_slopes = span<const float>(dq_and_slopes.storage.data() + 1, c.h.Hq);
  EXPECT_THROW(attention_backward(p.q.cview(), p.k.cview(), p.v.cview(), p.out.cview(), lse, p.dout.cview(),
                                  dq_and_slopes.view, g.dk.view, g.dv.view, over_slopes),
               headwise::error);
  for (float x : dq_and_slopes.storage) EXPECT_EQ(x, 0.5f);
  EXPECT_TRUE(untouched());
}

// No keys (Nk 0): nothing to differentiate, every dq element set to zero and nothing
// before it written, on one thread and on three (more threads than the one kv head: the key tiles' path).
TEST(backward_checks, no_keys_gives_zero_dq) {
  tensor<float> q(1, 2, 3, 4), out(1, 2, 3, 4), dout(1, 2, 3, 4), k(1, 1, 0, 4), v(1, 1, 0, 4);
  tensor<float> dk(1, 1, 0, 4), dv(1, 1, 0, 4);
  fill_uniform(q, 1), fill_uniform(dout, 2);
  std::vector<float> lse(2 * 3, -std::numeric_limits<float>::infinity());
  for (unsigned threads : {1u, 3u}) {
    tensor<float> dq(1, 2, 3, 4);
    std::fill(dq.storage.begin(), dq.storage.end(), 7.0f);
    attention_options opt;
    opt.threads = threads;
    attention_backward(q.cview(), k.cview(), v.cview(), out.cview(),
                       lse_view(static_cast<const float*>(lse.data()), 1, 2, 3), dout.cview(), dq.view, dk.view,
                       dv.view, opt);
    EXPECT_EQ(dq.storage[0], 7.0f) << threads << " threads: wrote the element before dq";
    for (std::size_t e = 1; e < dq.storage.size(); ++e) EXPECT_EQ(dq.storage[e], 0.0f) << threads << " threads";
  }
}

// No N×N buffer: the workspace after a backward at N 512 and N 2048 (d 64, one head)
// holds the same bytes (the scratch is sized by the tiles, not N), and at N 16384 the
// tiling gives every worker together far under 16 MiB.
TEST(backward_memory, scratch_is_bounded_by_the_tiles) {
  std::size_t held[2] = {0, 0};
  for (int n = 0; n < 2; ++n) {
    const std::size_t N = n ? 2048 : 512;
    tensor<float> q(1, 1, N, 64), k(1, 1, N, 64), v(1, 1, N, 64), out(1, 1, N, 64), dout(1, 1, N, 64);
    tensor<float> dq(1, 1, N, 64), dk(1, 1, N, 64), dv(1, 1, N, 64);
    std::vector<float> lse(N);
    fill_uniform(q, 1), fill_uniform(k, 2), fill_uniform(v, 3), fill_uniform(dout, 4);
    workspace ws;
    attention_options opt;
    opt.causal = causal_mode::top_left, opt.threads = 1, opt.scratch = &ws,
    opt.lse = lse_view(lse.data(), 1, 1, N);
    attention(q.cview(), k.cview(), v.cview(), out.view, opt);
    ws.release();
    attention_backward(q.cview(), k.cview(), v.cview(), out.cview(),
                       lse_view(static_cast<const float*>(lse.data()), 1, 1, N), dout.cview(), dq.view,
                       dk.view, dv.view, opt);
    held[n] = ws.bytes();
  }
  EXPECT_EQ(held[0], held[1]);
  EXPECT_TRUE(held[1] < (std::size_t(1) << 20)) << held[1];
  namespace kernels = headwise::isa_baseline::kernels;
  for (std::size_t w : {1, 4, 8, 16}) {
    const auto t = kernels::flash_backward::make_tiling(w, 64, 64);
    const std::size_t bytes = 2 * kernels::flash_backward::scratch_bytes<float>(t);
    EXPECT_TRUE(bytes < (std::size_t(16) << 20)) << "W " << w << ": " << bytes;
  }
}

}  // namespace
