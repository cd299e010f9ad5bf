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
// Buffers are grow-only members: after the first call of a given size a forward
// allocates nothing of its own. y may alias x. One layer, one thread at a time;
// attention and the projection GEMMs run on config.threads threads (each GEMM cut
// into fixed blocks of output columns, so the bits do not depend on the count).
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
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

template <class T>
class multi_head_attention {
 public:
  using adapter_id = typename lora_adapter_set<T>::adapter_id;

  /// Weights and biases start at zero; fill them through weight() and bias().
  explicit multi_head_attention(const mha_config& cfg)
      : cfg_(checked(cfg)), adapters_(shapes(cfg)), rope_(cfg.rope, cfg.head_dim) {
    for (std::size_t p = 0; p < projection_count; ++p) {
      const projection_shape& s = adapters_.shape(projection(p));
      weights_[p] = row_matrix<T>::Zero(s.out, s.in);
      biases_[p] = row_vector<T>::Zero(cfg.bias ? s.out : 0);
    }
  }

  const mha_config& config() const noexcept { return cfg_; }

  /// W of projection p, [out × in] (header comment); writable, not resizable.
  matrix_ref<T> weight(projection p) noexcept { return weights_[index(p)]; }
  const row_matrix<T>& weight(projection p) const noexcept { return weights_[index(p)]; }
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
    kept_ = false;
    auto qkv = project_qkv(x, row_adapters, 0, sequences);
    lse_.resize(std::max(lse_.size(), std::size_t(x.rows()) * cfg_.num_heads));
    attend(as_bshd(q_of(qkv), cfg_.num_heads, cfg_.head_dim, sequences),
           as_bshd(k_of(qkv), cfg_.num_kv_heads, cfg_.head_dim, sequences),
           as_bshd(v_of(qkv), cfg_.num_kv_heads, cfg_.head_dim, sequences), x.rows(), y, row_adapters, sequences,
           lse_of(sequences, x.rows()));
    kept_ = true;
    kept_rows_ = x.rows();
    kept_sequences_ = sequences;
    kept_per_row_ = !row_adapters.empty();
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
    const char* where = "multi_head_attention::backward";
    detail::check_mha_backward(where, x, dy, dx, static_cast<Eigen::Index>(cfg_.model_dim), kept_, kept_rows_,
                               kept_per_row_, merged_);
    detail::check_mha_gradients<projection>(where, grads, adapters_, weights_, biases_);
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

  /// Appends the rows of x to the cache, then attends over all of it. One sequence
  /// per cache batch entry: x holds batch runs of x.rows() / batch tokens.
  template <class Cache>
  void prefill(const const_matrix_ref<T>& x, matrix_ref<T> y, Cache& cache,
               span<const adapter_id> row_adapters = {}) {
    check_io("multi_head_attention::prefill", x, y, row_adapters, cache.keys().batch());
    extend(x, y, cache, row_adapters);
  }

