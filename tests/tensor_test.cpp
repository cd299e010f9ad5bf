// tensor_test: views describe user memory exactly and never copy it.
#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <limits>
#include <string>
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

TEST(TensorView, IsSetWhenTheCallerGaveOne) {
  float x = 0;
  // the absent optional view; data and no rows; a shape with null data (given, and rejected)
  EXPECT_FALSE(headwise::tensor_view<float>().is_set());
  EXPECT_TRUE(headwise::bhsd(&x, 1, 1, 0, 1).is_set());
  EXPECT_TRUE(headwise::bhsd<float>(nullptr, 1, 2, 3, 4).is_set());
  EXPECT_TRUE(headwise::tensor_view<const float>(headwise::bhsd(&x, 1, 1, 1, 1)).is_set());
}

TEST(Span, WrapsContainersWithoutCopying) {
  std::vector<float> slopes{0.5f, 0.25f};
  const headwise::span<const float> s = slopes;
  EXPECT_EQ(s.data(), slopes.data());
  EXPECT_EQ(s.size(), 2u);
  EXPECT_EQ(s[1], 0.25f);
  EXPECT_TRUE(headwise::span<const float>().empty());
}

/// Runs `make` and expects a headwise::error whose message holds every fragment.
template <class F>
void expect_error(F make, std::initializer_list<const char*> fragments) {
  try {
    make();
    ADD_FAILURE() << "no headwise::error thrown";
  } catch (const headwise::error& e) {
    const std::string msg = e.what();
    for (const char* frag : fragments)
      EXPECT_NE(msg.find(frag), std::string::npos) << "message: " << msg << "\nmissing: " << frag;
  }
}

TEST(CheckedFactories, ViewTheBufferTheyAreGiven) {
  std::vector<int> mem(2 * 3 * 4 * 5);
  for (std::size_t i = 0; i < mem.size(); ++i) mem[i] = int(i);
  const auto a = headwise::bshd(mem, 2, 3, 4, 5);  // a std::vector, through span
  static_assert(std::is_same_v<decltype(a), const tensor_view<int>>);
  EXPECT_EQ(a.data(), mem.data());
  EXPECT_EQ(&a(1, 3, 2, 4), &mem.back());
  const auto b = headwise::bhsd(headwise::span<int>(mem), 2, 3, 4, 5);
  EXPECT_EQ(&b(1, 2, 3, 4), &mem.back());
  const std::vector<int>& cmem = mem;
  const auto c = headwise::bhsd(cmem, 2, 3, 4, 5);  // a const container gives a const view
  static_assert(std::is_same_v<decltype(c), const tensor_view<const int>>);
  EXPECT_EQ(c.seq_stride(), 5);
  const auto d = headwise::bhsd<const int>(mem, 2, 3, 4, 5);  // const view of mutable memory
  EXPECT_EQ(d.data(), mem.data());
  std::array<float, 6 * 7> m{};
  const auto mask = headwise::mask_view(m, 1, 1, 6, 7);
  EXPECT_EQ(&mask(0, 0, 5, 6), &m.back());
  std::vector<float> l(2 * 3 * 4);
  const auto lse = headwise::lse_view(l, 2, 3, 4);
  EXPECT_EQ(lse.dim(), 1u);
  EXPECT_EQ(&lse(1, 2, 3, 0), &l.back());
  // A buffer larger than the shape is fine (a view of its front), an empty shape fits anywhere.
  EXPECT_EQ(headwise::bshd(mem, 1, 3, 4, 5).batch(), 1u);
  std::vector<float> none;
  EXPECT_EQ(headwise::bshd(none, 0, 3, 4, 5).seq(), 3u);
  EXPECT_EQ(headwise::lse_view(none, 2, 0, 4).heads(), 0u);
}

TEST(CheckedFactories, RejectBuffersTooSmallForTheShape) {
  std::vector<float> mem(119);
  expect_error([&] { headwise::bshd(mem, 2, 3, 4, 5); },
               {"headwise::bshd:", "[batch=2, seq=3, heads=4, dim=5]", "needs 120 elements", "holds 119"});
  expect_error([&] { headwise::bhsd(mem, 2, 3, 4, 5); },
               {"headwise::bhsd:", "[batch=2, heads=3, seq=4, dim=5]", "needs 120 elements", "holds 119"});
  expect_error([&] { headwise::mask_view(headwise::span<const float>(mem.data(), 20), 1, 1, 4, 6); },
               {"headwise::mask_view:", "[batch=1, heads=1, rows=4, cols=6]", "needs 24 elements", "holds 20"});
  expect_error([&] { headwise::lse_view(mem, 2, 4, 16); },
               {"headwise::lse_view:", "[batch=2, heads=4, seq=16]", "needs 128 elements", "holds 119"});
  const std::size_t huge = std::size_t(1) << 33;
  expect_error([&] { headwise::bhsd(mem, huge, huge, 1, 1); },
               {"headwise::bhsd:", "needs more elements than std::size_t counts", "holds 119"});
  EXPECT_THROW(headwise::bshd(headwise::span<float>(), 1, 1, 1, 1), std::invalid_argument);
}

