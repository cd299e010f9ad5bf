// warnings.cpp — instantiates every public template a user is likely to meet, so
// that CTest can compile it with a demanding user's flags (-Wconversion,
// -Wsign-conversion, -Wshadow, -Werror ...) and prove the headers add no warning.
// It is compiled, never run: the values only have to type-check.
#include <headwise/headwise.hpp>
#include <headwise/lora.hpp>
#include <headwise/mha.hpp>
#include <headwise/optim.hpp>
#include <headwise/safetensors.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace {

template <class T, class S = T>
void attend(std::size_t B, std::size_t H, std::size_t Hkv, std::size_t N, std::size_t D) {
  std::vector<T> q(B * H * N * D), out(B * H * N * D);
  std::vector<S> k(B * Hkv * N * D), v(B * Hkv * N * D);
  std::vector<float> lse(B * H * N), mask(N * N);
  headwise::attention_options opt;
  opt.causal = headwise::causal_mode::bottom_right;
  opt.additive_mask = headwise::mask_view<const float>(mask.data(), 1, 1, N, N);
  opt.lse = headwise::lse_view(lse.data(), B, H, N);
  const auto qv = headwise::bshd<const T>(q.data(), B, N, H, D);
  const auto kv = headwise::bshd<const S>(k.data(), B, N, Hkv, D);
  const auto vv = headwise::bshd<const S>(v.data(), B, N, Hkv, D);
  const auto ov = headwise::bshd(out.data(), B, N, H, D);
  headwise::attention(qv, kv, vv, ov, opt);
  headwise::attention(qv.seq_slice(N - 1, 1), kv, vv, ov.seq_slice(N - 1, 1));
  headwise::reference::attention(qv, kv, vv, ov, opt);

  // K in key blocks: decode reads them as they are, the rest through a copy.
  headwise::kv_cache<S, headwise::kv_layout::key_blocks> cache(B, Hkv, N, D);
  cache.append(kv, vv);
  headwise::attention(qv, cache.keys(), cache.values(), ov);
}

template <class T>
void look_inside(std::size_t B, std::size_t H, std::size_t N, std::size_t D) {
  std::vector<T> q(B * H * N * D), k(B * H * N * D), v(B * H * N * D), out(B * H * N * D);
  std::vector<float> lse(B * H * N), lse2(B * H * N);
  headwise::attention_options opt;
  opt.lse = headwise::lse_view(lse.data(), B, H, N);
  const auto qv = headwise::bhsd<const T>(q.data(), B, H, N, D);
  const auto kv = headwise::bhsd<const T>(k.data(), B, H, N, D);
  const auto vv = headwise::bhsd<const T>(v.data(), B, H, N, D);
  headwise::attention(qv, kv, vv, headwise::bhsd(out.data(), B, H, N, D), opt);

  const auto p = headwise::head_probabilities(qv, kv, opt, 0, 0);
  const std::string svg = headwise::heatmap_svg(p, {}, {});
  const auto stats = headwise::attention_statistics(qv, kv, opt);
  const auto collapse = headwise::detect_collapse(stats);
  const auto roles = headwise::head_roles(stats);
  const auto prune = headwise::prunable_heads(headwise::head_redundancy(qv, kv, opt), stats);
  (void)svg, (void)collapse, (void)roles, (void)prune;

  std::vector<T> merged(out.size());
  const auto o = headwise::bhsd<const T>(out.data(), B, H, N, D);
  const auto l = headwise::lse_view<const float>(lse.data(), B, H, N);
  headwise::merge_states(o, l, o, l, headwise::bhsd(merged.data(), B, H, N, D),
                         headwise::lse_view(lse2.data(), B, H, N));

  headwise::rotary_embedding<T> rope({headwise::rope_style::neox, 10000.0, 1.0}, D);
  rope.apply(headwise::bhsd(q.data(), B, H, N, D), 3);
  rope.rotate_back(headwise::bhsd(q.data(), B, H, N, D), 3);
}

/// model 32, 4 heads over 2 kv heads of 8, RoPE.
headwise::mha_config small_layer() {
  headwise::mha_config cfg;
  cfg.model_dim = 32;
  cfg.num_heads = 4;
  cfg.num_kv_heads = 2;
  cfg.head_dim = 8;
  cfg.rope.style = headwise::rope_style::neox;
  return cfg;
}

template <class T, class Cache>
void layer(Cache& cache) {
  const headwise::mha_config cfg = small_layer();
  headwise::multi_head_attention<T> mha(cfg);
  const auto id = mha.adapters().add("adapter");
  mha.adapters().attach(id, headwise::projection::q,
                        headwise::lora_delta<T>(headwise::row_matrix<T>::Zero(2, 32),
                                                headwise::row_matrix<T>::Zero(32, 2), 4.0));
  headwise::row_matrix<T> x = headwise::row_matrix<T>::Zero(6, 32), y(6, 32);
  mha.forward(x, y);
  mha.prefill(x.topRows(5), y.topRows(5), cache);
  mha.step(x.row(5), y.row(5), cache);
  mha.merge_adapters();
  mha.unmerge_adapters();
  auto grads = mha.make_gradients(true);
  headwise::row_matrix<T> dx(6, 32);
  mha.forward(x, y);
  mha.backward(x, y, dx, grads);

  mha.adapters().activate("adapter");
  headwise::adamw<T> opt(headwise::adamw_config<T>{});
  std::vector<headwise::matrix_ref<T>> gs = headwise::lora_gradients(mha, grads);
  headwise::clip_grad_norm(gs, T(1));
  opt.step(headwise::lora_parameters(mha, grads));
  std::vector<headwise::multi_head_attention<T>*> layers{&mha};
  headwise::save_lora_adapters("warnings_unused", layers, "adapter");
  headwise::load_lora_adapters("warnings_unused", layers, "adapter");
  headwise::safetensors_file f;
  f.tensors["x"] = headwise::to_safetensors(x);
  x = headwise::to_matrix<T>(headwise::decode_safetensors(headwise::encode_safetensors(f)).tensors.at("x"));
}

