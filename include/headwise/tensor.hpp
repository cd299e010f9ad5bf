// headwise/tensor.hpp — non-owning views over user memory.
//
// tensor_view<T> is a 4-D strided view [batch, heads, seq, dim] with element
// (not byte) strides for the first three axes; the last axis is contiguous, so
// every (b, h, s) row is a dense run of dim() elements that SIMD loads can read.
// Strides may be zero (broadcast) or any positive value, which covers both
// memory orders attention code meets in practice:
//   BSHD  [batch, seq, heads, dim]  FlashAttention, llama.cpp, most model code
//   BHSD  [batch, heads, seq, dim]  PyTorch SDPA
// A view never allocates and never copies; it is as cheap to pass as a pointer.
//
// span<T> is the 1-D counterpart used for per-head parameters (ALiBi slopes,
// head scales): a pointer and a length, C++17 having no std::span.
//
// The factories (bshd, bhsd, mask_view, lse_view) take either a bare pointer,
// trusting the caller, or the buffer itself — a span, or any contiguous
// container with data() and size() such as std::vector — and then throw
// headwise::error when the shape needs more elements than the buffer holds,
// at the call that made the mistake rather than as a read past its end later.
// seq_slice(from, count) narrows the sequence axis (a decode step's last rows,
// a chunk of a prompt) with the same strides, checked against seq().
// An optional view (a mask, the LSE) is absent when not set: is_set() is false only
// for a view with no data and no extent, such as tensor_view{}; one with data and
// seq 0 is set, and checked like any other.
#pragma once

#include <cstddef>
#include <type_traits>

#include "headwise/detail/internal_begin.hpp"

#include "headwise/detail/checks_base.hpp"

#include "headwise/detail/internal_end.hpp"

namespace headwise {

template <class T>
class span {
 public:
  constexpr span() noexcept = default;
  constexpr span(T* data, std::size_t size) noexcept : data_(data), size_(size) {}
  template <class U, class = std::enable_if_t<std::is_convertible_v<U (*)[], T (*)[]>>>
  constexpr span(const span<U>& other) noexcept : data_(other.data()), size_(other.size()) {}
  /// Any contiguous container with data() and size() (std::vector, std::array).
  template <class C, class = decltype(std::declval<C&>().data()),
            class = std::enable_if_t<std::is_convertible_v<
                std::remove_pointer_t<decltype(std::declval<C&>().data())> (*)[], T (*)[]>>>
  constexpr span(C& c) noexcept : data_(c.data()), size_(c.size()) {}

  constexpr T* data() const noexcept { return data_; }
  constexpr std::size_t size() const noexcept { return size_; }
  constexpr bool empty() const noexcept { return size_ == 0; }
  constexpr T& operator[](std::size_t i) const noexcept { return data_[i]; }
  constexpr T* begin() const noexcept { return data_; }
  constexpr T* end() const noexcept { return data_ + size_; }

 private:
  T* data_ = nullptr;
  std::size_t size_ = 0;
};

template <class C>
span(C&) -> span<std::remove_pointer_t<decltype(std::declval<C&>().data())>>;

namespace detail {

/// A contiguous container other than a span: the factories view it through span.
template <class C, class = void>
struct is_buffer : std::false_type {};
template <class C>
struct is_buffer<C, std::void_t<decltype(std::declval<C&>().data()), decltype(std::declval<C&>().size())>>
    : std::bool_constant<std::is_pointer_v<decltype(std::declval<C&>().data())>> {};
template <class T>
struct is_buffer<span<T>> : std::false_type {};
template <class T>
struct is_buffer<const span<T>> : std::false_type {};

template <class C>
using buffer_element = std::remove_pointer_t<decltype(std::declval<C&>().data())>;

}  // namespace detail

template <class T>
class tensor_view {
 public:
  using element_type = T;
  using value_type = std::remove_cv_t<T>;
  using index = std::ptrdiff_t;

