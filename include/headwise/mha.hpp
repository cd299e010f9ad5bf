// headwise/mha.hpp — a multi-head attention layer: projections, GQA, RoPE, KV cache, LoRA.
//
// Shapes (row-major token matrices; Hq = num_heads, Hkv = num_kv_heads, D = head_dim):
//   x, y [B·T × model_dim]: B sequences of T tokens, one after another (B = 1 by default)
//   Wq [Hq·D × model]   Wk, Wv [Hkv·D × model]   Wo [model × Hq·D]   (y = x·Wᵀ + b)
//   biases bq [Hq·D], bk, bv [Hkv·D], bo [model], present when config.bias
// forward(x, y):
//   1. q = x·Wqᵀ + bq, k = x·Wkᵀ + bk, v = x·Wvᵀ + bv   Eigen GEMMs into one [B·T × (Hq+2Hkv)·D]
//      buffer, plus the active LoRA mix (or per-row adapters) on each projection
//   2. RoPE on q and k in place, row t of each sequence at position p0 + t
//   3. headwise::attention on [B, T, H, D] views of that buffer (as_bshd: strides, no
//      copies), query head h reading kv head h / (Hq / Hkv), into a [B·T × Hq·D] buffer;
//      a sequence attends only to itself
//   4. y = a·Woᵀ + bo, plus the adapters on o
// Costs per token: 2·model·(2·Hq + 2·Hkv)·D FLOPs of projections, 4·Hq·D·Nk of attention.
// At decode (T = 1) the projections are bound by reading the weights: for a
// Llama-like layer (4096, 32/8 heads, D = 128) that is 42M parameters, 168 MB in float,
// read once per step for all B sequences — why serving batches sequences.
//
// KV cache: prefill(x, y, cache) appends the rotated k and the v of every row of x
// to the cache and attends over everything it holds (causal bottom-right, so row t
// sees the cache plus itself); step(x_t, y_t, cache) is the same for one token per
// sequence. The cache's batch is B: x holds B·n rows, sequence b's n rows go to
// cache batch entry b. The Cache type needs size(), append(k, v) taking [B, Hkv, n, D]
// views, and keys() / values() views [B, Hkv, size, D] of its filled part —
// headwise::kv_cache has them.
//
// LoRA: adapters() is a lora_adapter_set over q, k, v and o. merge_adapters() folds
// the active mix into the weights (forward then costs exactly the base price and
// skips the adapters) and unmerge_adapters() takes the same mix out again.
//
// backward(x, dy, dx, grads) differentiates the last forward(x, y, {}, B): the layer
// keeps what it needs in the buffers that forward fills anyway — the rotated q, k and
// v, the attention output a — plus the LSE of attention (4 bytes per row and query
// head), so training costs no copy and no second forward; a caller-visible activation
// struct would either duplicate those buffers or change forward's signature. The cost:
// one kept forward per layer object (a model keeps one per layer, as llm.c does),
// and prefill, step, merge_adapters and unmerge_adapters drop it. Passes, each
// quoting the forward line it differentiates:
//   1. y = a·Woᵀ + bo (+ o's adapters):  da = dy·Wo + LoRA's dx; dWo += dyᵀ·a, dbo += Σ_rows dy
//   2. a = attention(q, k, v):           dq, dk, dv = attention_backward(…, a, lse, da)
//                                        (GQA: dk, dv sum over each group's query heads)
//   3. q, k rotated by θ(position):      dq, dk rotated by −θ (rotary_embedding::rotate_back)
//   4. q = x·Wqᵀ + bq (+ adapters), k, v likewise: dx = dq·Wq + dk·Wk + dv·Wv + LoRA's dx
// LoRA: each delta of the active mix adds (lora_delta::backward, weight w of the mix)
// dA, dB with the base weights frozen; dW and db are computed only where grads holds
// them (make_gradients(true): full fine-tuning). Gradients accumulate (+=) across
// calls (micro-batches); mha_gradients::zero() clears them. Costs: the forward's
// projection FLOPs for dx, as many again for dW when trained, and attention_backward
// (2.5× attention's). The base GEMMs run on config.threads threads in the forward's
// fixed column blocks (same bits for every count), the LoRA ones on one thread.
// Scratch: da and dq|dk|dv, grow-only like the forward's buffers.
// Limits: attention() keeps the LSE in float, so even a double layer recomputes P to
// float's relative precision (u_f·|lse|, ~10⁻⁶ at |lse| ~ 20); per-row adapters and
// the cached prefill/step have no backward yet.
//
// 16 bits. forward, prefill, step and backward also take x, y, dy as Eigen::bfloat16
// or Eigen::half (eigen.hpp) on a float layer: x is widened (exact); projections,
// biases, adapters and RoPE run in float as above; the rotated q, k, v are rounded
// once to 16 bits and attention() runs on them (bfloat16: vdpbf16ps tiles on
// avx512_bf16, P rounded as FlashAttention does; elsewhere the float kernels convert
// on load), writing a in float; the o projection runs in float and y is rounded once.
// So the layer rounds what a bf16 model stores (q, k, v, y), never a sum. The kept
// q, k, v are the rounded values: backward differentiates what attention computed,
// with dx and every gradient in float. The cache holds the 16-bit type
// (kv_cache<bfloat16>): attention() reads 16-bit q only with K/V of its type.
// A float layer also decodes over kv_cache<std::int8_t> (quantize.hpp) and its scales.
// Accuracy (mha_test): within 2× the error against fp64 of the naive pipeline that
// rounds at the same points. Cost (bench/lora_bench.cpp, Llama-like layer, one thread,
// Zen 4, medians of 5): a 1024-token prefill takes 0.97× the float layer's time
// (0.98× with bf16 weights), a decode step after 512 tokens 1.05× (0.94×): within
// this shared machine's noise. The projections are 90 % of the FLOPs and stay float,
// so bf16 attention's 1.8× moves the layer by a few %.
// Weights: multi_head_attention<float, Eigen::bfloat16> stores W in bfloat16 (the
// Llama-like layer's 42M weights: 84 MB instead of 168), as a bf16 checkpoint holds
// them; biases and adapters stay float. Each GEMM widens its task's block of W into
// a per-thread scratch and multiplies in float (widened_weight_rows says how much at
// a time): the same speed as float weights, not faster, since the widened copy is
// streamed again; a decode step reading bf16 directly (half the bytes) needs a fused
// kernel, not built. merge_adapters() does not compile for 16-bit weights: merging
// would round every weight, and unmerge could not undo it.
//
// Buffers are grow-only members: after the first call of a given size a forward
// allocates nothing of its own. y may alias x. One layer, one thread at a time;
// attention and the projection GEMMs run on config.threads threads (each GEMM cut
// into fixed blocks of output columns, so the bits do not depend on the count).
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "headwise/detail/internal_begin.hpp"

