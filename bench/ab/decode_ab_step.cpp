// bench/ab/decode_ab_step.cpp — one side of scripts/decode-ab: a decode step of the
// headwise tree on the include path, compiled once per side with -Dheadwise=<ns>
// and -DAB_SIDE=A or B, so two versions of the header-only library live in one
// process without clashing.
//
// The shape is the bench's decode shape: Hq 32, Hkv 8, d 128, one query token,
// bottom-right causal, K/V [B, 8, N, 128] in float (type 0) or half (type 1).
// With seq_stride_zero every key is the same K/V row (in L1), so the step times
// its compute alone. With key_blocks K is read as a key_blocks_view (key_blocks.hpp)
// over the same bytes: the values differ from the row layout's, the bytes read and
// their order are the kernel's; a tree without key blocks returns false.
#include <cstddef>
#include <type_traits>

#include <headwise/headwise.hpp>

#ifndef AB_SIDE
#error "compile with -DAB_SIDE=A or -DAB_SIDE=B"
#endif
#define AB_CAT2(a, b) a##b
#define AB_CAT(a, b) AB_CAT2(a, b)

extern "C" bool AB_CAT(decode_ab_step_, AB_SIDE)(int type, const float* q, const void* k, const void* v,
                                                 float* out, std::size_t B, std::size_t N, unsigned threads,
                                                 bool seq_stride_zero, bool key_blocks) {
  using namespace headwise;
  constexpr std::size_t Hq = 32, Hkv = 8, d = 128;
  attention_options opt;
  opt.kernel = kernel_mode::decode;
  opt.threads = threads;
  opt.causal = causal_mode::bottom_right;
  const auto qv = bhsd<const float>(q, B, Hq, 1, d);
  const auto ov = bhsd(out, B, Hq, 1, d);
  auto kv_view = [&](const auto* p) {
    using E = std::remove_const_t<std::remove_pointer_t<decltype(p)>>;
    if (seq_stride_zero) return tensor_view<const E>(p, B, Hkv, N, d, Hkv * d, d, 0);
    return bhsd<const E>(p, B, Hkv, N, d);
  };
  auto run = [&](const auto* kp, const auto* vp) {
    if (!key_blocks) {
      attention(qv, kv_view(kp), kv_view(vp), ov, opt);
      return true;
    }
#if __has_include(<headwise/key_blocks.hpp>)
    attention(qv, key_blocks_bhsd(kp, B, Hkv, N, d), kv_view(vp), ov, opt);
    return true;
#else
    return false;
#endif
  };
  return type == 0 ? run(static_cast<const float*>(k), static_cast<const float*>(v))
                   : run(static_cast<const half*>(k), static_cast<const half*>(v));
}
