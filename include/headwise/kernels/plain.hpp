// headwise/kernels/plain.hpp — the plain kernel: one query row at a time.
//
//   q [B, Hq, Nq, Dk]  k [B, Hkv, Nk, Dk] (rows or key blocks)  v [B, Hkv, Nk, Dv]
//   out [B, Hq, Nq, Dv]  lse [B, Hq, Nq, 1] (optional)
//
// Per row: 1. the logits of the visible keys (row_logits, which the inspection
// functions of inspect.hpp share, so their probabilities match this kernel's bit for
// bit); 2. exact max, exp and sum, out = Σ p_j v_j / l (finish_row, which also holds
// the rules of options.hpp for NaN and infinite values). int8 K/V: each dot product
// times its key's scale, each weight times its value row's scale (quantize.hpp).
// 2·Nvis·(Dk + Dv) FLOPs per row, no reuse of K/V between rows: the simple, obviously
// right path in the compute type (not double like the oracle), kept as
// kernel_mode::plain for tests and as a baseline in the bench. Tasks are (batch, query head, 32 rows); masked keys are never
// visited. Scratch per worker (workspace.hpp): one row of Nk logits and one of Dv sums.
// The flash and decode kernels store their rows through finish_kernel_row, which
// recomputes here a row whose output is not finite.
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
#include "headwise/storage.hpp"
#include "headwise/tensor.hpp"
#include "headwise/workspace.hpp"

