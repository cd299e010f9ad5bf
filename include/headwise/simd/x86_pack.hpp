// headwise/simd/x86_pack.hpp — the vector pack of an x86 dispatch path: vec<T>, one
// register of HEADWISE_PATH_BYTES (16 SSE2, 32 AVX2, 64 AVX-512), and ops<vec<T>>.
//
// Why not xsimd here: xsimd declares an arch's batch only when the compiler's flags
// enable that arch (its config reads __AVX2__, __AVX512F__ ...), so one translation
// unit built without -m flags cannot hold its AVX2 and AVX-512 batches; and xsimd's
// functions carry no target attribute, so the intrinsics they wrap refuse to inline
// into them. vec<T> is a GCC/Clang vector-extension register (+, −, × and shifts
// come from the compiler) whose few other operations are intrinsics; defined inside
// the path's target pragma, it compiles to that path's instructions. xsimd remains
// the pack of builds without dispatch (simd/xsimd_pack.hpp: AArch64, -DHEADWISE_NO_DISPATCH).
//
// Per-path header (kernels/paths.hpp): no include guard, namespace headwise::<path>.
#if !defined(HEADWISE_INTERNAL) || !defined(HEADWISE_ISA_NS)
#error "headwise/simd/* is internal: include <headwise/headwise.hpp>"
#endif

namespace headwise::HEADWISE_ISA_NS::simd {

/// The GCC/Clang vector type of `bytes` bytes of T (explicit specialisations: GCC
/// drops a vector_size attribute that depends on a template parameter).
template <class T, std::size_t bytes>
struct x86_register;
#define HEADWISE_X86_REGISTER(T, bytes)                     \
  template <>                                               \
  struct x86_register<T, bytes> {                           \
    typedef T type __attribute__((vector_size(bytes)));     \
  };
HEADWISE_X86_REGISTER(float, HEADWISE_PATH_BYTES)
HEADWISE_X86_REGISTER(double, HEADWISE_PATH_BYTES)
HEADWISE_X86_REGISTER(std::uint32_t, HEADWISE_PATH_BYTES)
HEADWISE_X86_REGISTER(std::uint64_t, HEADWISE_PATH_BYTES)
#undef HEADWISE_X86_REGISTER

/// One register of T; converts to and from the intrinsics' register types.
template <class T>
struct vec {
  using value_type = T;
  using register_type = typename x86_register<T, HEADWISE_PATH_BYTES>::type;
  static constexpr std::size_t size = HEADWISE_PATH_BYTES / sizeof(T);

  register_type v;

  vec() = default;
  HEADWISE_ALWAYS_INLINE vec(register_type x) : v(x) {}
  HEADWISE_ALWAYS_INLINE vec(T x) : v(broadcast(x)) {}
  HEADWISE_ALWAYS_INLINE operator register_type() const { return v; }

  HEADWISE_ALWAYS_INLINE static vec load_unaligned(const T* p) {
    register_type x;
    std::memcpy(&x, p, sizeof x);
    return x;
  }
  HEADWISE_ALWAYS_INLINE static vec load_aligned(const T* p) {
    register_type x;
    std::memcpy(&x, __builtin_assume_aligned(p, sizeof x), sizeof x);
    return x;
  }
  HEADWISE_ALWAYS_INLINE void store_unaligned(T* p) const { std::memcpy(p, &v, sizeof v); }
  HEADWISE_ALWAYS_INLINE void store_aligned(T* p) const { std::memcpy(__builtin_assume_aligned(p, sizeof v), &v, sizeof v); }

  /// x in every lane. For floats not as `register_type{} + x`: 0 + x cannot fold to x
  /// without -ffast-math (−0 + 0 = +0), so each broadcast cost a zeroing and an add
  /// inside the tiles' inner loops (decode ran 30% slower).
  HEADWISE_ALWAYS_INLINE static register_type broadcast(T x) {
    if constexpr (std::is_same_v<T, float>) {
#if HEADWISE_PATH_AVX512
      return _mm512_set1_ps(x);
#elif HEADWISE_PATH_AVX
      return _mm256_set1_ps(x);
#else
      return _mm_set1_ps(x);
#endif
    } else if constexpr (std::is_same_v<T, double>) {
#if HEADWISE_PATH_AVX512
      return _mm512_set1_pd(x);
#elif HEADWISE_PATH_AVX
      return _mm256_set1_pd(x);
#else
      return _mm_set1_pd(x);
#endif
    } else {
      return register_type{} + x;  // integers: exact, folds
    }
  }

