// tests/mha_test.cpp — multi_head_attention, RoPE and the Eigen adapters against
// a plain composition in double: Eigen projections, a hand-written rotation,
// reference::attention and the output projection, with LoRA deltas folded into W.
#include <headwise/kv_cache.hpp>
#include <headwise/mha.hpp>
#include <headwise/optim.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <complex>
#include <cstdio>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "eigen_util.hpp"
#include "test_util.hpp"

namespace {

using namespace headwise;
using dmat = row_matrix<double>;
using drow = row_vector<double>;
using adapter_id = lora_adapter_set<float>::adapter_id;
constexpr auto all_projections = std::array{projection::q, projection::k, projection::v, projection::o};

template <class M>
void fill(M& m, std::uint32_t seed, double amp) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> dist(-amp, amp);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = static_cast<typename M::Scalar>(dist(gen));
}

template <class T>
row_matrix<T> random_matrix(Eigen::Index rows, Eigen::Index cols, std::uint32_t seed, double amp = 1.0) {
  row_matrix<T> m(rows, cols);
  fill(m, seed, amp);
  return m;
}

/// Random weights at the usual 1/√in scale, and biases when the config has them.
template <class T, class W>
void randomize(multi_head_attention<T, W>& layer, std::uint32_t seed) {
  for (projection p : all_projections) {
    auto w = layer.weight(p);
    fill(w, seed++, 1.0 / std::sqrt(double(w.cols())));
    auto b = layer.bias(p);
    fill(b, seed++, 0.5);
  }
}

/// Attaches a rank-r delta on each listed projection of adapter `id`.
template <class T, class W>
void attach_random(multi_head_attention<T, W>& layer, adapter_id id, std::initializer_list<projection> ps,
                   Eigen::Index r, std::uint32_t seed) {
  for (projection p : ps) {
    const projection_shape s = layer.adapters().shape(p);
    layer.adapters().attach(id, p,
                            lora_delta<T>(random_matrix<T>(r, s.in, seed, 0.5),
                                          random_matrix<T>(s.out, r, seed + 1, 0.5), 2.0 * double(r)));
    seed += 2;
  }
}

/// The hand-written rotation: pair (a, c) of head h is the complex number a + ic,
/// multiplied by e^{iθ} with θ = (p / scaling)·base^(−2i/D).
void rotate_by_hand(dmat& m, std::size_t heads, std::size_t D, const rope_config& cfg, std::size_t first) {
  if (cfg.style == rope_style::none) return;
  for (Eigen::Index t = 0; t < m.rows(); ++t)
    for (std::size_t h = 0; h < heads; ++h)
      for (std::size_t i = 0; i < D / 2; ++i) {
        const auto a = Eigen::Index(h * D + (cfg.style == rope_style::neox ? i : 2 * i));
        const auto c = Eigen::Index(h * D + (cfg.style == rope_style::neox ? i + D / 2 : 2 * i + 1));
        const double theta =
            double(first + std::size_t(t)) / cfg.scaling * std::pow(cfg.base, -2.0 * double(i) / double(D));
        const std::complex<double> z = std::complex<double>(m(t, a), m(t, c)) * std::polar(1.0, theta);
        m(t, a) = z.real();
        m(t, c) = z.imag();
      }
}

/// Which LoRA delta (as a dense [out × in] matrix, or nullptr) row t of projection p gets.
using delta_fn = std::function<const dmat*(projection, Eigen::Index)>;
const delta_fn no_delta = [](projection, Eigen::Index) -> const dmat* { return nullptr; };

/// An adapter's deltas as dense matrices (empty where it has none), and their
/// elementwise bound |s|·|B|·|A| for layer_bound.
struct dense_adapter {
  std::array<dmat, 4> delta, abs;
  delta_fn all_rows() const {
    return [this](projection p, Eigen::Index) -> const dmat* {
      return delta[std::size_t(p)].size() ? &delta[std::size_t(p)] : nullptr;
    };
  }
};

template <class T>
dense_adapter densify(const lora_adapter_set<T>& set, adapter_id id) {
  dense_adapter d;
  for (projection p : all_projections)
    if (const lora_delta<T>* l = set.delta(id, p)) {
      d.delta[std::size_t(p)] = l->scale() * l->b().template cast<double>() * l->a().template cast<double>();
      d.abs[std::size_t(p)] = std::fabs(l->scale()) * l->b().template cast<double>().cwiseAbs() *
                              l->a().template cast<double>().cwiseAbs();
    }
  return d;
}

struct composed {
  dmat y;
  double qmax, kmax, vmax;
  dmat a;  // attention output, the o projection's input
};

/// A rounding of double values to a narrower type, or none (an empty function).
using rounding = std::function<double(double)>;

/// Attention of [T × H·D] token matrices (one sequence, the layer's causal rule) by
/// hand, in double except that each row of P is rounded for P·V: the naive pipeline
/// of FlashAttention's accuracy rule.
dmat naive_attention(const dmat& q, const dmat& k, const dmat& v, const mha_config& cfg,
                     const rounding& round) {
  const auto D = Eigen::Index(cfg.head_dim), group = Eigen::Index(cfg.num_heads / cfg.num_kv_heads);
  const double scale = 1.0 / std::sqrt(double(D));
  dmat a = dmat::Zero(q.rows(), q.cols());
  for (Eigen::Index h = 0; h < Eigen::Index(cfg.num_heads); ++h)
    for (Eigen::Index i = 0; i < q.rows(); ++i) {
      const Eigen::Index visible = cfg.causal ? i + 1 : q.rows(), kv = h / group * D;
      const drow s = scale * q.block(i, h * D, 1, D) * k.block(0, kv, visible, D).transpose();
      const drow e = (s.array() - s.maxCoeff()).exp().matrix(), p = (e / e.sum()).unaryExpr(round);
      a.block(i, h * D, 1, D) = p * v.block(0, kv, visible, D);
    }
  return a;
}

