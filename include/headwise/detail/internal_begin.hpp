// headwise/detail/internal_begin.hpp — opens a public header's includes of internal
// headers; detail/internal_end.hpp closes them.
//
// Every header under detail/, simd/ and kernels/ refuses to compile unless
// HEADWISE_INTERNAL is defined, and only this pair defines it, for the span between
// them. A public header writes
//   #include "headwise/detail/internal_begin.hpp"
//
//   #include "headwise/detail/checks.hpp"
//   ... the rest of its headwise includes ...
//
//   #include "headwise/detail/internal_end.hpp"
// (the blank lines keep clang-format's include sorting away from the pair). So a
// user's own #include of an internal header fails, as Eigen's src/ headers do, while
// the umbrella and the public headers reach them. The pair pushes and pops the
// previous state: pairs nest, and a test that opts in (#define HEADWISE_INTERNAL 1
// before its includes) keeps its definition.
// No include guard: included once per public header.
#pragma push_macro("HEADWISE_INTERNAL")
#undef HEADWISE_INTERNAL
#define HEADWISE_INTERNAL 1
