// tests/kernel_harness.hpp — every way attention() can run one problem, against the
// oracle computed once.
//
// A kernel_case is one problem: shapes, head grouping, K/V storage type, memory
// layout, rules (mask_spec) and K in rows or in key blocks. check_kernel_case()
// builds its inputs (uniform in [-1, 1], K/V rounded once to their storage type),
// runs reference::attention once on exactly those values, then every variant:
//   kernel mode (automatic, plain, flash, decode)
//   × path: the scalar build (force_scalar), then every SIMD path this CPU runs
//     (available_isas(), set through attention_options::isa)
//   × threads 1, 2, 3.
// Each output and LSE must be within attention_tolerance / lse_tolerance of the
// oracle (the error analysis is in test_util.hpp); every output element must be
// written (the buffer starts as NaN) and the element before the view never; one
// mode and path gives the same bits at every thread count.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <cstdio>
#include <initializer_list>
#include <limits>
#include <map>
#include <string>
#include <type_traits>
#include <vector>

#include "mask_cases.hpp"
#include "test_util.hpp"
#include "variants.hpp"

namespace hwtest {

struct heads {
  std::size_t Hq, Hkv;
  const char* name;
};
inline constexpr heads mha{2, 2, "mha"}, gqa{4, 2, "gqa"}, mqa{3, 1, "mqa"};

/// One problem: q [B, Hq, Nq, Dk], k [B, Hkv, Nk, Dk], v [B, Hkv, Nk, Dv].
struct kernel_case {
  std::size_t Nq = 1, Nk = 1, Dk = 1, Dv = 1;
  heads h = mha;
  kv_type kv = kv_type::f32;
  layout lay = layout::bhsd;
  mask_spec mask;
  bool key_blocks = false;  // K passed as a key_blocks_view
  std::size_t B = 1;

  kernel_case() = default;
  kernel_case(std::size_t nq, std::size_t nk, std::size_t dk, std::size_t dv, heads hs = mha,
              kv_type t = kv_type::f32, layout l = layout::bhsd)
      : Nq(nq), Nk(nk), Dk(dk), Dv(dv), h(hs), kv(t), lay(l) {}
};

/// A gtest-safe name: f16_B1_q113k203_d9x19_gqa_bshd_br_kb
inline std::string case_name(const kernel_case& c) {
  return std::string(kv_name(c.kv)) + "_B" + std::to_string(c.B) + "_q" + std::to_string(c.Nq) + "k" +
         std::to_string(c.Nk) + "_d" + std::to_string(c.Dk) + "x" + std::to_string(c.Dv) + "_" + c.h.name +
         "_" + layout_name(c.lay) + "_" + c.mask.name() + (c.key_blocks ? "_kb" : "");
}

inline std::string param_name(const ::testing::TestParamInfo<kernel_case>& info) {
  return case_name(info.param);
}

/// The inputs of one case (K/V in storage type S, q in Q), its options and its oracle.
template <class T, class S, class Q = T>
struct kernel_problem {
  using compute_type = T;
  using storage_type = S;
  kernel_case c;
  tensor<Q> q;
  tensor<T> k_drawn, v_drawn;  // K/V as drawn, before their rounding to S
  tensor<S> k, v;
  tensor<float> k_scale, v_scale;  // int8 K/V: one scale per row, [B, Hkv, Nk, 1]
  tensor<T> k_stored, v_stored;    // int8 K/V: the stored values, dequantized (the oracle's input)
  std::vector<S> kb_storage;  // K in key blocks; padding keys NaN (int8: 127): they must never reach a result
  key_blocks_view<S> kb;
  masked_options masks;
  tensor<T> ref;
  std::vector<float> ref_lse;
  error_model model;

  explicit kernel_problem(const kernel_case& kc, std::uint32_t seed = 1)
      : c(kc),
        q(drawn_q(kc, seed)),
        k_drawn(c.B, c.h.Hkv, c.Nk, c.Dk),
        v_drawn(c.B, c.h.Hkv, c.Nk, c.Dv),
        masks(c.mask, c.B, c.h.Hq, c.Nq, c.Nk, seed + 3),
        ref(c.B, c.h.Hq, c.Nq, c.Dv, c.lay),
        ref_lse(c.B * c.h.Hq * c.Nq),
        model(masks.model(c.Dk, c.Nk)) {
    fill_uniform(k_drawn, seed + 1);
    fill_uniform(v_drawn, seed + 2);
    if constexpr (is_storage_int8<S>) {
      k = quantized(k_drawn, c.lay, k_scale);
      v = quantized(v_drawn, c.lay, v_scale);
    } else {
      k = converted<S>(k_drawn, c.lay);
      v = converted<S>(v_drawn, c.lay);
    }
    if (c.key_blocks) {
      kb_storage.assign(key_blocks_elements(c.B, c.h.Hkv, c.Nk, c.Dk), padding_key());
      kb = key_blocks_bhsd(kb_storage.data(), c.B, c.h.Hkv, c.Nk, c.Dk);
    }
    sync_key_blocks();
    compute_oracle();
  }

