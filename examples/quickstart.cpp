// quickstart: causal GQA attention over BSHD buffers, checked against the oracle.
#include <headwise/headwise.hpp>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

int main() {
  const std::size_t batch = 1, seq = 128, q_heads = 8, kv_heads = 2, dim = 64;
  std::vector<float> q(batch * seq * q_heads * dim), k(batch * seq * kv_heads * dim),
      v(batch * seq * kv_heads * dim), out(q.size()), expected(q.size());
  std::mt19937 gen(7);
  std::normal_distribution<float> normal;
  for (auto* buf : {&q, &k, &v})
    for (float& x : *buf) x = normal(gen);

  headwise::attention_options options;
  options.causal = headwise::causal_mode::bottom_right;
  auto qv = headwise::bshd(q.data(), batch, seq, q_heads, dim);
  auto kv = headwise::bshd(k.data(), batch, seq, kv_heads, dim);
  auto vv = headwise::bshd(v.data(), batch, seq, kv_heads, dim);
  headwise::attention(qv, kv, vv, headwise::bshd(out.data(), batch, seq, q_heads, dim), options);
  headwise::reference::attention(qv, kv, vv, headwise::bshd(expected.data(), batch, seq, q_heads, dim),
                                 options);

  double worst = 0;
  for (std::size_t i = 0; i < out.size(); ++i) worst = std::fmax(worst, std::fabs(out[i] - expected[i]));
  const bool ok = worst < 1e-4;
  std::printf("GQA causal attention: batch %zu, seq %zu, %zu query heads over %zu kv heads, dim %zu\n",
              batch, seq, q_heads, kv_heads, dim);
  std::printf("max |attention - reference| = %.3g (%s)\n", worst, ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
