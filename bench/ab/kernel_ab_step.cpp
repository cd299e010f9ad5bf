// bench/ab/kernel_ab_step.cpp — one side of kernel_ab: a headwise tree's public
// attention() behind a plain C call (kernel_ab.hpp). Compiled once per side with
// -Dheadwise=<namespace> and -DAB_TREE=a or b, against that side's include tree and
// with that side's flags, so two revisions of the header-only library live in one
// process without clashing.
//
// Only what every tree since 1165cfb offers: tensor_view and bhsd, attention_options
// (causal, window_left, threads, kernel, lse), attention() on K rows or on a
// key_blocks_view (key_blocks_bhsd). simd_path() (isa.hpp, with the runtime dispatch)
// and attention_backward (backward.hpp) are asked for only where the tree has them.
#include <cstddef>
#include <exception>
#include <string>
#include <type_traits>

#include <headwise/attention.hpp>
#include <headwise/storage.hpp>
#include <headwise/tensor.hpp>
#if __has_include(<headwise/key_blocks.hpp>)
#include <headwise/key_blocks.hpp>
#define AB_HAS_KEY_BLOCKS 1
#endif
#if __has_include(<headwise/backward.hpp>)
#include <headwise/backward.hpp>
#define AB_HAS_BACKWARD 1
#endif
#if __has_include(<headwise/isa.hpp>)
#include <headwise/isa.hpp>
#else
#include <xsimd/xsimd.hpp>
#endif

#include "kernel_ab.hpp"

#ifndef AB_TREE
#error "compile with -DAB_TREE=a or -DAB_TREE=b"
#endif
#define AB_CAT2(a, b) a##b
#define AB_CAT(a, b) AB_CAT2(a, b)

extern "C" const char* AB_CAT(kernel_ab_about_, AB_TREE)() {
#if __has_include(<headwise/isa.hpp>)
  static const std::string about = std::string("path ") + headwise::simd_path();
#else
  static const std::string about = std::string("no dispatch, xsimd ") + xsimd::default_arch::name();
#endif
  return about.c_str();
}

extern "C" const char* AB_CAT(kernel_ab_run_, AB_TREE)(const kernel_ab_call* call) {
  using namespace headwise;
  const kernel_ab_call& c = *call;
  attention_options opt;
  opt.kernel = c.decode ? kernel_mode::decode : kernel_mode::flash;
  opt.threads = c.threads;
  opt.causal = c.causal == 0   ? causal_mode::none
               : c.causal == 1 ? causal_mode::top_left
                               : causal_mode::bottom_right;
  if (c.window_left >= 0) opt.window_left = c.window_left;
  const auto q = bhsd<const float>(c.q, c.B, c.Hq, c.Nq, c.d);
  const auto out = bhsd(c.out, c.B, c.Hq, c.Nq, c.d);
  if (c.lse) opt.lse = lse_view(c.lse, c.B, c.Hq, c.Nq);
  auto rows = [&](const auto* p) {
    using E = std::remove_const_t<std::remove_pointer_t<decltype(p)>>;
    if (c.seq_stride_zero) return tensor_view<const E>(p, c.B, c.Hkv, c.Nk, c.d, c.Hkv * c.d, c.d, 0);
    return bhsd<const E>(p, c.B, c.Hkv, c.Nk, c.d);
  };
  auto run = [&](const auto* k, const auto* v) -> const char* {
    if (c.backward) {
#if defined(AB_HAS_BACKWARD)
      if constexpr (std::is_same_v<std::remove_pointer_t<decltype(k)>, const float>) {
        opt.lse = {};
        const auto grad = [&](float* p, std::size_t heads, std::size_t n) {
          return bhsd(p, c.B, heads, n, c.d);
        };
        attention_backward(q, rows(k), rows(v), bhsd<const float>(c.out, c.B, c.Hq, c.Nq, c.d),
                           lse_view(static_cast<const float*>(c.lse), c.B, c.Hq, c.Nq),
                           bhsd<const float>(c.dout, c.B, c.Hq, c.Nq, c.d), grad(c.dq, c.Hq, c.Nq),
                           grad(c.dk, c.Hkv, c.Nk), grad(c.dv, c.Hkv, c.Nk), opt);
        return nullptr;
      }
      return "the backward takes float K/V";
#else
      return "this tree has no attention_backward";
#endif
    }
    if (!c.key_blocks) {
      attention(q, rows(k), rows(v), out, opt);
      return nullptr;
    }
#if defined(AB_HAS_KEY_BLOCKS)
    attention(q, key_blocks_bhsd(k, c.B, c.Hkv, c.Nk, c.d), rows(v), out, opt);
    return nullptr;
#else
    return "this tree has no key blocks";
#endif
  };
  static thread_local std::string what;
  try {
    return c.half_kv ? run(static_cast<const half*>(c.k), static_cast<const half*>(c.v))
                     : run(static_cast<const float*>(c.k), static_cast<const float*>(c.v));
  } catch (const std::exception& e) {
    what = e.what();
    return what.c_str();
  }
}