namespace headwise::kernels::plain {

/// q_row · k_row over Dk coordinates in T, in order (K coordinates `stride` apart).
template <class T, class Q, class S>
T dot_key(const Q* q_row, const S* k_row, std::size_t Dk, std::ptrdiff_t stride) {
  T dot = 0;
  for (std::size_t d = 0; d < Dk; ++d)
    dot += static_cast<T>(q_row[d]) * static_cast<T>(k_row[std::ptrdiff_t(d) * stride]);
  return dot;
}

/// q_row · key j of (b, hk): dot_key, times the key's scale when K is int8 (k_scale,
/// quantize.hpp; unset for other storage).
template <class T, class Q, class S>
T key_dot(const Q* q_row, const key_view<const S>& k, const value_view<const float>& k_scale, std::size_t b,
          std::size_t hk, std::size_t j) {
  return dot_key<T>(q_row, k.key(b, hk, j), k.dim(), k.coordinate_stride()) *
         detail::row_scale<T, S>(k_scale, b, hk, j);
}

/// s[j] = the logit of query row (b, h, i) and key j, for every key it sees (others
/// are left as they are).
template <class T, class Q, class S>
void row_logits(const tensor_view<const Q>& q, const key_view<const S>& k, const detail::score_rules<T>& rules,
                std::size_t b, std::size_t h, std::size_t i, T* s, const value_view<const float>& k_scale = {}) {
  const detail::row_ranges rr = rules.ranges(std::int64_t(i));
  const std::size_t hk = h / (q.heads() / k.heads());
  const Q* q_row = q.row(b, h, i);
  for (const detail::key_range& r : {rr.sinks, rr.band})
    for (std::int64_t j = r.begin; j < r.end; ++j)
      s[j] = rules.logit(b, h, std::int64_t(i), j, key_dot<T>(q_row, k, k_scale, b, hk, std::size_t(j)));
}

/// Step 2 for one row, the rules of options.hpp for every kind of value: logit(j)
/// gives the logit of each key in the row's ranges (twice per key); out and the LSE.
/// A key whose logit is −inf is hidden and its V never read; a NaN or +inf logit
/// leaves the row undefined (out NaN, LSE NaN); a visible key's NaN or infinite V
/// reaches out even where its weight underflows to 0 (its true weight is positive).
/// acc (Dv elements) is the accumulator; the row is then stored in out's type.
template <class T, class S, class Q, class O, class Logit>
void finish_row(const detail::kernel_call<T, S, Q, O>& c, std::size_t b, std::size_t h, std::size_t i,
                Logit&& logit, T* acc) {
  constexpr T inf = std::numeric_limits<T>::infinity();
  const std::size_t Dv = c.v.dim(), hk = h / c.group();
  const detail::row_ranges rr = c.rules.ranges(std::int64_t(i));
  const T head_mult = c.rules.head_multiplier(h);
  std::fill(acc, acc + Dv, T(0));
  T m = -inf;
  bool undefined = false;
  if (head_mult != T(0)) {  // a pruned head reads nothing
    for (const detail::key_range& r : {rr.sinks, rr.band})
      for (std::int64_t j = r.begin; j < r.end; ++j) {
        const T s = logit(j);
        undefined = undefined || !(s < inf);
        m = std::max(m, s);
      }
  }
  T l = 0;
  if (undefined) {
    l = std::numeric_limits<T>::quiet_NaN();
  } else if (m != -inf) {
    for (const detail::key_range& r : {rr.sinks, rr.band}) {
      for (std::int64_t j = r.begin; j < r.end; ++j) {
        const T s = logit(j);
        if (s == -inf) continue;
        const T p = std::exp(s - m);
        l += p;
        const S* v_row = c.v.row(b, hk, std::size_t(j));
        // v = scale · v_row (int8; scale 1 otherwise), the scale folded into the weight
        const T v_scale = detail::row_scale<T, S>(c.v_scale, b, hk, std::size_t(j));
        if (p > T(0)) {
          const T w = p * v_scale;
          for (std::size_t d = 0; d < Dv; ++d) acc[d] += w * static_cast<T>(v_row[d]);
        } else {
          for (std::size_t d = 0; d < Dv; ++d) {
            const T x = v_scale * static_cast<T>(v_row[d]);
            if (!std::isfinite(x)) acc[d] += x;
          }
        }
      }
    }
  }
  const T norm = l == T(0) ? T(0) : head_mult / l;
  O* out_row = c.out.row(b, h, i);
  for (std::size_t d = 0; d < Dv; ++d) out_row[d] = detail::convert_element<O>(acc[d] * norm);
  if (c.lse.is_set()) c.lse(b, h, i, 0) = l == T(0) ? -INFINITY : static_cast<float>(m + std::log(l));
}

/// Row (b, h, i) once more through finish_row, its logits recomputed as row_logits
/// computes them, acc (Dv elements) its accumulator. Out of line and cold: only the
/// rows finish_kernel_row sends reach it, and the flash and decode code that calls
/// finish_kernel_row keeps its size and inlining.
template <class T, class S, class Q, class O>
__attribute__((noinline, cold)) void recompute_row(const detail::kernel_call<T, S, Q, O>& c, std::size_t b,
                                                   std::size_t h, std::size_t i, T* acc) {
  const Q* q_row = c.q.row(b, h, i);
  const std::size_t hk = h / c.group();
  finish_row(
      c, b, h, i,
      [&](std::int64_t j) {
        return c.rules.logit(b, h, std::int64_t(i), j, key_dot<T>(q_row, c.k, c.k_scale, b, hk, std::size_t(j)));
      },
      acc);
}

/// Stores row (b, h, i) that the flash or decode kernel finished in `row` (Dv elements
/// of T, scaled) into out's type, unless a value in it is not finite: then the row is
/// recomputed here, `row` serving as accumulator. Those kernels sum p·v over hidden
/// keys too (p = 0, harmless unless V holds NaN or ±inf there), so such rows take this
/// path, and every kernel then gives the plain kernel's bits for them. A finite row
/// costs Dv independent tests (an AND of flags: no chain of dependent float adds,
/// which at Dv 128 cost ~500 cycles a row, 2-3% of a decode step at KV 512).
template <class T, class S, class Q, class O>
void finish_kernel_row(const detail::kernel_call<T, S, Q, O>& c, std::size_t b, std::size_t h, std::size_t i,
                       T* row) {
  const std::size_t Dv = c.out.dim();
  bool finite = true;
  for (std::size_t d = 0; d < Dv; ++d) finite &= std::isfinite(row[d]);
  if (!finite) return recompute_row(c, b, h, i, row);
  O* out_row = c.out.row(b, h, i);
  for (std::size_t d = 0; d < Dv; ++d) out_row[d] = detail::convert_element<O>(row[d]);
}

template <class T, class S, class Q, class O>
void run(const detail::kernel_call<T, S, Q, O>& c) {
  constexpr std::size_t rows_per_task = 32;
  const std::size_t Hq = c.q.heads(), Nq = c.q.seq(), Nk = c.k.seq(), Dv = c.v.dim();
  const std::size_t blocks = detail::ceil_div(Nq, rows_per_task), tasks = c.q.batch() * Hq * blocks;
  const unsigned workers = detail::resolve_threads(c.threads, tasks);
  detail::workspace_access::reserve_workers(c.scratch, workers, (Nk + Dv) * sizeof(T));
  detail::parallel_for(tasks, workers, [&](std::size_t task, unsigned w) {
    const std::size_t b = task / (Hq * blocks), h = task / blocks % Hq, blk = task % blocks;
    T* s = reinterpret_cast<T*>(detail::workspace_access::worker(c.scratch, w));
    for (std::size_t i = blk * rows_per_task; i < std::min(Nq, (blk + 1) * rows_per_task); ++i) {
      plain::row_logits(c.q, c.k, c.rules, b, h, i, s, c.k_scale);
      finish_row(c, b, h, i, [s](std::int64_t j) { return s[j]; }, s + Nk);
    }
  });
}

}  // namespace headwise::kernels::plain