/// The composition in double the layer must match; with `round`, the naive 16-bit
/// pipeline instead: the rotated q, k, v, P and y rounded where the layer rounds them.
template <class T, class S>
composed compose(const multi_head_attention<T, S>& layer, const dmat& x, const delta_fn& delta,
                 const rounding& round = {}) {
  const mha_config& cfg = layer.config();
  auto project = [&](projection p, const dmat& in) {
    const dmat W = layer.weight(p).template cast<double>();
    dmat out = in * W.transpose();
    if (cfg.bias) out.rowwise() += layer.bias(p).template cast<double>();
    for (Eigen::Index t = 0; t < in.rows(); ++t)
      if (const dmat* d = delta(p, t)) out.row(t) += in.row(t) * d->transpose();
    return out;
  };
  dmat q = project(projection::q, x), k = project(projection::k, x), v = project(projection::v, x);
  rotate_by_hand(q, cfg.num_heads, cfg.head_dim, cfg.rope, 0);
  rotate_by_hand(k, cfg.num_kv_heads, cfg.head_dim, cfg.rope, 0);
  const std::size_t T_ = std::size_t(x.rows());
  composed c{dmat(), q.cwiseAbs().maxCoeff(), k.cwiseAbs().maxCoeff(), v.cwiseAbs().maxCoeff(),
             dmat(x.rows(), q.cols())};
  if (round) {
    c.a = naive_attention(q.unaryExpr(round), k.unaryExpr(round), v.unaryExpr(round), cfg, round);
    c.y = project(projection::o, c.a).unaryExpr(round);
    return c;
  }
  attention_options opt;
  opt.causal = cfg.causal ? causal_mode::bottom_right : causal_mode::none;
  reference::attention(bshd(q.data(), 1, T_, cfg.num_heads, cfg.head_dim),
                       bshd(k.data(), 1, T_, cfg.num_kv_heads, cfg.head_dim),
                       bshd(v.data(), 1, T_, cfg.num_kv_heads, cfg.head_dim),
                       bshd(c.a.data(), 1, T_, cfg.num_heads, cfg.head_dim), opt);
  c.y = project(projection::o, c.a);
  return c;
}

/// Worst-case forward error of the layer in T against compose(), from error
/// analysis: projections γ(in + r + 4)·(|x|·|W_eff|ᵀ + |b|) with |W_eff| = |W| plus
/// every |ΔW| that may apply; a rotation doubles an error and adds 8u·max; logits move
/// by scale·D·(δq·kmax + qmax·δk + δq·δk), the attention output by 2·δs·vmax + δv plus
/// the kernel's own attention_tolerance; then the o projection.
/// storage_u: unit roundoff of a narrower K/V cache (half: 2^-11), 0 for none.
/// Activations in 16 bits (act_u = their unit roundoff; x itself representable):
/// rotated q, k and v are rounded once, |δ| <= act_u·(max + its error so far); P may
/// be rounded for P·V (attention_tolerance's weight_u = act_u: what avx512_bf16 does
/// for bfloat16, an upper bound on paths that keep P in float); y is rounded once,
/// act_u·(max|y| + the bound so far).
template <class T, class W>
double layer_bound(const multi_head_attention<T, W>& layer, const dmat& x, const composed& c,
                   const std::array<dmat, 4>& delta_abs, Eigen::Index rank, double storage_u = 0,
                   double act_u = 0) {
  const mha_config& cfg = layer.config();
  const double u = hwtest::unit_roundoff<T>();
  auto w_abs = [&](projection p) {
    dmat w = layer.weight(p).template cast<double>().cwiseAbs();
    if (delta_abs[std::size_t(p)].size()) w += delta_abs[std::size_t(p)];
    return w;
  };
  auto proj_err = [&](projection p, const dmat& in) {
    dmat terms = in.cwiseAbs() * w_abs(p).transpose();
    if (cfg.bias) terms.rowwise() += layer.bias(p).template cast<double>().cwiseAbs();
    return double(in.cols() + rank + 4) * u * terms.maxCoeff();
  };
  const double D = double(cfg.head_dim), scale = 1.0 / std::sqrt(D);
  const auto rounded = [&](double e, double max) { return e + act_u * (max + e); };
  const double eq = rounded(2 * proj_err(projection::q, x) + 8 * u * c.qmax, c.qmax);
  const double ek = rounded(2 * proj_err(projection::k, x) + (8 * u + storage_u) * c.kmax, c.kmax);
  const double ev = rounded(proj_err(projection::v, x) + storage_u * c.vmax, c.vmax);
  const double ds = scale * D * (eq * c.kmax + c.qmax * ek + eq * ek);
  hwtest::error_model m;
  m.Dk = cfg.head_dim, m.Nk = std::size_t(x.rows()), m.scale = scale;
  m.qmax = c.qmax, m.kmax = c.kmax, m.vmax = c.vmax, m.weight_u = act_u;
  const double ea = 2 * ds * c.vmax + ev + hwtest::attention_tolerance<T>(m);
  return rounded(proj_err(projection::o, c.a) + ea * w_abs(projection::o).rowwise().sum().maxCoeff(),
                 c.y.cwiseAbs().maxCoeff());
}

template <class T>
double max_diff(const row_matrix<T>& got, const dmat& want) {
  const dmat d = (got.template cast<double>() - want).cwiseAbs();
  return d.hasNaN() ? std::nan("") : d.maxCoeff();
}

struct mha_case {
  const char* name;
  std::size_t model, heads, kv_heads, dim;
  rope_config rope;
  bool causal, bias;
  Eigen::Index tokens;
};

mha_config config_of(const mha_case& c) {
  mha_config cfg;
  cfg.model_dim = c.model;
  cfg.num_heads = c.heads;
  cfg.num_kv_heads = c.kv_heads;
  cfg.head_dim = c.dim;
  cfg.rope = c.rope;
  cfg.causal = c.causal;
  cfg.bias = c.bias;
  cfg.threads = 2;
  return cfg;
}

class mha : public ::testing::TestWithParam<mha_case> {};