#include "headwise/attention.hpp"
#include "headwise/backward.hpp"
#include "headwise/detail/checks_eigen.hpp"
#include "headwise/detail/integer.hpp"
#include "headwise/detail/parallel.hpp"
#include "headwise/eigen.hpp"
#include "headwise/lora.hpp"
#include "headwise/rope.hpp"

#include "headwise/detail/internal_end.hpp"

namespace headwise {

struct mha_config {
  std::size_t model_dim = 0;
  std::size_t num_heads = 0;     ///< Hq
  std::size_t num_kv_heads = 0;  ///< Hkv: Hq for MHA, 1 for MQA, a divisor of Hq for GQA
  std::size_t head_dim = 0;      ///< D
  rope_config rope;
  bool causal = true;
  bool bias = false;     ///< q, k, v and o biases
  unsigned threads = 0;  ///< threads of attention() and of the projection GEMMs; 0 = hardware
};

/// ∂L/∂(trainable parameters) of a multi_head_attention<T>, made by its
/// make_gradients() and accumulated (+=) by its backward().
template <class T>
struct mha_gradients {
  struct lora_factors {
    row_matrix<T> a, b;  ///< dA [r × in], dB [out × r]; empty where the adapter has no delta
  };
  std::vector<std::array<lora_factors, projection_count>> adapters;  ///< [adapter id][projection]
  std::array<row_matrix<T>, projection_count> weights;  ///< dW [out × in], or empty (frozen)
  std::array<row_vector<T>, projection_count> biases;   ///< db [out], or empty (frozen or no bias)

  void zero() {
    for (auto& per : adapters)
      for (lora_factors& f : per) f.a.setZero(), f.b.setZero();
    for (auto& w : weights) w.setZero();
    for (auto& b : biases) b.setZero();
  }
};

/// T: the compute type (float or double) of the projections, adapters and
/// gradients; W: the weights' storage, T or (T = float) Eigen::bfloat16 / Eigen::half.
template <class T, class W = T>
class multi_head_attention {
  static_assert(
      std::is_same_v<W, T> || (std::is_same_v<T, float> && is_eigen_16<W>),
      "weights are stored in the compute type, or in Eigen::bfloat16 / Eigen::half with float compute");

