// tests/fuzz/bad_arguments.hpp — one valid call made invalid in one way.
//
// corrupt() takes a valid problem (problem.hpp) and breaks one rule of options.hpp or
// detail/checks.hpp: a size that disagrees, null data, a negative stride, an offset
// or byte extent that overflows, an output overlapping an input (each input in
// turn, the per-head spans and the LSE included) or itself, an enum outside its
// values, a negative window, a non-finite scale, softcap, slope or head scale, a
// per-head span of the wrong size, a mask or LSE of the wrong shape, heads that do
// not group. Each kind applies only where the shape allows it (a size of 1 cannot
// shrink); the bytes pick a kind and the next applicable one is taken. The caller
// expects headwise::error from attention() (and from reference::attention() where
// the rule is one it checks) and every byte of out and the LSE unchanged.
// A corruption that could go unnoticed reads or writes only memory the buffers own,
// or past it where AddressSanitizer reports it: a missed check is a finding either way.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "problem.hpp"

namespace hwfuzz {

/// The arguments of one call, which a corruption replaces piece by piece.
template <class T, class S>
struct call_args {
  explicit call_args(problem<T, S>& p)
      : q(p.q.view), k(p.k.view), kb(p.kb), blocked(p.blocked), v(p.v.view), out(p.out.view), opt(p.opt) {}

