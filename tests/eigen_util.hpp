// tests/eigen_util.hpp — what the Eigen-component tests (optim, safetensors, lora,
// mha) share: seeded random matrices, a small layer configuration, 16-bit values.
#pragma once

#include <headwise/mha.hpp>

#include <cstddef>
#include <cstdint>
#include <random>

namespace hwtest {

/// rows × cols, uniform in [-amp, amp] from a fixed seed.
template <class T>
headwise::row_matrix<T> random_matrix(Eigen::Index rows, Eigen::Index cols, std::uint32_t seed,
                                      double amp = 1.0) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> dist(-amp, amp);
  headwise::row_matrix<T> m(rows, cols);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = static_cast<T>(dist(gen));
  return m;
}

/// A layer of these sizes on one thread (bit-reproducible runs), causal, no RoPE.
inline headwise::mha_config layer_config(std::size_t model_dim, std::size_t heads, std::size_t kv_heads,
                                         std::size_t head_dim) {
  headwise::mha_config cfg;
  cfg.model_dim = model_dim;
  cfg.num_heads = heads;
  cfg.num_kv_heads = kv_heads;
  cfg.head_dim = head_dim;
  cfg.threads = 1;
  return cfg;
}

/// m rounded to Eigen's 16-bit A and back: floats a 16-bit call and a float call
/// (or a double oracle) read alike.
template <class A>
headwise::row_matrix<float> representable(const headwise::row_matrix<float>& m) {
  return m.cast<A>().template cast<float>();
}

}  // namespace hwtest
