// headwise/kernels/plain.hpp — the plain kernel: one query row at a time.
//
//   q [B, Hq, Nq, Dk]  k [B, Hkv, Nk, Dk] (rows or key blocks)  v [B, Hkv, Nk, Dv]
//   out [B, Hq, Nq, Dv]  lse [B, Hq, Nq, 1] (optional)
//
// Per row: 1. the logits of the visible keys (row_logits, which the inspection
// functions of inspect.hpp share, so their probabilities match this kernel's bit for
// bit); 2. exact max, exp and sum, out = Σ p_j v_j / l. 2·Nvis·(Dk + Dv) FLOPs per
// row, no reuse of K/V between rows: the simple, obviously right path in the compute
// type (not double like the oracle), kept as kernel_mode::plain for tests and as a
// baseline in the bench. Tasks are (batch, query head, 32 rows); masked keys are never
// visited. Scratch per worker (workspace.hpp): one row of Nk logits and Dv sums.
// Scalar code, compiled once for the caller's target (not per SIMD path).
#pragma once

#ifndef HEADWISE_INTERNAL
#error "headwise/kernels/* is internal: include <headwise/headwise.hpp>"
#endif

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>

#include "headwise/detail/integer.hpp"
#include "headwise/detail/kernel_call.hpp"
#include "headwise/detail/parallel.hpp"
#include "headwise/detail/score_rules.hpp"
#include "headwise/key_view.hpp"
#include "headwise/tensor.hpp"
#include "headwise/workspace.hpp"

namespace headwise::kernels::plain {

/// s[j] = the logit of query row (b, h, i) and key j, for every key it sees (others
/// are left as they are); returns their max (−inf when it sees none). One dot
/// product per key, coordinates in order.
template <class T, class S>
T row_logits(const tensor_view<const T>& q, const key_view<const S>& k, const detail::score_rules<T>& rules,
             std::size_t b, std::size_t h, std::size_t i, T* s) {
  const detail::row_ranges rr = rules.ranges(std::int64_t(i));
  const std::size_t hk = h / (q.heads() / k.heads()), Dk = q.dim();
  const std::ptrdiff_t stride = k.coordinate_stride();
  const T* q_row = q.row(b, h, i);
  T m = -std::numeric_limits<T>::infinity();
  for (const detail::key_range& r : {rr.sinks, rr.band}) {
    for (std::int64_t j = r.begin; j < r.end; ++j) {
      const S* k_row = k.key(b, hk, std::size_t(j));
      T dot = 0;
      for (std::size_t d = 0; d < Dk; ++d) dot += q_row[d] * static_cast<T>(k_row[std::ptrdiff_t(d) * stride]);
      s[j] = rules.logit(b, h, std::int64_t(i), j, dot);
      m = std::max(m, s[j]);
    }
  }
  return m;
}

/// Step 2 for one row whose logits are in s (max m): out and the LSE.
template <class T, class S>
void finish_row(const detail::kernel_call<T, S>& c, std::size_t b, std::size_t h, std::size_t i, const T* s, T m,
                T* acc) {
  const std::size_t Dv = c.v.dim(), hk = h / c.group();
  const detail::row_ranges rr = c.rules.ranges(std::int64_t(i));
  const T head_mult = c.rules.head_multiplier(h);
  std::fill(acc, acc + Dv, T(0));
  T l = 0;
  if (m != -std::numeric_limits<T>::infinity() && head_mult != T(0)) {
    for (const detail::key_range& r : {rr.sinks, rr.band}) {
      for (std::int64_t j = r.begin; j < r.end; ++j) {
        const T p = std::exp(s[j] - m);  // exp(-inf) = 0 for masked keys
        l += p;
        const S* v_row = c.v.row(b, hk, std::size_t(j));
        for (std::size_t d = 0; d < Dv; ++d) acc[d] += p * static_cast<T>(v_row[d]);
      }
    }
  }
  T* out_row = c.out.row(b, h, i);
  const T norm = l > 0 ? head_mult / l : T(0);
  for (std::size_t d = 0; d < Dv; ++d) out_row[d] = acc[d] * norm;
  if (c.lse.is_set()) c.lse(b, h, i, 0) = l > 0 ? static_cast<float>(m + std::log(l)) : -INFINITY;
}

template <class T, class S>
void run(const detail::kernel_call<T, S>& c) {
  constexpr std::size_t rows_per_task = 32;
  const std::size_t Hq = c.q.heads(), Nq = c.q.seq(), Nk = c.k.seq(), Dv = c.v.dim();
  const std::size_t blocks = detail::ceil_div(Nq, rows_per_task), tasks = c.q.batch() * Hq * blocks;
  const unsigned workers = detail::resolve_threads(c.threads, tasks);
  detail::workspace_access::reserve_workers(c.scratch, workers, (Nk + Dv) * sizeof(T));
  detail::parallel_for(tasks, workers, [&](std::size_t task, unsigned w) {
    const std::size_t b = task / (Hq * blocks), h = task / blocks % Hq, blk = task % blocks;
    T* s = reinterpret_cast<T*>(detail::workspace_access::worker(c.scratch, w));
    for (std::size_t i = blk * rows_per_task; i < std::min(Nq, (blk + 1) * rows_per_task); ++i)
      finish_row(c, b, h, i, s, plain::row_logits(c.q, c.k, c.rules, b, h, i, s), s + Nk);
  });
}

}  // namespace headwise::kernels::plain
