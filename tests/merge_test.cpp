// Tests of merge_states (merge.hpp): attention over keys [0, s) merged with
// attention over [s, Nk) equals attention over all keys, for every split s,
// including halves in which some rows see no key at all.
//
// Tolerance (float outputs, exact double oracle rounded to float): each input o and
// lse carries one rounding, u·|o| and u·|lse|; a weight exp(lse_a − lse) moves
// relatively by the error of the difference, 2u·max|lse|; the two products and the
// sum add 3u; the unsplit result's own rounding u. With |o| <= vmax = 1:
//   |merged − unsplit| <= (5 + 2·max|lse|)·u,   |lse error| <= (3 + 2·max|lse|)·u.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <memory>
#include <random>
#include <vector>

#include "test_util.hpp"

namespace {

using namespace hwtest;

constexpr std::size_t B = 2, H = 3, N = 4, Nk = 37, D = 5;

/// Row visibility: row 0 sees keys >= Nk/2 only, row 1 sees nothing, row 2 keys < 3,
/// row 3 three keys out of four; varies with (b, h) through the pattern offset.
std::unique_ptr<bool[]> make_mask() {
  std::unique_ptr<bool[]> m(new bool[B * H * N * Nk]);
  for (std::size_t bh = 0; bh < B * H; ++bh)
    for (std::size_t j = 0; j < Nk; ++j) {
      bool* row = m.get() + bh * N * Nk;
      row[0 * Nk + j] = j >= Nk / 2;
      row[1 * Nk + j] = false;
      row[2 * Nk + j] = j < 3;
      row[3 * Nk + j] = (j + bh) % 4 != 0;
    }
  return m;
}

/// Reference attention over keys [begin, end), output and LSE.
void attend(const tensor<float>& q, const tensor<float>& k, const tensor<float>& v, const bool* mask,
            std::size_t begin, std::size_t end, tensor<float>& out, std::vector<float>& lse) {
  const auto sub = [&](const tensor<float>& t) {
    const auto& w = t.view;
    return tensor_view<const float>(w.row(0, 0, begin), w.batch(), w.heads(), end - begin, w.dim(),
                                    w.batch_stride(), w.head_stride(), w.seq_stride());
  };
  attention_options opt;
  opt.boolean_mask = tensor_view<const bool>(mask + begin, B, H, N, end - begin, std::ptrdiff_t(H * N * Nk),
                                             std::ptrdiff_t(N * Nk), std::ptrdiff_t(Nk));
  opt.lse = lse_view(lse.data(), B, H, N);
  reference::attention(q.cview(), sub(k), sub(v), out.view, opt);
}

TEST(merge_states, splitting_at_every_position_gives_the_unsplit_result) {
  tensor<float> q(B, H, N, D), k(B, H, Nk, D, layout::bshd), v(B, H, Nk, D, layout::bshd);
  fill_uniform(q, 1, 2.0);  // logits up to ~|2·1·D|/sqrt(D): the weights differ a lot
  fill_uniform(k, 2);
  fill_uniform(v, 3);
  const auto mask = make_mask();
  tensor<float> whole(B, H, N, D), a(B, H, N, D), b(B, H, N, D), merged(B, H, N, D);
  std::vector<float> lse_whole(B * H * N), lse_a(B * H * N), lse_b(B * H * N), lse_m(B * H * N);
  attend(q, k, v, mask.get(), 0, Nk, whole, lse_whole);
  for (float l : lse_whole) ASSERT_FALSE(std::isnan(l));

  const double u = unit_roundoff<float>();
  for (std::size_t s = 0; s <= Nk; ++s) {
    attend(q, k, v, mask.get(), 0, s, a, lse_a);
    attend(q, k, v, mask.get(), s, Nk, b, lse_b);
    merge_states(a.cview(), lse_view<const float>(lse_a.data(), B, H, N), b.cview(),
                 lse_view<const float>(lse_b.data(), B, H, N), merged.view, lse_view(lse_m.data(), B, H, N));
    double max_lse = 0;
    for (std::size_t e = 0; e < lse_a.size(); ++e)
      for (float l : {lse_a[e], lse_b[e], lse_whole[e]})
        if (std::isfinite(l)) max_lse = std::max(max_lse, double(std::fabs(l)));
    const double tol = (5 + 2 * max_lse) * u, lse_tol = (3 + 2 * max_lse) * u;
    const double err = max_abs_diff(merged.view, whole.view);
    EXPECT_TRUE(err <= tol) << "split at " << s << ": " << err << " > " << tol;
    for (std::size_t e = 0; e < lse_m.size(); ++e) {
      const bool same = lse_m[e] == lse_whole[e] || std::fabs(lse_m[e] - lse_whole[e]) <= lse_tol;
      EXPECT_TRUE(same) << "split at " << s << ", row " << e << ": lse " << lse_m[e] << " vs " << lse_whole[e];
    }
    for (std::size_t bh = 0; bh < B * H; ++bh) {  // row 1 sees nothing: 0 and -inf, no NaN
      EXPECT_EQ(lse_m[bh * N + 1], -std::numeric_limits<float>::infinity());
      for (std::size_t d = 0; d < D; ++d) EXPECT_EQ(merged.view(bh / H, bh % H, 1, d), 0.0f);
    }
  }
}

TEST(merge_states, accumulates_in_place_and_merging_an_empty_side_is_identity) {
  tensor<float> o(1, 1, 2, 3), other(1, 1, 2, 3);
  fill_uniform(o, 4);
  fill_uniform(other, 5);
  const std::vector<float> before = o.storage;
  std::vector<float> lse = {0.5f, -2.0f}, empty = {-INFINITY, -INFINITY};
  // in place: out is o_a itself, lse_out is lse_a itself; the other side has no keys
  merge_states(o.cview(), lse_view<const float>(lse.data(), 1, 1, 2), other.cview(),
               lse_view<const float>(empty.data(), 1, 1, 2), o.view, lse_view(lse.data(), 1, 1, 2));
  EXPECT_EQ(o.storage, before);
  EXPECT_EQ(lse[0], 0.5f);
  EXPECT_EQ(lse[1], -2.0f);
}

// Issue 25: merge_states with N = 0 was refused (bhsd() and lse_view() give zero
// strides then, which the overlap check took for overlap); it writes nothing.
TEST(merge_states, no_rows_is_a_valid_call) {
  std::vector<float> o(8, 1.f), lse(2, 1.f), out(8, 5.f), lse_out(2, 5.f);
  merge_states(bhsd<const float>(o.data(), 1, 2, 0, 4), lse_view<const float>(lse.data(), 1, 2, 0),
               bhsd<const float>(o.data() + 4, 1, 2, 0, 4), lse_view<const float>(lse.data() + 1, 1, 2, 0),
               bhsd(out.data(), 1, 2, 0, 4), lse_view(lse_out.data(), 1, 2, 0));
  EXPECT_EQ(out, std::vector<float>(8, 5.f));
  EXPECT_EQ(lse_out, std::vector<float>(2, 5.f));
}

// A side whose LSE is −inf saw no key and is not read, NaN included (row 0); an LSE of
// +inf or NaN (an undefined row, options.hpp) makes the merged row and LSE NaN
// (rows 1 and 2).
TEST(merge_states, a_side_without_keys_is_not_read_and_an_undefined_side_gives_nan) {
  tensor<float> a(1, 1, 3, 2), b(1, 1, 3, 2), out(1, 1, 3, 2);
  fill_uniform(a, 1);
  fill_uniform(b, 2);
  b(0, 0, 0, 0) = b(0, 0, 0, 1) = NAN;
  const std::vector<float> lse_a = {0.5f, 0.5f, NAN}, lse_b = {-INFINITY, INFINITY, 0.5f};
  std::vector<float> lse(3);
  merge_states(a.cview(), lse_view(lse_a.data(), 1, 1, 3), b.cview(), lse_view(lse_b.data(), 1, 1, 3),
               out.view, lse_view(lse.data(), 1, 1, 3));
  EXPECT_EQ(out(0, 0, 0, 0), a(0, 0, 0, 0));
  EXPECT_EQ(out(0, 0, 0, 1), a(0, 0, 0, 1));
  EXPECT_EQ(lse[0], 0.5f);
  for (std::size_t i : {1, 2}) {
    EXPECT_TRUE(std::isnan(lse[i])) << i;
    for (std::size_t d = 0; d < 2; ++d) EXPECT_TRUE(std::isnan(out(0, 0, i, d))) << i;
  }
}

TEST(merge_states, rejects_bad_shapes_and_aliasing) {
  tensor<float> a(1, 2, 3, 4), b(1, 2, 3, 4), out(1, 2, 3, 4), small(1, 2, 2, 4);
  std::vector<float> la(7), lb(6);
  const auto lva = lse_view<const float>(la.data(), 1, 2, 3), lvb = lse_view<const float>(lb.data(), 1, 2, 3);
  EXPECT_THROW(merge_states(a.cview(), lva, small.cview(), lvb, out.view), error);
  EXPECT_THROW(merge_states(a.cview(), lva, b.cview(), lvb, small.view), error);
  EXPECT_THROW(merge_states(a.cview(), lse_view<const float>(la.data(), 1, 2, 2), b.cview(), lvb, out.view), error);
  // out overlapping o_a without being the same view
  const tensor_view<float> shifted(a.view.data() + 1, 1, 2, 3, 3, 24, 12, 4);
  const tensor_view<const float> a3(a.view.data(), 1, 2, 3, 3, 24, 12, 4), b3(b.view.data(), 1, 2, 3, 3, 24, 12, 4);
  EXPECT_THROW(merge_states(a3, lva, b3, lvb, shifted), error);
  // lse_out overlapping lse_a without being the same view, and overlapping out
  EXPECT_THROW(merge_states(a.cview(), lva, b.cview(), lvb, out.view, lse_view(la.data() + 1, 1, 2, 3)), error);
  EXPECT_THROW(merge_states(a.cview(), lva, b.cview(), lvb, out.view, lse_view(out.view.data(), 1, 2, 3)), error);
  try {
    merge_states(a.cview(), lva, small.cview(), lvb, out.view);
  } catch (const error& e) {
    EXPECT_NE(std::string(e.what()).find("o_b"), std::string::npos) << e.what();
  }
}

}  // namespace
