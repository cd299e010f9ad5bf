// headwise/detail/backward_plan.hpp — how attention_backward splits one (batch, kv
// head) over several workers without changing a bit of its result.
//
// The backward of one kv head is a grid of cells, a block of query rows against a
// tile of keys. A cell gives dk and dv to its tile and dq to its rows; the one pass
// (kernels/flash_backward.hpp) sums a tile's dk and dv over the blocks in order and a
// block's dq over the tiles in order. A part owns a range of row blocks (their dq)
// and a range of key tiles (their dk and dv), and computes
//   - its own cells once for all three gradients: 10 FLOPs per visible pair and d
//     (S, dP, dv, dk, dq);
//   - the other rows' cells on its tiles for dk and dv only: 8 (S, dP, dv, dk);
//   - its rows' cells on the other tiles for dq only: 6 (S, dP, dq).
// Each element is still summed by one part in the one pass's order, so the bits are
// the same for any number of parts. s parts of equal shares of a full grid cost
// 14 − 4/s per pair instead of 10: 12 at s = 2, so two workers finish one kv head
// in 0.6 of one worker's time (a split into row tasks for dq and tile tasks for dk,
// dv costs 14: 0.7). Under a causal mask the rows are cut where each part holds the
// same visible pairs, which leaves more of them to the part that owns both ends
// (11.4 per pair at s = 2).
//
// The plan: the row cuts at equal shares of the visible pairs; then the tile cuts
// that minimise the largest part's cost, by bisection on that cost with a greedy
// fill (each part's cost only grows with the tiles it takes). Cost of planning:
// O(Nq · tiles per row) range counts, once per call, against the backward's
// 10 · group · d FLOPs per pair.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>

#include "headwise/detail/integer.hpp"
#include "headwise/detail/parallel.hpp"
#include "headwise/detail/score_rules.hpp"
#include "headwise/workspace.hpp"