  constexpr tensor_view() noexcept = default;

  /// data points at element [0, 0, 0, 0]; shape is {batch, heads, seq, dim};
  /// strides are element strides of the batch, head and seq axes.
  constexpr tensor_view(T* data, std::size_t batch, std::size_t heads, std::size_t seq,
                        std::size_t dim, index batch_stride, index head_stride,
                        index seq_stride) noexcept
      : data_(data),
        batch_(batch),
        heads_(heads),
        seq_(seq),
        dim_(dim),
        batch_stride_(batch_stride),
        head_stride_(head_stride),
        seq_stride_(seq_stride) {}

  /// A view of mutable data converts to a view of const data.
  template <class U, class = std::enable_if_t<std::is_same_v<const U, T> && !std::is_same_v<U, T>>>
  constexpr tensor_view(const tensor_view<U>& other) noexcept
      : tensor_view(other.data(), other.batch(), other.heads(), other.seq(), other.dim(),
                    other.batch_stride(), other.head_stride(), other.seq_stride()) {}

  constexpr T* data() const noexcept { return data_; }
  constexpr std::size_t batch() const noexcept { return batch_; }
  constexpr std::size_t heads() const noexcept { return heads_; }
  constexpr std::size_t seq() const noexcept { return seq_; }
  constexpr std::size_t dim() const noexcept { return dim_; }
  constexpr index batch_stride() const noexcept { return batch_stride_; }
  constexpr index head_stride() const noexcept { return head_stride_; }
  constexpr index seq_stride() const noexcept { return seq_stride_; }
  /// Whether the caller gave a view: a data pointer or any nonzero extent.
  constexpr bool is_set() const noexcept { return data_ != nullptr || batch_ || heads_ || seq_ || dim_; }

  /// Pointer to the contiguous row (b, h, s, 0..dim-1).
  constexpr T* row(std::size_t b, std::size_t h, std::size_t s) const noexcept {
    return data_ + static_cast<index>(b) * batch_stride_ + static_cast<index>(h) * head_stride_ +
           static_cast<index>(s) * seq_stride_;
  }
  constexpr T& operator()(std::size_t b, std::size_t h, std::size_t s, std::size_t d) const noexcept {
    return row(b, h, s)[d];
  }

  /// Rows [from, from + count) of the sequence axis, same strides; throws
  /// headwise::error unless they lie within seq(). An empty slice keeps data().
  constexpr tensor_view seq_slice(std::size_t from, std::size_t count) const {
    detail::check_seq_slice(seq_, from, count);
    T* first = count == 0 ? data_ : data_ + static_cast<index>(from) * seq_stride_;
    return tensor_view(first, batch_, heads_, count, dim_, batch_stride_, head_stride_, seq_stride_);
  }