// MHA, GQA and MQA; both RoPE pairings, scaled and unscaled; head dims 6 / 10 / 9
// straddle the AVX2 float width; 17 and 70 tokens straddle the kernels' tiles.
INSTANTIATE_TEST_SUITE_P(
    configs, mha,
    ::testing::Values(
        mha_case{"mha_neox_bias", 32, 4, 4, 8, {rope_style::neox, 10000, 1}, true, true, 13},
        mha_case{"gqa_interleaved", 48, 6, 2, 16, {rope_style::interleaved, 500, 2}, true, false, 70},
        mha_case{"mqa_norope_noncausal", 24, 4, 1, 6, {}, false, true, 9},
        mha_case{"gqa_neox_d10", 20, 4, 2, 10, {rope_style::neox, 10000, 4}, true, true, 17},
        mha_case{"mqa_odd_dim", 18, 2, 1, 9, {}, true, false, 5}),
    [](const ::testing::TestParamInfo<mha_case>& c) { return std::string(c.param.name); });

template <class T>
void check_forward(const mha_case& c) {
  multi_head_attention<T> layer(config_of(c));
  randomize(layer, 100);
  const row_matrix<T> x = random_matrix<T>(c.tokens, Eigen::Index(c.model), 7);
  row_matrix<T> y(c.tokens, Eigen::Index(c.model));
  layer.forward(x, y);
  const dmat xd = x.template cast<double>();
  const composed want = compose(layer, xd, no_delta);
  const double err = max_diff(y, want.y), tol = layer_bound(layer, xd, want, {}, 0);
  EXPECT_TRUE(err <= tol) << "max |layer − composition| = " << err << ", bound " << tol;
  EXPECT_TRUE(tol < 1e-2 * want.y.cwiseAbs().maxCoeff()) << "the bound must stay meaningful: " << tol;
}

TEST_P(mha, forward_matches_composition_float) { check_forward<float>(GetParam()); }
TEST_P(mha, forward_matches_composition_double) { check_forward<double>(GetParam()); }

TEST_P(mha, lora_unmerged_merged_and_off) {
  const mha_case& c = GetParam();
  multi_head_attention<float> layer(config_of(c));
  randomize(layer, 200);
  const adapter_id id = layer.adapters().add("qv");
  attach_random(layer, id, {projection::q, projection::v}, 4, 300);
  const row_matrix<float> x = random_matrix<float>(c.tokens, Eigen::Index(c.model), 8);
  row_matrix<float> y_off(x.rows(), x.cols()), y_unmerged = y_off, y_merged = y_off;
  layer.forward(x, y_off);
  layer.adapters().activate("qv");
  layer.forward(x, y_unmerged);
  const std::array<row_matrix<float>, 4> w0 = {layer.weight(projection::q), layer.weight(projection::k),
                                               layer.weight(projection::v), layer.weight(projection::o)};
  layer.merge_adapters();
  layer.forward(x, y_merged);
  layer.unmerge_adapters();

  const dense_adapter qv = densify(layer.adapters(), id);
  const dmat xd = x.cast<double>();
  const composed want = compose(layer, xd, qv.all_rows());
  // merged weights round W + ΔW once more: ≤ u·|W_eff| per weight, inside the rank slack
  const double tol = layer_bound(layer, xd, want, qv.abs, 4);
  const double e_unmerged = max_diff(y_unmerged, want.y), e_merged = max_diff(y_merged, want.y);
  EXPECT_TRUE(e_unmerged <= tol) << e_unmerged << " > " << tol;
  EXPECT_TRUE(e_merged <= tol) << e_merged << " > " << tol;
  const double agree = (y_merged - y_unmerged).cwiseAbs().maxCoeff();
  EXPECT_TRUE(agree <= 2 * tol) << "merged vs unmerged: " << agree;
  const double off = (y_off - y_unmerged).cwiseAbs().maxCoeff();
  EXPECT_TRUE(off > 10 * tol) << "the adapter must change the output: " << off << " vs bound " << tol;
  for (projection p : all_projections) {
    const double rt = (layer.weight(p) - w0[std::size_t(p)]).cwiseAbs().maxCoeff();
    const lora_delta<float>* d = layer.adapters().delta(id, p);
    const double rt_tol = d ? d->merge_round_trip_bound(w0[std::size_t(p)]) : 0.0;
    EXPECT_TRUE(rt <= rt_tol) << projection_name(p) << ": round trip " << rt << " > " << rt_tol;
  }
}

TEST_P(mha, per_row_adapters_match_composition) {
  const mha_case& c = GetParam();
  multi_head_attention<double> layer(config_of(c));
  randomize(layer, 400);
  auto& set = layer.adapters();
  const auto a = set.add("a"), b = set.add("b");
  attach_random(layer, a, {projection::q, projection::k, projection::v, projection::o}, 3, 500);
  attach_random(layer, b, {projection::v, projection::o}, 5, 600);
  std::vector<adapter_id> ids(std::size_t(c.tokens));
  for (std::size_t t = 0; t < ids.size(); ++t)
    ids[t] = std::array{a, b, lora_adapter_set<double>::none}[t % 3];
  const dmat x = random_matrix<double>(c.tokens, Eigen::Index(c.model), 9);
  dmat y(x.rows(), x.cols());
  layer.forward(x, y, ids);

  const std::array<dense_adapter, 2> dense = {densify(set, a), densify(set, b)};
  std::array<dmat, 4> abs_sum;  // either adapter may apply: bound with both
  for (std::size_t p = 0; p < 4; ++p)
    for (const dense_adapter& d : dense)
      if (d.abs[p].size()) abs_sum[p] = abs_sum[p].size() ? dmat(abs_sum[p] + d.abs[p]) : d.abs[p];
  const delta_fn per_row = [&](projection p, Eigen::Index t) -> const dmat* {
    const adapter_id id = ids[std::size_t(t)];
    if (id == lora_adapter_set<double>::none) return nullptr;
    return dense[id].all_rows()(p, t);
  };
  const composed want = compose(layer, x, per_row);
  const double err = max_diff(y, want.y), tol = layer_bound(layer, x, want, abs_sum, 5);
  EXPECT_TRUE(err <= tol) << err << " > " << tol;
}

