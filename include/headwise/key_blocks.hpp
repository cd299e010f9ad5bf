// headwise/key_blocks.hpp — moving K between rows and key blocks (key_view.hpp).
//
//   pack_key_blocks(rows, blocks)    rows [B, H, S, D] → key blocks, zero padding keys
//   unpack_key_blocks(blocks, rows)  key blocks → rows
// Both check shapes and bounds and refuse overlapping storage; kv_cache with
// kv_layout::key_blocks packs on append, so most users never call them.
#pragma once

#include <cstddef>
#include <type_traits>

#include "headwise/detail/internal_begin.hpp"

#include "headwise/detail/checks.hpp"
#include "headwise/key_view.hpp"
#include "headwise/tensor.hpp"

#include "headwise/detail/internal_end.hpp"

namespace headwise {

/// Copies K from rows into key blocks, zeros in the last block's padding keys.
/// The two must not overlap.
template <class TR, class T>
void pack_key_blocks(const tensor_view<TR>& rows, const key_blocks_view<T>& blocks) {
  static_assert(std::is_same_v<std::remove_const_t<TR>, T>, "rows and blocks must hold one element type");
  detail::check_key_copy("pack_key_blocks", rows, blocks, true);
  const std::size_t S = rows.seq(), D = rows.dim(), Sp = blocks.blocks() * key_block_keys;
  for (std::size_t b = 0; b < rows.batch(); ++b)
    for (std::size_t h = 0; h < rows.heads(); ++h)
      for (std::size_t s = 0; s < Sp; ++s)
        for (std::size_t d = 0; d < D; ++d) blocks(b, h, s, d) = s < S ? rows(b, h, s, d) : T(0.0f);
}

/// Copies K from key blocks into rows. The two must not overlap.
template <class TB, class T>
void unpack_key_blocks(const key_blocks_view<TB>& blocks, const tensor_view<T>& rows) {
  static_assert(std::is_same_v<std::remove_const_t<TB>, T>, "blocks and rows must hold one element type");
  detail::check_key_copy("unpack_key_blocks", rows, blocks, false);
  for (std::size_t b = 0; b < rows.batch(); ++b)
    for (std::size_t h = 0; h < rows.heads(); ++h)
      for (std::size_t s = 0; s < rows.seq(); ++s)
        for (std::size_t d = 0; d < rows.dim(); ++d) rows(b, h, s, d) = blocks(b, h, s, d);
}

}  // namespace headwise
