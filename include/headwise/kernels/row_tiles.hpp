// headwise/kernels/row_tiles.hpp — covering query rows with register tiles.
//
// for_row_tiles<Max>(rows, fn) calls fn(std::integral_constant<size_t, R>, first_row)
// with R = Max over the whole tiles, then once for each power of two in the binary
// form of the remainder, largest first (Max 12, 23 rows: 12, 8, 2, 1). Each kernel
// instantiates its tile for Max and the powers of two below it: five sizes instead
// of twelve on AVX-512, and the common remainders are single tiles. The flash tiles
// (Max 6 or 12) and the decode passes (Max 4) share it.
// Per-path header (kernels/paths.hpp): no include guard, namespace headwise::<path>.
#ifndef HEADWISE_ISA_NS
#error "headwise/kernels/* is internal: include <headwise/headwise.hpp>"
#endif

namespace headwise::HEADWISE_ISA_NS::kernels {

template <std::size_t Max, class Fn>
HEADWISE_ALWAYS_INLINE void for_row_tiles(std::size_t rows, Fn&& fn) {
  static_assert(Max >= 1 && Max < 16, "remainders are covered by tiles of 8, 4, 2 and 1 rows");
  std::size_t first = 0;
  for (; first + Max <= rows; first += Max) fn(std::integral_constant<std::size_t, Max>{}, first);
  auto tile = [&](auto size_c) {
    constexpr std::size_t R = decltype(size_c)::value;
    if constexpr (R < Max) {
      if ((rows - first) & R) fn(size_c, first), first += R;
    }
  };
  tile(std::integral_constant<std::size_t, 8>{});
  tile(std::integral_constant<std::size_t, 4>{});
  tile(std::integral_constant<std::size_t, 2>{});
  tile(std::integral_constant<std::size_t, 1>{});
}

}  // namespace headwise::HEADWISE_ISA_NS::kernels
