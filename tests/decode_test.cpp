// Tests of the split-KV decode kernel (kernels/decode.hpp) against the oracle.
//
// For K/V stored as S (float, double, half, bfloat16) the inputs are generated in
// double, rounded once to S, and two questions are asked:
//   1. Arithmetic: against reference::attention on the *rounded* K/V (the storage
//      rounding is input quantisation, identical for both) the error is within the
//      compute type's bound, attention_tolerance<float or double>.
//   2. Storage (16-bit only): against the reference on the unrounded K/V, the error
//      is at most 2× that of a naive computation in the same precision: q, K, V,
//      the scaled scores, the probabilities and the output each rounded to S (with
//      fp32 accumulation in between), the usual "same-precision naive path" of
//      FlashAttention's tests.
// Every case runs SIMD at 1, 2 and 3 threads (bitwise identical: memcmp) and the
// 1-wide build (force_scalar). Nk straddles the chunk (decode_chunk_keys), the
// online-softmax block (decode_block_keys), the key block and the pack width; MHA,
// GQA, MQA; Nq 1, 2, 4; every mask kind. Each case runs with K in rows and again
// with K in key blocks (key_blocks.hpp), whose score tile is a different code path.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "mask_cases.hpp"
#include "test_util.hpp"

namespace {

using namespace hwtest;

enum class storage { f32, f64, f16, bf16 };
const char* storage_name(storage s) {
  static const char* names[] = {"f32", "f64", "f16", "bf16"};
  return names[int(s)];
}

struct decode_case {
  storage st;
  std::size_t B, Hq, Hkv, Nq, Nk, Dk, Dv;
  layout lay;
  mask_kind mask;
  bool key_blocks = false;  // K passed as a key_blocks_view
};

std::string case_name(const ::testing::TestParamInfo<decode_case>& info) {
  const decode_case& c = info.param;
  std::ostringstream os;
  os << storage_name(c.st) << "_B" << c.B << "_Hq" << c.Hq << "_Hkv" << c.Hkv << "_Nq" << c.Nq << "_Nk" << c.Nk
     << "_Dk" << c.Dk << "_Dv" << c.Dv << "_" << layout_name(c.lay) << "_" << mask_name(c.mask)
     << (c.key_blocks ? "_key_blocks" : "");
  return os.str();
}

/// Decode's figures for the mask kinds: windows wider than a block and narrower
/// than a chunk, gentle ALiBi slopes for long KV.
mask_recipe decode_recipe() {
  mask_recipe r;
  r.everything_causal = causal_mode::bottom_right;
  r.window_left = 300, r.window_right = 2;
  r.sink_window_left = 20, r.sinks = 5;
  r.visible = 0.6f;
  r.hide_row0_in_every_head = false;
  r.alibi_first_exponent = 3;
  r.softcap = 0.6;
  r.pruned_head = 1;
  r.seed = 7;
  return r;
}

/// A copy of t with every element rounded to S.
template <class S, class T>
tensor<S> rounded(const tensor<T>& t, layout lay) {
  const auto& v = t.view;
  tensor<S> r(v.batch(), v.heads(), v.seq(), v.dim(), lay);
  for (std::size_t b = 0; b < v.batch(); ++b)
    for (std::size_t h = 0; h < v.heads(); ++h)
      for (std::size_t s = 0; s < v.seq(); ++s)
        for (std::size_t d = 0; d < v.dim(); ++d) r(b, h, s, d) = static_cast<S>(v(b, h, s, d));
  return r;
}

template <class S>
double round_to(double x) {
  return double(static_cast<float>(S(static_cast<float>(x))));
}

/// The naive same-precision path (no masks; causal none or bottom_right): q, K, V,
/// scores, probabilities and the output rounded to S, sums in fp32.
template <class S>
tensor<float> naive_low_precision(const tensor<float>& q, const tensor<float>& k, const tensor<float>& v,
                                  bool bottom_right, layout lay) {
  const std::size_t B = q.view.batch(), Hq = q.view.heads(), Nq = q.view.seq(), Dk = q.view.dim();
  const std::size_t Nk = k.view.seq(), Dv = v.view.dim(), group = Hq / k.view.heads();
  const auto scale = float(1 / std::sqrt(double(Dk)));
  tensor<float> out(B, Hq, Nq, Dv, lay);
  std::vector<float> p(Nk);
  for (std::size_t b = 0; b < B; ++b)
    for (std::size_t h = 0; h < Hq; ++h)
      for (std::size_t i = 0; i < Nq; ++i) {
        const std::size_t visible = bottom_right ? std::min(Nk, i + 1 + Nk - Nq) : Nk;
        float m = -INFINITY, l = 0;
        for (std::size_t j = 0; j < visible; ++j) {
          float dot = 0;
          for (std::size_t d = 0; d < Dk; ++d)
            dot += float(round_to<S>(q.view(b, h, i, d)) * round_to<S>(k.view(b, h / group, j, d)));
          p[j] = float(round_to<S>(scale * dot));
          m = std::max(m, p[j]);
        }
        for (std::size_t j = 0; j < visible; ++j) l += (p[j] = std::exp(p[j] - m));
        for (std::size_t j = 0; j < visible; ++j) p[j] = float(round_to<S>(p[j] / l));
        for (std::size_t d = 0; d < Dv; ++d) {
          float acc = 0;
          for (std::size_t j = 0; j < visible; ++j) acc += p[j] * float(round_to<S>(v.view(b, h / group, j, d)));
          out(b, h, i, d) = float(round_to<S>(acc));
        }
      }
  return out;
}

template <class T, class S>
void check_case(const decode_case& c) {
  tensor<T> q(c.B, c.Hq, c.Nq, c.Dk, c.lay), k(c.B, c.Hkv, c.Nk, c.Dk, c.lay), v(c.B, c.Hkv, c.Nk, c.Dv, c.lay);
  fill_uniform(q, 1);
  fill_uniform(k, 2);
  fill_uniform(v, 3);
  const tensor<S> ks = rounded<S>(k, c.lay), vs = rounded<S>(v, c.lay);
  const masked_options mo(c.mask, c.B, c.Hq, c.Nq, c.Nk, decode_recipe());
  // K in key blocks, padding keys of the last block filled with NaN: they must never
  // reach a result.
  std::vector<S> kb_storage(key_blocks_elements(c.B, c.Hkv, c.Nk, c.Dk),
                            S(std::numeric_limits<float>::quiet_NaN()));
  const key_blocks_view<S> kb = key_blocks_bhsd(kb_storage.data(), c.B, c.Hkv, c.Nk, c.Dk);
  for (std::size_t b = 0; b < c.B; ++b)
    for (std::size_t h = 0; h < c.Hkv; ++h)
      for (std::size_t s = 0; s < c.Nk; ++s)
        for (std::size_t d = 0; d < c.Dk; ++d) kb(b, h, s, d) = ks.view(b, h, s, d);
  auto run = [&](const tensor_view<T>& out, const attention_options& o) {
    if (c.key_blocks)
      attention(q.cview(), key_blocks_view<const S>(kb), vs.cview(), out, o);
    else
      attention(q.cview(), ks.cview(), vs.cview(), out, o);
  };

  tensor<T> ref(c.B, c.Hq, c.Nq, c.Dv, c.lay);
  std::vector<float> ref_lse(c.B * c.Hq * c.Nq);
  attention_options opt = mo.opt;
  opt.lse = lse_view(ref_lse.data(), c.B, c.Hq, c.Nq);
  reference::attention(q.cview(), ks.cview(), vs.cview(), ref.view, opt);

  const double u = unit_roundoff<T>(), scale = 1 / std::sqrt(double(c.Dk)), extra = 4 * u * mo.extra_logit;
  const double tol = mo.max_head_scale * (attention_tolerance<T>(c.Dk, c.Nk, scale, 1, 1, 1) + 2 * extra);
  const double lse_tol = (double(c.Dk) + 2) * u * scale * double(c.Dk) + extra + (double(c.Nk) + 16) * u +
                         8 * unit_roundoff<float>();

  struct variant {
    bool scalar;
    unsigned threads;
  };
  std::vector<T> first_bits[2];
  tensor<T> simd_out(c.B, c.Hq, c.Nq, c.Dv, c.lay);
  for (const variant var : {variant{false, 1}, variant{false, 2}, variant{false, 3}, variant{true, 1}}) {
    tensor<T> out(c.B, c.Hq, c.Nq, c.Dv, c.lay);
    std::fill(out.storage.begin(), out.storage.end(), T(7));  // every element must be written
    std::vector<float> lse(ref_lse.size(), 7.0f);
    opt = mo.opt;
    opt.kernel = kernel_mode::decode;
    opt.force_scalar = var.scalar;
    opt.threads = var.threads;
    opt.lse = lse_view(lse.data(), c.B, c.Hq, c.Nq);
    run(out.view, opt);

    const std::string what = std::string(var.scalar ? "scalar" : "simd") + " threads " + std::to_string(var.threads);
    const double err = max_abs_diff(out.view, ref.view);
    EXPECT_TRUE(err <= tol) << what << ": max |out - ref| = " << err << " > " << tol;
    double lse_err = 0;
    for (std::size_t e = 0; e < lse.size(); ++e) {
      const double a = lse[e], r = ref_lse[e];
      if (a == r) continue;  // equal, including both -inf
      lse_err = std::isfinite(a) && std::isfinite(r) ? std::max(lse_err, std::fabs(a - r) / std::max(1.0, std::fabs(r)))
                                                     : std::numeric_limits<double>::quiet_NaN();
    }
    EXPECT_TRUE(lse_err <= lse_tol) << what << ": lse relative error " << lse_err << " > " << lse_tol;
    std::vector<T>& bits = first_bits[var.scalar];
    if (bits.empty())
      bits = out.storage;
    else
      EXPECT_EQ(0, std::memcmp(bits.data(), out.storage.data(), bits.size() * sizeof(T)))
          << what << ": result differs from 1 thread";
    if (!var.scalar && var.threads == 1) simd_out.storage = out.storage;  // same size: the view stays valid
  }

  if constexpr (is_storage_16<S>) {
    if (c.mask != mask_kind::none && c.mask != mask_kind::causal_bottom_right) return;
    tensor<T> exact(c.B, c.Hq, c.Nq, c.Dv, c.lay);
    reference::attention(q.cview(), k.cview(), v.cview(), exact.view, mo.opt);
    const tensor<float> naive = naive_low_precision<S>(q, k, v, c.mask == mask_kind::causal_bottom_right, c.lay);
    const double naive_err = max_abs_diff(naive.view, exact.view), err = max_abs_diff(simd_out.view, exact.view);
    EXPECT_TRUE(err <= 2 * naive_err) << storage_name(c.st) << ": error vs unrounded K/V " << err
                                      << " > 2 × naive same-precision error " << naive_err;
  }
}

class decode_test : public ::testing::TestWithParam<decode_case> {};

TEST_P(decode_test, matches_reference_and_is_thread_count_invariant) {
  const decode_case& c = GetParam();
  switch (c.st) {
    case storage::f32: return check_case<float, float>(c);
    case storage::f64: return check_case<double, double>(c);
    case storage::f16: return check_case<float, half>(c);
    case storage::bf16: return check_case<float, bfloat16>(c);
  }
}

struct heads {
  std::size_t Hq, Hkv;
};
const heads mha{2, 2}, gqa{4, 2}, mqa{3, 1};
// The block of the d 64 cases below (32 keys for float and 16-bit K/V alike).
constexpr std::size_t C = kernels::decode_chunk_keys, Kb = kernels::decode_block_keys(2 * 64 * sizeof(float));
static_assert(Kb == kernels::decode_block_keys(2 * 64 * sizeof(half)));

/// Nk around the pack width, the online-softmax block and the chunk × GQA shapes
/// × Nq × storage, no mask.
std::vector<decode_case> shape_cases() {
  std::vector<decode_case> cases;
  const std::size_t W = simd::vector_width<float>;
  const std::pair<heads, std::size_t> groups[] = {{mha, 1}, {mha, 4}, {gqa, 1}, {gqa, 2}, {gqa, 4}, {mqa, 1}, {mqa, 2}};
  for (storage st : {storage::f32, storage::f16, storage::bf16})
    for (auto [h, nq] : groups)
      for (std::size_t nk : {std::size_t(1), W + 1, Kb - 1, Kb + 1, C - 1, C, C + 1, 2 * C + Kb + 3})
        cases.push_back({st, 1, h.Hq, h.Hkv, nq, nk, 64, 64, nq == 2 ? layout::bshd : layout::bhsd, mask_kind::none});
  return cases;
}

/// Every mask kind, storage types, across chunk boundaries (window_sinks at 2C+Kb+3
/// leaves the middle chunk with no visible key, so it does not exist).
std::vector<decode_case> mask_cases() {
  std::vector<decode_case> cases;
  for (int m = 0; m <= int(mask_kind::everything); ++m)
    for (storage st : {storage::f32, storage::f16, storage::f64})
      for (std::size_t nq : {1, 4}) {
        const std::size_t nk = nq == 1 ? 2 * C + Kb + 3 : C + 1;
        cases.push_back({st, 2, 4, 2, nq, nk, 16, 24, layout::bshd, mask_kind(m)});
      }
  return cases;
}

/// Head dims straddling the pack width (1, W-1, W, W+1), Dk != Dv, and d = 128.
std::vector<decode_case> dim_cases() {
  std::vector<decode_case> cases;
  const std::size_t W = simd::vector_width<float>;
  for (storage st : {storage::f32, storage::f64, storage::bf16, storage::f16})
    for (std::size_t d : {std::size_t(1), W - 1, W, W + 1, std::size_t(128)})
      for (std::size_t dv : {d, std::size_t(2 * W + 3)})
        cases.push_back({st, 1, 8, 2, 2, C + 3, d, dv, layout::bhsd, mask_kind::causal_bottom_right});
  return cases;
}

/// The same cases with K in key blocks.
std::vector<decode_case> with_key_blocks(std::vector<decode_case> cases) {
  for (decode_case& c : cases) c.key_blocks = true;
  return cases;
}

INSTANTIATE_TEST_SUITE_P(shapes, decode_test, ::testing::ValuesIn(shape_cases()), case_name);
INSTANTIATE_TEST_SUITE_P(masks, decode_test, ::testing::ValuesIn(mask_cases()), case_name);
INSTANTIATE_TEST_SUITE_P(dims, decode_test, ::testing::ValuesIn(dim_cases()), case_name);
INSTANTIATE_TEST_SUITE_P(key_blocks_shapes, decode_test, ::testing::ValuesIn(with_key_blocks(shape_cases())),
                         case_name);
INSTANTIATE_TEST_SUITE_P(key_blocks_masks, decode_test, ::testing::ValuesIn(with_key_blocks(mask_cases())),
                         case_name);
INSTANTIATE_TEST_SUITE_P(key_blocks_dims, decode_test, ::testing::ValuesIn(with_key_blocks(dim_cases())),
                         case_name);

// The other kernels take 16-bit K/V too (widened through float, like the oracle).
template <class S>
void check_other_kernels_with_storage() {
  tensor<float> q(1, 4, 5, 24), k(1, 2, 70, 24), v(1, 2, 70, 24);
  fill_uniform(q, 7);
  fill_uniform(k, 8);
  fill_uniform(v, 9);
  const tensor<S> ks = rounded<S>(k, layout::bhsd), vs = rounded<S>(v, layout::bhsd);
  tensor<float> ref(1, 4, 5, 24), got(1, 4, 5, 24);
  attention_options opt;
  opt.causal = causal_mode::bottom_right;
  reference::attention(q.cview(), ks.cview(), vs.cview(), ref.view, opt);
  const double tol = attention_tolerance<float>(24, 70, 1 / std::sqrt(24.0), 1, 1, 1);
  for (kernel_mode mode : {kernel_mode::plain, kernel_mode::flash}) {
    opt.kernel = mode;
    attention(q.cview(), ks.cview(), vs.cview(), got.view, opt);
    const double err = max_abs_diff(got.view, ref.view);
    EXPECT_TRUE(err <= tol) << "kernel " << int(mode) << ": " << err << " > " << tol;
  }
}

TEST(storage_kernels, plain_and_flash_take_half_and_bfloat16) {
  check_other_kernels_with_storage<half>();
  check_other_kernels_with_storage<bfloat16>();
}

// automatic picks decode for one query token and gives the same bits as forcing it.
TEST(decode_dispatch, automatic_takes_decode_for_few_queries) {
  tensor<float> q(1, 8, 1, 32), k(1, 2, 300, 32), v(1, 2, 300, 32), a(1, 8, 1, 32), d(1, 8, 1, 32);
  fill_uniform(q, 4);
  fill_uniform(k, 5);
  fill_uniform(v, 6);
  ASSERT_TRUE(kernels::decode_preferred(1, 4));
  attention_options opt;
  attention(q.cview(), k.cview(), v.cview(), a.view, opt);
  opt.kernel = kernel_mode::decode;
  attention(q.cview(), k.cview(), v.cview(), d.view, opt);
  EXPECT_EQ(0, std::memcmp(a.storage.data(), d.storage.data(), a.storage.size() * sizeof(float)));
}

// The stream plan (how each pass requests its K/V lines) is chosen per core. Requests
// never change a result, so the tests above cover only this machine's plan; this
// checks that each core gets the plan measured for it.
TEST(decode_stream_plan, chosen_per_core) {
  using detail::cpu_core;
  using detail::cpu_signature;
  EXPECT_EQ(cpu_core::amd_zen4, detail::classify(cpu_signature{true, 0x19, 0x11}));  // Genoa
  EXPECT_EQ(cpu_core::amd_zen4, detail::classify(cpu_signature{true, 0x19, 0x61}));  // Raphael
  EXPECT_EQ(cpu_core::amd_zen4, detail::classify(cpu_signature{true, 0x19, 0xa0}));  // Bergamo
  EXPECT_EQ(cpu_core::unknown, detail::classify(cpu_signature{true, 0x19, 0x01}));   // Zen 3 Milan
  EXPECT_EQ(cpu_core::unknown, detail::classify(cpu_signature{true, 0x1a, 0x02}));   // Zen 5 Turin
  EXPECT_EQ(cpu_core::unknown, detail::classify(cpu_signature{false, 0x6, 0x8f}));   // Sapphire Rapids
  EXPECT_EQ(cpu_core::unknown, detail::classify(cpu_signature{false, 0x19, 0x11}));  // not AMD

  const kernels::stream_plan zen4 = kernels::decode_stream_plan(cpu_core::amd_zen4);
  EXPECT_FALSE(zen4.touch_pages);
  EXPECT_EQ(0u, zen4.ahead_rows(512));  // each tile requests its own rows
  const kernels::stream_plan other = kernels::decode_stream_plan(cpu_core::unknown);
  EXPECT_TRUE(other.touch_pages);
  EXPECT_EQ(6u, other.ahead_rows(512));    // fp32 rows at d 128
  EXPECT_EQ(12u, other.ahead_rows(256));   // fp16 rows at d 128
  EXPECT_EQ(1u, other.ahead_rows(65536));  // never less than the next row
}

}  // namespace
