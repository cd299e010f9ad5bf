// headwise/options.hpp — what attention() computes, fixed in one place.
//
// Shapes (tensor_view axes are [batch, heads, seq, dim]):
//   q   [B, Hq,  Nq, Dk]      k [B, Hkv, Nk, Dk]      v [B, Hkv, Nk, Dv]
//   out [B, Hq,  Nq, Dv]      lse (optional) [B, Hq, Nq, 1]
//   GQA/MQA: Hq % Hkv == 0; query head h reads kv head h / (Hq / Hkv). K/V are
//   never copied or repeated.
//
// The logit of query i and key j, in this order:
//   s  = scale · (q_i · k_j)                 scale defaults to 1/sqrt(Dk)
//   s  = c · tanh(s / c)                     when softcap c > 0 (Gemma-2 style)
//   s += -slope[h] · |i + off − j|           when ALiBi slopes are given
//   s += additive_mask[b, h, i, j]           when an additive mask is given
// and key j is visible to query i when every rule below allows it:
//   causal none:         all keys
//   causal top_left:     j <= i              (diagonal offset off = 0)
//   causal bottom_right: j <= i + Nk − Nq    (off = Nk − Nq, the KV-cache convention:
//                                            the last query sees the last key)
//   window (left, right): i + off − left <= j <= i + off + right, measured from the
//                        same diagonal (off = Nk − Nq when causal is none, as in
//                        FlashAttention); an absent bound is unbounded, and any
//                        bound up to INT64_MAX is valid (one >= Nq + Nk reaches
//                        every key)
//   sink tokens S:       keys j < S ignore the *window* (StreamingLLM attention
//                        sinks); they still obey causality and the masks. S >= Nk
//                        (up to SIZE_MAX) makes every key a sink
//   boolean_mask:        key visible only where boolean_mask[b, h, i, j] is true
//   additive_mask:       a -inf entry hides the key
//   the logit itself:    a key whose logit comes out −inf (−inf in q or k, say)
//                        is hidden
// Masks are [B|1, H|1, Nq, Nk]: an axis of size 1 broadcasts.
//
// Softmax over the visible keys: p_ij = exp(s_ij − lse_i), lse_i = log Σ_j exp(s_ij),
// out_i = Σ_j p_ij v_j. A row with no visible key gives out_i = 0 and lse_i = −inf,
// never NaN.
//
// Heads: head_scale[h] multiplies the output of query head h; a head whose scale
// is 0 is pruned: it costs no FLOPs, writes zeros and its LSE is −inf.
//
// NaN and infinities. The anchors are PyTorch's _safe_softmax (a row whose logits
// are all −inf gives 0, NaN propagates) and FlashAttention (hidden logits are set
// to −inf, not added to), with one rule stronger than both, whose P·V multiplies
// a hidden key's V by p = 0 (NaN·0 = NaN): a hidden key is absent.
//   1. A hidden key (by any rule above) is never read: NaN or ±inf in its k, its v,
//      or its additive-mask entry cannot reach the row. A −inf additive entry hides
//      the key whatever its logit (NaN included); so does a false boolean entry.
//   2. A visible key whose logit is NaN or +inf (a NaN in q, k or the additive mask;
//      +inf in the mask; ±inf in q or k giving +inf or inf·0; softcap turns ±inf
//      logits into ±c first) leaves the row undefined: every element of the output
//      row is NaN, and so is its LSE (PyTorch gives a NaN row; FlashAttention a NaN
//      row and LSE +inf). A logit of −inf hides its key (rule 1).
//   3. A NaN or ±inf in v[j][d] of a visible key reaches out[i][d] as IEEE sums make
//      it with a positive weight, however far that weight underflows: NaN if any such
//      value is NaN or both infinities occur, else that infinity (its sign times
//      head_scale's); the other coordinates are unaffected.
//   4. Finite inputs whose logits or sums overflow the compute type give what IEEE
//      arithmetic gives (±inf, then possibly rules 2–3), which may differ between
//      kernels and from the oracle's double; keep |q·k|·scale and Σ|v| below ~1e38.
//   5. scale, softcap, ALiBi slopes and head scales must be finite (an error).
// A pruned head (head_scale 0) reads nothing, so none of these apply to it. Every
// kernel and path gives the same result class (finite, NaN, ±inf) per element, and
// rows that meet rules 2–3 the same bits: the flash and decode kernels recompute any
// row they leave non-finite with the plain kernel's row.
//
// Numerics: compute type is q's element type (float or double); K/V may be stored
// narrower (see the decode header); accumulation is at least fp32. Results are
// bitwise identical for every thread count.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>

