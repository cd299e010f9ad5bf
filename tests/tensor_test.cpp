// tensor_test: views describe user memory exactly and never copy it.
#include <gtest/gtest.h>

#include <vector>

#include <headwise/headwise.hpp>

namespace {

using headwise::tensor_view;

TEST(TensorView, BshdStridesAddressTheRightElement) {
  const std::size_t B = 2, S = 3, H = 4, D = 5;
  std::vector<int> mem(B * S * H * D);
  for (std::size_t i = 0; i < mem.size(); ++i) mem[i] = int(i);
  const auto t = headwise::bshd(mem.data(), B, S, H, D);
  EXPECT_EQ(t.batch(), B);
  EXPECT_EQ(t.heads(), H);
  EXPECT_EQ(t.seq(), S);
  EXPECT_EQ(t.dim(), D);
  for (std::size_t b = 0; b < B; ++b)
    for (std::size_t h = 0; h < H; ++h)
      for (std::size_t s = 0; s < S; ++s)
        for (std::size_t d = 0; d < D; ++d) EXPECT_EQ(t(b, h, s, d), int(((b * S + s) * H + h) * D + d));
}

TEST(TensorView, BhsdStridesAddressTheRightElement) {
  const std::size_t B = 2, H = 3, S = 4, D = 5;
  std::vector<int> mem(B * S * H * D);
  for (std::size_t i = 0; i < mem.size(); ++i) mem[i] = int(i);
  const auto t = headwise::bhsd(mem.data(), B, H, S, D);
  for (std::size_t b = 0; b < B; ++b)
    for (std::size_t h = 0; h < H; ++h)
      for (std::size_t s = 0; s < S; ++s)
        for (std::size_t d = 0; d < D; ++d) EXPECT_EQ(t(b, h, s, d), int(((b * H + h) * S + s) * D + d));
}

TEST(TensorView, ViewsAliasUserMemoryWithoutCopying) {
  std::vector<float> mem(2 * 3 * 4 * 5, 0.f);
  const auto t = headwise::bshd(mem.data(), 2, 3, 4, 5);
  t(1, 2, 1, 3) = 42.f;
  EXPECT_EQ(mem[((1 * 3 + 1) * 4 + 2) * 5 + 3], 42.f);
  const tensor_view<const float> c = t;  // mutable → const conversion
  EXPECT_EQ(c.data(), mem.data());
  EXPECT_EQ(c.row(1, 2, 1), t.row(1, 2, 1));
  EXPECT_EQ(c(1, 2, 1, 3), 42.f);
}

TEST(TensorView, MaskAndLseFactoriesAreDense) {
  std::vector<float> mem(7 * 9);
  const auto m = headwise::mask_view(mem.data(), 1, 1, 7, 9);
  EXPECT_EQ(m.seq_stride(), 9);
  EXPECT_EQ(&m(0, 0, 6, 8), &mem.back());
  std::vector<float> l(2 * 3 * 4);
  const auto lse = headwise::lse_view(l.data(), 2, 3, 4);
  EXPECT_EQ(lse.dim(), 1u);
  EXPECT_EQ(&lse(1, 2, 3, 0), &l.back());
}

TEST(Span, WrapsContainersWithoutCopying) {
  std::vector<float> slopes{0.5f, 0.25f};
  const headwise::span<const float> s = slopes;
  EXPECT_EQ(s.data(), slopes.data());
  EXPECT_EQ(s.size(), 2u);
  EXPECT_EQ(s[1], 0.25f);
  EXPECT_TRUE(headwise::span<const float>().empty());
}

}  // namespace
