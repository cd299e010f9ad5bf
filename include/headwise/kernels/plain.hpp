// headwise/kernels/plain.hpp — the plain kernel: one query row at a time.
//
//   q [B, Hq, Nq, Dk]  k [B, Hkv, Nk, Dk]  v [B, Hkv, Nk, Dv]  out [B, Hq, Nq, Dv]
//
// For each row: logits of the visible keys into a row buffer (O(Nk) scratch per
// worker, never N×N), exact max, exp and sum, then out = Σ p_j v_j / l.
// Cost 2·Nvis·(Dk + Dv) FLOPs per row with no reuse of K/V between rows: it is
// the simple, obviously-right path in the compute type (not double like the
// oracle), kept as kernel_mode::plain for tests and as a baseline in the bench.
// Tasks are (batch, query head, block of rows); masked keys are never visited.
#pragma once

#ifndef HEADWISE_INTERNAL
#error "headwise/kernels/* is internal: include <headwise/headwise.hpp>"
#endif

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

#include "headwise/detail/parallel.hpp"
#include "headwise/detail/score_rules.hpp"
#include "headwise/tensor.hpp"

namespace headwise::kernels {

template <class T, class TK, class TV>
void plain_attention(const tensor_view<const T>& q, const tensor_view<const TK>& k,
                     const tensor_view<const TV>& v, const tensor_view<T>& out,
                     const tensor_view<float>& lse, const detail::score_rules<T>& rules,
                     unsigned threads) {
  constexpr std::size_t rows_per_task = 32;
  const std::size_t B = q.batch(), Hq = q.heads(), Nq = q.seq(), Nk = k.seq();
  const std::size_t Dk = q.dim(), Dv = v.dim(), group = Hq / k.heads();
  const std::size_t blocks = (Nq + rows_per_task - 1) / rows_per_task;
  const std::size_t tasks = B * Hq * blocks;
  const unsigned workers = detail::resolve_threads(threads, tasks);
  std::vector<std::vector<T>> scratch(workers, std::vector<T>(Nk + Dv));
  const T neg_inf = -std::numeric_limits<T>::infinity();

  detail::parallel_for(tasks, workers, [&](std::size_t task, unsigned w) {
    const std::size_t b = task / (Hq * blocks), h = task / blocks % Hq, blk = task % blocks;
    const std::size_t hk = h / group;
    T* s = scratch[w].data();
    T* acc = s + Nk;
    const T head_mult = rules.head_multiplier(h);
    for (std::size_t i = blk * rows_per_task; i < std::min(Nq, (blk + 1) * rows_per_task); ++i) {
      const detail::row_ranges rr = rules.ranges(std::int64_t(i));
      const T* q_row = q.row(b, h, i);
      T m = neg_inf;
      for (const detail::key_range& r : {rr.sinks, rr.band}) {
        for (std::int64_t j = r.begin; j < r.end; ++j) {
          const TK* k_row = k.row(b, hk, std::size_t(j));
          T dot = 0;
          for (std::size_t d = 0; d < Dk; ++d) dot += q_row[d] * static_cast<T>(k_row[d]);
          s[j] = rules.logit(b, h, std::int64_t(i), j, dot);
          m = std::max(m, s[j]);
        }
      }
      for (std::size_t d = 0; d < Dv; ++d) acc[d] = 0;
      T l = 0;
      if (m != neg_inf && head_mult != T(0)) {
        for (const detail::key_range& r : {rr.sinks, rr.band}) {
          for (std::int64_t j = r.begin; j < r.end; ++j) {
            const T p = std::exp(s[j] - m);  // exp(-inf) = 0 for masked keys
            l += p;
            const TV* v_row = v.row(b, hk, std::size_t(j));
            for (std::size_t d = 0; d < Dv; ++d) acc[d] += p * static_cast<T>(v_row[d]);
          }
        }
      }
      T* out_row = out.row(b, h, i);
      const T norm = l > 0 ? head_mult / l : T(0);
      for (std::size_t d = 0; d < Dv; ++d) out_row[d] = acc[d] * norm;
      if (!lse.empty()) lse(b, h, i, 0) = l > 0 ? static_cast<float>(m + std::log(l)) : -INFINITY;
    }
  });
}

}  // namespace headwise::kernels