 public:
  using adapter_id = typename lora_adapter_set<T>::adapter_id;

  /// Weights and biases start at zero; fill them through weight() and bias().
  explicit multi_head_attention(const mha_config& cfg)
      : cfg_(checked(cfg)), adapters_(shapes(cfg)), rope_(cfg.rope, cfg.head_dim) {
    for (std::size_t p = 0; p < projection_count; ++p) {
      const projection_shape& s = adapters_.shape(projection(p));
      weights_[p] = row_matrix<W>::Zero(s.out, s.in);
      biases_[p] = row_vector<T>::Zero(cfg.bias ? s.out : 0);
    }
  }

  const mha_config& config() const noexcept { return cfg_; }

  /// W of projection p, [out × in] (header comment); writable, not resizable.
  matrix_ref<W> weight(projection p) noexcept { return weights_[index(p)]; }
  const row_matrix<W>& weight(projection p) const noexcept { return weights_[index(p)]; }
  /// Bias of projection p, [out], or empty when config.bias is false.
  Eigen::Ref<row_vector<T>> bias(projection p) noexcept { return biases_[index(p)]; }
  const row_vector<T>& bias(projection p) const noexcept { return biases_[index(p)]; }

  /// Weights plus biases (the frozen base parameters).
  Eigen::Index parameter_count() const noexcept {
    Eigen::Index n = 0;
    for (std::size_t p = 0; p < projection_count; ++p) n += weights_[p].size() + biases_[p].size();
    return n;
  }

  lora_adapter_set<T>& adapters() noexcept { return adapters_; }
  const lora_adapter_set<T>& adapters() const noexcept { return adapters_; }

  /// Folds the active mix into the weights, one projection at a time, each checked
  /// like lora_adapter_set::merge. When one refuses (a NaN or an infinity), the
  /// projections merged before it are unmerged again — restored up to the round-trip
  /// bound — and the error propagates with the layer still unmerged.
  void merge_adapters() {
    static_assert(std::is_same_v<W, T>,
                  "merging into 16-bit weights would round every weight (2^-9 relative "
                  "for bfloat16), which unmerge could not undo: keep the adapters unmerged");
    detail::check_adapters_merged("multi_head_attention::merge_adapters", merged_, false);
    std::size_t done = 0;
    try {
      for (; done < projection_count; ++done) adapters_.merge(projection(done), weights_[done]);
    } catch (...) {
      for (std::size_t p = 0; p < done; ++p) adapters_.unmerge(projection(p), weights_[p]);
      throw;
    }
    merged_mix_ = adapters_.active();
    merged_ = true;
    kept_ = false;
  }
  /// Takes the mix merged by merge_adapters() out again, whatever is active now.
  void unmerge_adapters() {
    static_assert(std::is_same_v<W, T>, "16-bit weights never hold merged adapters");
    detail::check_adapters_merged("multi_head_attention::unmerge_adapters", merged_, true);
    for (std::size_t p = 0; p < projection_count; ++p)
      adapters_.unmerge(projection(p), weights_[p], merged_mix_);
    merged_ = false;
    kept_ = false;
  }
  bool adapters_merged() const noexcept { return merged_; }

  /// Self-attention, no cache, over x holding `sequences` sequences of
  /// x.rows() / sequences tokens, one after another; each attends only to itself.
  /// row_adapters (empty, or one id per row) selects a LoRA adapter per row instead
  /// of the active mix.
  void forward(const const_matrix_ref<T>& x, matrix_ref<T> y, span<const adapter_id> row_adapters = {},
               std::size_t sequences = 1) {
    check_io("multi_head_attention::forward", x, y, row_adapters, sequences);
    self_attend<T>(x, y, row_adapters, sequences);
  }

  /// forward() on 16-bit activations x, y (Eigen::bfloat16 or Eigen::half; float
  /// layers): q, k, v rounded to 16 bits for attention (header comment).
  template <class X, class Y, class A = detail::eigen_16_scalar<X>>
  void forward(const X& x_in, Y&& y_in, span<const adapter_id> row_adapters = {}, std::size_t sequences = 1) {
    const const_matrix_ref<A> x(x_in);
    matrix_ref<A> y(y_in);
    check_io("multi_head_attention::forward", x, y, row_adapters, sequences);
    on_widened(x, y, [&](matrix_map<T>& io) { self_attend<storage_16<A>>(io, io, row_adapters, sequences); });
  }