TEST_P(mha, prefill_then_decode_steps_equal_full_forward) {
  const mha_case& c = GetParam();
  if (!c.causal) GTEST_SKIP() << "decode equals a full forward only under causal attention";
  multi_head_attention<float> layer(config_of(c));
  randomize(layer, 700);
  const adapter_id id = layer.adapters().add("qv");
  attach_random(layer, id, {projection::q, projection::v}, 2, 800);
  layer.adapters().activate("qv");
  const row_matrix<float> x = random_matrix<float>(c.tokens, Eigen::Index(c.model), 10);
  row_matrix<float> full(x.rows(), x.cols()), stepped(x.rows(), x.cols());
  layer.forward(x, full);

  kv_cache<float> cache(1, c.kv_heads, std::size_t(c.tokens), c.dim);
  const Eigen::Index prompt = c.tokens / 2;
  layer.prefill(x.topRows(prompt), stepped.topRows(prompt), cache);
  for (Eigen::Index t = prompt; t < c.tokens; ++t) layer.step(x.row(t), stepped.row(t), cache);
  EXPECT_EQ(cache.size(), std::size_t(c.tokens));

  const dense_adapter qv = densify(layer.adapters(), id);
  const dmat xd = x.cast<double>();
  const composed want = compose(layer, xd, qv.all_rows());
  const double tol = layer_bound(layer, xd, want, qv.abs, 2);
  const double err = (full - stepped).cwiseAbs().maxCoeff();
  EXPECT_TRUE(err <= 2 * tol) << "prefill + steps vs full forward: " << err << " > " << 2 * tol;
  EXPECT_TRUE(max_diff(stepped, want.y) <= tol);
  EXPECT_THROW(layer.step(x.row(0), stepped.row(0), cache), error) << "the cache is full";

  // the same with K cached in key blocks (the steps' decode reads them directly)
  kv_cache<float, kv_layout::key_blocks> blocks(1, c.kv_heads, std::size_t(c.tokens), c.dim);
  row_matrix<float> stepped_blocks(x.rows(), x.cols());
  layer.prefill(x.topRows(prompt), stepped_blocks.topRows(prompt), blocks);
  for (Eigen::Index t = prompt; t < c.tokens; ++t) layer.step(x.row(t), stepped_blocks.row(t), blocks);
  EXPECT_TRUE(max_diff(stepped_blocks, want.y) <= tol) << "key-block cache";
}

/// Decode over a kv_cache<S>: `prefill` tokens at once, then one step per token,
/// against the fp64 layer within the bound with S's storage error (storage_u).
template <class S>
void check_cached_decode(const mha_case& c, Eigen::Index prefill, double storage_u) {
  multi_head_attention<float> layer(config_of(c));
  randomize(layer, 900);
  const row_matrix<float> x = random_matrix<float>(c.tokens, Eigen::Index(c.model), 11);
  row_matrix<float> stepped(x.rows(), x.cols());
  kv_cache<S> cache(1, c.kv_heads, std::size_t(c.tokens), c.dim);
  layer.prefill(x.topRows(prefill), stepped.topRows(prefill), cache);
  for (Eigen::Index t = prefill; t < c.tokens; ++t) layer.step(x.row(t), stepped.row(t), cache);
  const dmat xd = x.cast<double>();
  const composed want = compose(layer, xd, no_delta);
  const double err = max_diff(stepped, want.y), tol = layer_bound(layer, xd, want, {}, 0, storage_u);
  EXPECT_TRUE(err <= tol) << err << " > " << tol;
}

TEST_P(mha, decode_with_half_cache_stays_within_the_half_rounding_bound) {
  if (!GetParam().causal) GTEST_SKIP() << "decode equals a full forward only under causal attention";
  check_cached_decode<half>(GetParam(), 1, std::ldexp(1.0, -11));
}

TEST_P(mha, decode_with_int8_cache_stays_within_the_quantization_bound) {
  if (!GetParam().causal) GTEST_SKIP() << "decode equals a full forward only under causal attention";
  check_cached_decode<std::int8_t>(GetParam(), 2, hwtest::unit_roundoff<std::int8_t>());
}

// ---- several sequences in one call

/// Rows [s·T, (s+1)·T) of m, as a matrix.
row_matrix<float> sequence(const row_matrix<float>& m, Eigen::Index s, Eigen::Index T) {
  return m.middleRows(s * T, T);
}

TEST_P(mha, batched_sequences_match_each_sequence_alone) {
  const mha_case& c = GetParam();
  constexpr Eigen::Index B = 3;
  const Eigen::Index T = c.tokens;
  multi_head_attention<float> layer(config_of(c));
  randomize(layer, 1000);
  const adapter_id id = layer.adapters().add("ko");
  attach_random(layer, id, {projection::k, projection::o}, 2, 1100);
  const row_matrix<float> x = random_matrix<float>(B * T, Eigen::Index(c.model), 12);
  std::vector<adapter_id> ids(std::size_t(B * T), lora_adapter_set<float>::none);
  std::fill(ids.begin() + T, ids.begin() + 2 * T, id);  // sequence 1 alone uses the adapter
  row_matrix<float> y(x.rows(), x.cols());
  layer.forward(x, y, ids, B);

  const dense_adapter ko = densify(layer.adapters(), id);
  for (Eigen::Index s = 0; s < B; ++s) {
    const dmat xs = sequence(x, s, T).cast<double>();
    const composed want = compose(layer, xs, s == 1 ? ko.all_rows() : no_delta);
    const double tol = layer_bound(layer, xs, want, s == 1 ? ko.abs : std::array<dmat, 4>{}, s == 1 ? 2 : 0);
    const double err = max_diff(sequence(y, s, T), want.y);
    EXPECT_TRUE(err <= tol) << "sequence " << s << ": " << err << " > " << tol;
  }
}