#include "headwise/isa.hpp"
#include "headwise/tensor.hpp"

namespace headwise {

class workspace;

enum class causal_mode {
  none,          ///< every key visible
  top_left,      ///< key j visible to query i when j <= i
  bottom_right,  ///< key j visible to query i when j <= i + Nk - Nq
};

/// Which kernel runs. `automatic` chooses decode for small Nq and flash prefill
/// otherwise; the others force one (tests, benchmarks).
enum class kernel_mode {
  automatic,
  plain,   ///< one query row at a time, scores in a row buffer; the simple path
  flash,   ///< tiled online-softmax prefill kernel
  decode,  ///< split-KV decode kernel
};

struct attention_options {
  /// Multiplies q·k. Empty means 1/sqrt(Dk). Must be finite.
  std::optional<double> scale;

  /// One of the three values (an integer cast to causal_mode is an error).
  causal_mode causal = causal_mode::none;

  /// Sliding window bounds in keys, from the diagonal; empty = unbounded.
  /// Negative values are an error; any other value is valid.
  std::optional<std::int64_t> window_left;
  std::optional<std::int64_t> window_right;

  /// The first sink_tokens keys stay visible whatever the window (all keys when >= Nk).
  std::size_t sink_tokens = 0;

  /// Added to the logits; [B|1, H|1, Nq, Nk]. Unset (tensor_view{}, see is_set()) = none.
  tensor_view<const float> additive_mask;

  /// true = visible; [B|1, H|1, Nq, Nk]. Unset = none.
  tensor_view<const bool> boolean_mask;

  /// One slope per query head (Hq entries). Empty = no ALiBi.
  span<const float> alibi_slopes;

  /// Logit soft-capping value c > 0; 0 disables it.
  double softcap = 0.0;

  /// One multiplier per query head (Hq entries); 0 prunes the head. Empty = all 1.
  span<const float> head_scale;

  /// Optional output: natural-log LSE per query row, [B, Hq, Nq, 1]. Unset = none.
  tensor_view<float> lse;

  /// int8 K/V only (quantize.hpp): the fp32 dequantization scale of each (token, kv
  /// head), [B, Hkv, Nk, 1]; key s of head h is k_scale(b, h, s, 0) · k(b, h, s, ·).
  /// Required with int8 K/V, an error with any other storage.
  tensor_view<const float> k_scale;
  tensor_view<const float> v_scale;

  /// Worker threads; 0 = std::thread::hardware_concurrency().
  unsigned threads = 0;

  /// One of kernel_mode's values (a cast integer is an error).
  kernel_mode kernel = kernel_mode::automatic;

  /// Run the portable scalar build of the chosen kernel instead of the SIMD one.
  bool force_scalar = false;

  /// The SIMD path (isa.hpp): automatic = the widest this CPU runs, after
  /// HEADWISE_ISA. A path the CPU or build lacks is an error, as is a cast integer.
  simd_isa isa = simd_isa::automatic;

  /// Where the kernels take their scratch memory (workspace.hpp): a workspace grows
  /// to the largest call and is reused, so repeated calls allocate nothing. Null =
  /// the calling thread's own workspace. One call at a time per workspace.
  workspace* scratch = nullptr;
};

/// The sequences of one attention_varlen call (varlen.hpp), FlashAttention's names:
/// offsets of each sequence in packed q and K/V, and the keys each one uses.
struct varlen_batch {
  /// B + 1 offsets into q's (and out's) token axis, from 0 to its length; empty when
  /// q is [B, Hq, Nq, Dk], one batch entry per sequence.
  span<const std::int32_t> cu_seqlens_q;
  /// B + 1 offsets into k's and v's token axis; empty when K/V are [B, Hkv, Nk, D]
  /// or in pages.
  span<const std::int32_t> cu_seqlens_k;
  /// B counts: sequence b uses the first seqused_k[b] of its keys (a cache's
  /// filled part); empty = all of them. Required with K/V in pages.
  span<const std::int32_t> seqused_k;
};

}  // namespace headwise