  /// One decode step: one token per sequence, x_t, y_t [batch × model_dim] for a
  /// cache of that batch (row b continues sequence b).
  template <class Cache>
  void step(const const_matrix_ref<T>& x_t, matrix_ref<T> y_t, Cache& cache,
            span<const adapter_id> row_adapters = {}) {
    detail::expect_equal("multi_head_attention::step", "x_t.rows() must equal the cache's batch",
                         cache.keys().batch(), x_t.rows());
    check_io("multi_head_attention::step", x_t, y_t, row_adapters, cache.keys().batch());
    extend(x_t, y_t, cache, row_adapters);
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

  void check_io(const char* where, const const_matrix_ref<T>& x, const matrix_ref<T>& y,
                span<const adapter_id> row_adapters, std::size_t sequences) const {
    detail::check_mha_io(where, x, y, static_cast<Eigen::Index>(cfg_.model_dim), sequences, row_adapters.size(),
                         merged_);
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
  template <class Fn>
  void for_column_blocks(Eigen::Index cols, Fn&& fn) const {
    const Eigen::Index per = projection_cols_per_task;
    const std::size_t tasks = detail::ceil_div(std::size_t(cols), std::size_t(per));
    detail::parallel_for(tasks, detail::resolve_threads(cfg_.threads, tasks), [&](std::size_t t, unsigned) {
      const Eigen::Index c0 = Eigen::Index(t) * per;
      fn(c0, std::min(per, cols - c0));
    });
  }

  /// out = in·Wᵀ + b on config.threads threads, plus the adapters unless merged.
  template <class Out>
  void project(projection p, const const_matrix_ref<T>& in, Out&& out, span<const adapter_id> row_adapters) {
    const std::size_t i = index(p);
    const row_matrix<T>& w = weights_[i];
    for_column_blocks(w.rows(), [&](Eigen::Index c0, Eigen::Index n) {
      out.middleCols(c0, n).noalias() = in * w.middleRows(c0, n).transpose();
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

  /// Attention of the rotated queries over k, v, then the output projection into y.
  template <class K, class V>
  void attend(const tensor_view<T>& q, const K& k, const V& v, Eigen::Index rows, matrix_ref<T> y,
              span<const adapter_id> row_adapters, std::size_t sequences, tensor_view<float> lse = {}) {
    attention_options opt = attention_opts();
    opt.lse = lse;
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
    const row_matrix<T>& w = weights_[i];
    for_column_blocks(w.cols(), [&](Eigen::Index c0, Eigen::Index n) {
      if (accumulate)
        din.middleCols(c0, n).noalias() += dout * w.middleCols(c0, n);
      else
        din.middleCols(c0, n).noalias() = dout * w.middleCols(c0, n);
    });
    if (grads.weights[i].size() != 0)
      for_column_blocks(w.rows(), [&](Eigen::Index r0, Eigen::Index n) {
        grads.weights[i].middleRows(r0, n).noalias() += dout.middleCols(r0, n).transpose() * in;
      });
    if (grads.biases[i].size() != 0) grads.biases[i] += dout.colwise().sum();
    for (const auto& m : adapters_.active())
      if (lora_delta<T>* d = adapters_.delta(m.id, p)) {
        auto& f = grads.adapters[m.id][i];
        d->backward(in, dout, f.a, f.b, din, static_cast<T>(m.weight));
      }
  }

  template <class Cache>
  void extend(const const_matrix_ref<T>& x, matrix_ref<T> y, Cache& cache,
              span<const adapter_id> row_adapters) {
    kept_ = false;
    const std::size_t B = cache.keys().batch();
    auto qkv = project_qkv(x, row_adapters, cache.size(), B);
    cache.append(as_bshd(k_of(qkv), cfg_.num_kv_heads, cfg_.head_dim, B),
                 as_bshd(v_of(qkv), cfg_.num_kv_heads, cfg_.head_dim, B));
    attend(as_bshd(q_of(qkv), cfg_.num_heads, cfg_.head_dim, B), cache.keys(), cache.values(), x.rows(), y,
           row_adapters, B);
  }

  mha_config cfg_;
  std::array<row_matrix<T>, projection_count> weights_;
  std::array<row_vector<T>, projection_count> biases_;
  lora_adapter_set<T> adapters_;
  rotary_embedding<T> rope_;
  matrix_scratch<T> qkv_, attn_, dattn_, dqkv_;
  std::vector<float> lse_;  // the kept forward's LSE, [B, Hq, T, 1]
  bool kept_ = false, kept_per_row_ = false;  // forward()'s activations are in qkv_, attn_, lse_
  Eigen::Index kept_rows_ = 0;
  std::size_t kept_sequences_ = 1;
  bool merged_ = false;
  std::vector<typename lora_adapter_set<T>::weighted> merged_mix_;
};

}  // namespace headwise
