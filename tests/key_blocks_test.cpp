// Tests of key_view.hpp and key_blocks.hpp, and of attention() with K in key blocks:
// the layout's addressing, pack/unpack (round trip, zero padding, errors), the
// kernels other than decode giving the bits of the row-major call (flash packs the
// same panels from either layout, plain reads the same coordinates in order), and
// the argument checks over the blocks' whole storage. The decode kernel's
// results with key blocks are checked against the oracle in decode_test.cpp.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "test_util.hpp"

namespace {

using namespace hwtest;

TEST(key_blocks, element_b_h_s_d_sits_in_block_s_over_16_at_d_times_16_plus_s_mod_16) {
  constexpr std::size_t B = 2, H = 3, S = 21, D = 5;
  std::vector<int> data(key_blocks_elements(B, H, S, D));
  EXPECT_EQ(data.size(), B * H * 32 * D);
  const key_blocks_view<int> kb = key_blocks_bhsd(data.data(), B, H, S, D);
  EXPECT_EQ(kb.blocks(), 2u);
  EXPECT_EQ(kb.head_stride(), std::ptrdiff_t(32 * D));
  EXPECT_EQ(kb.batch_stride(), std::ptrdiff_t(H * 32 * D));
  for (std::size_t b = 0; b < B; ++b)
    for (std::size_t h = 0; h < H; ++h)
      for (std::size_t s = 0; s < S; ++s)
        for (std::size_t d = 0; d < D; ++d)
          EXPECT_EQ(&kb(b, h, s, d) - data.data(),
                    std::ptrdiff_t((b * H + h) * 32 * D + s / 16 * 16 * D + d * 16 + s % 16));
  const tensor_view<int> st = kb.storage();
  EXPECT_EQ(st.seq(), 32u);
  EXPECT_EQ(&st(1, 2, 31, 4), &data.back());
}

TEST(key_blocks, pack_then_unpack_round_trips_and_pads_with_zeros) {
  tensor<float> k(2, 3, 37, 7, layout::bshd), back(2, 3, 37, 7);
  fill_uniform(k, 1);
  std::vector<float> data(key_blocks_elements(2, 3, 37, 7), 5.0f);
  const key_blocks_view<float> kb = key_blocks_bhsd(data.data(), 2, 3, 37, 7);
  pack_key_blocks(k.cview(), kb);
  for (std::size_t b = 0; b < 2; ++b)
    for (std::size_t h = 0; h < 3; ++h)
      for (std::size_t s = 37; s < 48; ++s)
        for (std::size_t d = 0; d < 7; ++d) EXPECT_EQ(kb(b, h, s, d), 0.0f);
  unpack_key_blocks(key_blocks_view<const float>(kb), back.view);
  EXPECT_EQ(max_abs_diff(back.view, k.view), 0.0);
}

// Issue 25: rows of seq 0 from bhsd() (zero strides) were refused as overlapping;
// packing or unpacking no key is valid and writes nothing.
TEST(key_blocks, pack_and_unpack_take_no_keys) {
  std::vector<float> rows(6, 5.0f), blocks(6, 5.0f);
  pack_key_blocks(bhsd<const float>(rows.data(), 1, 3, 0, 2), key_blocks_bhsd(blocks.data(), 1, 3, 0, 2));
  unpack_key_blocks(key_blocks_bhsd<const float>(blocks.data(), 1, 3, 0, 2), bhsd(rows.data(), 1, 3, 0, 2));
  EXPECT_EQ(rows, std::vector<float>(6, 5.0f));
  EXPECT_EQ(blocks, std::vector<float>(6, 5.0f));
}

TEST(key_blocks, pack_and_unpack_reject_other_shapes_and_overlap) {
  tensor<half> k(1, 2, 20, 4);
  std::vector<half> data(key_blocks_elements(1, 2, 20, 4));
  EXPECT_THROW(pack_key_blocks(k.cview(), key_blocks_bhsd(data.data(), 1, 2, 19, 4)), error);
  EXPECT_THROW(pack_key_blocks(k.cview(), key_blocks_bhsd(data.data(), 1, 1, 20, 4)), error);
  EXPECT_THROW(unpack_key_blocks(key_blocks_bhsd<const half>(data.data(), 1, 2, 20, 5), k.view), error);
  // blocks over the rows' own memory
  EXPECT_THROW(pack_key_blocks(k.cview(), key_blocks_bhsd(k.storage.data(), 1, 1, 8, 1)), error);
  EXPECT_THROW(pack_key_blocks(k.cview(), key_blocks_bhsd<half>(nullptr, 1, 2, 20, 4)), error);
}

struct case_kb {
  std::size_t Hq, Hkv, Nq, Nk, D;
};

/// Every kernel with K in key blocks against the same call with K in rows: bitwise
/// for plain and flash, within the oracle's tolerance for decode (another score tile).
template <class S>
void check_kernels(const case_kb& c) {
  tensor<float> q(2, c.Hq, c.Nq, c.D, layout::bshd), kf(2, c.Hkv, c.Nk, c.D), v(2, c.Hkv, c.Nk, c.D);
  fill_uniform(q, 3);
  fill_uniform(kf, 4);
  fill_uniform(v, 5);
  tensor<S> k(2, c.Hkv, c.Nk, c.D), vs(2, c.Hkv, c.Nk, c.D);
  for (std::size_t b = 0; b < 2; ++b)
    for (std::size_t h = 0; h < c.Hkv; ++h)
      for (std::size_t s = 0; s < c.Nk; ++s)
        for (std::size_t d = 0; d < c.D; ++d) {
          k(b, h, s, d) = static_cast<S>(kf.view(b, h, s, d));
          vs(b, h, s, d) = static_cast<S>(v.view(b, h, s, d));
        }
  std::vector<S> data(key_blocks_elements(2, c.Hkv, c.Nk, c.D));
  const key_blocks_view<S> kb = key_blocks_bhsd(data.data(), 2, c.Hkv, c.Nk, c.D);
  pack_key_blocks(k.cview(), kb);
  const double tol = attention_tolerance<float>(c.D, c.Nk, 1 / std::sqrt(double(c.D)), 1, 1, 1);
  for (kernel_mode mode : {kernel_mode::automatic, kernel_mode::plain, kernel_mode::flash, kernel_mode::decode}) {
    attention_options opt;
    opt.causal = causal_mode::bottom_right;
    opt.kernel = mode;
    tensor<float> rows(2, c.Hq, c.Nq, c.D), blocks(2, c.Hq, c.Nq, c.D);
    attention(q.cview(), k.cview(), vs.cview(), rows.view, opt);
    attention(q.cview(), key_blocks_view<const S>(kb), vs.cview(), blocks.view, opt);
    const bool decodes = detail::runs_decode(opt, c.Nq, c.Hq / c.Hkv);
    const double err = max_abs_diff(blocks.view, rows.view);
    if (decodes)
      EXPECT_TRUE(err <= tol) << "mode " << int(mode) << ": " << err << " > " << tol;
    else
      EXPECT_EQ(err, 0.0) << "mode " << int(mode) << ": the same values in the same arithmetic";
  }
}

TEST(key_blocks, every_kernel_takes_them) {
  for (const case_kb& c : {case_kb{4, 2, 1, 70, 24}, case_kb{4, 2, 40, 70, 24}, case_kb{8, 1, 3, 17, 64}}) {
    check_kernels<float>(c);
    check_kernels<half>(c);
  }
}

TEST(key_blocks, attention_checks_the_blocks_whole_storage) {
  tensor<float> q(1, 2, 1, 8), v(1, 2, 20, 8);
  std::vector<float> data(key_blocks_elements(1, 2, 20, 8) + 8 * 2);
  const key_blocks_view<const float> kb = key_blocks_bhsd<const float>(data.data(), 1, 2, 20, 8);
  // out inside the padding of head 1's last block: it overlaps k's memory
  float* padding = data.data() + key_blocks_elements(1, 2, 20, 8) - 8;
  EXPECT_THROW(attention(q.cview(), kb, v.cview(), bhsd(padding, 1, 2, 1, 8)), error);
  // out just past the storage: fine
  std::vector<float> out(16);
  attention(q.cview(), kb, v.cview(), bhsd(data.data() + key_blocks_elements(1, 2, 20, 8), 1, 2, 1, 8));
  attention(q.cview(), kb, v.cview(), bhsd(out.data(), 1, 2, 1, 8));
  // the usual shape and pointer rules
  EXPECT_THROW(attention(q.cview(), key_blocks_bhsd<const float>(data.data(), 1, 2, 21, 8), v.cview(),
                         bhsd(out.data(), 1, 2, 1, 8)),
               error);
  EXPECT_THROW(attention(q.cview(), key_blocks_bhsd<const float>(nullptr, 1, 2, 20, 8), v.cview(),
                         bhsd(out.data(), 1, 2, 1, 8)),
               error);
  EXPECT_THROW(attention(q.cview(), key_blocks_view<const float>(data.data(), 1, 2, 20, 8, 0, -1), v.cview(),
                         bhsd(out.data(), 1, 2, 1, 8)),
               error);
}

/// Probabilities and statistics with K in key blocks are those of K in rows, bit for bit
/// (the same logits, read in place), with the pruned head and GQA of a real cache.
template <class S>
void check_inspection() {
  constexpr std::size_t B = 2, Hq = 4, Hkv = 2, Nq = 5, Nk = 37, D = 24;
  tensor<float> q(B, Hq, Nq, D, layout::bshd), out(B, Hq, Nq, D);
  tensor<S> k(B, Hkv, Nk, D), v(B, Hkv, Nk, D);
  fill_uniform(q, 6, 2.0);
  fill_uniform(k, 7, 2.0);
  fill_uniform(v, 8);
  std::vector<S> data(key_blocks_elements(B, Hkv, Nk, D));
  const key_blocks_view<S> kb = key_blocks_bhsd(data.data(), B, Hkv, Nk, D);
  pack_key_blocks(k.cview(), kb);
  const key_blocks_view<const S> ckb = kb;
  std::vector<float> lse(B * Hq * Nq), head_scale{1.f, 0.f, 1.f, 1.f};
  std::vector<std::int32_t> tokens(Nk);
  for (std::size_t j = 0; j < Nk; ++j) tokens[j] = std::int32_t(j % 5);
  attention_options opt;
  opt.causal = causal_mode::bottom_right;
  opt.window_left = 9;
  opt.sink_tokens = 2;
  opt.head_scale = head_scale;
  opt.lse = lse_view(lse.data(), B, Hq, Nq);
  attention(q.cview(), k.cview(), v.cview(), out.view, opt);
  statistics_options so;
  so.tokens = tokens;

  const auto rows_p = attention_probabilities(q.cview(), k.cview(), opt, 1, 2, 1, 4);
  const auto blocks_p = attention_probabilities(q.cview(), ckb, opt, 1, 2, 1, 4);
  EXPECT_EQ(blocks_p.values, rows_p.values);
  EXPECT_EQ(head_probabilities(q.cview(), ckb, opt, 0, 3).values, head_probabilities(q.cview(), k.cview(), opt, 0, 3).values);
  const auto rows_layer = layer_probabilities(q.cview(), k.cview(), opt, 1);
  const auto blocks_layer = layer_probabilities(q.cview(), ckb, opt, 1);
  ASSERT_EQ(blocks_layer.size(), Hq);
  for (std::size_t h = 0; h < Hq; ++h) EXPECT_EQ(blocks_layer[h].values, rows_layer[h].values) << "head " << h;

  const std::vector<head_statistics> rows_s = attention_statistics(q.cview(), k.cview(), opt, so);
  const std::vector<head_statistics> blocks_s = attention_statistics(q.cview(), ckb, opt, so);
  ASSERT_EQ(blocks_s.size(), rows_s.size());
  for (std::size_t i = 0; i < rows_s.size(); ++i) {
    EXPECT_EQ(blocks_s[i].rows, rows_s[i].rows);
    EXPECT_EQ(blocks_s[i].mean_entropy, rows_s[i].mean_entropy);
    EXPECT_EQ(blocks_s[i].induction, rows_s[i].induction);
    EXPECT_EQ(blocks_s[i].received, rows_s[i].received);
  }
  EXPECT_EQ(rows_s[1].rows, 0u) << "head 1 is pruned";
  EXPECT_GT(rows_s[0].rows, 0u);
  EXPECT_EQ(head_redundancy(q.cview(), ckb, opt).js, head_redundancy(q.cview(), k.cview(), opt).js);
}

TEST(key_blocks, inspection_and_diagnostics_take_them) {
  check_inspection<float>();
  check_inspection<half>();
}

TEST(key_blocks, inspection_rejects_bad_blocks_naming_the_call) {
  tensor<float> q(1, 2, 1, 8);
  std::vector<float> lse(2);
  attention_options opt;
  opt.lse = lse_view(lse.data(), 1, 2, 1);
  auto message = [](auto&& fn) {
    try {
      fn();
    } catch (const error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  const auto null_k = key_blocks_bhsd<const float>(nullptr, 1, 2, 20, 8);
  EXPECT_NE(message([&] { attention_statistics(q.cview(), null_k, opt); }).find("attention_statistics"),
            std::string::npos);
  EXPECT_NE(message([&] { head_probabilities(q.cview(), null_k, opt, 0, 0); }).find("head_probabilities"),
            std::string::npos);
  EXPECT_NE(message([&] { head_redundancy(q.cview(), null_k, opt); }).find("head_redundancy"), std::string::npos);
  std::vector<float> data(key_blocks_elements(1, 2, 20, 7));
  const auto other_dim = key_blocks_bhsd<const float>(data.data(), 1, 2, 20, 7);
  EXPECT_NE(message([&] { layer_probabilities(q.cview(), other_dim, opt, 0); }).find("k.dim()"), std::string::npos);
}

}  // namespace
