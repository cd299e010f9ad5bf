// headwise/eigen.hpp — Eigen adapters: token matrices ↔ attention views.
//
// Model code keeps activations as row-major token matrices: x [T × H·D], one
// token per row, its H heads of D features side by side. That memory *is* a
// BSHD tensor with B = 1, so the adapters below only compute strides:
//   as_bshd(m, H, D)     →  tensor_view [1, H, T, D], seq stride = m.outerStride()
//   as_bshd(m, H, D, B)  →  [B, H, T/B, D]: B sequences of T/B rows, one after another
//   as_matrix(view)      →  Map [T × H·D] with that outer stride (the inverse)
// A column block of a wider matrix (the q part of a fused qkv buffer, say) works
// too: its outer stride is the parent's width. Nothing is copied, ever.
//
// The Ref aliases fix the convention used by lora.hpp and mha.hpp:
//   matrix_ref<T>        Ref<row_matrix<T>>: any row-major block with unit inner
//                        stride; a mismatched argument is a compile error.
//   const_matrix_ref<T>  Ref<const row_matrix<T>>: the same, but Eigen silently
//                        evaluates a mismatched expression (a column-major
//                        matrix, a product) into a temporary — correct, one
//                        copy. Pass row-major blocks to stay zero-copy.
// matrix_scratch<T> is a grow-only buffer handing out row-major maps, so layers
// reuse their scratch across calls instead of allocating per token.
//
// 16-bit matrices are Eigen's own scalars, Eigen::bfloat16 and Eigen::half (Eigen
// 3.4): row_matrix<Eigen::bfloat16>, a Map over a checkpoint's uint16 buffer, a block
// of either. They hold the bits of headwise::bfloat16 and headwise::half, which are
// storage only (no NumTraits, so no Eigen matrix of them can exist), and are what
// an Eigen user already has. Nothing computes in them: widen() makes a float copy
// (exact), narrow() rounds a float matrix once to nearest even, both through
// storage.hpp's conversions, the ones attention() rounds with; storage_16<A> names
// headwise's type of A's bits, for the views attention() reads. Per element, one
// thread, Zen 4, -O3: bfloat16 widen 0.06 ns and narrow 0.09 ns with -march=native
// (vectorized: a float copy takes 0.09), 0.1 and 0.6 ns in a portable SSE2 build;
// half 1.3 and 4.6 ns (storage.hpp's branchy scalar conversion). A layer or LoRA
// call converts T·(in + out) elements against 2·T·in·out FLOPs of its GEMMs.
//
// This header, lora.hpp and mha.hpp are the only ones that include Eigen; the
// umbrella headwise.hpp stays Eigen-free. Link headwise::eigen to use them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

// GCC 12's avx512fintrin.h initialises its "undefined" vectors from themselves
// (__m512 __Y = __Y;, GCC PR 105593, fixed in 13), so Eigen's AVX-512 GEMM kernel,
// instantiated by lora.hpp and mha.hpp, warns -W(maybe-)uninitialized in every
// -march=native build. GCC judges an inlined warning by the pragmas around each
// line it was inlined through, all in Eigen here: this covers them when Eigen is
// first included by headwise.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <Eigen/Core>
#pragma GCC diagnostic pop
#else
#include <Eigen/Core>
#endif

#include "headwise/detail/internal_begin.hpp"

#include "headwise/detail/checks_eigen.hpp"
#include "headwise/storage.hpp"
#include "headwise/tensor.hpp"

#include "headwise/detail/internal_end.hpp"

