// Tests of the split-KV decode kernel (kernels/decode.hpp) through the kernel harness
// (kernel_harness.hpp: every mode, path and thread count against the oracle, which
// reads the same stored K/V; bit-identical across thread counts).
//
// Nk straddles the chunk (decode::chunk_keys: the split), the online-softmax block
// (decode::block_keys) and the pack width; MHA, GQA, MQA; Nq 1, 2, 4; every mask kind
// across chunk boundaries; head dims straddling every pack width across a chunk;
// K in rows and in key blocks (key_view.hpp, a different score tile). Then what
// 16-bit storage costs against the unrounded values, automatic's choice of decode,
// and the stream plan per core.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "kernel_harness.hpp"

namespace {

using namespace hwtest;

// The split and block sizes are the same on every path; read from the baseline's copy.
namespace decode = headwise::isa_baseline::kernels::decode;
constexpr std::size_t C = decode::chunk_keys;
// The block of the d 64 cases below (32 keys for float and 16-bit K/V alike).
constexpr std::size_t Kb = decode::block_keys(2 * 64 * sizeof(float), false);
static_assert(Kb == decode::block_keys(2 * 64 * sizeof(half), false));

class decode_splits : public kernel_test {};
class decode_rules : public kernel_test {};
class decode_dims : public kernel_test {};
TEST_P(decode_splits, every_variant_matches_the_oracle) { check_kernel_case(GetParam()); }
TEST_P(decode_rules, every_variant_matches_the_oracle) { check_kernel_case(GetParam()); }
TEST_P(decode_dims, every_variant_matches_the_oracle) { check_kernel_case(GetParam()); }

const kv_type kvs[] = {kv_type::f32, kv_type::f16, kv_type::bf16, kv_type::f64};

/// Nk around the widest pack, the block and the chunk × head groups and Nq (G =
/// group·Nq query rows per K/V row: 1 to 8), d 64, no mask; K/V type and key blocks
/// rotate.
std::vector<kernel_case> split_cases() {
  const std::pair<heads, std::size_t> groups[] = {{mha, 1}, {mha, 4}, {gqa, 1}, {gqa, 2},
                                                  {gqa, 4}, {mqa, 1}, {mqa, 2}};
  const std::size_t nks[] = {1, 17, Kb - 1, Kb + 1, C - 1, C, C + 1, 2 * C + Kb + 3};
  std::vector<kernel_case> cases;
  for (std::size_t g = 0; g < 7; ++g)
    for (std::size_t n = 0; n < 8; ++n) {
      kernel_case c{groups[g].second, nks[n], 64, 64, groups[g].first, kvs[(g + n) % 4]};
      c.lay = groups[g].second == 2 ? layout::bshd : layout::bhsd;
      c.key_blocks = (g + n / 2) % 2;
      cases.push_back(c);
    }
  return cases;
}

/// Every mask kind across chunk boundaries: one query over two chunks and a part
/// (a window with sinks leaves the middle chunk with no visible key: it must not
/// exist), four queries over one chunk and a key.
std::vector<kernel_case> rule_cases() {
  const std::vector<mask_spec> masks = every_mask_kind();
  std::vector<kernel_case> cases;
  for (std::size_t m = 0; m < masks.size(); ++m)
    for (std::size_t nq : {1, 4}) {
      kernel_case c{nq, nq == 1 ? 2 * C + Kb + 3 : C + 1, 16, 24, gqa, kvs[(m + nq) % 4], layout::bshd};
      c.mask = masks[m];
      c.B = 2;
      c.key_blocks = m % 2;
      cases.push_back(c);
    }
  return cases;
}

/// Head dims straddling every pack width (W − 1, W, W + 1 for W in 4, 8, 16), 1 and
/// 128, across a chunk boundary, G = 8, Dv != Dk in half of them.
std::vector<kernel_case> dim_cases() {
  std::vector<kernel_case> cases;
  const std::size_t dims[] = {1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 128};
  for (std::size_t d = 0; d < 11; ++d) {
    kernel_case c{2, C + 3, dims[d], d % 2 ? dims[d] : 35, {8, 2, "gqa4"}, kvs[d % 4]};
    c.mask.causal = causal_mode::bottom_right;
    c.key_blocks = d % 3 == 0;
    cases.push_back(c);
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(grid, decode_splits, ::testing::ValuesIn(split_cases()), param_name);
INSTANTIATE_TEST_SUITE_P(grid, decode_rules, ::testing::ValuesIn(rule_cases()), param_name);
INSTANTIATE_TEST_SUITE_P(grid, decode_dims, ::testing::ValuesIn(dim_cases()), param_name);

// 16-bit K/V against the oracle on the values before rounding: the kernels widen
// the stored values exactly, so the storage rounding is the error model's
// storage_u term and nothing more (test_util.hpp).
TEST(decode_storage, half_and_bfloat16_cost_only_their_rounding) {
  for (kv_type kv : {kv_type::f16, kv_type::bf16}) {
    kernel_case c{4, C + 1, 64, 64, gqa, kv};
    c.mask.causal = causal_mode::bottom_right;
    with_problem(c, [](auto&& p) {
      p.compute_oracle(true);
      check_variants(p, every_variant());
    });
  }
}

// automatic picks decode for one query token and gives the same bits as forcing it,
// on every path.
TEST(decode_dispatch, automatic_takes_decode_for_one_query) {
  kernel_problem<float, float> p({1, 300, 32, 32, {8, 2, "gqa4"}});
  for (variant automatic : every_variant({kernel_mode::automatic}, {2})) {
    variant decode = automatic;
    decode.mode = kernel_mode::decode;
    tensor<float> a = p.fresh_out(), d = p.fresh_out();
    std::vector<float> a_lse = p.fresh_lse(), d_lse = p.fresh_lse();
    p.run(automatic, a, a_lse);
    p.run(decode, d, d_lse);
    EXPECT_EQ(0, std::memcmp(a.storage.data(), d.storage.data(), a.storage.size() * sizeof(float)))
        << automatic.name() << " differs from " << decode.name();
  }
}

// The stream plan (how each pass requests its K/V lines) is chosen per core. Requests
// never change a result, so the tests above cover only this machine's plan; this
// checks that each core gets the plan measured for it.
TEST(decode_stream_plan, chosen_per_core) {
  using detail::cpu_core;
  using detail::cpu_signature;
  EXPECT_EQ(cpu_core::amd_family_19h, detail::classify(cpu_signature{true, 0x19}));  // Zen 3, Zen 4
  EXPECT_EQ(cpu_core::unknown, detail::classify(cpu_signature{true, 0x17}));         // Zen 2
  EXPECT_EQ(cpu_core::unknown, detail::classify(cpu_signature{true, 0x1a}));         // Zen 5
  EXPECT_EQ(cpu_core::unknown, detail::classify(cpu_signature{false, 0x6}));         // Intel
  EXPECT_EQ(cpu_core::unknown, detail::classify(cpu_signature{false, 0x19}));        // not AMD

  const decode::stream_plan own_rows = decode::decode_stream_plan(cpu_core::amd_family_19h);
  EXPECT_FALSE(own_rows.touch_pages);
  EXPECT_EQ(0u, own_rows.ahead_rows(512));  // each tile requests its own rows
  const decode::stream_plan other = decode::decode_stream_plan(cpu_core::unknown);
  EXPECT_TRUE(other.touch_pages);
  EXPECT_EQ(6u, other.ahead_rows(512));    // fp32 rows at d 128
  EXPECT_EQ(12u, other.ahead_rows(256));   // fp16 rows at d 128
  EXPECT_EQ(1u, other.ahead_rows(65536));  // never less than the next row
}

}  // namespace
