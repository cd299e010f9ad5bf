// lora_attention: a GQA attention layer with a LoRA adapter on q and v.
//
// Runs one forward with the adapter off, unmerged (two skinny GEMMs per projection
// on top of the frozen weights) and merged (W + s·B·A folded in), shows that the
// last two agree and differ from the first, and prints how few parameters train.
#include <headwise/mha.hpp>

#include <cmath>
#include <cstdio>
#include <random>

using matrix = headwise::row_matrix<float>;

matrix random_matrix(Eigen::Index rows, Eigen::Index cols, std::mt19937& gen, float amp) {
  std::uniform_real_distribution<float> dist(-amp, amp);
  matrix m(rows, cols);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = dist(gen);
  return m;
}

int main() {
  using headwise::projection;
  headwise::mha_config cfg;
  cfg.model_dim = 512;
  cfg.num_heads = 8;
  cfg.num_kv_heads = 2;
  cfg.head_dim = 64;
  cfg.rope = {headwise::rope_style::neox, 10000.0, 1.0};
  cfg.causal = true;
  headwise::multi_head_attention<float> layer(cfg);

  std::mt19937 gen(42);
  for (projection p : {projection::q, projection::k, projection::v, projection::o}) {
    auto w = layer.weight(p);
    w = random_matrix(w.rows(), w.cols(), gen, 1.0f / std::sqrt(float(w.cols())));
  }

  // A rank-8 adapter on q and v, alpha = 16 (s = 2). Real LoRA starts B at zero;
  // random B here stands in for an adapter after training.
  const Eigen::Index rank = 8;
  auto& adapters = layer.adapters();
  const auto id = adapters.add("qv-r8");
  for (projection p : {projection::q, projection::v}) {
    const headwise::projection_shape s = adapters.shape(p);
    adapters.attach(id, p,
                    headwise::lora_delta<float>(random_matrix(rank, s.in, gen, 0.05f),
                                                random_matrix(s.out, rank, gen, 0.05f), 16.0));
  }

  const Eigen::Index tokens = 64;
  const matrix x = random_matrix(tokens, Eigen::Index(cfg.model_dim), gen, 1.0f);
  matrix y_off(x.rows(), x.cols()), y_unmerged = y_off, y_merged = y_off;
  layer.forward(x, y_off);
  adapters.activate("qv-r8");
  layer.forward(x, y_unmerged);
  layer.merge_adapters();
  layer.forward(x, y_merged);
  layer.unmerge_adapters();

  const auto base = layer.parameter_count();
  const auto trainable = adapters.active_parameter_count();
  const double fraction = 100.0 * double(trainable) / double(base + trainable);
  std::printf("layer: model %zu, %zu query heads over %zu kv heads, head dim %zu, %ld tokens\n",
              cfg.model_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, long(tokens));
  std::printf("frozen parameters: %ld\n", long(base));
  std::printf("LoRA parameters (q, v; rank %ld): %ld\n", long(rank), long(trainable));
  std::printf("trainable fraction: %.3f%%\n", fraction);

  // Float GEMMs over <= 512 terms round by at most ~512·6e-8 = 3e-5 of the
  // magnitudes involved per stage; 1e-4 of the output's scale covers the few
  // stages with room, while the adapter moves outputs by whole percents.
  const double scale = y_unmerged.cwiseAbs().maxCoeff();
  const double agree = (y_merged - y_unmerged).cwiseAbs().maxCoeff();
  const double change = (y_unmerged - y_off).cwiseAbs().maxCoeff();
  const bool agrees = agree <= 1e-4 * scale, differs = change > 1e-2 * scale;
  std::printf("max |merged - unmerged| = %.3g (%s)\n", agree, agrees ? "agree" : "DISAGREE");
  std::printf("max |adapter on - adapter off| = %.3g (%s)\n", change, differs ? "differs" : "NO EFFECT");
  return agrees && differs ? 0 : 1;
}