TEST(SeqSlice, AddressesTheRowsOfTheParent) {
  const std::size_t B = 2, S = 7, H = 3, D = 4;
  std::vector<int> mem(B * S * H * D);
  for (std::size_t i = 0; i < mem.size(); ++i) mem[i] = int(i);
  for (const auto& t : {headwise::bshd(mem, B, S, H, D), headwise::bhsd(mem, B, H, S, D)}) {
    const auto s = t.seq_slice(2, 4);
    EXPECT_EQ(s.batch(), B);
    EXPECT_EQ(s.heads(), H);
    EXPECT_EQ(s.seq(), 4u);
    EXPECT_EQ(s.dim(), D);
    EXPECT_EQ(s.batch_stride(), t.batch_stride());
    EXPECT_EQ(s.head_stride(), t.head_stride());
    EXPECT_EQ(s.seq_stride(), t.seq_stride());
    for (std::size_t b = 0; b < B; ++b)
      for (std::size_t h = 0; h < H; ++h)
        for (std::size_t i = 0; i < 4; ++i)
          for (std::size_t d = 0; d < D; ++d) EXPECT_EQ(&s(b, h, i, d), &t(b, h, 2 + i, d));
    // a slice of a slice is a slice of the parent; the last row alone is a decode step's view
    EXPECT_EQ(&s.seq_slice(1, 2)(1, 2, 1, 3), &t(1, 2, 4, 3));
    EXPECT_EQ(&t.seq_slice(S - 1, 1)(1, 0, 0, 0), &t(1, 0, S - 1, 0));
    EXPECT_EQ(t.seq_slice(S, 0).seq(), 0u);  // an empty slice at the end is valid
    EXPECT_EQ(t.seq_slice(0, S).row(1, 2, 3), t.row(1, 2, 3));
  }
  const tensor_view<const int> c = headwise::bshd(mem, B, S, H, D);
  EXPECT_EQ(c.seq_slice(3, 1).data(), c.row(0, 0, 3));
}

TEST(SeqSlice, RejectsRowsOutsideTheView) {
  std::vector<float> mem(1 * 5 * 2 * 3);
  const auto t = headwise::bshd(mem, 1, 5, 2, 3);
  expect_error(
      [&] { t.seq_slice(4, 2); },
      {"headwise::tensor_view::seq_slice:", "from + count must be <= seq()", "expected <= 5", "got 4 + 2"});
  expect_error([&] { t.seq_slice(6, 0); }, {"seq_slice", "got 6 + 0"});
  expect_error([&] { t.seq_slice(1, std::numeric_limits<std::size_t>::max()); }, {"seq_slice", "expected <= 5"});
}

TEST(SeqSlice, DecodesFromOneBuffer) {
  // A prompt of 6 tokens and one decode step, q/k/v/out in one BSHD buffer each:
  // attention over the last query row of the slice equals that row of the full call.
  const std::size_t N = 7, H = 2, D = 8;
  std::vector<float> q(N * H * D), k(N * H * D), v(N * H * D), full(N * H * D, 0.f), step(N * H * D, 0.f);
  for (std::size_t i = 0; i < q.size(); ++i) {
    q[i] = float(int(i * 7 % 13) - 6) / 8.f;
    k[i] = float(int(i * 5 % 11) - 5) / 8.f;
    v[i] = float(int(i * 3 % 17) - 8) / 8.f;
  }
  headwise::attention_options opt;
  opt.causal = headwise::causal_mode::bottom_right;
  const auto qv = headwise::bshd<const float>(q, 1, N, H, D);
  const auto kv = headwise::bshd<const float>(k, 1, N, H, D);
  const auto vv = headwise::bshd<const float>(v, 1, N, H, D);
  headwise::reference::attention(qv, kv, vv, headwise::bshd(full, 1, N, H, D), opt);
  headwise::reference::attention(qv.seq_slice(N - 1, 1), kv, vv,
                                 headwise::bshd(step, 1, N, H, D).seq_slice(N - 1, 1), opt);
  for (std::size_t i = 0; i < full.size(); ++i)
    EXPECT_EQ(step[i], i < (N - 1) * H * D ? 0.f : full[i]) << "element " << i;
}

}  // namespace
