// Tests of int8 K/V (quantize.hpp): q and out float, K and V std::int8_t with one fp32
// scale per (token, kv head) in options.k_scale / v_scale. Checked on every path this
// CPU runs (the scalar build and each SIMD path widen int8 on load):
//   1. the kernel harness (kernel_harness.hpp) on the stored values: every mode, path
//      and thread count against the oracle on scale·q, with the tolerance derived for
//      fp32 (the kernels use scale·q unrounded, the oracle rounded: test_util.hpp),
//      over shapes around the pack widths, tiles and decode chunks, MHA/GQA/MQA, K in
//      rows and key blocks, and every mask kind;
//   2. the quantization bound: against the oracle on the values before quantization,
//      every variant within the tolerance whose storage error is the int8 step,
//      max|row|/254 (test_util.hpp's unit_roundoff<std::int8_t>);
//   3. FlashAttention's accuracy rule: against fp64 on the unquantized values, the
//      error is at most 2× that of a naive int8 pipeline (the same quantization, then
//      dequantized fp32 K/V, fp32 logits, softmax and sums);
//   4. the scale options' errors: missing, misshapen, given for other storage, or
//      overlapping out; nothing is written.
#include <gtest/gtest.h>

#include <cmath>
#include <cstddef>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include "kernel_harness.hpp"
#include "naive_pipeline.hpp"