  /// What key-block padding holds: NaN, or for int8 the largest code.
  static S padding_key() {
    if constexpr (is_storage_int8<S>)
      return S(127);
    else
      return S(std::numeric_limits<float>::quiet_NaN());
  }

  /// q drawn uniform in [-1, 1] (then rounded to Q).
  static tensor<Q> drawn_q(const kernel_case& kc, std::uint32_t seed) {
    tensor<T> drawn(kc.B, kc.h.Hq, kc.Nq, kc.Dk, kc.lay);
    fill_uniform(drawn, seed);
    if constexpr (std::is_same_v<Q, T>)
      return drawn;
    else
      return converted<Q>(drawn, kc.lay);
  }

  /// Whether variant var runs the bf16 tiles, whose P·V reads P rounded to bf16.
  bool rounds_weights(const variant& var) const {
    if (!std::is_same_v<Q, bfloat16> || var.scalar) return false;
    return (var.isa == simd_isa::automatic ? simd_path() == std::string("avx512_bf16")
                                           : var.isa == simd_isa::avx512_bf16);
  }

  /// K in key blocks from k again, after a test changed k.
  void sync_key_blocks() {
    if (!c.key_blocks) return;
    for (std::size_t b = 0; b < c.B; ++b)
      for (std::size_t h = 0; h < c.h.Hkv; ++h)
        for (std::size_t s = 0; s < c.Nk; ++s)
          for (std::size_t d = 0; d < c.Dk; ++d) kb(b, h, s, d) = k(b, h, s, d);
  }

  /// The oracle on the stored inputs; again after a test changed inputs or masks.
  /// before_rounding: on K/V as drawn instead, and the model counts their rounding to S.
  void compute_oracle(bool before_rounding = false) {
    attention_options opt = masks.opt;
    opt.lse = lse(ref_lse);
    if (before_rounding) {
      reference::attention(q.cview(), k_drawn.cview(), v_drawn.cview(), ref.view, opt);
    } else if constexpr (is_storage_int8<S>) {
      k_stored = dequantized<T>(k, k_scale, c.lay);
      v_stored = dequantized<T>(v, v_scale, c.lay);
      reference::attention(q.cview(), k_stored.cview(), v_stored.cview(), ref.view, opt);
    } else {
      reference::attention(q.cview(), k.cview(), v.cview(), ref.view, opt);
    }
    model.storage_u = before_rounding && !std::is_same_v<S, T> ? unit_roundoff<S>() : 0;
    // int8: the oracle read scale·q rounded to T; the kernels use it unrounded
    // (decode scales the dot product), within T's unit roundoff of each element.
    if (is_storage_int8<S> && !before_rounding) model.storage_u = unit_roundoff<T>();
  }

  /// The options every run of this problem needs: int8's scales.
  void set_scales(attention_options& opt) const {
    if constexpr (is_storage_int8<S>) opt.k_scale = k_scale.cview(), opt.v_scale = v_scale.cview();
  }

  tensor_view<float> lse(std::vector<float>& l) const { return lse_view(l.data(), c.B, c.h.Hq, c.Nq); }

  /// attention() with the case's rules, the variant's mode, path and threads.
  void run(const variant& var, tensor<T>& out, std::vector<float>& out_lse) const {
    attention_options opt = masks.opt;
    var.apply(opt);
    opt.lse = lse(out_lse);
    set_scales(opt);
    if (c.key_blocks)
      attention(q.cview(), key_blocks_view<const S>(kb), v.cview(), out.view, opt);
    else
      attention(q.cview(), k.cview(), v.cview(), out.view, opt);
  }