  // Members, not friends: GCC leaves friends defined in a class out of the target pragma.
  HEADWISE_ALWAYS_INLINE vec operator+(const vec& b) const { return v + b.v; }
  HEADWISE_ALWAYS_INLINE vec operator-(const vec& b) const { return v - b.v; }
  HEADWISE_ALWAYS_INLINE vec operator*(const vec& b) const { return v * b.v; }
  HEADWISE_ALWAYS_INLINE vec operator<<(int n) const { return v << n; }
};

template <class T>
struct ops<vec<T>> {
  using value_type = T;
  using pack = vec<T>;
  using register_type = typename pack::register_type;
  using bits = vec<bits_of<T>>;
  static constexpr std::size_t width = pack::size;
  static constexpr bool is_float = std::is_same_v<T, float>;

  HEADWISE_ALWAYS_INLINE static pack load(const T* p) { return pack::load_unaligned(p); }
  HEADWISE_ALWAYS_INLINE static void store(T* p, const pack& x) { x.store_unaligned(p); }
  HEADWISE_ALWAYS_INLINE static pack load_partial(const T* p, std::size_t n, T fill) { return load_partial_lanes<pack>(p, n, fill); }
  HEADWISE_ALWAYS_INLINE static pack fma(const pack& a, const pack& b, const pack& c) {
#if HEADWISE_PATH_AVX512
    if constexpr (is_float) return _mm512_fmadd_ps(a.v, b.v, c.v);
    else return _mm512_fmadd_pd(a.v, b.v, c.v);
#elif HEADWISE_PATH_AVX2
    if constexpr (is_float) return _mm256_fmadd_ps(a.v, b.v, c.v);
    else return _mm256_fmadd_pd(a.v, b.v, c.v);
#else
    return a.v * b.v + c.v;  // SSE2 has no FMA
#endif
  }
  /// Makes x an opaque register value, so the compiler cannot re-read it from memory.
  /// A vector loaded once for several FMAs of a register tile is otherwise folded by
  /// GCC into each FMA as a memory operand: decode's 4 × 4 score tile issued 32 loads
  /// per 16 FMAs and ran load-bound (kernels/decode.hpp).
  HEADWISE_ALWAYS_INLINE static void keep_in_register(pack& x) {
    register_type r = x.v;
    __asm__("" : "+v"(r));
    x.v = r;
  }
  /// max as the instruction defines it (the second operand when either is NaN).
  HEADWISE_ALWAYS_INLINE static pack max(const pack& a, const pack& b) {
#if HEADWISE_PATH_AVX512
    if constexpr (is_float) return _mm512_max_ps(a.v, b.v);
    else return _mm512_max_pd(a.v, b.v);
#elif HEADWISE_PATH_AVX
    if constexpr (is_float) return _mm256_max_ps(a.v, b.v);
    else return _mm256_max_pd(a.v, b.v);
#else
    if constexpr (is_float) return _mm_max_ps(a.v, b.v);
    else return _mm_max_pd(a.v, b.v);
#endif
  }
  HEADWISE_ALWAYS_INLINE static T reduce_add(const pack& x) {
#if HEADWISE_PATH_AVX512
    if constexpr (is_float) return _mm512_reduce_add_ps(x.v);
    else return _mm512_reduce_add_pd(x.v);
#else
    return lane_fold(x, [](T a, T b) { return a + b; });
#endif
  }
  HEADWISE_ALWAYS_INLINE static T reduce_max(const pack& x) {
#if HEADWISE_PATH_AVX512
    if constexpr (is_float) return _mm512_reduce_max_ps(x.v);
    else return _mm512_reduce_max_pd(x.v);
#elif HEADWISE_PATH_AVX
    if constexpr (is_float) return x86::max_lane_8(x.v);
    else return lane_fold(x, [](T a, T b) { return b > a ? b : a; });
#else
    return lane_fold(x, [](T a, T b) { return b > a ? b : a; });
#endif
  }
  /// Lane i of the result is the sum of the lanes of rows[i], for i < width.
  HEADWISE_ALWAYS_INLINE static pack reduce_add_rows(const pack* rows) {
#if HEADWISE_PATH_AVX512
    if constexpr (is_float) return x86::sum_rows_16(rows);
#elif HEADWISE_PATH_AVX
    if constexpr (is_float) return x86::sum_rows_8(rows);
#endif
    alignas(64) T sums[width];
    for (std::size_t i = 0; i < width; ++i) sums[i] = reduce_add(rows[i]);
    return pack::load_aligned(sums);
  }
  /// Stores the lanes of x as R rows of width/R consecutive values: lanes
  /// [i·width/R, (i+1)·width/R) to dst + i·ld.
  template <std::size_t R>
  HEADWISE_ALWAYS_INLINE static void store_rows(const pack& x, T* dst, std::size_t ld) {
    static_assert(width % R == 0);
#if HEADWISE_PATH_AVX512
    if constexpr (is_float && (R == 1 || R == 2 || R == 4)) {
      x86::store_rows_16<R>(x.v, dst, ld);
      return;
    }
#endif
    constexpr std::size_t per_row = width / R;
    for (std::size_t i = 0; i < R; ++i) std::memcpy(dst + i * ld, reinterpret_cast<const T*>(&x.v) + i * per_row,
                                                    per_row * sizeof(T));
  }
  HEADWISE_ALWAYS_INLINE static pack select_less(const pack& x, const pack& bound, const pack& if_less, const pack& otherwise) {
    return select<_CMP_LT_OQ>(x, bound, if_less, otherwise);
  }
  HEADWISE_ALWAYS_INLINE static pack select_greater(const pack& x, const pack& bound, const pack& if_greater, const pack& otherwise) {
    return select<_CMP_GT_OQ>(x, bound, if_greater, otherwise);
  }
  // Vector casts of the same size reinterpret the bits (GCC/Clang vector extensions).
  HEADWISE_ALWAYS_INLINE static bits to_bits(const pack& x) { return __builtin_bit_cast(typename bits::register_type, x.v); }
  HEADWISE_ALWAYS_INLINE static pack from_bits(const bits& b) { return __builtin_bit_cast(typename pack::register_type, b.v); }
  HEADWISE_ALWAYS_INLINE static bits shift_left(const bits& b, int n) { return b << n; }