namespace {

using namespace hwtest;

/// Shapes around every pack width (d 1–17, 64, 128), the flash tiles and the decode
/// chunk (Nk 1023–1025 and 2100), with heads, layout, causal and key blocks rotating.
std::vector<kernel_case> shape_cases() {
  const std::pair<std::size_t, std::size_t> seqs[] = {{1, 1}, {1, 33}, {17, 3}, {113, 203}, {3, 1025}, {1, 2100}};
  const std::size_t dims[] = {1, 4, 7, 8, 9, 15, 16, 17, 64, 128};
  const heads hs[] = {mha, gqa, mqa};
  std::vector<kernel_case> cases;
  for (std::size_t s = 0; s < 6; ++s)
    for (std::size_t d = 0; d < 10; ++d) {
      if (dims[d] >= 64 && seqs[s].second > 1000 && s % 2) continue;  // keep the suite short
      kernel_case c(seqs[s].first, seqs[s].second, dims[d], (s + d) % 2 ? dims[d] : dims[(d + 3) % 10],
                    hs[(s + d) % 3], kv_type::i8, (s + d / 2) % 2 ? layout::bshd : layout::bhsd);
      if ((s + d / 3) % 2) c.mask.causal = causal_mode::bottom_right;
      c.key_blocks = (s + d / 4) % 2;
      c.B = 1 + d % 2;
      cases.push_back(c);
    }
  return cases;
}

/// Every mask kind on a decode shape and a prefill shape, K in rows and blocks.
std::vector<kernel_case> mask_cases() {
  const kernel_case shapes[] = {{1, 37, 9, 5, gqa, kv_type::i8, layout::bshd}, {40, 70, 16, 16, mqa, kv_type::i8}};
  const std::vector<mask_spec> masks = every_mask_kind();
  std::vector<kernel_case> cases;
  for (std::size_t m = 0; m < masks.size(); ++m)
    for (std::size_t s = 0; s < 2; ++s) {
      kernel_case c = shapes[s];
      c.mask = masks[m];
      c.B = 2;
      c.key_blocks = (m + s) % 2;
      cases.push_back(c);
    }
  return cases;
}

class int8_kv : public kernel_test {};

TEST_P(int8_kv, every_variant_matches_the_oracle_on_the_stored_values) { check_kernel_case(GetParam()); }

TEST_P(int8_kv, every_variant_is_within_the_quantization_bound) {
  kernel_problem<float, std::int8_t> p(GetParam());
  p.compute_oracle(true);
  check_variants(p, every_variant(every_kernel_mode(), {1, 2}));
}

INSTANTIATE_TEST_SUITE_P(shapes, int8_kv, ::testing::ValuesIn(shape_cases()), param_name);
INSTANTIATE_TEST_SUITE_P(every_mask_kind, int8_kv, ::testing::ValuesIn(mask_cases()), param_name);

struct accuracy_shape {
  std::size_t Hq, Hkv, Nq, Nk, D;
  bool causal;
};

class int8_accuracy : public ::testing::TestWithParam<accuracy_shape> {};

TEST_P(int8_accuracy, within_twice_the_naive_int8_pipeline) {
  const accuracy_shape a = GetParam();
  tensor<float> q(1, a.Hq, a.Nq, a.D), drawn_k(1, a.Hkv, a.Nk, a.D), drawn_v(1, a.Hkv, a.Nk, a.D);
  fill_uniform(q, 21), fill_uniform(drawn_k, 22), fill_uniform(drawn_v, 23);
  tensor<float> k_scale, v_scale;
  const tensor<std::int8_t> k = quantized(drawn_k, layout::bhsd, k_scale), v = quantized(drawn_v, layout::bhsd, v_scale);
  attention_options opt;
  opt.causal = a.causal ? causal_mode::bottom_right : causal_mode::none;
  tensor<double> exact(1, a.Hq, a.Nq, a.D);
  reference::attention(q.cview(), drawn_k.cview(), drawn_v.cview(), exact.view, opt);
  tensor<float> naive(1, a.Hq, a.Nq, a.D);  // the naive pipeline on K/V as stored, dequantized to fp32
  naive_attention(q, dequantized<float>(k, k_scale, layout::bhsd), dequantized<float>(v, v_scale, layout::bhsd),
                  naive, a.causal);
  const double naive_error = max_error(naive, exact);
  ASSERT_GT(naive_error, 0.0);
  opt.k_scale = k_scale.cview(), opt.v_scale = v_scale.cview();
  for (const variant& var : every_variant(every_kernel_mode(), {1})) {
    tensor<float> out(1, a.Hq, a.Nq, a.D);
    attention_options run = opt;
    var.apply(run);
    attention(q.cview(), k.cview(), v.cview(), out.view, run);
    const double error = max_error(out, exact);
    EXPECT_LE(error, 2 * naive_error) << var.name() << ": max |out − fp64| = " << error << ", the naive pipeline's "
                                      << naive_error;
    std::printf("  i8 Hq %zu Hkv %zu Nq %4zu Nk %4zu d %3zu %-6s %-26s error %.3g = %.2f × naive %.3g\n", a.Hq, a.Hkv,
                a.Nq, a.Nk, a.D, a.causal ? "causal" : "", var.name().c_str(), error, error / naive_error,
                naive_error);
  }
}

INSTANTIATE_TEST_SUITE_P(shapes, int8_accuracy,
                         ::testing::Values(accuracy_shape{8, 2, 1, 4096, 128, true},
                                           accuracy_shape{4, 4, 256, 256, 64, true},
                                           accuracy_shape{4, 1, 100, 700, 80, false}));

/// The scale options' errors, each leaving out as it was.
TEST(int8_kv_errors, scales_missing_misshapen_misplaced_or_overlapping_out) {
  const std::size_t Hq = 4, Hkv = 2, Nq = 3, Nk = 40, D = 16;
  tensor<float> q(1, Hq, Nq, D), drawn(1, Hkv, Nk, D);
  fill_uniform(q, 1), fill_uniform(drawn, 2);
  tensor<float> scale;
  const tensor<std::int8_t> k = quantized(drawn, layout::bhsd, scale);
  tensor<float> wrong(1, Hkv, Nk + 1, 1), out(1, Hq, Nq, D);
  std::vector<float> shared(Hq * Nq * D + Hkv * Nk);  // out and a scale view over one buffer
  const tensor_view<float> shared_out = bhsd(shared.data(), 1, Hq, Nq, D);
  const tensor_view<const float> shared_scale = bhsd(static_cast<const float*>(shared.data()), 1, Hkv, Nk, 1);
  auto expect_error = [&](const attention_options& opt, const tensor_view<float>& o, const std::string& says) {
    std::vector<float> before(o.data(), o.data() + Hq * Nq * D);
    try {
      attention(q.cview(), k.cview(), k.cview(), o, opt);
      ADD_FAILURE() << "no error; expected one saying: " << says;
    } catch (const headwise::error& e) {
      EXPECT_NE(std::string(e.what()).find(says), std::string::npos) << e.what();
    }
    EXPECT_EQ(0, std::memcmp(before.data(), o.data(), before.size() * sizeof(float))) << says;
  };
  attention_options opt;
  expect_error(opt, out.view, "int8 K/V need options.k_scale");
  opt.k_scale = scale.cview();
  expect_error(opt, out.view, "int8 K/V need options.v_scale");
  opt.v_scale = wrong.cview();
  expect_error(opt, out.view, "options.v_scale");
  opt.v_scale = scale.cview();
  opt.k_scale = wrong.cview();
  expect_error(opt, out.view, "options.k_scale");
  opt.k_scale = shared_scale;
  expect_error(opt, shared_out, "out overlaps the memory of options.k_scale");
  attention_options float_kv;
  float_kv.k_scale = scale.cview();
  try {
    attention(q.cview(), drawn.cview(), drawn.cview(), out.view, float_kv);
    ADD_FAILURE() << "k_scale with float K/V: no error";
  } catch (const headwise::error& e) {
    EXPECT_NE(std::string(e.what()).find("options.k_scale is for int8 K/V only"), std::string::npos) << e.what();
  }
}

/// attention_varlen with int8 pages: the scales come with the pools, paged as the
/// rows; missing or misshapen pools, or options.k_scale beside pages, are errors.
TEST(int8_kv_errors, varlen_pages_take_their_scales_from_the_view) {
  const std::size_t Hq = 2, Hkv = 1, D = 8, page = 16, pages = 2;
  tensor<float> q(1, Hq, 1, D), drawn(pages, Hkv, page, D);
  fill_uniform(q, 1), fill_uniform(drawn, 2);
  tensor<float> scale;
  const tensor<std::int8_t> pool = quantized(drawn, layout::bhsd, scale);
  const std::vector<std::int32_t> table = {1, 0}, used = {20};
  paged_kv_view<const std::int8_t> kv;
  kv.k_pages = kv.v_pages = pool.cview();
  kv.block_table = table;
  kv.pages_per_seq = 2;
  varlen_batch vb;
  vb.seqused_k = used;
  tensor<float> out(1, Hq, 1, D);
  auto expect_error = [&](const paged_kv_view<const std::int8_t>& v, const attention_options& opt,
                          const std::string& says) {
    try {
      attention_varlen(q.cview(), v, out.view, vb, opt);
      ADD_FAILURE() << "no error; expected one saying: " << says;
    } catch (const headwise::error& e) {
      EXPECT_NE(std::string(e.what()).find(says), std::string::npos) << e.what();
    }
  };
  expect_error(kv, {}, "int8 K/V need kv.k_scale_pages");
  kv.k_scale_pages = kv.v_scale_pages = scale.cview();
  attention_options with_scale;
  with_scale.k_scale = scale.cview();
  expect_error(kv, with_scale, "must be unset with K/V in pages");
  tensor<float> short_scale(pages, Hkv, page - 1, 1);
  paged_kv_view<const std::int8_t> misshapen = kv;
  misshapen.v_scale_pages = short_scale.cview();
  expect_error(misshapen, {}, "kv.v_scale_pages");
  // The scales paged as the rows: sequence 0 is page 1 then 4 keys of page 0.
  attention_varlen(q.cview(), kv, out.view, vb);
  tensor<float> k_seq(1, Hkv, 20, D);
  for (std::size_t j = 0; j < 20; ++j)
    for (std::size_t d = 0; d < D; ++d)
      k_seq(0, 0, j, d) = scale.view(j < page ? 1 : 0, 0, j % page, 0) * float(pool.view(j < page ? 1 : 0, 0, j % page, d));
  tensor<float> ref(1, Hq, 1, D);
  attention_options causal;
  reference::attention(q.cview(), k_seq.cview(), k_seq.cview(), ref.view, causal);
  error_model m;
  m.Dk = D, m.Nk = 20, m.scale = 1 / std::sqrt(double(D));
  m.storage_u = unit_roundoff<float>();  // the oracle read scale·q rounded, the kernels unrounded
  EXPECT_LE(max_abs_diff(out.view, ref.view), attention_tolerance<float>(m));
}

/// The int8 caches quantize on append exactly as quantize_int8 does, so attention over
/// them (kv_cache: rows and key blocks, through attention(); paged_kv_cache, through
/// attention_varlen) gives the bits of attention() on quantize_int8 of the same rows.
TEST(int8_caches, attention_over_the_caches_is_attention_over_quantize_int8) {
  const std::size_t Hq = 4, Hkv = 2, N = 70, D = 24;
  tensor<float> q(1, Hq, 1, D), k(1, Hkv, N, D), v(1, Hkv, N, D);
  fill_uniform(q, 5), fill_uniform(k, 6), fill_uniform(v, 7);
  tensor<float> ks, vs;
  const tensor<std::int8_t> k8 = quantized(k, layout::bhsd, ks), v8 = quantized(v, layout::bhsd, vs);
  for (const variant& var : every_variant({kernel_mode::decode, kernel_mode::flash}, {1, 2})) {
    SCOPED_TRACE(var.name());
    attention_options opt;
    opt.causal = causal_mode::bottom_right;
    var.apply(opt);
    tensor<float> want(1, Hq, 1, D), got(1, Hq, 1, D);
    attention_options direct = opt;
    direct.k_scale = ks.cview(), direct.v_scale = vs.cview();
    attention(q.cview(), k8.cview(), v8.cview(), want.view, direct);
    auto same_bits = [&](const char* what) {
      EXPECT_EQ(0, std::memcmp(want.view.data(), got.view.data(), Hq * D * sizeof(float))) << what;
    };
    kv_cache<std::int8_t> rows(1, Hkv, N, D);
    rows.append(k.cview().seq_slice(0, 30), v.cview().seq_slice(0, 30));
    rows.append(k.cview().seq_slice(30, N - 30), v.cview().seq_slice(30, N - 30));
    attention_options o = opt;
    o.k_scale = rows.key_scales(), o.v_scale = rows.value_scales();
    attention(q.cview(), rows.keys(), rows.values(), got.view, o);
    same_bits("kv_cache rows");
    kv_cache<std::int8_t, kv_layout::key_blocks> blocks(1, Hkv, N, D);
    blocks.append(k.cview(), v.cview());
    o.k_scale = blocks.key_scales(), o.v_scale = blocks.value_scales();
    attention(q.cview(), blocks.keys(), blocks.values(), got.view, o);
    std::vector<std::int8_t> packed(key_blocks_elements(1, Hkv, N, D));
    pack_key_blocks(k8.cview(), key_blocks_bhsd(packed.data(), 1, Hkv, N, D));
    attention(q.cview(), key_blocks_bhsd(static_cast<const std::int8_t*>(packed.data()), 1, Hkv, N, D), v8.cview(),
              want.view, direct);
    same_bits("kv_cache key blocks");
    attention(q.cview(), k8.cview(), v8.cview(), want.view, direct);
    paged_kv_cache<std::int8_t> pool(8, Hkv, 16, D, D, 2, 8);
    const std::int32_t seq = pool.add_sequence();
    pool.append(seq, k.cview().seq_slice(0, 17), v.cview().seq_slice(0, 17));
    pool.append(seq, k.cview().seq_slice(17, N - 17), v.cview().seq_slice(17, N - 17));
    const std::vector<std::int32_t> used = {std::int32_t(N)}, which = {seq};
    attention_varlen(q.cview(), pool.view(which), got.view, varlen_batch{{}, {}, used}, opt);
    same_bits("paged_kv_cache");
  }
}

}  // namespace