  /// Gradients sized for every adapter added so far (dA, dB where it has a delta)
  /// and, when `base`, for the weights and biases too (full fine-tuning); all zero.
  mha_gradients<T> make_gradients(bool base = false) const {
    mha_gradients<T> g;
    g.adapters.resize(adapters_.size());
    for (std::size_t id = 0; id < adapters_.size(); ++id)
      for (std::size_t p = 0; p < projection_count; ++p)
        if (const lora_delta<T>* d = adapters_.delta(adapter_id(id), projection(p)))
          g.adapters[id][p] = {row_matrix<T>::Zero(d->rank(), d->in_features()),
                               row_matrix<T>::Zero(d->out_features(), d->rank())};
    for (std::size_t p = 0; base && p < projection_count; ++p) {
      g.weights[p] = row_matrix<T>::Zero(weights_[p].rows(), weights_[p].cols());
      g.biases[p] = row_vector<T>::Zero(biases_[p].size());
    }
    return g;
  }

  /// Backward of the last forward(x, y, {}, sequences) (header comment): given
  /// dy = ∂L/∂y, writes dx = ∂L/∂x (overwritten; must not overlap x or dy) and adds
  /// the gradients grads holds: dA, dB of every delta in the active mix, and dW, db
  /// where present. x must be the forward's x, weights and adapters unchanged since.
  void backward(const const_matrix_ref<T>& x, const const_matrix_ref<T>& dy, matrix_ref<T> dx,
                mha_gradients<T>& grads) {
    check_backward(x, dy, dx, grads);
    const Eigen::Index rows = x.rows();
    if (rows == 0) return;
    const auto qd = static_cast<Eigen::Index>(cfg_.num_heads * cfg_.head_dim);
    const auto kvd = static_cast<Eigen::Index>(cfg_.num_kv_heads * cfg_.head_dim);
    const std::size_t B = kept_sequences_, Hq = cfg_.num_heads, Hkv = cfg_.num_kv_heads, D = cfg_.head_dim;
    matrix_map<T> qkv = qkv_.take(rows, qd + 2 * kvd);  // the kept forward's rotated q, k and v
    matrix_map<T> a = attn_.take(rows, qd);             // and attention output
    // 1. forward: y = a·Woᵀ + bo (+ o's adapters)
    matrix_map<T> da = dattn_.take(rows, qd);
    linear_backward(projection::o, a, dy, da, grads, false);
    // 2. forward: a = attention(q, k, v). dq, dk, dv stacked, not side by side:
    //    attention_backward refuses gradients whose address ranges interleave.
    T* g = dqkv_.take(rows, qd + 2 * kvd).data();
    matrix_map<T> dq(g, rows, qd), dk(g + rows * qd, rows, kvd), dv(g + rows * (qd + kvd), rows, kvd);
    attention_backward(as_bshd(q_of(qkv), Hq, D, B), as_bshd(k_of(qkv), Hkv, D, B), as_bshd(v_of(qkv), Hkv, D, B),
                       as_bshd(a, Hq, D, B), tensor_view<const float>(lse_of(B, rows)), as_bshd(da, Hq, D, B),
                       as_bshd(dq, Hq, D, B), as_bshd(dk, Hkv, D, B), as_bshd(dv, Hkv, D, B), attention_opts());
    // 3. forward: q, k rotated by θ(position), row t of each sequence at position t
    rope_.rotate_back(as_bshd(dq, Hq, D, B), 0);
    rope_.rotate_back(as_bshd(dk, Hkv, D, B), 0);
    // 4. forward: q = x·Wqᵀ + bq (+ q's adapters); k and v likewise
    linear_backward(projection::q, x, dq, dx, grads, false);
    linear_backward(projection::k, x, dk, dx, grads, true);
    linear_backward(projection::v, x, dv, dx, grads, true);
  }

  /// backward() of a forward on 16-bit activations: x and dy 16-bit, widened; dx and
  /// the gradients float.
  template <class X, class DY, class A = detail::eigen_16_scalar<X>>
  void backward(const X& x_in, const DY& dy_in, matrix_ref<T> dx, mha_gradients<T>& grads) {
    const const_matrix_ref<A> x(x_in), dy(dy_in);
    check_backward(x, dy, dx, grads);
    matrix_map<T> wide = io_.take(x.rows(), 2 * x.cols());
    widen(x, wide.leftCols(x.cols()));
    widen(dy, wide.rightCols(x.cols()));
    backward(wide.leftCols(x.cols()), wide.rightCols(x.cols()), dx, grads);
  }