TEST_P(mha, batched_prefill_and_steps_equal_batched_forward) {
  const mha_case& c = GetParam();
  if (!c.causal) GTEST_SKIP() << "decode equals a full forward only under causal attention";
  constexpr Eigen::Index B = 2;
  const Eigen::Index T = c.tokens, prompt = c.tokens / 2, model = Eigen::Index(c.model);
  multi_head_attention<float> layer(config_of(c));
  randomize(layer, 1200);
  const row_matrix<float> x = random_matrix<float>(B * T, model, 13);
  row_matrix<float> full(x.rows(), x.cols()), stepped(x.rows(), x.cols());
  layer.forward(x, full, {}, B);

  kv_cache<float> cache(std::size_t(B), c.kv_heads, std::size_t(T), c.dim);
  row_matrix<float> one(1, model);
  EXPECT_THROW(layer.step(x.topRows(1), one, cache), error) << "one row for a cache of two sequences";
  EXPECT_EQ(cache.size(), 0u);

  // prefill: the first `prompt` tokens of each sequence, sequence after sequence
  row_matrix<float> xp(B * prompt, model), yp(B * prompt, model);
  for (Eigen::Index b = 0; b < B; ++b) xp.middleRows(b * prompt, prompt) = x.middleRows(b * T, prompt);
  layer.prefill(xp, yp, cache);
  for (Eigen::Index b = 0; b < B; ++b) stepped.middleRows(b * T, prompt) = yp.middleRows(b * prompt, prompt);
  // steps: token t of every sequence at once
  for (Eigen::Index t = prompt; t < T; ++t) {
    row_matrix<float> xt(B, model), yt(B, model);
    for (Eigen::Index b = 0; b < B; ++b) xt.row(b) = x.row(b * T + t);
    layer.step(xt, yt, cache);
    for (Eigen::Index b = 0; b < B; ++b) stepped.row(b * T + t) = yt.row(b);
  }
  EXPECT_EQ(cache.size(), std::size_t(T));

  for (Eigen::Index s = 0; s < B; ++s) {
    const dmat xs = sequence(x, s, T).cast<double>();
    const composed want = compose(layer, xs, no_delta);
    const double tol = layer_bound(layer, xs, want, {}, 0);
    const double err = (sequence(full, s, T) - sequence(stepped, s, T)).cwiseAbs().maxCoeff();
    EXPECT_TRUE(err <= 2 * tol) << "sequence " << s << ", prefill + steps vs forward: " << err;
    EXPECT_TRUE(max_diff(sequence(stepped, s, T), want.y) <= tol) << "sequence " << s;
  }
}

// ---- projections cut into column tasks: the same bits for every thread count

/// Wq has 8·72 = 576 output columns (tasks of 512 and 64), Wo 1100 (512, 512, 76),
/// Wk and Wv 144 (one task): more tasks than threads, fewer, and a ragged last one.
/// 16-bit weights: 6 rows widen 128 weight rows per GEMM, 40 rows a task's whole block.
template <class W>
void check_thread_counts(Eigen::Index rows) {
  mha_config cfg;
  cfg.model_dim = 1100;
  cfg.num_heads = 8;
  cfg.num_kv_heads = 2;
  cfg.head_dim = 72;
  cfg.rope = {rope_style::neox, 10000, 1};
  cfg.bias = true;
  const row_matrix<float> x = random_matrix<float>(rows, 1100, 31);
  row_matrix<float> y1;
  for (unsigned threads : {1u, 2u, 3u}) {
    cfg.threads = threads;
    multi_head_attention<float, W> layer(cfg);
    randomize(layer, 100);
    row_matrix<float> y(rows, 1100);
    layer.forward(x, y);
    if (threads == 1) {
      y1 = y;
      const dmat xd = x.cast<double>();
      const composed want = compose(layer, xd, no_delta);
      const double err = max_diff(y, want.y), tol = layer_bound(layer, xd, want, {}, 0);
      EXPECT_TRUE(err <= tol) << "max |layer − composition| = " << err << ", bound " << tol;
    } else {
      EXPECT_TRUE(y == y1) << threads << " threads: max |y − y(1 thread)| = " << (y - y1).cwiseAbs().maxCoeff();
    }
  }
}

TEST(mha_threads, projection_tasks_give_the_same_bits_for_every_thread_count) {
  check_thread_counts<float>(6);
}
TEST(mha_threads, bfloat16_weights_give_the_same_bits_for_every_thread_count) {
  check_thread_counts<Eigen::bfloat16>(6);
  check_thread_counts<Eigen::bfloat16>(40);
}

// ---- RoPE against the hand-written rotation

TEST(rope, matches_hand_written_rotation_and_linear_scaling) {
  for (rope_style style : {rope_style::neox, rope_style::interleaved}) {
    const std::size_t heads = 3, D = 12, first = 1000;
    const rope_config cfg{style, 500.0, 2.5};
    dmat m = random_matrix<double>(7, Eigen::Index(heads * D), 11), want = m;
    rotary_embedding<double> rope(cfg, D);
    rope.apply(as_bshd(m, heads, D), first);
    rotate_by_hand(want, heads, D, cfg, first);
    EXPECT_TRUE((m - want).cwiseAbs().maxCoeff() <= 1e-12) << int(style);

    // linear scaling s: position p under s rotates like position p / s unscaled
    dmat scaled = random_matrix<double>(1, Eigen::Index(heads * D), 12), plain = scaled;
    rotary_embedding<double>(rope_config{style, 500.0, 4.0}, D).apply(as_bshd(scaled, heads, D), 40);
    rotary_embedding<double>(rope_config{style, 500.0, 1.0}, D).apply(as_bshd(plain, heads, D), 10);
    EXPECT_TRUE((scaled - plain).cwiseAbs().maxCoeff() <= 1e-12) << int(style);
  }
  EXPECT_THROW(rotary_embedding<float>(rope_config{rope_style::neox, 10000, 1}, 7), error);
  EXPECT_THROW(rotary_embedding<float>(rope_config{rope_style::neox, 0.5, 1}, 8), error);
  EXPECT_THROW(rotary_embedding<float>(rope_config{rope_style::neox, 10000, 0}, 8), error);
}

