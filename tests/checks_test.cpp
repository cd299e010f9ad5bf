// checks_test: bad input throws headwise::error naming the argument, and the
// output is untouched when it does.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "test_util.hpp"

namespace {

using namespace headwise;
using hwtest::tensor;

struct fixture {
  tensor<float> q{1, 4, 5, 8}, k{1, 2, 6, 8}, v{1, 2, 6, 3}, out{1, 4, 5, 3};
  fixture() {
    hwtest::fill_uniform(q, 1);
    hwtest::fill_uniform(k, 2);
    hwtest::fill_uniform(v, 3);
    for (float& x : out.storage) x = 1234.f;  // sentinel: must survive a rejected call
  }
  /// Replaces out by a sentinel-filled tensor of another shape; moved in, so
  /// out.view keeps pointing at out.storage, the memory out_untouched() reads.
  void resize_out(std::size_t B, std::size_t H, std::size_t S, std::size_t D) {
    out = tensor<float>(B, H, S, D);
    for (float& x : out.storage) x = 1234.f;
  }
  bool out_untouched() const {
    for (float x : out.storage)
      if (x != 1234.f) return false;
    return true;
  }
};

/// Runs `call` with both attention() and reference::attention() and expects a
/// headwise::error whose message contains every fragment, with out untouched.
void expect_rejected(const std::function<void(fixture&, bool use_reference)>& call,
                     std::initializer_list<const char*> fragments) {
  for (bool use_reference : {false, true}) {
    fixture f;
    try {
      call(f, use_reference);
      ADD_FAILURE() << "no headwise::error thrown (reference=" << use_reference << ")";
    } catch (const headwise::error& e) {
      const std::string msg = e.what();
      for (const char* frag : fragments)
        EXPECT_NE(msg.find(frag), std::string::npos) << "message: " << msg << "\nmissing: " << frag;
    }
    EXPECT_TRUE(f.out_untouched()) << "output written before the checks passed";
  }
}

template <class Q, class K, class V, class O>
void run(bool use_reference, const tensor_view<Q>& q, const tensor_view<K>& k, const tensor_view<V>& v,
         const tensor_view<O>& out, const attention_options& opt = {}) {
  if (use_reference)
    reference::attention(q, k, v, out, opt);
  else
    attention(q, k, v, out, opt);
}

TEST(Checks, ErrorIsAnInvalidArgument) {
  static_assert(std::is_base_of_v<std::invalid_argument, headwise::error>);
  fixture f;
  tensor<float> bad_k(1, 2, 6, 7);
  EXPECT_THROW(attention(f.q.view, bad_k.view, f.v.view, f.out.view), std::invalid_argument);
}

TEST(Checks, DkMismatch) {
  expect_rejected([](fixture& f, bool r) { tensor<float> k(1, 2, 6, 7); run(r, f.q.view, k.view, f.v.view, f.out.view); },
                  {"k.dim()", "expected 8", "got 7"});
}

TEST(Checks, BatchMismatch) {
  expect_rejected([](fixture& f, bool r) { tensor<float> k(2, 2, 6, 8); run(r, f.q.view, k.view, f.v.view, f.out.view); },
                  {"k.batch()", "expected 1", "got 2"});
  // The view the other three contradict is named, q included.
  expect_rejected([](fixture& f, bool r) { tensor<float> q(2, 4, 5, 8); run(r, q.view, f.k.view, f.v.view, f.out.view); },
                  {"q.batch() must equal the batch of the other views (expected 1, got 2)"});
}

TEST(Checks, KvSeqMismatch) {
  expect_rejected([](fixture& f, bool r) { tensor<float> v(1, 2, 7, 3); run(r, f.q.view, f.k.view, v.view, f.out.view); },
                  {"v.seq()", "expected 6", "got 7"});
}

TEST(Checks, KvHeadsMismatch) {
  expect_rejected([](fixture& f, bool r) { tensor<float> v(1, 1, 6, 3); run(r, f.q.view, f.k.view, v.view, f.out.view); },
                  {"v.heads()", "expected 2", "got 1"});
}

TEST(Checks, OutShapeMismatch) {
  expect_rejected(
      [](fixture& f, bool r) {
        f.resize_out(1, 4, 5, 4);
        run(r, f.q.view, f.k.view, f.v.view, f.out.view);
      },
      {"out.dim()", "expected 3", "got 4"});
  expect_rejected(
      [](fixture& f, bool r) {
        f.resize_out(1, 4, 6, 3);
        run(r, f.q.view, f.k.view, f.v.view, f.out.view);
      },
      {"out.seq()", "expected 5", "got 6"});
  expect_rejected(
      [](fixture& f, bool r) {
        f.resize_out(1, 3, 5, 3);
        run(r, f.q.view, f.k.view, f.v.view, f.out.view);
      },
      {"out.heads()", "expected 4", "got 3"});
}

TEST(Checks, HqNotDivisibleByHkv) {
  expect_rejected(
      [](fixture& f, bool r) {
        tensor<float> q(1, 3, 5, 8);
        f.resize_out(1, 3, 5, 3);
        run(r, q.view, f.k.view, f.v.view, f.out.view);
      },
      {"q.heads()", "multiple of 2", "got 3"});
}

TEST(Checks, MaskThatDoesNotBroadcast) {
  expect_rejected(
      [](fixture& f, bool r) {
        std::vector<float> m(4 * 5 * 5);
        attention_options opt;
        opt.additive_mask = mask_view<const float>(m.data(), 1, 4, 5, 5);  // Nk is 6
        run(r, f.q.view, f.k.view, f.v.view, f.out.view, opt);
      },
      {"options.additive_mask: shape must be [B=1, Hq=4 or 1, Nq=5, Nk=6] (got [1, 4, 5, 5])"});
  expect_rejected(
      [](fixture& f, bool r) {
        std::vector<char> m(2 * 5 * 6);
        attention_options opt;
        opt.boolean_mask = mask_view<const bool>(reinterpret_cast<const bool*>(m.data()), 1, 2, 5, 6);
        run(r, f.q.view, f.k.view, f.v.view, f.out.view, opt);
      },
      {"options.boolean_mask", "got [1, 2, 5, 6]"});
}

TEST(Checks, MaskShapesAreReadable) {
  // A batch of 2: each broadcastable axis says so.
  for (bool use_reference : {false, true}) {
    tensor<float> q(2, 4, 5, 8), k(2, 2, 6, 8), v(2, 2, 6, 3), out(2, 4, 5, 3);
    std::vector<char> m(2 * 4 * 6 * 5);
    attention_options opt;
    opt.boolean_mask = mask_view<const bool>(reinterpret_cast<const bool*>(m.data()), 2, 4, 6, 5);  // Nq, Nk swapped
    try {
      run(use_reference, q.view, k.view, v.view, out.view, opt);
      ADD_FAILURE() << "no headwise::error thrown";
    } catch (const headwise::error& e) {
      EXPECT_EQ(std::string(e.what()), "headwise::" + std::string(use_reference ? "reference::" : "") +
                                           "attention: options.boolean_mask: shape must be [B=2 or 1, Hq=4 or 1, "
                                           "Nq=5, Nk=6] (got [2, 4, 6, 5])");
    }
  }
}

// q [B, Hq, Nq, Dk] built with heads and seq swapped (bshd(data, B, H, N, D) for a
// BSHD buffer, or bhsd for BSHD memory) while k, v and out are right: the message
// must name q, not out (checked against q) nor a mask (checked against q's shape).
TEST(Checks, SwappedHeadsAndSeqOnQAloneNamesQ) {
  // Hq = 4, Hkv = 2, Nq = Nk = 6: a swapped q has 6 heads, a multiple of Hkv, so
  // only the comparison with out and k can tell.
  for (bool with_mask : {false, true}) {
    expect_rejected(
        [with_mask](fixture& f, bool r) {
          tensor<float> q(1, 4, 6, 8), k(1, 2, 6, 8), v(1, 2, 6, 3);
          const auto q_swapped = bshd(q.view.data(), 1, 4, 6, 8);  // [B, N, H, D] memory read as [B, H=6, N=4]
          std::vector<float> mask(6 * 6);
          attention_options opt;
          if (with_mask) opt.additive_mask = mask_view<const float>(mask.data(), 1, 1, 6, 6);
          f.resize_out(1, 4, 6, 3);
          run(r, q_swapped, k.view, v.view, f.out.view, opt);
        },
        {"q.heads() and q.seq() look swapped (expected Hq=4, Nq=6 as in out", "got heads=6, seq=4",
         "bshd() takes (data, batch, seq, heads, dim)"});
  }
  // Hq = 4, Hkv = 2, Nq = 5: a swapped q has 5 heads, not a multiple of Hkv.
  expect_rejected(
      [](fixture& f, bool r) { run(r, bhsd(f.q.view.data(), 1, 5, 4, 8), f.k.view, f.v.view, f.out.view); },
      {"q.heads() and q.seq() look swapped (expected Hq=4, Nq=5", "got heads=5, seq=4"});
  // One query row (decode): q swapped has Hq rows of one head.
  expect_rejected(
      [](fixture& f, bool r) {
        tensor<float> q(1, 4, 1, 8);
        f.resize_out(1, 4, 1, 3);
        run(r, bhsd(q.view.data(), 1, 1, 4, 8), f.k.view, f.v.view, f.out.view);
      },
      {"q.heads() and q.seq() look swapped (expected Hq=4, Nq=1", "got heads=1, seq=4"});
}

TEST(Checks, SwappedHeadsAndSeqOnOneViewNamesThatView) {
  // out swapped, q right: out is named.
  expect_rejected(
      [](fixture& f, bool r) {
        tensor<float> q(1, 4, 6, 8), k(1, 2, 6, 8), v(1, 2, 6, 3);
        f.resize_out(1, 4, 6, 3);
        run(r, q.view, k.view, v.view, bhsd(f.out.view.data(), 1, 6, 4, 3));
      },
      {"out.heads() and out.seq() look swapped (expected Hq=4, Nq=6 as in q", "got heads=6, seq=4"});
  // k swapped (8 keys of 2 heads read as 2 keys of 8 heads): k is named, not v.
  expect_rejected(
      [](fixture& f, bool r) {
        tensor<float> k(1, 2, 8, 8), v(1, 2, 8, 3);
        run(r, f.q.view, bhsd(k.view.data(), 1, 8, 2, 8), v.view, f.out.view);
      },
      {"k.heads() and k.seq() look swapped (expected Hkv=2, Nk=8 as in v", "got heads=8, seq=2"});
  // v swapped: v is named.
  expect_rejected(
      [](fixture& f, bool r) {
        tensor<float> v(1, 2, 8, 3), k(1, 2, 8, 8);
        run(r, f.q.view, k.view, bhsd(v.view.data(), 1, 8, 2, 3), f.out.view);
      },
      {"v.heads() and v.seq() look swapped (expected Hkv=2, Nk=8 as in k", "got heads=8, seq=2"});
  // An ALiBi slope per query head is evidence too: with it, a swap that k cannot
  // settle (6 and 4 heads both multiples of 2, neither seq equal to Nk) is pinned on q.
  expect_rejected(
      [](fixture& f, bool r) {
        tensor<float> q(1, 4, 6, 8), k(1, 2, 9, 8), v(1, 2, 9, 3);
        f.resize_out(1, 4, 6, 3);
        const float slopes[4] = {1, 0.5f, 0.25f, 0.125f};
        attention_options opt;
        opt.alibi_slopes = span<const float>(slopes, 4);
        run(r, bshd(q.view.data(), 1, 4, 6, 8), k.view, v.view, f.out.view, opt);
      },
      {"q.heads() and q.seq() look swapped"});
}

TEST(Checks, SwapWithoutEvidenceNamesBothViews) {
  // Hq = 4, Hkv = 2, Nq = 6, Nk = 9, no options: q [H=6, N=4] and out [H=4, N=6]
  // fit k equally well, so neither can be blamed alone.
  expect_rejected(
      [](fixture& f, bool r) {
        tensor<float> q(1, 4, 6, 8), k(1, 2, 9, 8), v(1, 2, 9, 3);
        f.resize_out(1, 4, 6, 3);
        run(r, bshd(q.view.data(), 1, 4, 6, 8), k.view, v.view, f.out.view);
      },
      {"q and out disagree on heads and seq (q has heads=6, seq=4; out has heads=4, seq=6): one of them has the "
       "two swapped"});
}

TEST(Checks, HeadsThatBreakGqaNameTheirView) {
  // q has 3 heads, out 4, Hkv 2: q is the one that breaks Hq % Hkv == 0.
  expect_rejected(
      [](fixture& f, bool r) {
        tensor<float> q(1, 3, 5, 8);
        run(r, q.view, f.k.view, f.v.view, f.out.view);
      },
      {"q.heads() must equal out.heads() (Hq) (expected 4, got 3)"});
  // k has 3 heads, v 2, Hq 4: k is named.
  expect_rejected(
      [](fixture& f, bool r) {
        tensor<float> k(1, 3, 6, 8);
        run(r, f.q.view, k.view, f.v.view, f.out.view);
      },
      {"k.heads() must equal v.heads() (Hkv) (expected 2, got 3)"});
}

TEST(Checks, SwappedQWithKeyBlocksNamesQ) {
  for (bool with_decode : {false, true}) {
    tensor<float> q(1, 4, 6, 8), k(1, 2, 6, 8), v(1, 2, 6, 3), out(1, 4, 6, 3);
    std::vector<float> blocks(key_blocks_elements(1, 2, 6, 8));
    const auto kb = key_blocks_bhsd(blocks.data(), 1, 2, 6, 8);
    pack_key_blocks(k.cview(), kb);
    attention_options opt;
    opt.kernel = with_decode ? kernel_mode::decode : kernel_mode::flash;
    try {
      attention(bshd<const float>(q.view.data(), 1, 4, 6, 8), key_blocks_view<const float>(kb), v.cview(),
                out.view, opt);
      ADD_FAILURE() << "no headwise::error thrown";
    } catch (const headwise::error& e) {
      EXPECT_NE(std::string(e.what()).find("q.heads() and q.seq() look swapped"), std::string::npos) << e.what();
    }
  }
}

TEST(Checks, NullData) {
  expect_rejected(
      [](fixture& f, bool r) {
        const tensor_view<const float> null_k(nullptr, 1, 2, 6, 8, 96, 48, 8);
        run(r, f.q.view, null_k, f.v.view, f.out.view);
      },
      {"k: data is null"});
}

TEST(Checks, NegativeWindow) {
  expect_rejected(
      [](fixture& f, bool r) {
        attention_options opt;
        opt.window_left = -1;
        run(r, f.q.view, f.k.view, f.v.view, f.out.view, opt);
      },
      {"options.window_left", "got -1"});
  expect_rejected(
      [](fixture& f, bool r) {
        attention_options opt;
        opt.window_right = -3;
        run(r, f.q.view, f.k.view, f.v.view, f.out.view, opt);
      },
      {"options.window_right", "got -3"});
}

TEST(Checks, NonFiniteScaleAndSoftcap) {
  for (double bad : {std::nan(""), std::numeric_limits<double>::infinity()}) {
    expect_rejected(
        [bad](fixture& f, bool r) {
          attention_options opt;
          opt.scale = bad;
          run(r, f.q.view, f.k.view, f.v.view, f.out.view, opt);
        },
        {"options.scale must be finite"});
    expect_rejected(
        [bad](fixture& f, bool r) {
          attention_options opt;
          opt.softcap = bad;
          run(r, f.q.view, f.k.view, f.v.view, f.out.view, opt);
        },
        {"options.softcap"});
  }
}

TEST(Checks, SizesWhoseProductOverflows) {
  expect_rejected(
      [](fixture& f, bool r) {
        const std::size_t huge = std::size_t(1) << 40;
        const tensor_view<const float> k(f.k.view.data(), huge, huge, 6, 8, 1, 1, 8);
        run(r, f.q.view, k, f.v.view, f.out.view);
      },
      {"k", "overflows"});
  expect_rejected(
      [](fixture& f, bool r) {
        // Sizes fit, but the offset of the last element does not.
        const auto big = std::numeric_limits<std::ptrdiff_t>::max() / 2;
        const tensor_view<const float> k(f.k.view.data(), 1, 2, 6, 8, 0, big, 8);
        run(r, f.q.view, k, f.v.view, f.out.view);
      },
      {"k", "overflows"});
}

TEST(Checks, NegativeStride) {
  expect_rejected(
      [](fixture& f, bool r) {
        const tensor_view<const float> k(f.k.view.row(0, 1, 5), 1, 2, 6, 8, 0, -48, -8);
        run(r, f.q.view, k, f.v.view, f.out.view);
      },
      {"k", "strides must be >= 0"});
}

TEST(Checks, OutputWhoseRowsOverlap) {
  expect_rejected(
      [](fixture& f, bool r) {
        const tensor_view<float> o(f.out.view.data(), 1, 4, 5, 3, 60, 15, 1);  // seq stride 1 < dim 3
        run(r, f.q.view, f.k.view, f.v.view, o);
      },
      {"out: its elements overlap ([0, 0, 1, 0] and [0, 0, 0, 1] are one element)"});
  expect_rejected(
      [](fixture& f, bool r) {  // rows of 3 at 0, 4, 6, 10 (heads 6 apart, seq 4): 6 + 0..2 meets 4 + 2
        const tensor_view<float> o(f.out.view.data(), 1, 4, 5, 3, 0, 6, 4);
        run(r, f.q.view, f.k.view, f.v.view, o);
      },
      {"out: its elements overlap"});
}

// Issue 25: the overlap check accepted nested layouts only. Rows of 2 at offsets
// h·6 + s·4 (0, 4, 6, 10, ...) interleave heads and positions, yet no two elements
// meet: such an out is accepted, and every element is written.
TEST(Checks, InterleavedOutputWithDistinctElementsIsAccepted) {
  hwtest::tensor<float> q(1, 2, 2, 8), k(1, 2, 6, 8), v(1, 2, 6, 2), ref(1, 2, 2, 2);
  hwtest::fill_uniform(q, 1), hwtest::fill_uniform(k, 2), hwtest::fill_uniform(v, 3);
  reference::attention(q.cview(), k.cview(), v.cview(), ref.view);
  for (bool use_reference : {false, true}) {
    std::vector<float> memory(12, NAN);
    const tensor_view<float> o(memory.data(), 1, 2, 2, 2, 0, 6, 4);
    run(use_reference, q.cview(), k.cview(), v.cview(), o);
    EXPECT_LE(hwtest::max_abs_diff(o, ref.view), 1e-6);
    for (std::size_t e : {2, 3, 8, 9}) EXPECT_TRUE(std::isnan(memory[e])) << e;  // the gaps stay untouched
  }
}

// The overlap check against brute force on every small layout: sizes 1-3 on the three
// outer axes, strides 0-7, rows of 1-3 elements. It accepts exactly the layouts whose
// elements are distinct, and names two that are one element when it rejects.
TEST(Checks, OverlapCheckAgreesWithBruteForce) {
  std::vector<float> memory(256);
  std::size_t accepted = 0, interleaved = 0;
  for (std::size_t sizes = 0; sizes < 27; ++sizes)
    for (std::size_t strides = 0; strides < 512; ++strides)
      for (std::size_t dim = 1; dim <= 3; ++dim) {
        const std::size_t n[3] = {sizes % 3 + 1, sizes / 3 % 3 + 1, sizes / 9 + 1};
        const std::ptrdiff_t st[3] = {std::ptrdiff_t(strides % 8), std::ptrdiff_t(strides / 8 % 8),
                                      std::ptrdiff_t(strides / 64)};
        const tensor_view<float> t(memory.data(), n[0], n[1], n[2], dim, st[0], st[1], st[2]);
        std::vector<int> hits(memory.size());
        bool distinct = true;
        for (std::size_t b = 0; b < n[0]; ++b)
          for (std::size_t h = 0; h < n[1]; ++h)
            for (std::size_t s = 0; s < n[2]; ++s)
              for (std::size_t d = 0; d < dim; ++d)
                distinct = ++hits[std::size_t(&t(b, h, s, d) - memory.data())] == 1 && distinct;
        bool nested = true;  // the rule the check used to apply
        std::vector<std::pair<std::ptrdiff_t, std::size_t>> axes = {{1, dim}};
        for (int a = 0; a < 3; ++a) axes.push_back({st[a], n[a]});
        std::sort(axes.begin(), axes.end());
        std::ptrdiff_t covered = 1;
        for (const auto& [stride, size] : axes)
          if (size > 1) nested = nested && stride >= covered, covered = stride * std::ptrdiff_t(size);
        try {
          detail::check_no_self_overlap("test", "t", t);
          EXPECT_TRUE(distinct) << "accepted overlapping sizes " << n[0] << n[1] << n[2] << " strides "
                                << st[0] << st[1] << st[2] << " dim " << dim;
          ++accepted, interleaved += !nested;
        } catch (const headwise::error& e) {
          EXPECT_FALSE(distinct) << "rejected distinct sizes " << n[0] << n[1] << n[2] << " strides " << st[0]
                                 << st[1] << st[2] << " dim " << dim << ": " << e.what();
          // The two tuples it names are one element.
          std::size_t i[8];
          const std::string msg = e.what();
          ASSERT_EQ(std::sscanf(msg.c_str() + msg.find('['), "[%zu, %zu, %zu, %zu] and [%zu, %zu, %zu, %zu]",
                                &i[0], &i[1], &i[2], &i[3], &i[4], &i[5], &i[6], &i[7]),
                    8)
              << msg;
          EXPECT_NE(std::vector<std::size_t>(i, i + 4), std::vector<std::size_t>(i + 4, i + 8)) << msg;
          EXPECT_EQ(&t(i[0], i[1], i[2], i[3]), &t(i[4], i[5], i[6], i[7])) << msg;
        }
      }
  EXPECT_GT(interleaved, 100u) << "of " << accepted << " accepted layouts";
}

// Issue 25: bhsd(), bshd() and lse_view() give zero strides when seq is 0, and the
// overlap check then refused views with no element at all: Nq = 0 and merge_states
// with N = 0 are valid calls that write nothing.
TEST(Checks, ViewsWithNoElementsAreValid) {
  fixture f;
  float lse = 7.f;
  for (bool use_reference : {false, true})
    for (bool bshd_layout : {false, true}) {
      const tensor_view<const float> q0 = bshd_layout ? bshd<const float>(f.q.view.data(), 1, 0, 4, 8)
                                                      : bhsd<const float>(f.q.view.data(), 1, 4, 0, 8);
      const tensor_view<float> o0 =
          bshd_layout ? bshd(f.out.view.data(), 1, 0, 4, 3) : bhsd(f.out.view.data(), 1, 4, 0, 3);
      attention_options opt;
      opt.lse = lse_view(&lse, 1, 4, 0);
      run(use_reference, q0, f.k.view, f.v.view, o0, opt);
    }
  EXPECT_TRUE(f.out_untouched());
  EXPECT_EQ(lse, 7.f);
}

TEST(Checks, OutputAliasingAnInput) {
  expect_rejected(
      [](fixture& f, bool r) {
        const tensor_view<float> o = bhsd(f.q.view.data(), 1, 4, 5, 3);
        run(r, f.q.view, f.k.view, f.v.view, o);
      },
      {"out overlaps the memory of q"});
}

// Issue 25: slopes, head scales or the LSE stored in out's memory were accepted (and
// plain and flash then answered from slopes they had overwritten). Every output is
// checked against every input span, the per-head parameters included.
TEST(Checks, OutputAliasingAPerHeadParameter) {
  for (const char* param : {"options.alibi_slopes", "options.head_scale"}) {
    const std::string p = param;
    expect_rejected(
        [p](fixture& f, bool r) {
          attention_options opt;
          const span<const float> in_out(f.out.view.data(), 4);  // Hq values in out's first row
          (p == "options.alibi_slopes" ? opt.alibi_slopes : opt.head_scale) = in_out;
          run(r, f.q.view, f.k.view, f.v.view, f.out.view, opt);
        },
        {"out overlaps the memory of ", param});
    expect_rejected(
        [p](fixture& f, bool r) {
          std::vector<float> lse(4 * 5, 1.f);
          attention_options opt;
          opt.lse = lse_view(lse.data(), 1, 4, 5);
          (p == "options.alibi_slopes" ? opt.alibi_slopes : opt.head_scale) =
              span<const float>(lse.data() + 16, 4);
          run(r, f.q.view, f.k.view, f.v.view, f.out.view, opt);
        },
        {"options.lse overlaps the memory of ", param});
  }
  expect_rejected(
      [](fixture& f, bool r) {
        attention_options opt;
        opt.lse = lse_view(f.out.view.data() + 3, 1, 4, 5);
        run(r, f.q.view, f.k.view, f.v.view, f.out.view, opt);
      },
      {"options.lse overlaps the memory of out"});
}

// Issue 25: causal_mode(220) ran as bottom_right and kernel_mode(9) as flash.
TEST(Checks, OptionEnumsOutsideTheirValues) {
  using setter = void (*)(attention_options&);
  const std::pair<setter, const char*> cases[] = {
      {[](attention_options& o) { o.causal = causal_mode(220); },
       "options.causal is not a causal_mode value (got 220)"},
      {[](attention_options& o) { o.causal = causal_mode(-1); },
       "options.causal is not a causal_mode value (got -1)"},
      {[](attention_options& o) { o.kernel = kernel_mode(9); },
       "options.kernel is not a kernel_mode value (got 9)"},
      {[](attention_options& o) { o.isa = simd_isa(5); }, "options.isa is not a simd_isa value (got 5)"},
      {[](attention_options& o) { o.isa = simd_isa(200); }, "options.isa is not a simd_isa value (got 200)"}};
  for (const auto& [set, message] : cases)
    expect_rejected(
        [set = set](fixture& f, bool r) {
          attention_options opt;
          set(opt);
          run(r, f.q.view, f.k.view, f.v.view, f.out.view, opt);
        },
        {message});
}

// Issue 25: a [1, 1, 2, 2] boolean mask whose seq stride is PTRDIFF_MAX − 1 passed
// (the byte extent `last + 1` overflowed) and attention() then read far outside it.
TEST(Checks, MaskWhoseByteExtentOverflows) {
  // q, k, v and out (4 × 8 floats), then the mask's cells: its extent, wrapped past
  // PTRDIFF_MAX, started above every other view and so overlapped none of them.
  std::vector<float> memory(4 * 8 + 1, 0.5f);
  const auto* cells = reinterpret_cast<const bool*>(memory.data() + 32);
  attention_options opt;
  opt.boolean_mask =
      tensor_view<const bool>(cells, 1, 1, 2, 2, 0, 0, std::numeric_limits<std::ptrdiff_t>::max() - 1);
  auto view = [&](std::size_t i) { return bhsd(memory.data() + 8 * i, 1, 1, 2, 4); };
  for (bool use_reference : {false, true}) {
    try {
      run(use_reference, tensor_view<const float>(view(0)), tensor_view<const float>(view(1)),
          tensor_view<const float>(view(2)), view(3), opt);
      ADD_FAILURE() << "no headwise::error thrown (reference=" << use_reference << ")";
    } catch (const headwise::error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("options.boolean_mask: its byte extent overflows"), std::string::npos) << msg;
    }
  }
  expect_rejected(
      [](fixture& f, bool r) {  // fits std::ptrdiff_t, not the address space above data
        attention_options o;
        const auto* top = reinterpret_cast<const float*>(std::uintptr_t(0) - 64);
        o.additive_mask = tensor_view<const float>(top, 1, 1, 5, 6, 0, 0, 6);
        run(r, f.q.view, f.k.view, f.v.view, f.out.view, o);
      },
      {"options.additive_mask", "past the end of the address space"});
}