  /// Appends the rows of x to the cache, then attends over all of it. One sequence
  /// per cache batch entry: x holds batch runs of x.rows() / batch tokens.
  template <class Cache>
  void prefill(const const_matrix_ref<T>& x, matrix_ref<T> y, Cache& cache,
               span<const adapter_id> row_adapters = {}) {
    check_io("multi_head_attention::prefill", x, y, row_adapters, cache.keys().batch());
    extend<T>(x, y, cache, row_adapters);
  }

  /// prefill() on 16-bit activations; the cache holds storage_16<A> (what attention()
  /// reads with 16-bit q): kv_cache<bfloat16> for Eigen::bfloat16.
  template <class X, class Y, class Cache, class A = detail::eigen_16_scalar<X>>
  void prefill(const X& x_in, Y&& y_in, Cache& cache, span<const adapter_id> row_adapters = {}) {
    const const_matrix_ref<A> x(x_in);
    matrix_ref<A> y(y_in);
    check_io("multi_head_attention::prefill", x, y, row_adapters, cache.keys().batch());
    on_widened(x, y, [&](matrix_map<T>& io) { extend<storage_16<A>>(io, io, cache, row_adapters); });
  }

  /// One decode step: one token per sequence, x_t, y_t [batch × model_dim] for a
  /// cache of that batch (row b continues sequence b).
  template <class Cache>
  void step(const const_matrix_ref<T>& x_t, matrix_ref<T> y_t, Cache& cache,
            span<const adapter_id> row_adapters = {}) {
    detail::expect_equal("multi_head_attention::step", "x_t.rows() must equal the cache's batch",
                         cache.keys().batch(), x_t.rows());
    check_io("multi_head_attention::step", x_t, y_t, row_adapters, cache.keys().batch());
    extend<T>(x_t, y_t, cache, row_adapters);
  }

  /// step() on 16-bit activations, the cache as for prefill().
  template <class X, class Y, class Cache, class A = detail::eigen_16_scalar<X>>
  void step(const X& x_in, Y&& y_in, Cache& cache, span<const adapter_id> row_adapters = {}) {
    const const_matrix_ref<A> x_t(x_in);
    matrix_ref<A> y_t(y_in);
    detail::expect_equal("multi_head_attention::step", "x_t.rows() must equal the cache's batch",
                         cache.keys().batch(), x_t.rows());
    check_io("multi_head_attention::step", x_t, y_t, row_adapters, cache.keys().batch());
    on_widened(x_t, y_t, [&](matrix_map<T>& io) { extend<storage_16<A>>(io, io, cache, row_adapters); });
  }

 private:
  static std::size_t index(projection p) noexcept { return static_cast<std::size_t>(p); }

