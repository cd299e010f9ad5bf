// headwise/kernels/decode_stream.hpp — how the decode kernel requests its stream of
// K and V rows from memory: the per-core stream_plan (look-ahead, page touches) and
// chunk_stream, which turns "rows [p0, p1) of this chunk's K-then-V stream" into
// prefetches of their cache lines. Requests never change results; what they buy,
// core by core, is in docs/decode-notes.md.
#ifndef HEADWISE_ISA_NS
#error "headwise/kernels/* is internal: include <headwise/headwise.hpp>"
#endif

namespace headwise::HEADWISE_ISA_NS::kernels::decode {

/// How each pass of a chunk requests its stream of K (then V) rows: every line
/// prefetch_bytes ahead of the row it reads (0: the rows of the tile about to read
/// them) and, with touch_pages, one line per 4 KiB page decode_touch_rows beyond
/// that, which starts the hardware's streaming early. What works depends on the
/// core's prefetchers, so the plan is chosen per core (docs/decode-notes.md):
///   - default (measured on Zen 5 and an AVX-512 Xeon): 3 KiB ahead, 6 fp32 or 12
///     fp16 rows at d 128 (4 to 32 rows measured; without requests fp32 steps ran
///     1.5× slower), and page touches (fp32 25-28% faster, fp16 5-20%).
///   - AMD family 19h (Zen 3, Zen 4): the tile's own rows, in address order, no touches. Zen 4's
///     prefetchers lose a stream whose lines are first read out of order, as the score
///     tile reads them (pack d of 4 rows, then pack d + 1): a bare 256 MiB stream read
///     in that order ran at 9 GB/s against 27 in address order, and 25 when each tile's
///     lines were first requested in address order. Any look-ahead (0.5-3 KiB), or the
///     page touches, made fp32 steps slower; fp32 B1 Nk 32768 steps ran 1.6-2.0× faster
///     with this plan than with the default, and 1.9× faster than with no requests.
///     Zen 3 (Milan; Hq32 Hkv8 d128, Nk 4096 and 32768, rows and key blocks, 1 and 2
///     threads): fp32 steps 1.05-1.5× faster than with the default, fp16 1.04-1.5×,
///     except fp16 rows at B1 Nk 4096 (0.88-1.01×), a shape that fits in L3.
struct stream_plan {
  std::size_t prefetch_bytes;
  bool touch_pages;

  /// Rows of row_bytes each that the look-ahead spans: 0, or at least 1.
  std::size_t ahead_rows(std::size_t row_bytes) const {
    return prefetch_bytes == 0 ? 0 : std::max<std::size_t>(1, prefetch_bytes / std::max<std::size_t>(row_bytes, 1));
  }
};

inline stream_plan decode_stream_plan(detail::cpu_core core) {
  return core == detail::cpu_core::amd_family_19h ? stream_plan{0, false} : stream_plan{3072, true};
}

/// Rows beyond the look-ahead at which each pass touches one line per 4 KiB page of
/// the stream, where the plan touches pages. Measured on Zen 5 (B1/B4 Nk 32768, 1
/// and 2 threads, alternating with the previous kernel): 96 rows ran ~8% slower than
/// 32 for fp32.
inline constexpr std::size_t decode_touch_rows = 32;

/// One chunk's K/V as the kernel reads it: K rows 0..n-1 (pass 1), then V rows
/// 0..n-1 (pass 2). request(p0, p1) asks for every 64-byte line of the stream's rows
/// [p0, p1) that exist, so each pass requests the rows ahead of the ones it reads
/// and the end of pass 1 requests the start of pass 2.
template <class S>
struct chunk_stream {
  const S* k = nullptr;
  const S* v = nullptr;
  std::ptrdiff_t k_stride = 0, v_stride = 0;
  std::size_t n = 0, k_bytes = 0, v_bytes = 0;  // rows of each; bytes per row
  std::size_t k_page = page_rows(k_stride), v_page = page_rows(v_stride);  // rows per touch

  /// Requests one line in every 4 KiB of stream rows [p0, p1): the rows at multiples
  /// of a page's worth of rows.
  HEADWISE_ALWAYS_INLINE void touch_pages(std::size_t p0, std::size_t p1) const {
    p1 = std::min(p1, 2 * n);
    for (std::size_t p = round_up_pow2(p0, k_page); p < std::min(p1, n); p += k_page)
      simd::prefetch(k + std::ptrdiff_t(p) * k_stride);
    for (std::size_t p = round_up_pow2(std::max(p0, n) - n, v_page); p + n < p1; p += v_page)
      simd::prefetch(v + std::ptrdiff_t(p) * v_stride);
  }

  HEADWISE_ALWAYS_INLINE void request(std::size_t p0, std::size_t p1) const {
    p1 = std::min(p1, 2 * n);
    if (p0 < n) rows(k, k_stride, k_bytes, p0, std::min(p1, n));
    if (p1 > n) rows(v, v_stride, v_bytes, std::max(p0, n) - n, p1 - n);
  }

  /// Every line of rows [r0, r1) of x: one run of lines when the rows are contiguous.
  HEADWISE_ALWAYS_INLINE static void rows(const S* x, std::ptrdiff_t stride, std::size_t bytes, std::size_t r0, std::size_t r1) {
    if (r0 >= r1) return;
    if (std::size_t(stride) * sizeof(S) == bytes)
      lines(x + std::ptrdiff_t(r0) * stride, (r1 - r0) * bytes);
    else
      for (std::size_t r = r0; r < r1; ++r) lines(x + std::ptrdiff_t(r) * stride, bytes);
  }

  /// Rows per touch: the largest power of two of rows within 4 KiB (at least 1), so
  /// every page of the stream gets a touch and finding the next needs no division.
  static std::size_t page_rows(std::ptrdiff_t stride) {
    const std::size_t rows = 4096 / std::max<std::size_t>(1, std::size_t(stride) * sizeof(S));
    std::size_t p = 1;
    while (2 * p <= rows) p *= 2;
    return p;
  }
  static std::size_t round_up_pow2(std::size_t x, std::size_t pow2) { return (x + pow2 - 1) & ~(pow2 - 1); }

  /// Every cache line that [row, row + bytes) touches, also when row is not line aligned.
  HEADWISE_ALWAYS_INLINE static void lines(const S* row, std::size_t bytes) {
    const auto first = reinterpret_cast<std::uintptr_t>(row);
    const std::uintptr_t end = first + bytes;
    for (std::uintptr_t a = first & ~std::uintptr_t(63); a < end; a += 64)
      simd::prefetch(reinterpret_cast<const void*>(a));
  }
};

}  // namespace headwise::HEADWISE_ISA_NS::kernels::decode
