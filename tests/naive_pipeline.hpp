// tests/naive_pipeline.hpp — the naive pipeline of FlashAttention's accuracy rule
// (a kernel's error against fp64 is at most 2× this pipeline's in the same precision),
// shared by bf16_test (16-bit inputs) and int8_test (int8 K/V dequantized to float).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

#include "test_util.hpp"

namespace hwtest {

/// The naive pipeline of FlashAttention's accuracy rule, for one problem in X: per row,
/// fp32 logits (products of 16-bit values are exact in fp32) times the scale, exact max,
/// exp and sum in fp32, P = p / l rounded to X (a no-op for float), o = Σ P·v summed
/// in fp32, stored as O.
template <class X, class O>
void naive_attention(const tensor<X>& q, const tensor<X>& k, const tensor<X>& v, tensor<O>& out, bool causal) {
  const std::size_t B = q.view.batch(), Hq = q.view.heads(), Nq = q.view.seq(), Dk = q.view.dim();
  const std::size_t Hkv = k.view.heads(), Nk = k.view.seq(), Dv = v.view.dim();
  const float scale = 1.0f / std::sqrt(float(Dk));
  std::vector<float> s(Nk), o(Dv);
  for (std::size_t b = 0; b < B; ++b)
    for (std::size_t h = 0; h < Hq; ++h)
      for (std::size_t i = 0; i < Nq; ++i) {
        const std::size_t hk = h / (Hq / Hkv), visible = causal ? i + Nk - Nq + 1 : Nk;
        float m = -INFINITY, l = 0;
        for (std::size_t j = 0; j < visible; ++j) {
          float dot = 0;
          for (std::size_t d = 0; d < Dk; ++d) dot += float(q.view(b, h, i, d)) * float(k.view(b, hk, j, d));
          s[j] = dot * scale;
          m = std::max(m, s[j]);
        }
        for (std::size_t j = 0; j < visible; ++j) l += (s[j] = std::exp(s[j] - m));
        std::fill(o.begin(), o.end(), 0.0f);
        for (std::size_t j = 0; j < visible; ++j) {
          const float p = float(X(s[j] / l));
          for (std::size_t d = 0; d < Dv; ++d) o[d] += p * float(v.view(b, hk, j, d));
        }
        for (std::size_t d = 0; d < Dv; ++d) out.view(b, h, i, d) = detail::convert_element<O>(o[d]);
      }
}

/// max |a − b| over every stored element.
template <class A, class B>
double max_error(const tensor<A>& a, const tensor<B>& b) {
  double e = 0;
  for (std::size_t n = 0; n < a.storage.size(); ++n)
    e = std::max(e, std::fabs(double(float(a.storage[n])) - double(b.storage[n])));
  return e;
}

}  // namespace hwtest