// ---- the Eigen adapters: views, never copies

TEST(eigen_adapters, bshd_views_alias_the_matrix) {
  row_matrix<float> qkv(5, 3 * 8 + 2 * 8);
  auto k = qkv.middleCols(24, 8);
  const tensor_view<float> kv = as_bshd(k, 2, 4);
  const row_matrix<float>& frozen = qkv;
  static_assert(std::is_same_v<decltype(as_bshd(frozen, 5, 8)), tensor_view<const float>>,
                "a const matrix gives a view of const elements");
  EXPECT_EQ(kv.data(), k.data());
  EXPECT_EQ(kv.seq_stride(), qkv.cols());
  EXPECT_EQ(&kv(0, 1, 3, 2), &qkv(3, 24 + 4 + 2));
  const auto back = as_matrix(kv);
  EXPECT_EQ(back.data(), k.data());
  EXPECT_EQ(back.outerStride(), qkv.cols());
  EXPECT_EQ(&back(3, 7), &qkv(3, 31));
  const const_matrix_ref<float> cref = qkv;
  EXPECT_EQ(cref.data(), qkv.data()) << "a row-major argument binds without a copy";
  EXPECT_THROW(as_bshd(k, 3, 4), error);
  EXPECT_THROW(as_matrix(bhsd(qkv.data(), 1, 2, 5, 4)), error);
}

TEST(eigen_adapters, batched_bshd_views_split_rows_into_sequences) {
  row_matrix<float> m(6, 2 * 4);
  const tensor_view<float> v = as_bshd(m, 2, 4, 3);
  EXPECT_EQ(v.batch(), 3u);
  EXPECT_EQ(v.seq(), 2u);
  EXPECT_EQ(&v(1, 0, 0, 0), &m(2, 0));
  EXPECT_EQ(&v(2, 1, 1, 3), &m(5, 7));
  EXPECT_THROW(as_bshd(m, 2, 4, 4), error);  // 6 rows are not 4 equal sequences
  EXPECT_THROW(as_bshd(m, 2, 4, 0), error);
}

// ---- 16-bit activations (Eigen::bfloat16, Eigen::half); float or bfloat16 weights

/// A layer with 16-bit weights W or float ones, random, optionally a rank-4 q/v adapter active.
template <class W>
struct layer_16 {
  multi_head_attention<float, W> layer;
  dense_adapter qv;
  Eigen::Index rank = 0;
  layer_16(const mha_case& c, bool lora) : layer(config_of(c)) {
    randomize(layer, 100);
    if (!lora) return;
    const adapter_id id = layer.adapters().add("qv");
    attach_random(layer, id, {projection::q, projection::v}, 4, 300);
    layer.adapters().activate("qv");
    qv = densify(layer.adapters(), id);
    rank = 4;
  }
  delta_fn deltas() const { return rank ? qv.all_rows() : no_delta; }
};

/// forward() on activations A against the composition (reading W's values): within
/// layer_bound with A's roundings (worst case: at 16 bits it only catches gross
/// errors), and by FlashAttention's rule, within twice the error of the naive
/// pipeline in A (compose with rounding) against the composition.
template <class A, class W>
void check_forward_16(const mha_case& c, bool lora) {
  layer_16<W> l(c, lora);
  const row_matrix<float> x = hwtest::representable<A>(random_matrix<float>(c.tokens, Eigen::Index(c.model), 7));
  row_matrix<A> y(c.tokens, Eigen::Index(c.model));
  l.layer.forward(x.cast<A>(), y);
  const dmat xd = x.cast<double>();
  const composed want = compose(l.layer, xd, l.deltas());
  const double err = max_diff(row_matrix<float>(y.template cast<float>()), want.y),
               tol = layer_bound(l.layer, xd, want, l.qv.abs, l.rank, 0, hwtest::unit_roundoff<storage_16<A>>());
  EXPECT_TRUE(err <= tol) << "max |layer − composition| = " << err << ", bound " << tol;
  const rounding to_a = [](double v) { return double(A(float(v))); };
  const double naive = (compose(l.layer, xd, l.deltas(), to_a).y - want.y).cwiseAbs().maxCoeff();
  EXPECT_TRUE(err <= 2 * naive) << "max |layer − composition| = " << err << ", the naive pipeline's "
                                << naive;
  std::printf("  %s %s: error %.3g = %.2f × naive %.3g (bound %.3g)\n", c.name,
              std::is_same_v<A, Eigen::bfloat16> ? "bf16" : "f16", err, err / naive, naive, tol);
}

TEST_P(mha, forward_bfloat16_activations_float_weights) {
  check_forward_16<Eigen::bfloat16, float>(GetParam(), false);
}
TEST_P(mha, forward_half_activations_float_weights) {
  check_forward_16<Eigen::half, float>(GetParam(), false);
}
TEST_P(mha, forward_bfloat16_activations_and_weights_with_lora) {
  check_forward_16<Eigen::bfloat16, Eigen::bfloat16>(GetParam(), true);
}
TEST_P(mha, forward_float_activations_bfloat16_weights) {
  const mha_case& c = GetParam();
  layer_16<Eigen::bfloat16> l(c, true);
  const row_matrix<float> x = random_matrix<float>(c.tokens, Eigen::Index(c.model), 7);
  row_matrix<float> y(x.rows(), x.cols());
  l.layer.forward(x, y);
  const dmat xd = x.cast<double>();
  const composed want = compose(l.layer, xd, l.deltas());
  EXPECT_TRUE(max_diff(y, want.y) <= layer_bound(l.layer, xd, want, l.qv.abs, l.rank));
}