TEST(Checks, PerHeadParameterSizes) {
  expect_rejected(
      [](fixture& f, bool r) {
        const float slopes[3] = {1, 1, 1};
        attention_options opt;
        opt.alibi_slopes = span<const float>(slopes, 3);
        run(r, f.q.view, f.k.view, f.v.view, f.out.view, opt);
      },
      {"options.alibi_slopes.size()", "expected 4", "got 3"});
  expect_rejected(
      [](fixture& f, bool r) {
        const float scales[4] = {1, NAN, 1, 1};
        attention_options opt;
        opt.head_scale = span<const float>(scales, 4);
        run(r, f.q.view, f.k.view, f.v.view, f.out.view, opt);
      },
      {"options.head_scale[1] must be finite"});
}

TEST(Checks, LseShape) {
  expect_rejected(
      [](fixture& f, bool r) {
        std::vector<float> lse(4 * 4);
        attention_options opt;
        opt.lse = lse_view(lse.data(), 1, 4, 4);
        run(r, f.q.view, f.k.view, f.v.view, f.out.view, opt);
      },
      {"options.lse: shape must be [B=1, Hq=4, Nq=5, 1] (got [1, 4, 4, 1])"});
}

TEST(Checks, LseWithDataAndNoRowsIsSetAndChecked) {
  expect_rejected(
      [](fixture& f, bool r) {
        float lse = 0;
        attention_options opt;
        opt.lse = lse_view(&lse, 1, 4, 0);
        run(r, f.q.view, f.k.view, f.v.view, f.out.view, opt);
      },
      {"options.lse: shape must be [B=1, Hq=4, Nq=5, 1] (got [1, 4, 0, 1])"});
}

TEST(Checks, EmptyKeysAreValidAndGiveZeros) {
  fixture f;
  tensor<float> k(1, 2, 0, 8), v(1, 2, 0, 3);
  std::vector<float> lse(4 * 5, 0.f);
  attention_options opt;
  opt.lse = lse_view(lse.data(), 1, 4, 5);
  attention(f.q.view, k.view, v.view, f.out.view, opt);
  for (std::size_t i = 1; i < f.out.storage.size(); ++i) EXPECT_EQ(f.out.storage[i], 0.f);
  for (float l : lse) EXPECT_EQ(l, -INFINITY);
}

}  // namespace
