// Tests of the flash prefill kernel (kernels/flash.hpp): shapes around its
// tiles through the kernel harness (every mode, path and thread count against the
// oracle, kernel_harness.hpp), many tiles at once, and its scratch bound.
#include <gtest/gtest.h>

#include <cstddef>
#include <vector>

#include "kernel_harness.hpp"

namespace {

using namespace hwtest;

class flash_tiles : public kernel_test {};
TEST_P(flash_tiles, every_variant_matches_the_oracle) { check_kernel_case(GetParam()); }

/// Around the tiles: query tiles of 128 or 256 rows, key tiles of up to 128 keys, so Nq
/// and Nk one below, at and one above 128 and 256, under each causal mode (which
/// tiles are skipped or cut differs).
/// head_dim: a pack and one, and the two common ones. Heads and K/V type rotate.
std::vector<kernel_case> tile_cases() {
  const std::pair<std::size_t, std::size_t> seqs[] = {{127, 129}, {128, 256}, {129, 255}, {257, 257}};
  const std::size_t dims[] = {17, 64, 128};
  const causal_mode causal[] = {causal_mode::none, causal_mode::top_left, causal_mode::bottom_right};
  const kv_type kvs[] = {kv_type::f32, kv_type::bf16, kv_type::f16, kv_type::f64};
  std::vector<kernel_case> cases;
  for (std::size_t s = 0; s < 4; ++s)
    for (std::size_t d = 0; d < 3; ++d) {
      kernel_case c{seqs[s].first, seqs[s].second, dims[d], dims[d], (s + d) % 2 ? gqa : mha};
      c.kv = kvs[(s + d) % 4];
      c.mask.causal = causal[(s + 2 * d) % 3];
      c.lay = s % 2 ? layout::bshd : layout::bhsd;
      cases.push_back(c);
    }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(grid, flash_tiles, ::testing::ValuesIn(tile_cases()), param_name);

// Many tiles in one row: 1023 queries × 1024 keys, causal, so the online softmax
// rescales across 8 to 16 key tiles and the skipped tiles vary by query tile. The
// flash kernel only (the others are covered above; the oracle alone is 0.3 GFLOP).
TEST(flash_many_tiles, causal_1023_by_1024_matches_the_oracle) {
  kernel_case c{1023, 1024, 64, 64, mha};
  c.mask.causal = causal_mode::bottom_right;
  c.lay = layout::bshd;
  kernel_problem<float, float> p(c);
  check_variants(p, every_variant({kernel_mode::flash}));
}

// Nq = Nk = 16384, d = 64, one head: the scratch of every worker together stays far
// below 16 MiB (it is bounded by the tiles, not by N). The tiling arithmetic is the
// same on every path; it is read from the baseline's copy, for each pack width.
TEST(flash_memory, scratch_is_bounded_by_the_tiles) {
  namespace kernels = headwise::isa_baseline::kernels;
  for (std::size_t w : {1, 4, 8, 16}) {
    const kernels::flash::tiling t = kernels::flash::make_tiling(sizeof(float), w, 16384, 1, 64, 64);
    const std::size_t workers = 2;
    const std::size_t bytes = workers * kernels::flash::scratch_bytes<float>(t);
    EXPECT_TRUE(bytes < (std::size_t(16) << 20)) << "W " << w << ": " << bytes << " bytes of scratch";
    // the tiles themselves: Q and O of the tall tile, a K and a V tile, an S micro-tile,
    // the transpose buffer (floats), plus a quarter for states, extents and alignment
    const std::size_t tiles = 4 * (t.rows() * (t.dk + t.dv_pad) + t.bc * (t.dk + t.dv_pad) +
                                   kernels::tile_rows * t.bc + t.kb * t.dk);
    EXPECT_TRUE(bytes < workers * (tiles + tiles / 4))
        << "W " << w << ": " << bytes << " bytes: more than the tiles need";
    EXPECT_TRUE(bytes < (std::size_t(512) << 10)) << "W " << w << ": " << bytes << " bytes";
  }
}

}  // namespace
