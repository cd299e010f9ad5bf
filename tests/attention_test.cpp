// attention_test: attention() against the oracle, through the kernel harness
// (kernel_harness.hpp: every kernel mode, the scalar build and every SIMD path, 1, 2
// and 3 threads, each case's oracle computed once).
//
// Two grids: shapes (no rules or bottom-right causal) and rules (every mask kind on
// ragged shapes); then the contracts no grid states: softcap at overflowing logits,
// window bounds and sink counts at the ends of their types, thread counts beyond the
// tasks, fully hidden rows.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "kernel_harness.hpp"

namespace {

using namespace hwtest;

class attention_shapes : public kernel_test {};
class attention_rules : public kernel_test {};
TEST_P(attention_shapes, every_variant_matches_the_oracle) { check_kernel_case(GetParam()); }
TEST_P(attention_rules, every_variant_matches_the_oracle) { check_kernel_case(GetParam()); }

/// (Nq, Nk) × head_dim. (Nq, Nk): one query (decode), ragged small, larger than the
/// pack width on both sides; the tile sizes are flash_test's. head_dim straddles
/// every pack width W in 4, 8, 16 (W − 1, W, W + 1) and covers 64 and 128; 1 is
/// degenerate. The other factors rotate with the two indices so that every pair of
/// factor values meets at least once in the 48 cases (run each case once, not the
/// product): heads with s + d/2, K/V type with s + d/3, layout with s + d/2, causal
/// with s + d/4, key blocks with s + d/6, Dv != Dk with s + d.
std::vector<kernel_case> shape_cases() {
  const std::pair<std::size_t, std::size_t> seqs[] = {{1, 1}, {1, 7}, {17, 3}, {113, 203}};
  const std::size_t dims[] = {1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 64, 128};
  const heads hs[] = {mha, gqa, mqa};
  const kv_type kvs[] = {kv_type::f32, kv_type::f16, kv_type::bf16, kv_type::f64};
  std::vector<kernel_case> cases;
  for (std::size_t s = 0; s < 4; ++s)
    for (std::size_t d = 0; d < 12; ++d) {
      kernel_case c(seqs[s].first, seqs[s].second, dims[d], (s + d) % 2 ? dims[d] : dims[(d + 5) % 12],
                    hs[(s + d / 2) % 3], kvs[(s + d / 3) % 4], (s + d / 2) % 2 ? layout::bshd : layout::bhsd);
      if ((s + d / 4) % 2) c.mask.causal = causal_mode::bottom_right;
      c.key_blocks = (s + d / 6) % 2;
      cases.push_back(c);
    }
  return cases;
}

/// Every mask kind on three ragged shapes: one query (decode), Nq > Nk (rows with no
/// key under causal masks), Nq < Nk; B = 2 so the batch broadcast of the masks
/// shows. K/V type and heads rotate with the kind.
std::vector<kernel_case> rule_cases() {
  const kernel_case shapes[] = {{1, 37, 9, 5, gqa, kv_type::f32, layout::bshd},
                                {17, 3, 9, 5, gqa, kv_type::f32, layout::bshd},
                                {113, 203, 8, 7, mqa}};
  const kv_type kvs[] = {kv_type::f32, kv_type::f64, kv_type::f16, kv_type::bf16};
  const std::vector<mask_spec> masks = every_mask_kind();
  std::vector<kernel_case> cases;
  for (std::size_t m = 0; m < masks.size(); ++m)
    for (std::size_t s = 0; s < 3; ++s) {
      kernel_case c = shapes[s];
      c.mask = masks[m];
      c.B = 2;
      c.kv = kvs[(m + s) % 4];
      if (m % 3 == 1) c.h = mha;
      c.key_blocks = s == 0 && m % 2;
      cases.push_back(c);
    }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(grid, attention_shapes, ::testing::ValuesIn(shape_cases()), param_name);
INSTANTIATE_TEST_SUITE_P(grid, attention_rules, ::testing::ValuesIn(rule_cases()), param_name);

// Every product is ±1e40 and overflows float: logits are ±inf (never inf − inf, since
// each key row has one sign), and the softcap maps them to ±c. The tolerance is the
// same derivation: tanh is flat there (min_abs_logit), so only evaluating the cap counts.
TEST(attention, softcap_is_nan_free_at_overflowing_logits) {
  kernel_case c{2, 3, 4, 2};
  c.mask.softcap = 5.0;
  kernel_problem<float, float> p(c);
  for (auto* t : {&p.q, &p.k})
    for (float& x : t->storage) x = 1e20f;
  for (std::size_t d = 0; d < 4; ++d) p.k(0, 0, 1, d) = -1e20f;
  p.compute_oracle();  // in double: no overflow
  p.model.qmax = p.model.kmax = 1e20;
  p.model.min_abs_logit = 1e40;
  check_variants(p, every_variant());
}

// Window bounds and sink counts at the ends of their types (issue 25: INT64_MAX
// overflowed the window arithmetic, a sink count >= 2^63 acted as 0): a bound that
// reaches every key equals no bound, a sink count >= Nk makes every key a sink. Each
// case's oracle is computed with the equivalent small rule, then every variant runs
// with the extreme one.
TEST(attention, window_bounds_and_sink_counts_at_the_ends_of_their_types) {
  struct edge {
    kernel_case c;
    void (*extreme)(attention_options&);
  };
  auto with = [](kernel_case c, auto set_rule) { return set_rule(c.mask), c; };
  const edge edges[] = {
      {with(kernel_case{2, 8, 4, 4}, [](mask_spec& m) { m.left = 1; }),
       [](attention_options& o) { o.window_right = std::numeric_limits<std::int64_t>::max(); }},
      {with(kernel_case{5, 2, 4, 4}, [](mask_spec&) {}),
       [](attention_options& o) { o.window_left = std::numeric_limits<std::int64_t>::max(); }},
      {with(kernel_case{5, 2, 4, 4}, [](mask_spec& m) { m.causal = causal_mode::top_left; }),
       [](attention_options& o) {
         o.window_left = o.window_right = std::numeric_limits<std::int64_t>::max();
       }},
      {with(kernel_case{17, 1500, 8, 5, gqa}, [](mask_spec& m) { m.causal = causal_mode::bottom_right; }),
       [](attention_options& o) {
         o.window_left = o.window_right = std::numeric_limits<std::int64_t>::max();
       }},
      {with(kernel_case{2, 2, 4, 4}, [](mask_spec& m) { m.left = m.right = 0, m.sinks = 2; }),
       [](attention_options& o) { o.sink_tokens = std::numeric_limits<std::size_t>::max(); }},
      {with(kernel_case{3, 40, 4, 4, mqa}, [](mask_spec& m) { m.left = m.right = 0, m.sinks = 40; }),
       [](attention_options& o) { o.sink_tokens = std::size_t(1) << 63; }},
  };
  for (const edge& e : edges) {
    SCOPED_TRACE(case_name(e.c));
    kernel_problem<float, float> p(e.c);
    e.extreme(p.masks.opt);
    check_variants(p, every_variant());
  }
}

// Thread counts past the number of tasks, and 0 (the hardware's), give the bits of
// one thread on every path.
TEST(attention, thread_counts_beyond_tasks_and_default) {
  kernel_problem<float, float> p({33, 65, 16, 16, gqa});
  check_variants(p, every_variant(every_kernel_mode(), {1, 0, 3, 64}));
}

// A row with no visible key gives output 0 and LSE −inf, never NaN, whatever hides
// it: bottom-right causal with Nq > Nk (the first Nq − Nk rows), the boolean mask
// (row 4 of head 2), a −inf additive row (row 3), a pruned head (head 1).
TEST(attention, fully_hidden_rows_give_zero_and_minus_infinity) {
  kernel_case c{6, 4, 5, 3, gqa};
  c.mask.causal = causal_mode::bottom_right;
  c.mask.boolean = c.mask.additive = c.mask.head_scale = true;
  kernel_problem<float, float> p(c);
  for (std::size_t j = 0; j < c.Nk; ++j) {
    p.masks.additive[3 * c.Nk + j] = -INFINITY;          // [1, 1, Nq, Nk]
    p.masks.boolean[(2 * c.Nq + 4) * c.Nk + j] = false;  // [1, Hq, Nq, Nk]
  }
  p.compute_oracle();
  auto hidden = [&](std::size_t h, std::size_t i) { return i < 2 || i == 3 || h == 1 || (h == 2 && i == 4); };
  for (const variant& var : every_variant()) {
    tensor<float> out = p.fresh_out();
    std::vector<float> lse = p.fresh_lse();
    p.run(var, out, lse);
    for (std::size_t h = 0; h < c.h.Hq; ++h)
      for (std::size_t i = 0; i < c.Nq; ++i) {
        if (!hidden(h, i)) continue;
        const float l = lse[h * c.Nq + i];
        if (!(l == -std::numeric_limits<float>::infinity()))
          ADD_FAILURE() << var.name() << ": head " << h << " row " << i << " lse " << l;
        for (std::size_t d = 0; d < c.Dv; ++d)
          if (!(out(0, h, i, d) == 0.0f))
            ADD_FAILURE() << var.name() << ": head " << h << " row " << i << " out " << out(0, h, i, d);
      }
  }
  check_variants(p, every_variant());
}

}  // namespace