namespace headwise::detail {

/// The parts of one (batch, kv head): part p owns the query rows
/// [row_bounds[p], row_bounds[p + 1]) (whole blocks) and the key tiles
/// [tile_bounds[p], tile_bounds[p + 1]). Either range may be empty.
struct backward_parts {
  std::size_t count = 1;
  const std::size_t* row_bounds = nullptr;
  const std::size_t* tile_bounds = nullptr;
};

/// Parts per (batch, kv head) for `whole` = B·Hkv of them on `threads` workers: the
/// count whose estimated time, rounds of tasks times a part's cost (14 − 4/s)/s of a
/// whole one's 10, is least; 1 (the one pass) on a tie.
inline std::size_t backward_part_count(std::size_t whole, unsigned threads, std::size_t max_parts) {
  const std::size_t t = resolve_threads(threads, std::numeric_limits<std::size_t>::max());
  std::size_t best_s = 1;
  double best = double(ceil_div(whole, t)) * 10;
  for (std::size_t s = 2; s <= std::min(t, max_parts); ++s) {
    const double time = double(ceil_div(whole * s, t)) * (14 - 4.0 / double(s)) / double(s);
    if (time < best) best = time, best_s = s;
  }
  return best_s;
}

/// The cuts of `s` parts for rows in blocks of bq and keys in tiles of bc, written to
/// the workspace's shared buffer (valid until the next call that uses it).
template <class T>
backward_parts plan_backward_parts(const score_rules<T>& rules, std::size_t bq, std::size_t bc, std::size_t s,
                                   workspace& ws) {
  const std::size_t Nq = std::size_t(rules.Nq), Nk = std::size_t(rules.Nk);
  const std::size_t blocks = ceil_div(Nq, bq), tiles = ceil_div(Nk, bc);
  auto carve = [&](scratch_carver& c) {
    struct pieces {
      std::size_t *rows, *tiles;
      std::int64_t *pairs, *column, *base;  // pairs[p · tiles + j]: part p's visible pairs in tile j
    };
    const std::size_t counted = s > 1 ? tiles : 0;  // the one pass needs no counts
    return pieces{c.take<std::size_t>(s + 1), c.take<std::size_t>(s + 1), c.take<std::int64_t>(s * counted),
                  c.take<std::int64_t>(counted), c.take<std::int64_t>(s)};
  };
  scratch_carver count;
  carve(count);
  scratch_carver carver(workspace_access::shared(ws, count.bytes()));
  const auto m = carve(carver);
  m.rows[0] = 0, m.rows[s] = Nq, m.tiles[0] = 0, m.tiles[s] = tiles;
  if (s == 1) return backward_parts{1, m.rows, m.tiles};

  // Row cuts: at the block boundary closest to each equal share of the visible pairs.
  std::int64_t total = 0;
  for (std::size_t i = 0; i < Nq; ++i) total += rules.ranges(std::int64_t(i)).count();
  std::int64_t seen = 0;
  std::size_t p = 1;
  for (std::size_t blk = 0; blk < blocks && p < s; ++blk) {
    std::int64_t in_block = 0;
    for (std::size_t i = blk * bq; i < std::min(Nq, blk * bq + bq); ++i)
      in_block += rules.ranges(std::int64_t(i)).count();
    for (; p < s; ++p) {  // cut p before this block or after it, whichever is closer
      const std::int64_t share = total / std::int64_t(s) * std::int64_t(p) +
                                 total % std::int64_t(s) * std::int64_t(p) / std::int64_t(s);
      if (seen + in_block < share) break;
      m.rows[p] = (share - seen <= seen + in_block - share ? blk : blk + 1) * bq;
      m.rows[p] = std::min(m.rows[p], Nq);
    }
    seen += in_block;
  }
  for (; p < s; ++p) m.rows[p] = Nq;

  // Visible pairs per part and tile.
  std::fill(m.pairs, m.pairs + s * tiles, std::int64_t(0));
  std::fill(m.column, m.column + tiles, std::int64_t(0));
  for (std::size_t q = 0; q < s; ++q)
    for (std::size_t i = m.rows[q]; i < m.rows[q + 1]; ++i) {
      const row_ranges rr = rules.ranges(std::int64_t(i));
      const key_range hull = rr.hull();
      if (hull.size() == 0) continue;
      for (std::size_t j = std::size_t(hull.begin) / bc; j * bc < std::size_t(hull.end); ++j) {
        const std::int64_t in = rr.count_in({std::int64_t(j * bc), std::int64_t(std::min(Nk, j * bc + bc))});
        m.pairs[q * tiles + j] += in, m.column[j] += in;
      }
    }
  std::int64_t hi = 0;
  for (std::size_t q = 0; q < s; ++q) {
    m.base[q] = 0;
    for (std::size_t j = 0; j < tiles; ++j) m.base[q] += 6 * m.pairs[q * tiles + j];
    hi += m.base[q];
  }
  for (std::size_t j = 0; j < tiles; ++j) hi += 8 * m.column[j];

  // Tile cuts: the least largest cost M for which a greedy fill, in part order, places
  // every tile; a tile owned by part q adds 8 (its pairs) − 4 (q's pairs in it).
  auto fill = [&](std::int64_t M) {
    std::size_t j = 0;
    for (std::size_t q = 0; q < s; ++q) {
      m.tiles[q] = j;
      std::int64_t cost = m.base[q];
      if (cost > M) return false;
      for (; j < tiles; ++j) {
        const std::int64_t add = 8 * m.column[j] - 4 * m.pairs[q * tiles + j];
        if (cost + add > M) break;
        cost += add;
      }
    }
    m.tiles[s] = tiles;
    return j == tiles;
  };
  std::int64_t lo = 0;
  while (lo < hi) {
    const std::int64_t mid = lo + (hi - lo) / 2;
    if (fill(mid))
      hi = mid;
    else
      lo = mid + 1;
  }
  fill(lo);
  return backward_parts{s, m.rows, m.tiles};
}

}  // namespace headwise::detail