// Per-row adapters on bfloat16 activations: the float layer's per-row path on the
// widened x, by FlashAttention's rule against the composition with each row's delta.
TEST_P(mha, bfloat16_per_row_adapters_within_twice_the_naive_error) {
  const mha_case& c = GetParam();
  multi_head_attention<float> layer(config_of(c));
  randomize(layer, 400);
  const auto a = layer.adapters().add("a"), b = layer.adapters().add("b");
  attach_random(layer, a, {projection::q, projection::k, projection::v, projection::o}, 3, 500);
  attach_random(layer, b, {projection::v, projection::o}, 5, 600);
  std::vector<adapter_id> ids(std::size_t(c.tokens));
  for (std::size_t t = 0; t < ids.size(); ++t)
    ids[t] = std::array{a, b, lora_adapter_set<float>::none}[t % 3];
  const row_matrix<float> x =
      hwtest::representable<Eigen::bfloat16>(random_matrix<float>(c.tokens, Eigen::Index(c.model), 9));
  row_matrix<Eigen::bfloat16> y(x.rows(), x.cols());
  layer.forward(x.cast<Eigen::bfloat16>(), y, ids);
  const std::array<dense_adapter, 2> dense = {densify(layer.adapters(), a), densify(layer.adapters(), b)};
  const delta_fn per_row = [&](projection p, Eigen::Index t) -> const dmat* {
    const adapter_id id = ids[std::size_t(t)];
    return id == lora_adapter_set<float>::none ? nullptr : dense[id].all_rows()(p, t);
  };
  const dmat xd = x.cast<double>();
  const composed want = compose(layer, xd, per_row);
  const rounding to_bf16 = [](double v) { return double(Eigen::bfloat16(float(v))); };
  const double err = max_diff(row_matrix<float>(y.cast<float>()), want.y),
               naive = (compose(layer, xd, per_row, to_bf16).y - want.y).cwiseAbs().maxCoeff();
  EXPECT_TRUE(err <= 2 * naive) << "max |layer − composition| = " << err << ", the naive pipeline's "
                                << naive;
}

TEST_P(mha, bfloat16_prefill_then_steps_within_the_bound) {
  const mha_case& c = GetParam();
  if (!c.causal) GTEST_SKIP() << "decode equals a full forward only under causal attention";
  layer_16<Eigen::bfloat16> l(c, true);
  const row_matrix<float> x =
      hwtest::representable<Eigen::bfloat16>(random_matrix<float>(c.tokens, Eigen::Index(c.model), 10));
  const row_matrix<Eigen::bfloat16> xb = x.cast<Eigen::bfloat16>();
  row_matrix<Eigen::bfloat16> stepped(x.rows(), x.cols());
  kv_cache<bfloat16> cache(1, c.kv_heads, std::size_t(c.tokens), c.dim);  // holds the rounded k, v exactly
  const Eigen::Index prompt = c.tokens / 2;
  l.layer.prefill(xb.topRows(prompt), stepped.topRows(prompt), cache);
  for (Eigen::Index t = prompt; t < c.tokens; ++t) l.layer.step(xb.row(t), stepped.row(t), cache);
  EXPECT_EQ(cache.size(), std::size_t(c.tokens));
  const dmat xd = x.cast<double>();
  const composed want = compose(l.layer, xd, l.deltas());
  const double err = max_diff(row_matrix<float>(stepped.cast<float>()), want.y),
               tol = layer_bound(l.layer, xd, want, l.qv.abs, l.rank, 0, hwtest::unit_roundoff<bfloat16>());
  EXPECT_TRUE(err <= tol) << err << " > " << tol;
  const rounding to_bf16 = [](double v) { return double(Eigen::bfloat16(float(v))); };
  const double naive = (compose(l.layer, xd, l.deltas(), to_bf16).y - want.y).cwiseAbs().maxCoeff();
  EXPECT_TRUE(err <= 2 * naive) << "max |layer − composition| = " << err << ", the naive pipeline's "
                                << naive;
}

// backward() on 16-bit x and dy widens them and runs the float backward on what the
// forward kept (q, k, v as rounded for attention): the same bits as the float call.
TEST_P(mha, bfloat16_backward_is_the_float_backward_of_the_kept_forward) {
  const mha_case& c = GetParam();
  layer_16<Eigen::bfloat16> l(c, true);
  const auto model = Eigen::Index(c.model);
  const row_matrix<float> x = hwtest::representable<Eigen::bfloat16>(random_matrix<float>(c.tokens, model, 12)),
                          dy = hwtest::representable<Eigen::bfloat16>(random_matrix<float>(c.tokens, model, 13));
  row_matrix<Eigen::bfloat16> y(c.tokens, model);
  l.layer.forward(x.cast<Eigen::bfloat16>(), y);
  mha_gradients<float> g16 = l.layer.make_gradients(true), g32 = l.layer.make_gradients(true);
  row_matrix<float> dx16(c.tokens, model), dx32(c.tokens, model);
  l.layer.backward(x.cast<Eigen::bfloat16>(), dy.cast<Eigen::bfloat16>(), dx16, g16);
  l.layer.backward(x, dy, dx32, g32);
  EXPECT_TRUE(dx16 == dx32);
  for (std::size_t p = 0; p < projection_count; ++p) {
    EXPECT_TRUE(g16.weights[p] == g32.weights[p]) << p;
    EXPECT_TRUE(g16.adapters[0][p].a == g32.adapters[0][p].a && g16.adapters[0][p].b == g32.adapters[0][p].b)
        << p;
  }
  EXPECT_TRUE(dx16.cwiseAbs().maxCoeff() > 0);
}