 private:
  T* data_ = nullptr;
  std::size_t batch_ = 0, heads_ = 0, seq_ = 0, dim_ = 0;
  index batch_stride_ = 0, head_stride_ = 0, seq_stride_ = 0;
};

/// View of dense memory laid out [batch, seq, heads, dim] (FlashAttention, llama-style).
template <class T>
constexpr tensor_view<T> bshd(T* data, std::size_t batch, std::size_t seq, std::size_t heads,
                              std::size_t dim) noexcept {
  using index = std::ptrdiff_t;
  const auto d = static_cast<index>(dim), h = static_cast<index>(heads), s = static_cast<index>(seq);
  return tensor_view<T>(data, batch, heads, seq, dim, s * h * d, d, h * d);
}

/// bshd over a buffer that must hold batch·seq·heads·dim elements.
template <class T>
tensor_view<T> bshd(span<T> buffer, std::size_t batch, std::size_t seq, std::size_t heads, std::size_t dim) {
  detail::check_fits<4>("bshd", {"batch", "seq", "heads", "dim"}, {batch, seq, heads, dim}, buffer.size());
  return bshd(buffer.data(), batch, seq, heads, dim);
}
template <class C, class = std::enable_if_t<detail::is_buffer<C>::value>>
tensor_view<detail::buffer_element<C>> bshd(C& buffer, std::size_t batch, std::size_t seq, std::size_t heads,
                                            std::size_t dim) {
  return bshd(span<detail::buffer_element<C>>(buffer), batch, seq, heads, dim);
}

/// View of dense memory laid out [batch, heads, seq, dim] (PyTorch SDPA).
template <class T>
constexpr tensor_view<T> bhsd(T* data, std::size_t batch, std::size_t heads, std::size_t seq,
                              std::size_t dim) noexcept {
  using index = std::ptrdiff_t;
  const auto d = static_cast<index>(dim), h = static_cast<index>(heads), s = static_cast<index>(seq);
  return tensor_view<T>(data, batch, heads, seq, dim, h * s * d, s * d, d);
}

/// bhsd over a buffer that must hold batch·heads·seq·dim elements.
template <class T>
tensor_view<T> bhsd(span<T> buffer, std::size_t batch, std::size_t heads, std::size_t seq, std::size_t dim) {
  detail::check_fits<4>("bhsd", {"batch", "heads", "seq", "dim"}, {batch, heads, seq, dim}, buffer.size());
  return bhsd(buffer.data(), batch, heads, seq, dim);
}
template <class C, class = std::enable_if_t<detail::is_buffer<C>::value>>
tensor_view<detail::buffer_element<C>> bhsd(C& buffer, std::size_t batch, std::size_t heads, std::size_t seq,
                                            std::size_t dim) {
  return bhsd(span<detail::buffer_element<C>>(buffer), batch, heads, seq, dim);
}

/// View of a dense row-major [batch|1, heads|1, Nq, Nk] attention mask; an
/// axis of size 1 broadcasts over the batches or heads of the attention call.
template <class T>
constexpr tensor_view<T> mask_view(T* data, std::size_t batch, std::size_t heads, std::size_t rows,
                                   std::size_t cols) noexcept {
  return bhsd(data, batch, heads, rows, cols);
}

/// mask_view over a buffer that must hold batch·heads·rows·cols elements.
template <class T>
tensor_view<T> mask_view(span<T> buffer, std::size_t batch, std::size_t heads, std::size_t rows,
                         std::size_t cols) {
  detail::check_fits<4>("mask_view", {"batch", "heads", "rows", "cols"}, {batch, heads, rows, cols},
                        buffer.size());
  return mask_view(buffer.data(), batch, heads, rows, cols);
}
template <class C, class = std::enable_if_t<detail::is_buffer<C>::value>>
tensor_view<detail::buffer_element<C>> mask_view(C& buffer, std::size_t batch, std::size_t heads, std::size_t rows,
                                                 std::size_t cols) {
  return mask_view(span<detail::buffer_element<C>>(buffer), batch, heads, rows, cols);
}

/// View of a dense [batch, heads, seq] log-sum-exp buffer (dim() == 1).
template <class T>
constexpr tensor_view<T> lse_view(T* data, std::size_t batch, std::size_t heads,
                                  std::size_t seq) noexcept {
  return bhsd(data, batch, heads, seq, 1);
}

/// lse_view over a buffer that must hold batch·heads·seq elements.
template <class T>
tensor_view<T> lse_view(span<T> buffer, std::size_t batch, std::size_t heads, std::size_t seq) {
  detail::check_fits<3>("lse_view", {"batch", "heads", "seq"}, {batch, heads, seq}, buffer.size());
  return lse_view(buffer.data(), batch, heads, seq);
}
template <class C, class = std::enable_if_t<detail::is_buffer<C>::value>>
tensor_view<detail::buffer_element<C>> lse_view(C& buffer, std::size_t batch, std::size_t heads, std::size_t seq) {
  return lse_view(span<detail::buffer_element<C>>(buffer), batch, heads, seq);
}

}  // namespace headwise
