// headwise/simd/pack.hpp — the operations kernels need on a "pack" (a vector of
// lanes), and the 1-wide pack.
//
//   ops<P>: the operations a kernel needs on a pack P of value_type T, where P is
//   the path's vector (simd::vector_pack<T>: simd/x86_pack.hpp on x86 with dispatch,
//   simd/xsimd_pack.hpp otherwise) or plain T (the 1-wide scalar path). Kernels are
//   written once against ops<P>; force_scalar instantiates them with P = T, as
//   Eigen treats a scalar as a packet of size 1.
//   vector_registers tells the kernels how many registers their blocks may use (32
//   with AVX-512, else 16): see kernels/flash_tiles.hpp.
//
// Per-path header (kernels/paths.hpp): no include guard, namespace headwise::<path>.
#if !defined(HEADWISE_INTERNAL) || !defined(HEADWISE_ISA_NS)
#error "headwise/simd/* is internal: include <headwise/headwise.hpp>"
#endif

namespace headwise::HEADWISE_ISA_NS::simd {

/// Unsigned integer of the same width as T (bit manipulation in exp).
template <class T>
using bits_of = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;

template <class P>
struct ops;

/// The 1-wide pack: P is the scalar itself.
template <class T>
struct scalar_ops {
  using value_type = T;
  using bits = bits_of<T>;
  static constexpr std::size_t width = 1;

  static T load(const T* p) { return *p; }
  static void store(T* p, T x) { *p = x; }
  /// Loads n < width elements (never for width 1, kept for a uniform interface).
  static T load_partial(const T* p, std::size_t n, T fill) { return n ? *p : fill; }
  static T fma(T a, T b, T c) { return a * b + c; }
  static void keep_in_register(T&) {}
  static T max(T a, T b) { return a < b ? b : a; }
  static T reduce_add(T x) { return x; }
  static T reduce_max(T x) { return x; }
  static T select_less(T x, T bound, T if_less, T otherwise) { return x < bound ? if_less : otherwise; }
  static T select_greater(T x, T bound, T if_greater, T otherwise) {
    return x > bound ? if_greater : otherwise;
  }
  static bits to_bits(T x) {
    bits b;
    std::memcpy(&b, &x, sizeof b);
    return b;
  }
  static T from_bits(bits b) {
    T x;
    std::memcpy(&x, &b, sizeof x);
    return x;
  }
  static bits shift_left(bits b, int n) { return b << n; }
};

template <>
struct ops<float> : scalar_ops<float> {};
template <>
struct ops<double> : scalar_ops<double> {};

/// Loads p[0..n) into the first n lanes of a P of `width` lanes (n < width), the others
/// get `fill`; reads nothing past p + n (the vector packs' load_partial).
template <class P, class T>
HEADWISE_ALWAYS_INLINE P load_partial_lanes(const T* p, std::size_t n, T fill) {
  alignas(64) T tmp[P::size];
  for (std::size_t i = 0; i < P::size; ++i) tmp[i] = i < n ? p[i] : fill;
  return P::load_aligned(tmp);
}

/// Requests the cache line holding p into L1. On x86 this is a volatile asm
/// statement: GCC deletes loops whose only statements are __builtin_prefetch
/// (they have no side effects), which silently removed the decode kernel's
/// look-ahead and cost 30% of its speed.
inline void prefetch(const void* p) noexcept {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  __asm__ volatile("prefetcht0 %0" : : "m"(*static_cast<const char*>(p)));
#else
  __builtin_prefetch(p, 0, 3);
#endif
}

}  // namespace headwise::HEADWISE_ISA_NS::simd
