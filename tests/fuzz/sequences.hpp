// tests/fuzz/sequences.hpp — calls that build on each other: a kv_cache through
// appends, attention steps and clears; attention over keys split into segments and
// merged back with merge_states.
//
// cache_sequence: appends of any length (past the capacity must throw and change
// nothing), each followed by a bitwise comparison of keys() and values() with a
// mirror of what was appended; steps of 1-4 queries (bottom-right causal, as decode
// runs) against the oracle over the mirror; clears. K in rows or key blocks, every
// storage type.
// merge_sequence: one problem's keys cut in 1-3 places (empty segments included),
// each segment's attention with its LSE, the partials merged in order (in place or
// not) and compared with the oracle over all keys. The tolerance adds to the
// kernel's (test_util.hpp) what the merge moves: each partial's LSE error e_l moves
// the weights by expm1(2·e_l), and each merge rounds as merge_test.cpp derives,
// (5·u + 2·max|lse|·u_float)·vmax. Rules that depend on Nk (causal, window, sinks,
// ALiBi) do not split, so this problem has none.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <type_traits>
#include <vector>

#include "problem.hpp"

namespace hwfuzz {

/// Reports a finding and stops the run (a libFuzzer crash with the case's input).
using report = void (*)(const std::string& what, const std::string& about);

template <class S, kv_layout L>
void cache_sequence(byte_source& in, report fail) {
  using T = std::conditional_t<std::is_same_v<S, double>, double, float>;
  const std::size_t B = in.in(1, 2), Hkv = in.in(1, 2), Hq = Hkv * in.in(1, 3);
  const std::size_t cap = in.chance(16) ? in.in(1000, 1100) : pick_length(in, 70, 0);
  const std::size_t Dk = pick_length(in, 24, 1), Dv = pick_length(in, 24, 1);
  kv_cache<S, L> cache(B, Hkv, cap, Dk, Dv);
  value_source values(in.word());
  std::vector<S> mk(B * Hkv * cap * Dk),
      mv(B * Hkv * cap * Dv);  // what the cache must hold, [B, Hkv, cap, D]
  auto mirror = [&](std::vector<S>& m, std::size_t D, std::size_t n) {
    return tensor_view<S>(m.data(), B, Hkv, n, D, std::ptrdiff_t(Hkv * cap * D), std::ptrdiff_t(cap * D),
                          std::ptrdiff_t(D));
  };
  std::size_t size = 0;
  const std::string about = "kv_cache B " + std::to_string(B) + " Hkv " + std::to_string(Hkv) + " cap " +
                            std::to_string(cap) + " Dk " + std::to_string(Dk) + " Dv " + std::to_string(Dv) +
                            " S " + std::to_string(sizeof(S)) +
                            (L == kv_layout::key_blocks ? " blocks" : " rows");
  for (std::size_t step = in.in(1, 8); step > 0; --step) {
    const std::size_t op = in.below(4);
    if (op <= 1) {  // append
      const std::size_t n = pick_length(in, cap + 2, 0);
      guarded<T> kn({B, Hkv, n, Dk}, nested_layout(in, {B, Hkv, n, Dk}, true));
      guarded<T> vn({B, Hkv, n, Dv}, nested_layout(in, {B, Hkv, n, Dv}, true));
      for (auto* g : {&kn, &vn}) g->for_each([&](std::size_t e) { g->memory[e] = T(values.uniform(1.0)); });
      const bool fits = n <= cap - size;
      try {
        cache.append(tensor_view<const T>(kn.view), tensor_view<const T>(vn.view));
        if (!fits) fail("an append past the capacity was accepted", about);
        for (std::size_t b = 0; b < B; ++b)
          for (std::size_t h = 0; h < Hkv; ++h)
            for (std::size_t s = 0; s < n; ++s) {
              for (std::size_t d = 0; d < Dk; ++d)
                mirror(mk, Dk, cap)(b, h, size + s, d) = S(kn.view(b, h, s, d));
              for (std::size_t d = 0; d < Dv; ++d)
                mirror(mv, Dv, cap)(b, h, size + s, d) = S(vn.view(b, h, s, d));
            }
        size += n;
      } catch (const headwise::error& e) {
        if (fits) fail(std::string("a valid append threw: ") + e.what(), about);
      }
      const auto keys = cache.keys();
      const auto vals = cache.values();
      bool same = cache.size() == size && keys.seq() == size && vals.seq() == size;
      for (std::size_t b = 0; same && b < B; ++b)
        for (std::size_t h = 0; h < Hkv; ++h)
          for (std::size_t s = 0; s < size; ++s) {
            for (std::size_t d = 0; d < Dk; ++d)
              same = same && same_bits(keys(b, h, s, d), mirror(mk, Dk, cap)(b, h, s, d));
            for (std::size_t d = 0; d < Dv; ++d)
              same = same && same_bits(vals(b, h, s, d), mirror(mv, Dv, cap)(b, h, s, d));
          }
      if (!same) fail("the cache does not hold what was appended", about);
    } else if (op == 2) {  // a decode step over the cache
      const std::size_t Nq = in.in(1, 4);
      guarded<T> q({B, Hq, Nq, Dk}, nested_layout(in, {B, Hq, Nq, Dk}, true));
      q.for_each([&](std::size_t e) { q.memory[e] = T(values.uniform(1.0)); });
      guarded<T> out({B, Hq, Nq, Dv}, nested_layout(in, {B, Hq, Nq, Dv}, false));
      attention_options opt;
      opt.causal = causal_mode::bottom_right;
      if (in.chance(64)) opt.window_left = std::int64_t(in.below(40));
      if (in.chance(64)) opt.sink_tokens = in.below(6);
      if (in.chance(64)) opt.softcap = 5.0;
      const run_choice r = pick_run(in);
      r.var.apply(opt);
      out.arm();
      attention(tensor_view<const T>(q.view), cache.keys(), cache.values(), out.view, opt);
      hwtest::tensor<T> ref(B, Hq, Nq, Dv);
      opt.kernel = kernel_mode::automatic;
      reference::attention(tensor_view<const T>(q.view), tensor_view<const S>(mirror(mk, Dk, size)),
                           tensor_view<const S>(mirror(mv, Dv, size)), ref.view, opt);
      hwtest::error_model m;
      m.Dk = Dk, m.Nk = std::max<std::size_t>(size, 1), m.scale = 1 / std::sqrt(double(Dk));
      m.softcap = opt.softcap;
      const double err = hwtest::max_abs_diff(out.view, ref.view), tol = hwtest::attention_tolerance<T>(m);
      if (!(err <= tol) || out.damaged() || out.unwritten())
        fail("a step over the cache: |out - oracle| = " + std::to_string(err) + " (tolerance " +
                 std::to_string(tol) + "), " + r.var.name(),
             about + " size " + std::to_string(size));
    } else {
      cache.clear();
      size = 0;
    }
  }
}

template <class T, class S>
void merge_sequence(byte_source& in, const limits& lim, report fail) {
  problem<T, S> p(in, lim, false, false);
  p.blocked = false;
  p.opt.causal = causal_mode::none;
  p.opt.window_left = p.opt.window_right = std::nullopt;
  p.opt.sink_tokens = 0;
  p.opt.alibi_slopes = {}, p.opt.head_scale = {}, p.opt.lse = {};
  p.settle();
  std::vector<std::size_t> cuts = {0, p.Nk};
  for (std::size_t c = in.in(1, 3); c > 0; --c) cuts.push_back(in.in(0, p.Nk));
  std::sort(cuts.begin(), cuts.end());

  const std::size_t rows = p.B * p.Hq * p.Nq;
  hwtest::tensor<T> acc(p.B, p.Hq, p.Nq, p.Dv), part(p.B, p.Hq, p.Nq, p.Dv), next(p.B, p.Hq, p.Nq, p.Dv);
  std::vector<float> acc_lse(rows), part_lse(rows), next_lse(rows);
  auto columns = [&](auto mask, std::size_t j0, std::size_t n) {  // keys [j0, j0 + n) of a mask
    return decltype(mask)(mask.data() + j0, mask.batch(), mask.heads(), mask.seq(), n, mask.batch_stride(),
                          mask.head_stride(), mask.seq_stride());
  };
  std::string runs;
  for (std::size_t s = 0; s + 1 < cuts.size(); ++s) {
    const std::size_t j0 = cuts[s], n = cuts[s + 1] - j0;
    attention_options o = p.opt;
    if (o.additive_mask.is_set()) o.additive_mask = columns(o.additive_mask, j0, n);
    if (o.boolean_mask.is_set()) o.boolean_mask = columns(o.boolean_mask, j0, n);
    const run_choice r = pick_run(in);
    r.var.apply(o);
    o.lse = lse_view(part_lse.data(), p.B, p.Hq, p.Nq);
    attention(tensor_view<const T>(p.q.view), tensor_view<const S>(p.k.view).seq_slice(j0, n),
              tensor_view<const S>(p.v.view).seq_slice(j0, n), part.view, o);
    runs += " [" + std::to_string(j0) + ", " + std::to_string(j0 + n) + ") " + r.var.name() + ";";
    if (s == 0) {
      std::swap(acc, part), std::swap(acc_lse, part_lse);
      continue;
    }
    const auto lse_of = [&](std::vector<float>& l) { return lse_view(l.data(), p.B, p.Hq, p.Nq); };
    if (in.flag()) {  // in place
      merge_states(acc.cview(), lse_view<const float>(acc_lse.data(), p.B, p.Hq, p.Nq), part.cview(),
                   lse_view<const float>(part_lse.data(), p.B, p.Hq, p.Nq), acc.view, lse_of(acc_lse));
    } else {
      merge_states(acc.cview(), lse_view<const float>(acc_lse.data(), p.B, p.Hq, p.Nq), part.cview(),
                   lse_view<const float>(part_lse.data(), p.B, p.Hq, p.Nq), next.view, lse_of(next_lse));
      std::swap(acc, next), std::swap(acc_lse, next_lse);
    }
  }
  hwtest::tensor<T> ref;
  std::vector<float> ref_lse;
  p.oracle(ref, ref_lse);
  double lmax = 0;
  for (float l : ref_lse)
    if (std::isfinite(l)) lmax = std::max(lmax, double(std::fabs(l)));
  const double merges = double(cuts.size() - 2), u = hwtest::unit_roundoff<T>(),
               uf = hwtest::unit_roundoff<float>();
  const double tol = p.tolerance() + std::expm1(2 * p.lse_tolerance()) * p.model.vmax +
                     merges * (5 * u + 2 * lmax * uf) * p.model.vmax;
  const double lse_tol = p.lse_tolerance() + merges * (3 + 2 * lmax) * uf;
  const double err = hwtest::max_abs_diff(acc.view, ref.view);
  const double lse_err = hwtest::max_abs_diff(p.lse_of(acc_lse), p.lse_of(ref_lse));
  if (!(err <= tol) || !(lse_err <= lse_tol))
    fail("merged segments: |out - oracle| = " + std::to_string(err) + " (tolerance " + std::to_string(tol) +
             "), |lse - oracle| = " + std::to_string(lse_err) + " (tolerance " + std::to_string(lse_tol) +
             ")",
         p.about + " |" + runs);
}

}  // namespace hwfuzz