namespace headwise {

template <class T>
using row_matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

template <class T>
using row_vector = Eigen::Matrix<T, 1, Eigen::Dynamic>;

template <class T>
using matrix_ref = Eigen::Ref<row_matrix<T>>;

template <class T>
using const_matrix_ref = Eigen::Ref<const row_matrix<T>>;

template <class T>
using matrix_map = Eigen::Map<row_matrix<T>>;

namespace detail {

/// as_bshd's view over `rows` token rows `stride` elements apart from data.
template <class T>
tensor_view<T> bshd_rows(T* data, std::size_t rows, std::ptrdiff_t stride, std::size_t heads, std::size_t dim,
                         std::size_t batch) {
  const std::size_t seq = rows / batch;
  return tensor_view<T>(data, batch, heads, seq, dim, std::ptrdiff_t(seq) * stride,
                        static_cast<std::ptrdiff_t>(dim), stride);
}

}  // namespace detail

/// BSHD view [batch, heads, rows / batch, dim] of a row-major token matrix
/// [rows × heads·dim] holding `batch` sequences of equal length, one after another:
/// any Eigen object with direct access (Matrix, Map, Ref, a block of them). The
/// view's elements are const exactly when m's data() is (a const matrix, a Ref<const>).
template <class M>
auto as_bshd(M&& m, std::size_t heads, std::size_t dim, std::size_t batch = 1) {
  static_assert(std::decay_t<M>::IsRowMajor, "as_bshd needs a row-major matrix: one token per row");
  detail::check_as_bshd(m.rows(), m.cols(), m.innerStride(), heads, dim, batch);
  return detail::bshd_rows(m.data(), static_cast<std::size_t>(m.rows()),
                           static_cast<std::ptrdiff_t>(m.outerStride()), heads, dim, batch);
}

/// Row-major map [seq × heads·dim] of a view whose heads sit side by side in each
/// token row (BSHD with B = 1 and head_stride == dim): the inverse of as_bshd.
template <class T>
Eigen::Map<row_matrix<T>, Eigen::Unaligned, Eigen::OuterStride<>> as_matrix(const tensor_view<T>& v) {
  detail::check_as_matrix(v);
  const auto cols = static_cast<Eigen::Index>(v.heads() * v.dim());
  return {v.data(), static_cast<Eigen::Index>(v.seq()), cols,
          Eigen::OuterStride<>(v.seq() > 1 ? v.seq_stride() : cols)};
}

/// Grow-only scratch: take(rows, cols) maps the first rows·cols elements as a
/// row-major matrix, reallocating only when a call needs more than any before.
/// A take() invalidates maps from earlier take() calls of the same matrix_scratch.
template <class T>
class matrix_scratch {
 public:
  matrix_map<T> take(Eigen::Index rows, Eigen::Index cols) {
    const auto need = static_cast<std::size_t>(rows) * static_cast<std::size_t>(cols);
    if (storage_.size() < need) storage_.resize(need);
    return {storage_.data(), rows, cols};
  }
  std::size_t capacity() const noexcept { return storage_.size(); }

 private:
  std::vector<T> storage_;
};

/// Whether A is one of Eigen's 16-bit scalars (Eigen::bfloat16, Eigen::half).
template <class A>
inline constexpr bool is_eigen_16 = std::is_same_v<A, Eigen::bfloat16> || std::is_same_v<A, Eigen::half>;

/// headwise's storage type of the same bits as Eigen's 16-bit scalar A.
template <class A>
using storage_16 = std::conditional_t<std::is_same_v<A, Eigen::half>, half, bfloat16>;

namespace detail {

/// The scalar of an Eigen expression M, when 16-bit: the overloads on 16-bit
/// activations exist for exactly these (a float argument takes the float overload).
template <class M>
using eigen_16_scalar =
    std::enable_if_t<is_eigen_16<typename std::decay_t<M>::Scalar>, typename std::decay_t<M>::Scalar>;

}  // namespace detail

/// out = in as float, exactly; out of in's shape (row-major blocks with direct access).
template <class In, class Out>
void widen(const In& in, Out&& out) {
  using A = typename In::Scalar;
  static_assert(is_eigen_16<A>, "widen() reads Eigen::bfloat16 or Eigen::half");
  detail::check_shapes("widen", {{"out", out, in.rows(), in.cols()}});
  const Eigen::Index rows = in.rows(), cols = in.cols();  // not reread after each store: the loop vectorizes
  for (Eigen::Index i = 0; i < rows; ++i) {
    const A* src = in.data() + i * in.outerStride();
    float* dst = out.data() + i * out.outerStride();
    for (Eigen::Index j = 0; j < cols; ++j) {
      std::uint16_t bits;
      std::memcpy(&bits, src + j, sizeof bits);
      dst[j] = static_cast<float>(storage_16<A>::from_bits(bits));
    }
  }
}

/// out = in rounded once to nearest even (storage.hpp), out of in's shape.
template <class In, class Out>
void narrow(const In& in, Out&& out) {
  using A = typename std::decay_t<Out>::Scalar;
  static_assert(is_eigen_16<A>, "narrow() writes Eigen::bfloat16 or Eigen::half");
  detail::check_shapes("narrow", {{"out", out, in.rows(), in.cols()}});
  const Eigen::Index rows = in.rows(), cols = in.cols();
  for (Eigen::Index i = 0; i < rows; ++i) {
    const float* src = in.data() + i * in.outerStride();
    A* dst = out.data() + i * out.outerStride();
    for (Eigen::Index j = 0; j < cols; ++j) {
      const std::uint16_t bits = detail::convert_element<storage_16<A>>(src[j]).bits;
      std::memcpy(static_cast<void*>(dst + j), &bits, sizeof bits);  // A is trivially copyable
    }
  }
}

}  // namespace headwise