/// int8 K/V: quantize and back, and both caches quantizing X on append.
template <class X>
void int8_storage(std::size_t Hkv, std::size_t N, std::size_t D) {
  std::vector<X> k(Hkv * N * D), v(Hkv * N * D);
  std::vector<std::int8_t> q(Hkv * N * D);
  std::vector<float> scale(Hkv * N), back(Hkv * N * D);
  const auto kv = headwise::bhsd<const X>(k.data(), 1, Hkv, N, D);
  const auto vv = headwise::bhsd<const X>(v.data(), 1, Hkv, N, D);
  headwise::quantize_int8(kv, headwise::bhsd(q.data(), 1, Hkv, N, D),
                          headwise::bhsd(scale.data(), 1, Hkv, N, 1));
  headwise::dequantize_int8(headwise::bhsd<const std::int8_t>(q.data(), 1, Hkv, N, D),
                            headwise::bhsd<const float>(scale.data(), 1, Hkv, N, 1),
                            headwise::bhsd(back.data(), 1, Hkv, N, D));
  headwise::kv_cache<std::int8_t> rows(1, Hkv, N, D);
  headwise::kv_cache<std::int8_t, headwise::kv_layout::key_blocks> blocks(1, Hkv, N, D);
  rows.append(kv, vv);
  blocks.append(kv, vv);
  headwise::attention_options opt;
  opt.k_scale = blocks.key_scales();
  opt.v_scale = rows.value_scales();
  headwise::paged_kv_cache<std::int8_t> paged(4, Hkv, 16, D, D, 2, 2);
  const std::int32_t a = paged.add_sequence();
  paged.append(a, kv, vv);
  paged.append(paged.fork(a), kv, vv);
  const headwise::paged_kv_view<const std::int8_t> pages = paged.view();
  back[0] = pages.k_scale_pages(0, 0, 0, 0) + opt.k_scale(0, 0, 0, 0);
}

/// 16-bit activations (Eigen::bfloat16 or Eigen::half A) on a layer with weights W,
/// its cache of A's storage type, and LoRA on them.
template <class A, class W>
void layer_16() {
  const headwise::mha_config cfg = small_layer();
  headwise::multi_head_attention<float, W> mha(cfg);
  const auto id = mha.adapters().add("adapter");
  headwise::lora_delta<float> d(headwise::row_matrix<float>::Zero(2, 32),
                                headwise::row_matrix<float>::Zero(32, 2), 4.0);
  mha.adapters().attach(id, headwise::projection::q, d);
  mha.adapters().activate("adapter");
  headwise::row_matrix<A> x = headwise::row_matrix<A>::Zero(6, 32), y(6, 32);
  headwise::kv_cache<headwise::storage_16<A>> cache(1, 2, 6, 8);
  mha.forward(x, y);
  mha.prefill(x.topRows(5), y.topRows(5), cache);
  mha.step(x.row(5), y.row(5), cache);
  auto grads = mha.make_gradients(true);
  headwise::row_matrix<float> dx(6, 32), da(2, 32), db(32, 2);
  mha.forward(x, y);
  mha.backward(x, y, dx, grads);
  mha.adapters().apply(headwise::projection::q, x, y);
  const std::vector<std::uint32_t> ids(6, id);
  mha.adapters().apply(headwise::projection::q, x, y, ids);
  d.apply(x, y);
  d.backward(x, y, da, db, dx);
}

}  // namespace

int main() {
  attend<float>(1, 4, 2, 17, 40);
  attend<double>(1, 4, 2, 17, 40);
  attend<float, headwise::half>(1, 4, 1, 17, 40);
  attend<float, headwise::bfloat16>(1, 4, 4, 17, 40);
  look_inside<float>(1, 2, 9, 16);
  look_inside<double>(1, 2, 9, 16);
  headwise::kv_cache<float> cache(1, 2, 6, 8);
  layer<float>(cache);
  headwise::kv_cache<headwise::half, headwise::kv_layout::key_blocks> blocks(1, 2, 6, 8);
  layer<float>(blocks);
  headwise::kv_cache<double> cache_d(1, 2, 6, 8);
  layer<double>(cache_d);
  layer_16<Eigen::bfloat16, float>();
  layer_16<Eigen::bfloat16, Eigen::bfloat16>();
  layer_16<Eigen::half, float>();
  int8_storage<float>(2, 5, 24);
  int8_storage<headwise::half>(1, 3, 9);
}
