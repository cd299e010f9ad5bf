// options_test: the rules of options.hpp for NaN and infinities, on every kernel mode,
// the scalar build and every SIMD path, 1-3 threads (kernel_harness.hpp), against the
// oracle that states them. max_abs_diff compares classes exactly (NaN with NaN, an
// infinity with the same infinity) and finite values within the derived tolerance.
// Each test also checks its rule by hand on the oracle and on every variant, so a
// rule the oracle and the kernels share wrongly cannot pass.
#include <gtest/gtest.h>

#include <cmath>
#include <cstddef>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "kernel_harness.hpp"

namespace {

using namespace hwtest;

constexpr float nan_f = std::numeric_limits<float>::quiet_NaN();
constexpr float inf_f = std::numeric_limits<float>::infinity();

/// Runs every variant of p against its oracle (check_variants), then calls
/// expect(out, lse, name) on the oracle's output and on each variant's.
template <class T, class S, class Expect>
void check_rule(kernel_problem<T, S>& p, Expect&& expect) {
  check_variants(p, every_variant());
  expect(p.ref, p.ref_lse, "oracle");
  for (const variant& var : every_variant(every_kernel_mode(), {1})) {
    tensor<T> out = p.fresh_out();
    std::vector<float> lse = p.fresh_lse();
    p.run(var, out, lse);
    expect(out, lse, var.name());
  }
}

/// Index of row (b, h, i) in an LSE buffer [B, Hq, Nq].
std::size_t lse_index(const kernel_case& c, std::size_t b, std::size_t h, std::size_t i) {
  return (b * c.h.Hq + h) * c.Nq + i;
}

// Rule 1. Keys 50-53 hold NaN or +inf in K and V, and the additive entries of the
// rows that cannot see them (causal bottom-right: row i sees keys j <= i + 30) are
// NaN. Rows 0-19 see none of those keys, though the tiles and decode blocks they
// share with the rows that do are computed (and p = 0 there meets NaN·0 = NaN in
// P·V): they must come out as without the poison. The other rows follow rules 2-3.
TEST(nonfinite, a_hidden_key_never_reaches_a_row) {
  for (kv_type kv : {kv_type::f32, kv_type::f16, kv_type::bf16, kv_type::f64})
    for (bool blocks : {false, true}) {
      kernel_case c{40, 70, 8, 6, gqa, kv, blocks ? layout::bhsd : layout::bshd};
      c.mask.causal = causal_mode::bottom_right;
      c.mask.boolean = c.mask.additive = true;
      c.key_blocks = blocks;
      c.B = 2;
      SCOPED_TRACE(case_name(c));
      with_problem(c, [&](auto&& p) {
        using T = typename std::decay_t<decltype(p)>::compute_type;
        using S = typename std::decay_t<decltype(p)>::storage_type;
        const tensor<T> clean = p.ref;
        for (std::size_t b = 0; b < c.B; ++b)
          for (std::size_t h = 0; h < c.h.Hkv; ++h)
            for (std::size_t d = 0; d < c.Dk; ++d) {
              p.k(b, h, 51, d) = S(nan_f), p.k(b, h, 53, d) = S(d % 2 ? inf_f : -inf_f);
              if (d < c.Dv) p.v(b, h, 50, d) = S(nan_f), p.v(b, h, 52, d) = S(inf_f);
            }
        p.sync_key_blocks();
        for (std::size_t b = 0; b < c.B; ++b)
          for (std::size_t i = 0; i < 20; ++i)
            for (std::size_t j = i + 31; j < c.Nk; ++j) p.masks.additive[(b * c.Nq + i) * c.Nk + j] = nan_f;
        p.compute_oracle();
        check_rule(p, [&](const tensor<T>& out, const std::vector<float>&, const std::string& who) {
          const double tol = attention_tolerance<T>(p.model);
          for (std::size_t b = 0; b < c.B; ++b)
            for (std::size_t h = 0; h < c.h.Hq; ++h)
              for (std::size_t i = 0; i < 20; ++i)
                for (std::size_t d = 0; d < c.Dv; ++d) {
                  const double err = std::fabs(double(out.view(b, h, i, d)) - double(clean.view(b, h, i, d)));
                  if (!(err <= tol)) ADD_FAILURE() << who << ": row " << i << " head " << h << " out " << err;
                }
        });
      });
    }
}

// Rule 2. A visible logit of NaN or +inf leaves its row undefined: out NaN in every
// coordinate and LSE NaN. Row 1: NaN in q. Row 2: +inf in the additive mask at a key
// it sees. Row 3: NaN in the mask at a key it sees. Key 5: +inf in coordinate 1 of
// k, 0 in the others; q's coordinate 1 is 0.5 in row 4 (logit +inf) and −0.5 in the
// other rows (−inf: key 5 hidden, rule 1). Row 7: +inf in the mask where the boolean
// mask hides the key (hidden). The other rows stay finite.
TEST(nonfinite, a_nan_or_plus_inf_logit_makes_the_row_nan) {
  for (kv_type kv : {kv_type::f32, kv_type::f16, kv_type::f64})
    for (bool blocks : {false, true}) {
      kernel_case c{9, 37, 5, 4, mha, kv};
      c.mask.boolean = c.mask.additive = true;
      c.key_blocks = blocks;
      SCOPED_TRACE(case_name(c));
      with_problem(c, [&](auto&& p) {
        using T = typename std::decay_t<decltype(p)>::compute_type;
        using S = typename std::decay_t<decltype(p)>::storage_type;
        const std::size_t Nk = c.Nk;
        auto set = [&](std::size_t i, std::size_t j, bool visible, float additive) {  // for every head
          for (std::size_t h = 0; h < c.h.Hq; ++h) p.masks.boolean[(h * c.Nq + i) * Nk + j] = visible;
          p.masks.additive[i * Nk + j] = additive;
        };
        set(2, 11, true, inf_f);
        set(3, 12, true, nan_f);
        set(4, 5, true, 0.0f);
        set(7, 13, false, inf_f);
        for (std::size_t h = 0; h < c.h.Hq; ++h) {
          p.q(0, h, 1, 2) = T(nan_f);
          for (std::size_t i = 0; i < c.Nq; ++i) p.q(0, h, i, 1) = T(i == 4 ? 0.5f : -0.5f);
        }
        for (std::size_t h = 0; h < c.h.Hkv; ++h)
          for (std::size_t d = 0; d < c.Dk; ++d) p.k(0, h, 5, d) = S(d == 1 ? inf_f : 0.0f);
        p.sync_key_blocks();
        p.compute_oracle();
        check_rule(p, [&](const tensor<T>& out, const std::vector<float>& lse, const std::string& who) {
          for (std::size_t h = 0; h < c.h.Hq; ++h)
            for (std::size_t i = 0; i < c.Nq; ++i) {
              const bool undefined = i >= 1 && i <= 4;
              const float l = lse[lse_index(c, 0, h, i)];
              if (undefined != std::isnan(l))
                ADD_FAILURE() << who << ": head " << h << " row " << i << " lse " << l;
              for (std::size_t d = 0; d < c.Dv; ++d) {
                const T o = out.view(0, h, i, d);
                if (undefined ? !std::isnan(o) : !std::isfinite(o))
                  ADD_FAILURE() << who << ": head " << h << " row " << i << " out " << o;
              }
            }
        });
      });
    }
}

// Rule 3. Row 0 sees key 0 (logit 0) and key 1, whose logit is −200: its weight
// e^−200 is 0 in float (below 1.4e-45) but not in double, and it is positive
// either way. Key 1's v holds +inf, −inf and NaN in coordinates 1-3: they reach
// those coordinates as they would with a positive weight, coordinate 0 stays
// finite. Row 1 sees key 0 only (boolean mask) and is finite.
TEST(nonfinite, a_visible_non_finite_value_reaches_its_coordinate) {
  for (kv_type kv : {kv_type::f32, kv_type::f16, kv_type::f64})
    for (double head_scale : {1.0, -2.0}) {
      kernel_case c{2, 2, 1, 4, mha, kv};
      c.mask.boolean = c.mask.head_scale = true;
      SCOPED_TRACE(case_name(c) + " head_scale " + std::to_string(head_scale));
      with_problem(c, [&](auto&& p) {
        using T = typename std::decay_t<decltype(p)>::compute_type;
        using S = typename std::decay_t<decltype(p)>::storage_type;
        p.masks.opt.scale = 1.0;
        for (float& x : p.masks.head_scale) x = float(head_scale);
        std::fill(p.masks.boolean.get(), p.masks.boolean.get() + c.h.Hq * c.Nq * c.Nk, true);
        for (std::size_t h = 0; h < c.h.Hq; ++h) {
          p.masks.boolean[(h * c.Nq + 1) * c.Nk + 1] = false;
          p.q(0, h, 0, 0) = T(1), p.q(0, h, 1, 0) = T(1);
        }
        for (std::size_t h = 0; h < c.h.Hkv; ++h) {
          p.k(0, h, 0, 0) = S(0.0f), p.k(0, h, 1, 0) = S(-200.0f);
          p.v(0, h, 1, 1) = S(inf_f), p.v(0, h, 1, 2) = S(-inf_f), p.v(0, h, 1, 3) = S(nan_f);
        }
        p.model.kmax = 200, p.model.head_scale = std::fabs(head_scale);
        p.compute_oracle();
        check_rule(p, [&](const tensor<T>& out, const std::vector<float>& lse, const std::string& who) {
          const T sign = T(head_scale > 0 ? 1 : -1);
          for (std::size_t h = 0; h < c.h.Hq; ++h) {
            const T* row = &out.view(0, h, 0, 0);
            if (!(std::isfinite(row[0]) && row[1] == sign * T(inf_f) && row[2] == -sign * T(inf_f) &&
                  std::isnan(row[3])))
              ADD_FAILURE() << who << ": head " << h << " row 0: " << row[0] << " " << row[1] << " " << row[2]
                            << " " << row[3];
            for (std::size_t d = 0; d < c.Dv; ++d)
              if (!std::isfinite(out.view(0, h, 1, d))) ADD_FAILURE() << who << ": head " << h << " row 1";
            if (!std::isfinite(lse[lse_index(c, 0, h, 0)])) ADD_FAILURE() << who << ": lse of row 0";
          }
        });
      });
    }
}

// A −inf logit hides its key (rule 1): k = −inf·e_0 against q_0 > 0 gives what the
// boolean mask hiding that key gives. With a softcap the same logit is −c: finite,
// so the key is visible and the row differs.
TEST(nonfinite, a_minus_inf_logit_hides_its_key_and_softcap_bounds_it) {
  for (double softcap : {0.0, 2.0}) {
    kernel_case c{3, 9, 4, 3};
    c.mask.softcap = softcap;
    kernel_case masked = c;
    masked.mask.boolean = true;
    kernel_problem<float, float> p(c), hidden(masked);  // the same draws
    for (auto* x : {&p, &hidden}) {
      for (std::size_t h = 0; h < c.h.Hkv; ++h)
        for (std::size_t d = 0; d < c.Dk; ++d) x->k(0, h, 4, d) = d == 0 ? -inf_f : 0.0f;
      for (std::size_t h = 0; h < c.h.Hq; ++h)
        for (std::size_t i = 0; i < c.Nq; ++i) x->q(0, h, i, 0) = 0.25f;
    }
    std::fill(hidden.masks.boolean.get(), hidden.masks.boolean.get() + c.h.Hq * c.Nq * c.Nk, true);
    for (std::size_t h = 0; h < c.h.Hq; ++h)
      for (std::size_t i = 0; i < c.Nq; ++i) hidden.masks.boolean[(h * c.Nq + i) * c.Nk + 4] = false;
    for (auto* x : {&p, &hidden}) x->compute_oracle();
    check_rule(p, [&](const tensor<float>& out, const std::vector<float>&, const std::string& who) {
      const double differs = max_abs_diff(out.view, hidden.ref.view);
      if (softcap == 0 ? !(differs <= attention_tolerance<float>(p.model)) : !(differs > 1e-3))
        ADD_FAILURE() << who << ": softcap " << softcap << ", |out − out with key 4 hidden| = " << differs;
    });
  }
}

// A pruned head (head_scale 0) reads nothing: NaN in its q and in every key gives
// zeros and LSE −inf; the other heads follow the rules (here: NaN rows, since every
// key is NaN).
TEST(nonfinite, a_pruned_head_reads_nothing) {
  kernel_case c{5, 20, 4, 3, gqa};
  c.mask.head_scale = true;  // head 1 pruned
  kernel_problem<float, float> p(c);
  for (auto* t : {&p.q, &p.k, &p.v}) std::fill(t->storage.begin(), t->storage.end(), nan_f);
  p.compute_oracle();
  check_rule(p, [&](const tensor<float>& out, const std::vector<float>& lse, const std::string& who) {
    for (std::size_t h = 0; h < c.h.Hq; ++h)
      for (std::size_t i = 0; i < c.Nq; ++i) {
        const bool pruned = h == 1;
        const float l = lse[lse_index(c, 0, h, i)];
        if (pruned ? !(l == -inf_f) : !std::isnan(l)) ADD_FAILURE() << who << ": head " << h << " lse " << l;
        for (std::size_t d = 0; d < c.Dv; ++d)
          if (pruned ? !(out.view(0, h, i, d) == 0.0f) : !std::isnan(out.view(0, h, i, d)))
            ADD_FAILURE() << who << ": head " << h << " out " << out.view(0, h, i, d);
      }
  });
}

// Rule 5: the per-head parameters and the scalars are checked, not propagated.
TEST(nonfinite, non_finite_parameters_are_errors) {
  tensor<float> q(1, 2, 3, 4), k(1, 2, 3, 4), v(1, 2, 3, 4), out(1, 2, 3, 4);
  for (float bad : {nan_f, inf_f, -inf_f}) {
    const std::vector<float> params = {1.0f, bad};
    for (int which = 0; which < 2; ++which) {
      attention_options opt;
      (which == 0 ? opt.alibi_slopes : opt.head_scale) = params;
      EXPECT_THROW(attention(q.cview(), k.cview(), v.cview(), out.view, opt), headwise::error);
      EXPECT_THROW(reference::attention(q.cview(), k.cview(), v.cview(), out.view, opt), headwise::error);
    }
  }
}

}  // namespace