// 16-bit weights: widened blocks of the same values give the float layer's bits when
// the GEMMs have the float layer's shapes (more than 32 rows: one per task block).
TEST(mha_16, bfloat16_weights_forward_and_backward_equal_float_weights_widened) {
  const mha_case c{"gqa", 48, 6, 2, 16, {rope_style::interleaved, 500, 2}, true, true, 40};
  layer_16<Eigen::bfloat16> b(c, true);
  layer_16<float> f(c, true);
  for (projection p : all_projections) f.layer.weight(p) = b.layer.weight(p).cast<float>();
  const row_matrix<float> x = random_matrix<float>(c.tokens, 48, 14),
                          dy = random_matrix<float>(c.tokens, 48, 15);
  row_matrix<float> yb(c.tokens, 48), yf(c.tokens, 48), dxb(c.tokens, 48), dxf(c.tokens, 48);
  b.layer.forward(x, yb);
  f.layer.forward(x, yf);
  EXPECT_TRUE(yb == yf) << (yb - yf).cwiseAbs().maxCoeff();
  mha_gradients<float> gb = b.layer.make_gradients(true), gf = f.layer.make_gradients(true);
  b.layer.backward(x, dy, dxb, gb);
  f.layer.backward(x, dy, dxf, gf);
  EXPECT_TRUE(dxb == dxf) << (dxb - dxf).cwiseAbs().maxCoeff();
  for (std::size_t p = 0; p < projection_count; ++p) EXPECT_TRUE(gb.weights[p] == gf.weights[p]) << p;
  const auto params = lora_parameters(b.layer, gb);  // optim.hpp takes a 16-bit-weight layer too
  EXPECT_EQ(params.size(), 4u);
}

TEST(mha_16, bad_shapes_throw_and_write_nothing) {
  mha_config cfg = config_of(mha_case{"", 16, 4, 2, 4, {}, true, false, 0});
  multi_head_attention<float, Eigen::bfloat16> layer(cfg);
  randomize(layer, 900);
  using bmat = row_matrix<Eigen::bfloat16>;
  const bmat x = random_matrix<float>(3, 16, 13).cast<Eigen::bfloat16>(), x_bad = bmat::Zero(3, 15);
  bmat y = bmat::Zero(3, 16), y_bad = bmat::Zero(2, 16);
  EXPECT_THROW(layer.forward(x_bad, y), error);
  EXPECT_THROW(layer.forward(x, y_bad), error);
  EXPECT_THROW(layer.forward(x, y, {}, 2), error);
  kv_cache<bfloat16> cache(1, 2, 8, 4), wrong_heads(1, 4, 8, 4);
  EXPECT_THROW(layer.step(x, y, cache), error);  // three rows are not one step
  EXPECT_THROW(layer.prefill(x, y, wrong_heads), error);
  EXPECT_TRUE(y.cast<float>().isZero(0)) << "nothing may be written before the checks pass";
  EXPECT_EQ(cache.size(), 0u);
  EXPECT_EQ(wrong_heads.size(), 0u);
  mha_gradients<float> g = layer.make_gradients();
  row_matrix<float> dx = row_matrix<float>::Zero(3, 16);
  EXPECT_THROW(layer.backward(x, y, dx, g), error) << "no forward kept yet";
  bmat x_empty(0, 16), y_empty(0, 16);
  EXPECT_NO_THROW(layer.forward(x_empty, y_empty)) << "zero tokens is a valid, empty call";
}

// ---- errors

TEST(mha_errors, bad_config_and_shapes_throw_and_write_nothing) {
  mha_config cfg = config_of(mha_case{"", 16, 4, 3, 4, {}, true, false, 0});
  EXPECT_THROW(multi_head_attention<float>{cfg}, error);  // 3 does not divide 4
  cfg.num_kv_heads = 2;
  cfg.rope = rope_config{rope_style::neox, 10000, 1};
  cfg.head_dim = 5;
  EXPECT_THROW(multi_head_attention<float>{cfg}, error);  // odd head_dim under RoPE
  cfg.head_dim = 4;
  multi_head_attention<float> layer(cfg);
  randomize(layer, 900);
  const row_matrix<float> x = random_matrix<float>(3, 16, 13), x_bad(3, 15);
  row_matrix<float> y = row_matrix<float>::Zero(3, 16), y_bad(2, 16);
  EXPECT_THROW(layer.forward(x_bad, y), error);
  EXPECT_THROW(layer.forward(x, y_bad), error);
  const std::vector<adapter_id> short_ids(2, lora_adapter_set<float>::none);
  EXPECT_THROW(layer.forward(x, y, short_ids), error);
  EXPECT_THROW(layer.forward(x, y, {}, 2), error);  // three rows are not two equal sequences
  EXPECT_THROW(layer.forward(x, y, {}, 0), error);
  kv_cache<float> cache(1, 2, 8, 4), wrong_heads(1, 4, 8, 4);
  EXPECT_THROW(layer.step(x, y, cache), error);  // three rows are not one step
  EXPECT_THROW(layer.prefill(x, y, wrong_heads), error);
  EXPECT_TRUE(y.isZero(0)) << "nothing may be written before the checks pass";
  EXPECT_EQ(cache.size(), 0u);
  EXPECT_EQ(wrong_heads.size(), 0u);

  row_matrix<float> x_empty(0, 16), y_empty(0, 16);
  EXPECT_NO_THROW(layer.forward(x_empty, y_empty)) << "zero tokens is a valid, empty call";

  EXPECT_THROW(layer.unmerge_adapters(), error);
  layer.merge_adapters();
  EXPECT_THROW(layer.merge_adapters(), error);
  const std::vector<adapter_id> ids(3, lora_adapter_set<float>::none);
  EXPECT_THROW(layer.forward(x, y, ids), error);  // per-row adapters need unmerged weights
  layer.unmerge_adapters();

  // a NaN in the v delta: q is merged first, then restored; the layer stays unmerged
  const adapter_id id = layer.adapters().add("bad");
  attach_random(layer, id, {projection::q, projection::v}, 2, 950);
  layer.adapters().delta(id, projection::v)->b()(1, 1) = std::numeric_limits<float>::quiet_NaN();
  layer.adapters().activate("bad");
  const row_matrix<float> wq = layer.weight(projection::q), wv = layer.weight(projection::v);
  EXPECT_THROW(layer.merge_adapters(), error);
  EXPECT_FALSE(layer.adapters_merged());
  EXPECT_TRUE(layer.weight(projection::v) == wv);
  const double restored = (layer.weight(projection::q) - wq).cwiseAbs().maxCoeff();
  EXPECT_TRUE(restored <= layer.adapters().delta(id, projection::q)->merge_round_trip_bound(wq)) << restored;
}

}  // namespace