 private:
  /// Lanes where `x cmp bound` holds (ordered: a NaN lane does not) take a, the others
  /// b: one compare and one blend (AVX-512 mask registers, AVX blendv); SSE2 ands.
  template <int cmp>
  HEADWISE_ALWAYS_INLINE static pack select(const pack& x, const pack& bound, const pack& a, const pack& b) {
#if HEADWISE_PATH_AVX512
    if constexpr (is_float) return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x.v, bound.v, cmp), b.v, a.v);
    else return _mm512_mask_blend_pd(_mm512_cmp_pd_mask(x.v, bound.v, cmp), b.v, a.v);
#elif HEADWISE_PATH_AVX
    if constexpr (is_float) return _mm256_blendv_ps(b.v, a.v, _mm256_cmp_ps(x.v, bound.v, cmp));
    else return _mm256_blendv_pd(b.v, a.v, _mm256_cmp_pd(x.v, bound.v, cmp));
#else
    using U = typename bits::register_type;
    const U m = (U)(cmp == _CMP_LT_OQ ? x.v < bound.v : x.v > bound.v);
    return (typename pack::register_type)((m & (U)a.v) | (~m & (U)b.v));
#endif
  }
  /// Folds the lanes pairwise, halving the width each round (log2 width rounds).
  template <class F>
  HEADWISE_ALWAYS_INLINE static T lane_fold(const pack& x, F f) {
    alignas(64) T t[width];
    x.store_aligned(t);
    for (std::size_t n = width / 2; n > 0; n /= 2)
      for (std::size_t i = 0; i < n; ++i) t[i] = f(t[i], t[i + n]);
    return t[0];
  }
};

template <class T>
using vector_pack = vec<T>;

inline constexpr std::size_t vector_registers = HEADWISE_PATH_AVX512 ? 32 : 16;

/// Number of lanes of the vector path for T.
template <class T>
inline constexpr std::size_t vector_width = vec<T>::size;

}  // namespace headwise::HEADWISE_ISA_NS::simd
