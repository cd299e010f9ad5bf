// Tests of 16-bit attention: q, k and v all half or all bfloat16, out of that type
// or float. Three things are checked on every path this CPU runs (the scalar build,
// baseline, avx2, avx512 convert on load; avx512_bf16 runs bfloat16 on vdpbf16ps):
//   1. the kernel harness (kernel_harness.hpp) around the tiles, for MHA/GQA/MQA,
//      K in rows and key blocks, and every mask kind: every mode, path and thread
//      count within the derived tolerance, whose error model counts the bf16
//      rounding of P on the avx512_bf16 path (test_util.hpp, weight_u);
//   2. FlashAttention's accuracy rule: against the fp64 oracle, the error is at most
//      2× that of a naive pipeline in the same precision (16-bit inputs, fp32 logits
//      and softmax, P rounded to the input type, fp32 sums, out rounded to its type);
//   3. a 16-bit out is exactly the float out rounded (one rounding, to nearest even),
//      and float inputs on the avx512_bf16 path give the avx512 path's bits.
// A path this CPU lacks is skipped by a test that names it, so the log shows which ran.
#include <gtest/gtest.h>

#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "kernel_harness.hpp"
#include "naive_pipeline.hpp"

namespace {

using namespace hwtest;

bool runs(simd_isa isa) {
  for (simd_isa a : available_isas())
    if (a == isa) return true;
  return false;
}

TEST(sixteen_bit_paths, avx512_bf16_runs_here) {
  if (!runs(simd_isa::avx512_bf16))
    GTEST_SKIP() << "this CPU (or build) lacks AVX512-BF16: the avx512_bf16 path (vdpbf16ps tiles) is not tested";
  SUCCEED() << "avx512_bf16 is among the paths every test below runs";
}

TEST(sixteen_bit_paths, amx_is_not_built) {
  GTEST_SKIP() << "no AMX path is built (no AMX CPU was available to test one): bfloat16 runs on avx512_bf16";
}

class sixteen_bit : public kernel_test {};
TEST_P(sixteen_bit, every_variant_matches_the_oracle) { check_kernel_case(GetParam()); }

/// Around the tiles (query tiles of 128 and 256 rows, key tiles of 128 keys, K panels of 32
/// keys, key pairs), head dims odd (a half-filled pair), one pair of registers, and
/// 128; one query row and a few (decode); K in rows and in key blocks.
std::vector<kernel_case> tile_cases() {
  struct shape {
    std::size_t nq, nk, dk, dv;
  };
  const shape shapes[] = {{1, 33, 17, 17},     {3, 129, 64, 64},    {31, 33, 17, 9},     {127, 129, 64, 64},
                          {128, 256, 128, 128}, {129, 255, 33, 40}, {257, 257, 64, 64}, {1, 1000, 128, 128},
                          {2, 1030, 100, 72},   {3, 1101, 96, 80}};
  const heads hs[] = {mha, gqa, mqa};
  const causal_mode causal[] = {causal_mode::none, causal_mode::top_left, causal_mode::bottom_right};
  std::vector<kernel_case> cases;
  for (kv_type kv : {kv_type::bf16_qkv, kv_type::f16_qkv})
    for (std::size_t s = 0; s < std::size(shapes); ++s) {
      kernel_case c{shapes[s].nq, shapes[s].nk, shapes[s].dk, shapes[s].dv, hs[s % 3], kv};
      c.mask.causal = causal[(s + std::size_t(kv == kv_type::f16_qkv)) % 3];
      c.lay = s % 2 ? layout::bshd : layout::bhsd;
      c.key_blocks = s % 3 != 0;
      cases.push_back(c);
    }
  return cases;
}

/// Every mask kind at one shape with two key tiles and a partial one.
std::vector<kernel_case> mask_cases() {
  std::vector<kernel_case> cases;
  for (const mask_spec& m : every_mask_kind()) {
    kernel_case c{70, 300, 40, 24, gqa, kv_type::bf16_qkv};
    c.mask = m;
    cases.push_back(c);
  }
  kernel_case all{70, 300, 40, 24, mqa, kv_type::f16_qkv};
  all.mask = every_mask_kind().back();
  cases.push_back(all);
  return cases;
}

INSTANTIATE_TEST_SUITE_P(tiles, sixteen_bit, ::testing::ValuesIn(tile_cases()), param_name);
INSTANTIATE_TEST_SUITE_P(every_mask_kind, sixteen_bit, ::testing::ValuesIn(mask_cases()), param_name);

/// Rule 2 for inputs X and out O over one shape: every mode, path and thread count.
template <class X, class O>
void check_against_naive(std::size_t Hq, std::size_t Hkv, std::size_t Nq, std::size_t Nk, std::size_t D,
                         bool causal) {
  tensor<float> drawn_q(1, Hq, Nq, D), drawn_k(1, Hkv, Nk, D), drawn_v(1, Hkv, Nk, D);
  fill_uniform(drawn_q, 11), fill_uniform(drawn_k, 12), fill_uniform(drawn_v, 13);
  const tensor<X> q = converted<X>(drawn_q, layout::bhsd), k = converted<X>(drawn_k, layout::bhsd),
                  v = converted<X>(drawn_v, layout::bhsd);
  attention_options opt;
  opt.causal = causal ? causal_mode::bottom_right : causal_mode::none;
  tensor<double> exact(1, Hq, Nq, D);
  reference::attention(q.cview(), k.cview(), v.cview(), exact.view, opt);
  tensor<O> naive(1, Hq, Nq, D);
  naive_attention(q, k, v, naive, causal);
  const double naive_error = max_error(naive, exact);
  ASSERT_GT(naive_error, 0.0);
  for (const variant& var : every_variant(every_kernel_mode(), {1}, std::is_same_v<X, bfloat16>)) {
    tensor<O> out(1, Hq, Nq, D);
    attention_options run = opt;
    var.apply(run);
    attention(q.cview(), k.cview(), v.cview(), out.view, run);
    const double error = max_error(out, exact);
    EXPECT_LE(error, 2 * naive_error) << var.name() << ": max |out − fp64| = " << error
                                      << ", the naive pipeline's " << naive_error;
    std::printf("  %-5s out %-5s Hq %zu Hkv %zu Nq %4zu Nk %4zu d %3zu %-6s %-26s error %.3g = %.2f × naive %.3g\n",
                std::is_same_v<X, bfloat16> ? "bf16" : "f16",
                std::is_same_v<O, float> ? "f32" : std::is_same_v<O, bfloat16> ? "bf16" : "f16", Hq, Hkv, Nq, Nk, D,
                causal ? "causal" : "", var.name().c_str(), error, error / naive_error, naive_error);
  }
}

struct accuracy_shape {
  std::size_t Hq, Hkv, Nq, Nk, D;
  bool causal;
};
const accuracy_shape accuracy_shapes[] = {
    {2, 2, 256, 256, 64, false}, {4, 2, 200, 300, 128, true}, {2, 1, 1, 2000, 128, false}, {2, 1, 4, 700, 64, true}};

TEST(sixteen_bit_accuracy, bfloat16_within_twice_the_naive_pipeline) {
  for (const accuracy_shape& s : accuracy_shapes) {
    SCOPED_TRACE("Hq " + std::to_string(s.Hq) + " Nq " + std::to_string(s.Nq) + " Nk " + std::to_string(s.Nk));
    check_against_naive<bfloat16, bfloat16>(s.Hq, s.Hkv, s.Nq, s.Nk, s.D, s.causal);
    check_against_naive<bfloat16, float>(s.Hq, s.Hkv, s.Nq, s.Nk, s.D, s.causal);
  }
}

TEST(sixteen_bit_accuracy, half_within_twice_the_naive_pipeline) {
  for (const accuracy_shape& s : accuracy_shapes) {
    SCOPED_TRACE("Hq " + std::to_string(s.Hq) + " Nq " + std::to_string(s.Nq) + " Nk " + std::to_string(s.Nk));
    check_against_naive<half, half>(s.Hq, s.Hkv, s.Nq, s.Nk, s.D, s.causal);
    check_against_naive<half, float>(s.Hq, s.Hkv, s.Nq, s.Nk, s.D, s.causal);
  }
}

/// Rule 3: out in X is the float out rounded once, on every mode, path and thread count.
template <class X>
void check_rounded_out() {
  kernel_case c{70, 200, 40, 24, gqa};
  c.mask = every_mask_kind().back();
  masked_options m(c.mask, 1, c.h.Hq, c.Nq, c.Nk);
  tensor<float> drawn_q(1, c.h.Hq, c.Nq, c.Dk), drawn_k(1, c.h.Hkv, c.Nk, c.Dk), drawn_v(1, c.h.Hkv, c.Nk, c.Dv);
  fill_uniform(drawn_q, 1), fill_uniform(drawn_k, 2), fill_uniform(drawn_v, 3);
  const tensor<X> q = converted<X>(drawn_q, layout::bhsd), k = converted<X>(drawn_k, layout::bhsd),
                  v = converted<X>(drawn_v, layout::bhsd);
  for (const variant& var : every_variant(every_kernel_mode(), {1, 3}, std::is_same_v<X, bfloat16>)) {
    attention_options opt = m.opt;
    var.apply(opt);
    tensor<float> wide(1, c.h.Hq, c.Nq, c.Dv);
    tensor<X> narrow(1, c.h.Hq, c.Nq, c.Dv);
    attention(q.cview(), k.cview(), v.cview(), wide.view, opt);
    attention(q.cview(), k.cview(), v.cview(), narrow.view, opt);
    std::size_t differ = 0;
    for (std::size_t n = 0; n < wide.storage.size(); ++n)
      differ += X(wide.storage[n]).bits != narrow.storage[n].bits;
    EXPECT_EQ(differ, 0u) << var.name();
  }
}

TEST(sixteen_bit_out, is_the_float_out_rounded_once) {
  check_rounded_out<bfloat16>();
  check_rounded_out<half>();
}

TEST(sixteen_bit_paths, float_inputs_on_avx512_bf16_run_the_avx512_kernels) {
  if (!runs(simd_isa::avx512_bf16)) GTEST_SKIP() << "this CPU lacks AVX512-BF16: the avx512_bf16 path is not tested";
  kernel_problem<float, bfloat16> p(kernel_case{129, 257, 64, 64, gqa, kv_type::bf16});
  for (kernel_mode mode : every_kernel_mode()) {
    tensor<float> a = p.fresh_out(), b = p.fresh_out();
    std::vector<float> la = p.fresh_lse(), lb = p.fresh_lse();
    p.run(variant{mode, false, simd_isa::avx512, 2}, a, la);
    p.run(variant{mode, false, simd_isa::avx512_bf16, 2}, b, lb);
    EXPECT_EQ(std::memcmp(a.storage.data(), b.storage.data(), a.storage.size() * sizeof(float)), 0)
        << mode_name(mode);
  }
}

}  // namespace