  static const mha_config& checked(const mha_config& cfg) {
    detail::check_mha_config(cfg.model_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
    return cfg;
  }

  static std::array<projection_shape, projection_count> shapes(const mha_config& cfg) {
    const auto model = static_cast<Eigen::Index>(cfg.model_dim);
    const auto qd = static_cast<Eigen::Index>(cfg.num_heads * cfg.head_dim);
    const auto kvd = static_cast<Eigen::Index>(cfg.num_kv_heads * cfg.head_dim);
    return {projection_shape{model, qd}, projection_shape{model, kvd}, projection_shape{model, kvd},
            projection_shape{qd, model}};
  }

  template <class X, class Y>
  void check_io(const char* where, const X& x, const Y& y, span<const adapter_id> row_adapters,
                std::size_t sequences) const {
    detail::check_mha_io(where, x, y, static_cast<Eigen::Index>(cfg_.model_dim), sequences, row_adapters.size(),
                         merged_);
  }

  template <class X, class DY>
  void check_backward(const X& x, const DY& dy, const matrix_ref<T>& dx,
                      const mha_gradients<T>& grads) const {
    const char* where = "multi_head_attention::backward";
    detail::check_mha_backward(where, x, dy, dx, static_cast<Eigen::Index>(cfg_.model_dim), kept_, kept_rows_,
                               kept_per_row_, merged_);
    detail::check_mha_gradients<projection>(where, grads, adapters_, weights_, biases_);
  }

  /// fn(io) on x widened to float in io; y is then io rounded once to A. The float
  /// entry points' bodies allow y == x, so fn writes its y into io too.
  template <class A, class Fn>
  void on_widened(const const_matrix_ref<A>& x, matrix_ref<A> y, Fn&& fn) {
    static_assert(std::is_same_v<T, float>, "16-bit activations go with a float layer");
    matrix_map<T> io = io_.take(x.rows(), x.cols());
    widen(x, io);
    fn(io);
    narrow(io, y);
  }

  /// forward()'s body: Q is T, or the 16-bit type q, k and v are rounded to.
  template <class Q>
  void self_attend(const const_matrix_ref<T>& x, matrix_ref<T> y, span<const adapter_id> row_adapters,
                   std::size_t sequences) {
    kept_ = false;
    auto qkv = project_qkv(x, row_adapters, 0, sequences);
    lse_.resize(std::max(lse_.size(), std::size_t(x.rows()) * cfg_.num_heads));
    const qkv_views<Q> in = attention_inputs<Q>(qkv, sequences);
    attend(in.q, in.k, in.v, x.rows(), y, row_adapters, sequences, lse_of(sequences, x.rows()));
    kept_ = true;
    kept_rows_ = x.rows();
    kept_sequences_ = sequences;
    kept_per_row_ = !row_adapters.empty();
  }

  /// Output columns per task of a projection GEMM: fixed, never from the thread count,
  /// so every thread count gives the same bits. Each task multiplies all of `in` by
  /// its rows of W: at decode (T = 1) the tasks split the weight bytes the step must
  /// read; at prefill each repacks `in` (T·in copies against 2·T·in·512 FLOPs).
  /// Measured (model 4096, 32/8 heads, T 512, AVX-512 Xeon): 2 threads run prefill
  /// 1.94× and a decode step 2.03× faster than 1 (1.01× and 0.97× with one-thread
  /// GEMMs); 1 thread as fast as one whole-matrix GEMM.
  static constexpr Eigen::Index projection_cols_per_task = 512;

  /// fn(c0, n) for each block [c0, c0 + n) of projection_cols_per_task columns of
  /// [0, cols), on config.threads threads: the blocks never depend on the count.
  /// fn(c0, n, thread) for each block [c0, c0 + n) of projection_cols_per_task columns
  /// of [0, cols), on config.threads threads: the blocks never depend on the count.
  template <class Fn>
  void for_column_blocks(Eigen::Index cols, Fn&& fn) {
    const Eigen::Index per = projection_cols_per_task;
    const std::size_t tasks = detail::ceil_div(std::size_t(cols), std::size_t(per));
    const unsigned threads = detail::resolve_threads(cfg_.threads, tasks);
    if (wide_.size() < threads) wide_.resize(threads);
    detail::parallel_for(tasks, threads, [&](std::size_t t, unsigned thread) {
      const Eigen::Index c0 = Eigen::Index(t) * per;
      fn(c0, std::min(per, cols - c0), thread);
    });
  }

  /// A block of W as T: itself, or (16-bit W) widened into the thread's scratch.
  template <class Block>
  auto weight_block(const Block& block, unsigned thread) {
    if constexpr (std::is_same_v<W, T>) {
      return block;
    } else {
      matrix_map<T> m = wide_[thread].take(block.rows(), block.cols());
      widen(block, m);
      return m;
    }
  }

  /// Rows of a 16-bit W widened per GEMM when the GEMM has `rows` rows of input. A
  /// GEMM reads each weight `rows` times: with many (prefill) the task's whole block
  /// (512 rows) is widened once and multiplied at the float layer's shapes and speed;
  /// with few (decode, <= 32) the widened copy is what the step streams, so it is cut
  /// into 128-row pieces (2 MiB at 4096 wide) read back from cache. Measured, decode
  /// step of the Llama-like layer, one thread, Zen 4, median of 5: pieces of 32 rows
  /// 10.5 ms, 128 rows 7.7 ms, 512 rows 8.9 ms; float weights 7.6 ms.
  static Eigen::Index widened_weight_rows(Eigen::Index rows, Eigen::Index block) {
    return std::is_same_v<W, T> || rows > 32 ? block : std::min<Eigen::Index>(128, block);
  }

  /// out = in·Wᵀ + b on config.threads threads, plus the adapters unless merged.
  template <class Out>
  void project(projection p, const const_matrix_ref<T>& in, Out&& out, span<const adapter_id> row_adapters) {
    const std::size_t i = index(p);
    const row_matrix<W>& w = weights_[i];
    for_column_blocks(w.rows(), [&](Eigen::Index c0, Eigen::Index n, unsigned thread) {
      const Eigen::Index step = widened_weight_rows(in.rows(), n);
      for (Eigen::Index r0 = c0; r0 < c0 + n; r0 += step) {
        const Eigen::Index m = std::min(step, c0 + n - r0);
        out.middleCols(r0, m).noalias() = in * weight_block(w.middleRows(r0, m), thread).transpose();
      }
    });
    if (biases_[i].size() != 0) out.rowwise() += biases_[i];
    if (merged_) return;
    if (row_adapters.empty())
      adapters_.apply(p, in, out);
    else
      adapters_.apply(p, in, out, row_adapters);
  }

  /// Projects x into the [B·T × (Hq + 2·Hkv)·D] buffer (q | k | v) and rotates q, k:
  /// row t of each of the B sequences at position first_position + t.
  matrix_map<T> project_qkv(const const_matrix_ref<T>& x, span<const adapter_id> row_adapters,
                            std::size_t first_position, std::size_t sequences) {
    const auto qd = static_cast<Eigen::Index>(cfg_.num_heads * cfg_.head_dim);
    const auto kvd = static_cast<Eigen::Index>(cfg_.num_kv_heads * cfg_.head_dim);
    matrix_map<T> qkv = qkv_.take(x.rows(), qd + 2 * kvd);
    project(projection::q, x, q_of(qkv), row_adapters);
    project(projection::k, x, k_of(qkv), row_adapters);
    project(projection::v, x, v_of(qkv), row_adapters);
    rope_.apply(as_bshd(q_of(qkv), cfg_.num_heads, cfg_.head_dim, sequences), first_position);
    rope_.apply(as_bshd(k_of(qkv), cfg_.num_kv_heads, cfg_.head_dim, sequences), first_position);
    return qkv;
  }
  auto q_of(matrix_map<T>& qkv) const {
    return qkv.leftCols(static_cast<Eigen::Index>(cfg_.num_heads * cfg_.head_dim));
  }
  auto k_of(matrix_map<T>& qkv) const {
    const auto kvd = static_cast<Eigen::Index>(cfg_.num_kv_heads * cfg_.head_dim);
    return qkv.middleCols(qkv.cols() - 2 * kvd, kvd);
  }
  auto v_of(matrix_map<T>& qkv) const {
    return qkv.rightCols(static_cast<Eigen::Index>(cfg_.num_kv_heads * cfg_.head_dim));
  }

  /// The rotated q and the k, v attention() reads, [B, H, T, D] each: views of qkv
  /// (Q = T), or of q, k, v rounded to the 16-bit Q. qkv then holds the rounded
  /// values too, so that backward() differentiates what attention() computed.
  template <class Q>
  struct qkv_views {
    tensor_view<Q> q, k, v;
  };
  template <class Q>
  qkv_views<Q> attention_inputs(matrix_map<T>& qkv, std::size_t sequences) {
    const std::size_t Hq = cfg_.num_heads, Hkv = cfg_.num_kv_heads, D = cfg_.head_dim;
    if constexpr (std::is_same_v<Q, T>) {
      return {as_bshd(q_of(qkv), Hq, D, sequences), as_bshd(k_of(qkv), Hkv, D, sequences),
              as_bshd(v_of(qkv), Hkv, D, sequences)};
    } else {
      std::vector<Q>& r = std::get<std::vector<Q>>(qkv16_);
      const auto n = std::size_t(qkv.size());
      r.resize(std::max(r.size(), n));
      for (std::size_t e = 0; e < n; ++e) {  // qkv is contiguous: a matrix_scratch map
        r[e] = detail::convert_element<Q>(qkv.data()[e]);
        qkv.data()[e] = static_cast<T>(r[e]);
      }
      const auto rows = std::size_t(qkv.rows());
      const auto ld = static_cast<std::ptrdiff_t>(qkv.cols()), qd = std::ptrdiff_t(Hq * D),
                 kvd = std::ptrdiff_t(Hkv * D);
      return {detail::bshd_rows(r.data(), rows, ld, Hq, D, sequences),
              detail::bshd_rows(r.data() + qd, rows, ld, Hkv, D, sequences),
              detail::bshd_rows(r.data() + qd + kvd, rows, ld, Hkv, D, sequences)};
    }
  }

  /// Attention of the rotated queries over k, v, then the output projection into y.
  template <class Q, class K, class V>
  void attend(const tensor_view<Q>& q, const K& k, const V& v, Eigen::Index rows, matrix_ref<T> y,
              span<const adapter_id> row_adapters, std::size_t sequences, tensor_view<float> lse = {},
              const tensor_view<const float>& k_scale = {}, const tensor_view<const float>& v_scale = {}) {
    attention_options opt = attention_opts();
    opt.lse = lse;
    opt.k_scale = k_scale, opt.v_scale = v_scale;
    matrix_map<T> a = attn_.take(rows, static_cast<Eigen::Index>(cfg_.num_heads * cfg_.head_dim));
    attention(q, k, v, as_bshd(a, cfg_.num_heads, cfg_.head_dim, sequences), opt);
    project(projection::o, a, y, row_adapters);
  }

  attention_options attention_opts() const {
    attention_options opt;
    opt.causal = cfg_.causal ? causal_mode::bottom_right : causal_mode::none;
    opt.threads = cfg_.threads;
    return opt;
  }

  /// The kept forward's LSE, [B, Hq, rows / B, 1] over lse_; none for zero rows (a
  /// view of no rows has zero strides, which attention() refuses for an output).
  tensor_view<float> lse_of(std::size_t sequences, Eigen::Index rows) {
    if (rows == 0) return {};
    return lse_view(lse_.data(), sequences, cfg_.num_heads, std::size_t(rows) / sequences);
  }

  /// Backward of out = in·Wᵀ + b (+ the active mix's adapters) given dout: din = dout·W
  /// (+= when accumulate) plus the adapters' dx; dW, db and each delta's dA, dB added
  /// to grads where it holds them.
  void linear_backward(projection p, const const_matrix_ref<T>& in, const const_matrix_ref<T>& dout,
                       matrix_ref<T> din, mha_gradients<T>& grads, bool accumulate) {
    const std::size_t i = index(p);
    const row_matrix<W>& w = weights_[i];
    for_column_blocks(w.cols(), [&](Eigen::Index c0, Eigen::Index n, unsigned thread) {
      if (accumulate)
        din.middleCols(c0, n).noalias() += dout * weight_block(w.middleCols(c0, n), thread);
      else
        din.middleCols(c0, n).noalias() = dout * weight_block(w.middleCols(c0, n), thread);
    });
    if (grads.weights[i].size() != 0)
      for_column_blocks(w.rows(), [&](Eigen::Index r0, Eigen::Index n, unsigned) {
        grads.weights[i].middleRows(r0, n).noalias() += dout.middleCols(r0, n).transpose() * in;
      });
    if (grads.biases[i].size() != 0) grads.biases[i] += dout.colwise().sum();
    for (const auto& m : adapters_.active())
      if (lora_delta<T>* d = adapters_.delta(m.id, p)) {
        auto& f = grads.adapters[m.id][i];
        d->backward(in, dout, f.a, f.b, din, static_cast<T>(m.weight));
      }
  }

  /// prefill()'s and step()'s body, Q as for self_attend.
  template <class Q, class Cache>
  void extend(const const_matrix_ref<T>& x, matrix_ref<T> y, Cache& cache,
              span<const adapter_id> row_adapters) {
    kept_ = false;
    const std::size_t B = cache.keys().batch();
    auto qkv = project_qkv(x, row_adapters, cache.size(), B);
    const qkv_views<Q> in = attention_inputs<Q>(qkv, B);
    cache.append(in.k, in.v);
    tensor_view<const float> k_scale, v_scale;  // an int8 cache's scales
    if constexpr (is_storage_int8<typename Cache::value_type>)
      k_scale = cache.key_scales(), v_scale = cache.value_scales();
    attend(in.q, cache.keys(), cache.values(), x.rows(), y, row_adapters, B, {}, k_scale, v_scale);
  }

  mha_config cfg_;
  std::array<row_matrix<W>, projection_count> weights_;
  std::array<row_vector<T>, projection_count> biases_;
  lora_adapter_set<T> adapters_;
  rotary_embedding<T> rope_;
  matrix_scratch<T> qkv_, attn_, dattn_, dqkv_, io_;            // io_: 16-bit activations widened
  std::tuple<std::vector<bfloat16>, std::vector<half>> qkv16_;  // q | k | v rounded for 16-bit attention
  std::vector<matrix_scratch<T>> wide_;  // per thread: a block of 16-bit weights widened
  std::vector<float> lse_;  // the kept forward's LSE, [B, Hq, T, 1]
  bool kept_ = false, kept_per_row_ = false;  // forward()'s activations are in qkv_, attn_, lse_
  Eigen::Index kept_rows_ = 0;
  std::size_t kept_sequences_ = 1;
  bool merged_ = false;
  std::vector<typename lora_adapter_set<T>::weighted> merged_mix_;
};

}  // namespace headwise