  /// An output and an LSE buffer for run(), every element NaN.
  tensor<T> fresh_out() const {
    tensor<T> out(c.B, c.h.Hq, c.Nq, c.Dv, c.lay);
    std::fill(out.storage.begin(), out.storage.end(), std::numeric_limits<T>::quiet_NaN());
    return out;
  }
  std::vector<float> fresh_lse() const { return std::vector<float>(ref_lse.size(), std::nanf("")); }
};

/// Variants checked per path in this test binary, printed when it ends, so a CI log
/// shows which paths ran and how much (a path this CPU lacks has no line).
inline std::map<std::string, std::size_t>& variants_per_path() {
  static std::map<std::string, std::size_t> counts;
  return counts;
}
struct variants_per_path_report : ::testing::Environment {
  void TearDown() override {
    for (const auto& [path, n] : variants_per_path())
      std::printf("kernel variants checked on path %s: %zu\n", path.c_str(), n);
  }
};
inline const bool variants_per_path_reported =
    (::testing::AddGlobalTestEnvironment(new variants_per_path_report), true);

/// Runs every variant of p and checks it against p's oracle (see the file comment).
template <class T, class S, class Q>
void check_variants(kernel_problem<T, S, Q>& p, const std::vector<variant>& variants) {
  const double lse_tol = lse_tolerance<T>(p.model);
  const variant* first = nullptr;  // the first thread count of the current mode and path
  tensor<T> first_out;
  std::vector<float> first_lse;
  for (const variant& var : variants) {
    ++variants_per_path()[var.scalar ? "scalar" : isa_name(var.isa)];
    error_model model = p.model;
    if (p.rounds_weights(var)) model.weight_u = unit_roundoff<bfloat16>();
    const double tol = attention_tolerance<T>(model);
    tensor<T> out = p.fresh_out();
    std::vector<float> lse = p.fresh_lse();
    p.run(var, out, lse);
    const double err = max_abs_diff(out.view, p.ref.view);
    if (!(err <= tol)) ADD_FAILURE() << var.name() << ": max |out - oracle| = " << err << " > " << tol;
    const double lse_err = max_abs_diff(p.lse(lse), p.lse(p.ref_lse));
    if (!(lse_err <= lse_tol))
      ADD_FAILURE() << var.name() << ": max |lse - oracle| = " << lse_err << " > " << lse_tol;
    if (!std::isnan(out.storage[0])) ADD_FAILURE() << var.name() << ": wrote the element before the output";
    if (first == nullptr || !first->same_path(var)) {
      first = &var, first_out = std::move(out), first_lse = std::move(lse);
      continue;
    }
    const bool same =
        std::memcmp(first_out.storage.data(), out.storage.data(), out.storage.size() * sizeof(T)) == 0 &&
        std::memcmp(first_lse.data(), lse.data(), lse.size() * sizeof(float)) == 0;
    if (!same) ADD_FAILURE() << var.name() << ": not the same bits as " << first->name();
  }
}

/// Calls fn(problem) with the kernel_problem of the case's compute and storage types,
/// q in the compute type (tests that write q's elements).
template <class Fn>
void with_problem(const kernel_case& c, Fn&& fn) {
  switch (c.kv) {
    case kv_type::f32:
      return fn(kernel_problem<float, float>(c));
    case kv_type::f64:
      return fn(kernel_problem<double, double>(c));
    case kv_type::f16:
      return fn(kernel_problem<float, half>(c));
    case kv_type::bf16:
      return fn(kernel_problem<float, bfloat16>(c));
    case kv_type::i8:
      return fn(kernel_problem<float, std::int8_t>(c));
    case kv_type::f16_qkv:
    case kv_type::bf16_qkv:
      break;
  }
  ADD_FAILURE() << "with_problem takes q in the compute type: " << kv_name(c.kv) << " needs with_any_problem";
}

/// The same for every kind, 16-bit q too.
template <class Fn>
void with_any_problem(const kernel_case& c, Fn&& fn) {
  switch (c.kv) {
    case kv_type::f16_qkv:
      return fn(kernel_problem<float, half, half>(c));
    case kv_type::bf16_qkv:
      return fn(kernel_problem<float, bfloat16, bfloat16>(c));
    default:
      return with_problem(c, fn);
  }
}

/// The oracle once, then check_variants over `variants`.
inline void check_kernel_case(const kernel_case& c, const std::vector<variant>& variants) {
  with_any_problem(c, [&](auto&& p) { check_variants(p, variants); });
}

/// The same over every variant (the avx512_bf16 path for bfloat16 q/k/v).
inline void check_kernel_case(const kernel_case& c) {
  check_kernel_case(c, every_variant(every_kernel_mode(), {1, 2, 3}, c.kv == kv_type::bf16_qkv));
}

/// A TEST_P fixture over kernel cases: `TEST_P(name, ...) { check_kernel_case(GetParam()); }`.
class kernel_test : public ::testing::TestWithParam<kernel_case> {};

}  // namespace hwtest