  tensor_view<const T> q;
  tensor_view<const S> k;
  key_blocks_view<const S> kb;
  bool blocked = false;
  tensor_view<const S> v;
  tensor_view<T> out;
  attention_options opt;
  bool reference_checks = true;  // whether reference::attention() must reject it too
  std::vector<float> floats;     // memory a corruption allocates (masks, spans, LSE)
  std::unique_ptr<bool[]> bools;
  std::vector<T> compute;  // memory for q or out of other shapes
  std::vector<S> storage;  // memory for K or V of other shapes
};

/// The same view with other sizes, strides or data.
template <class X>
tensor_view<X> reshaped(const tensor_view<X>& t, std::size_t b, std::size_t h, std::size_t s, std::size_t d) {
  return tensor_view<X>(t.data(), b, h, s, d, t.batch_stride(), t.head_stride(), t.seq_stride());
}
template <class X>
tensor_view<X> restrided(const tensor_view<X>& t, int axis, std::ptrdiff_t stride) {
  std::ptrdiff_t st[3] = {t.batch_stride(), t.head_stride(), t.seq_stride()};
  st[axis] = stride;
  return tensor_view<X>(t.data(), t.batch(), t.heads(), t.seq(), t.dim(), st[0], st[1], st[2]);
}
template <class X, class Y>
tensor_view<X> moved_to(const tensor_view<X>& t, Y* data) {
  return tensor_view<X>(reinterpret_cast<X*>(data), t.batch(), t.heads(), t.seq(), t.dim(), t.batch_stride(),
                        t.head_stride(), t.seq_stride());
}
template <class X>
std::size_t elements(const tensor_view<X>& t) {
  return t.batch() * t.heads() * t.seq() * t.dim();
}
template <class X>
std::size_t size_of(const tensor_view<X>& t, int axis) {
  const std::size_t s[4] = {t.batch(), t.heads(), t.seq(), t.dim()};
  return s[axis];
}

/// Breaks one rule in a (kind chosen by the bytes, or the next that applies);
/// returns what it did, or "" when no kind applies to this shape.
template <class T, class S>
std::string corrupt(byte_source& in, problem<T, S>& p, call_args<T, S>& a) {
  constexpr int kinds = 18;
  const int first = int(in.below(kinds));
  const std::size_t pick = in.byte();
  const bool has_out = elements(a.out) > 0;
  for (int t = 0; t < kinds; ++t) {
    switch ((first + t) % kinds) {
      case 0: {  // one size of q, k, v or out one smaller than the others agree on
        const int which = int(pick % 4), axis = int(pick / 4 % 4);
        auto shrink = [&](auto& view) {
          const std::size_t n = size_of(view, axis);
          if (n < 1 || (axis != 2 && n < 2)) return false;
          std::size_t s[4] = {view.batch(), view.heads(), view.seq(), view.dim()};
          --s[axis];
          view = reshaped(view, s[0], s[1], s[2], s[3]);
          return true;
        };
        if (which == 1 && a.blocked) break;
        if (which == 0 ? shrink(a.q) : which == 1 ? shrink(a.k) : which == 2 ? shrink(a.v) : shrink(a.out))
          return std::string("shrank axis ") + std::to_string(axis) + " of view " + std::to_string(which);
        break;
      }
      case 1: {  // null data on a view with elements
        if (pick % 3 == 0 && elements(a.q)) return a.q = moved_to(a.q, (T*)nullptr), "q null";
        if (pick % 3 == 1 && elements(a.v)) return a.v = moved_to(a.v, (S*)nullptr), "v null";
        if (has_out) return a.out = moved_to(a.out, (T*)nullptr), "out null";
        break;
      }
      case 2: {  // a negative stride on an axis of two or more
        const int axis = int(pick % 3);
        if (size_of(a.out, axis) >= 2 && has_out)
          return a.out = restrided(a.out, axis, -std::max<std::ptrdiff_t>(1, a.out.seq_stride())),
                 "negative stride";
        if (size_of(a.q, axis) >= 2 && elements(a.q))
          return a.q = restrided(a.q, axis, -1), "negative stride on q";
        break;
      }
      case 3: {  // the last element's offset overflows
        const int axis = int(pick % 3);
        if (size_of(a.v, axis) >= 3 && elements(a.v))
          return a.v = restrided(a.v, axis, std::numeric_limits<std::ptrdiff_t>::max() / 2 + 1),
                 "offset overflow";
        if (elements(a.q))  // the product of the sizes overflows
          return a.q = tensor_view<const T>(a.q.data(), std::size_t(1) << 40, std::size_t(1) << 40, a.q.seq(),
                                            a.q.dim(), 0, 0, a.q.seq_stride()),
                 "size product overflow";
        break;
      }
      case 4: {  // an input, the per-head spans or the LSE over out's memory
        if (!has_out) break;
        T* o = a.out.data();
        switch (pick % 8) {
          case 0:
            if (elements(a.q)) return a.q = moved_to(a.q, o), "q over out";
            break;
          case 1:
            if (elements(a.k) && !a.blocked) return a.k = moved_to(a.k, o), "k over out";
            if (a.blocked && a.kb.seq() > 0) {
              a.reference_checks = false;
              a.kb =
                  key_blocks_view<const S>(reinterpret_cast<const S*>(o), a.kb.batch(), a.kb.heads(),
                                           a.kb.seq(), a.kb.dim(), a.kb.batch_stride(), a.kb.head_stride());
              return "key blocks over out";
            }
            break;
          case 2:
            if (elements(a.v)) return a.v = moved_to(a.v, o), "v over out";
            break;
          case 3:
            if (a.opt.additive_mask.is_set() && elements(a.opt.additive_mask))
              return a.opt.additive_mask = moved_to(a.opt.additive_mask, o), "additive over out";
            break;
          case 4:
            if (a.opt.boolean_mask.is_set() && elements(a.opt.boolean_mask))
              return a.opt.boolean_mask = moved_to(a.opt.boolean_mask, o), "boolean over out";
            break;
          case 5:
            return a.opt.alibi_slopes = span<const float>(reinterpret_cast<const float*>(o), p.Hq),
                   "slopes over out";
          case 6:
            return a.opt.head_scale = span<const float>(reinterpret_cast<const float*>(o), p.Hq),
                   "scales over out";
          default:
            if (a.opt.lse.is_set() && elements(a.opt.lse))
              return a.opt.lse = moved_to(a.opt.lse, o), "lse over out";
        }
        break;
      }
      case 5: {  // an output over itself: a stride of 0 on an axis of two or more
        const int axis = int(pick % 3);
        if (size_of(a.out, axis) >= 2 && has_out) return a.out = restrided(a.out, axis, 0), "out over itself";
        if (a.opt.lse.is_set() && size_of(a.opt.lse, axis) >= 2 && elements(a.opt.lse))
          return a.opt.lse = restrided(a.opt.lse, axis, 0), "lse over itself";
        if (a.out.dim() >= 2 && a.out.seq() >= 2 && has_out)
          return a.out = restrided(a.out, 2, std::ptrdiff_t(a.out.dim()) - 1), "rows overlapping";
        break;
      }
      case 6:  // an enum outside its values
        switch (pick % 3) {
          case 0:
            return a.opt.causal = causal_mode(3 + pick % 200), "causal out of range";
          case 1:
            return a.opt.kernel = kernel_mode(4 + pick % 200), "kernel out of range";
          default:
            return a.opt.isa = simd_isa(5 + pick % 200), "isa out of range";
        }
      case 7:  // a negative window bound
        (pick % 2 ? a.opt.window_left : a.opt.window_right) = -1 - std::int64_t(pick % 5);
        return "negative window";
      case 8: {  // a non-finite scale or softcap, or a negative softcap
        const double bad = std::vector<double>{NAN, INFINITY, -INFINITY}[pick % 3];
        if (pick / 3 % 3 == 0) return a.opt.scale = bad, "scale not finite";
        return a.opt.softcap = pick / 3 % 3 == 1 ? bad : -0.5, "softcap";
      }
      case 9: {  // a slope or head scale that is not finite
        a.floats.assign(p.Hq, 0.5f);
        a.floats[pick % p.Hq] = std::vector<float>{NAN, INFINITY, -INFINITY}[pick / 8 % 3];
        (pick % 2 ? a.opt.alibi_slopes : a.opt.head_scale) = a.floats;
        return "per-head value not finite";
      }
      case 10: {  // a per-head span of another size, or null
        a.floats.assign(p.Hq + 1, 0.5f);
        span<const float> s(a.floats.data(), pick % 3 == 0 ? p.Hq + 1 : pick % 3 == 1 ? p.Hq - 1 : p.Hq);
        if (pick % 3 == 1 && p.Hq < 2) break;
        if (pick % 3 == 2) s = span<const float>(nullptr, p.Hq);
        (pick / 3 % 2 ? a.opt.alibi_slopes : a.opt.head_scale) = s;
        return "per-head span size or null";
      }
      case 11: {  // a mask of another shape: one more row, one more key, or heads that do not broadcast
        const std::size_t Hm = pick % 3 == 2 ? (p.Hq >= 2 ? p.Hq + 1 : 0) : 1;
        if (pick % 3 == 2 && Hm == 0) break;
        const std::size_t rows = p.Nq + (pick % 3 == 0), cols = p.Nk + (pick % 3 == 1);
        a.floats.assign(std::max<std::size_t>(1, Hm * rows * cols), 0.0f);
        a.opt.additive_mask = mask_view<const float>(a.floats.data(), 1, Hm, rows, cols);
        return "mask shape";
      }
      case 12: {  // an LSE of another shape
        a.floats.assign(std::max<std::size_t>(1, p.B * p.Hq * (p.Nq + 1) * 2), 0.0f);
        if (pick % 2)
          a.opt.lse = lse_view(a.floats.data(), p.B, p.Hq, p.Nq + 1);
        else
          a.opt.lse = tensor_view<float>(a.floats.data(), p.B, p.Hq, p.Nq, 2, std::ptrdiff_t(p.Hq * p.Nq * 2),
                                         std::ptrdiff_t(p.Nq * 2), 2);
        return "lse shape";
      }
      case 13: {  // heads that do not group: Hq + 1 query heads for Hkv >= 2 (q and out alike)
        if (p.Hkv < 2 || p.B == 0) break;
        const std::size_t Hq1 = p.Hq + 1;
        a.compute.assign(p.B * Hq1 * p.Nq * (p.Dk + p.Dv) + 1, T(0));
        a.q = bhsd<const T>(a.compute.data(), p.B, Hq1, p.Nq, p.Dk);
        a.out = bhsd(a.compute.data() + p.B * Hq1 * p.Nq * p.Dk, p.B, Hq1, p.Nq, p.Dv);
        a.opt.alibi_slopes = {}, a.opt.head_scale = {};
        a.opt.additive_mask = {}, a.opt.boolean_mask = {}, a.opt.lse = {};
        return "heads do not group";
      }
      case 14: {  // a boolean mask whose last element sits at PTRDIFF_MAX: its byte extent overflows
        if (p.Nq < 2 || p.Nk < 1) break;
        const auto room = std::uint64_t(std::numeric_limits<std::ptrdiff_t>::max()) - (p.Nk - 1);
        if (room % (p.Nq - 1) != 0) break;
        a.bools.reset(new bool[1]{true});
        a.opt.boolean_mask =
            tensor_view<const bool>(a.bools.get(), 1, 1, p.Nq, p.Nk, 0, 0, std::ptrdiff_t(room / (p.Nq - 1)));
        return "byte extent overflow";
      }
      case 15: {  // a negative or huge stride on a mask
        if (!a.opt.additive_mask.is_set() || a.opt.additive_mask.seq() < 2 || !elements(a.opt.additive_mask))
          break;
        a.opt.additive_mask =
            restrided(a.opt.additive_mask, 2, pick % 2 ? -3 : std::numeric_limits<std::ptrdiff_t>::max());
        return "mask stride";
      }
      case 16: {  // key blocks with one key fewer or one coordinate more than v and q agree on
        if (!a.blocked || a.kb.seq() == 0) break;
        a.reference_checks = false;
        a.kb = key_blocks_view<const S>(a.kb.data(), a.kb.batch(), a.kb.heads(), a.kb.seq() - 1, a.kb.dim(),
                                        a.kb.batch_stride(), a.kb.head_stride());
        return "key blocks seq";
      }
      default: {  // a SIMD path this CPU lacks (only where one is missing)
        for (simd_isa isa : {simd_isa::avx2, simd_isa::avx512, simd_isa::avx512_bf16}) {
          const auto& have = available_isas();
          if (std::find(have.begin(), have.end(), isa) == have.end()) {
            a.reference_checks = false;
            a.opt.isa = isa;
            return "isa unavailable";
          }
        }
        break;
      }
    }
  }
  return "";
}

}  // namespace hwfuzz
