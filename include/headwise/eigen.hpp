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
// This header, lora.hpp and mha.hpp are the only ones that include Eigen; the
// umbrella headwise.hpp stays Eigen-free. Link headwise::eigen to use them.
#pragma once

#include <cstddef>
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

/// BSHD view [batch, heads, rows / batch, dim] of a row-major token matrix
/// [rows × heads·dim] holding `batch` sequences of equal length, one after another:
/// any Eigen object with direct access (Matrix, Map, Ref, a block of them). The
/// view's elements are const exactly when m's data() is (a const matrix, a Ref<const>).
template <class M>
auto as_bshd(M&& m, std::size_t heads, std::size_t dim, std::size_t batch = 1) {
  static_assert(std::decay_t<M>::IsRowMajor, "as_bshd needs a row-major matrix: one token per row");
  using element = std::remove_pointer_t<decltype(m.data())>;
  detail::check_as_bshd(m.rows(), m.cols(), m.innerStride(), heads, dim, batch);
  const auto seq = static_cast<std::size_t>(m.rows()) / batch;
  const auto stride = static_cast<std::ptrdiff_t>(m.outerStride());
  return tensor_view<element>(m.data(), batch, heads, seq, dim, std::ptrdiff_t(seq) * stride,
                              static_cast<std::ptrdiff_t>(dim), stride);
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

}  // namespace headwise
