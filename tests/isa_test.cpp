// Tests of the runtime SIMD path choice (isa.hpp): what is available follows the
// CPU's features, HEADWISE_ISA narrows the default and rejects unknown names, an
// unavailable or invalid options.isa is a headwise::error thrown before anything is
// written, and every available path gives the oracle's answer (the kernel tests run
// the full grid on each path; this checks the plumbing).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include <headwise/headwise.hpp>

namespace {

using namespace headwise;

/// Sets HEADWISE_ISA for one scope and restores it after.
class scoped_env {
 public:
  explicit scoped_env(const char* value) {
    if (const char* old = std::getenv("HEADWISE_ISA")) old_ = old, had_ = true;
    if (value) setenv("HEADWISE_ISA", value, 1); else unsetenv("HEADWISE_ISA");
  }
  ~scoped_env() {
    if (had_) setenv("HEADWISE_ISA", old_.c_str(), 1); else unsetenv("HEADWISE_ISA");
  }

 private:
  std::string old_;
  bool had_ = false;
};

TEST(isa, the_environment_variable_names_a_path_or_is_an_error) {
  {
    scoped_env e(nullptr);
    EXPECT_EQ(detail::isa_from_environment(), simd_isa::automatic);
  }
  {
    scoped_env e("");
    EXPECT_EQ(detail::isa_from_environment(), simd_isa::automatic);
  }
  for (simd_isa isa : {simd_isa::baseline, simd_isa::avx2, simd_isa::avx512, simd_isa::avx512_bf16}) {
    scoped_env e(isa_name(isa));
    EXPECT_EQ(detail::isa_from_environment(), isa);
  }
  scoped_env e("avx513");
  try {
    detail::isa_from_environment();
    FAIL() << "no error for HEADWISE_ISA=avx513";
  } catch (const error& x) {
    EXPECT_NE(std::string(x.what()).find("avx513"), std::string::npos) << x.what();
  }
}

TEST(isa, available_paths_start_with_baseline_and_end_with_the_default) {
  const std::vector<simd_isa> a = available_isas();
  ASSERT_FALSE(a.empty());
  EXPECT_EQ(a.front(), simd_isa::baseline);
  EXPECT_TRUE(std::is_sorted(a.begin(), a.end()));
  // The default is the widest available unless HEADWISE_ISA caps it.
  if (std::getenv("HEADWISE_ISA") == nullptr) {
    EXPECT_EQ(detail::default_isa(), a.back());
  }
  EXPECT_NE(std::string(simd_path()), "");
}

/// q, k, v filled with a fixed pattern; out poisoned.
struct small_case {
  std::vector<float> q = std::vector<float>(2 * 5 * 8), k = std::vector<float>(1 * 9 * 8),
                     v = std::vector<float>(1 * 9 * 8), out = std::vector<float>(2 * 5 * 8, 42.0f);
  small_case() {
    for (std::size_t i = 0; i < q.size(); ++i) q[i] = std::sin(float(i));
    for (std::size_t i = 0; i < k.size(); ++i) k[i] = std::cos(float(i)), v[i] = std::sin(0.5f * float(i));
  }
  void run(const attention_options& opt) {
    attention(bhsd(q.data(), 1, 2, 5, 8), bhsd(k.data(), 1, 1, 9, 8), bhsd(v.data(), 1, 1, 9, 8),
              bhsd(out.data(), 1, 2, 5, 8), opt);
  }
};

TEST(isa, an_unavailable_or_invalid_path_is_an_error_and_writes_nothing) {
  const std::vector<simd_isa> a = available_isas();
  std::vector<simd_isa> rejected = {static_cast<simd_isa>(200)};
  for (simd_isa isa : {simd_isa::avx2, simd_isa::avx512, simd_isa::avx512_bf16})
    if (std::find(a.begin(), a.end(), isa) == a.end()) rejected.push_back(isa);
  for (simd_isa isa : rejected) {
    small_case c;
    attention_options opt;
    opt.isa = isa;
    EXPECT_THROW(c.run(opt), error) << "isa " << int(isa);
    EXPECT_TRUE(std::all_of(c.out.begin(), c.out.end(), [](float x) { return x == 42.0f; }));
    // A call with no query row too, though attention() runs no kernel for it: the path
    // was checked only on the way to one (fuzz_replay.bad found it in the static build).
    std::vector<float> x(16, 1.0f), out(8, 42.0f);
    EXPECT_THROW(attention(bhsd<const float>(x.data(), 1, 1, 0, 8), bhsd<const float>(x.data(), 1, 1, 2, 8),
                           bhsd<const float>(x.data(), 1, 1, 2, 8), bhsd(out.data(), 1, 1, 0, 8), opt),
                 error)
        << "isa " << int(isa) << ", Nq 0";
  }
}

TEST(isa, every_available_path_and_kernel_agrees_with_the_oracle) {
  small_case ref;
  std::vector<double> qd(ref.q.begin(), ref.q.end()), kd(ref.k.begin(), ref.k.end()), vd(ref.v.begin(), ref.v.end()),
      od(ref.out.size());
  reference::attention(bhsd(qd.data(), 1, 2, 5, 8), bhsd(kd.data(), 1, 1, 9, 8), bhsd(vd.data(), 1, 1, 9, 8),
                       bhsd(od.data(), 1, 2, 5, 8));
  // |error| <= (Dk + Nk + 4)·u·max|v|: the dot products, the softmax sum and the
  // output accumulation in float, with |v| <= 1 here (a loose form of the kernel
  // tests' bound, enough to catch a wrong path).
  const double bound = (8 + 9 + 4) * 0.5 * 1.1920929e-7;
  for (simd_isa isa : available_isas())
    for (kernel_mode mode : {kernel_mode::flash, kernel_mode::decode})
      for (bool scalar : {false, true}) {
        small_case c;
        attention_options opt;
        opt.isa = isa;
        opt.kernel = mode;
        opt.force_scalar = scalar;
        c.run(opt);
        for (std::size_t i = 0; i < od.size(); ++i)
          ASSERT_FALSE(!(std::abs(double(c.out[i]) - od[i]) <= bound))
              << isa_name(isa) << " kernel " << int(mode) << (scalar ? " scalar" : "") << " element " << i;
      }
}

}  // namespace
