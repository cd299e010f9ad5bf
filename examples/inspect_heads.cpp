// inspect_heads: look inside a layer whose heads were built with known patterns,
// and check that the statistics and diagnostics find them.
//
// Six heads of causal self-attention over 48 tokens. Q and K are built directly:
// in heads 0–2 key j is the one-hot code of position j, so a query picks its key.
//   head 0  previous-token: query i points at position i − 1
//   head 1  uniform:        zero queries, every visible key gets the same logit
//   head 2  sink:           every query points at position 0 (a collapsed head)
//   head 3  content:        random queries and keys
//   head 4  near-duplicate: head 3's queries plus 2% noise, the same keys
//   head 5  content:        other random queries and keys
// The example prints the statistics table, the verdicts, and writes heads.html.
#include <headwise/headwise.hpp>

#include <cstdio>
#include <fstream>
#include <random>
#include <string>
#include <vector>

int main() {
  using namespace headwise;
  const std::size_t N = 48, H = 6, D = 64;  // D >= N: room for the one-hot position code
  const float sharp = 12.0f * 8.0f;         // logit 12 after the 1/sqrt(64) scale: p ≈ 1 − N·e^-12

  std::mt19937 gen(2024);
  std::vector<std::int32_t> tokens(N);
  std::uniform_int_distribution<std::int32_t> vocab(0, 11);
  for (std::size_t i = 0; i < N; ++i) tokens[i] = i < 24 ? vocab(gen) : tokens[i - 24];  // repeated half
  std::vector<std::string> labels;
  for (std::int32_t t : tokens) labels.push_back("t" + std::to_string(t));

  std::vector<float> q(H * N * D, 0.f), k(H * N * D, 0.f), v(H * N * D), out(H * N * D), lse(H * N);
  const auto qv = bhsd(q.data(), 1, H, N, D), kv = bhsd(k.data(), 1, H, N, D);
  std::normal_distribution<float> normal;
  for (std::size_t i = 0; i < N; ++i) {
    for (std::size_t h = 0; h < 3; ++h) kv(0, h, i, i) = 1.f;  // position code
    if (i > 0) qv(0, 0, i, i - 1) = sharp;
    qv(0, 2, i, 0) = sharp;
    for (std::size_t d = 0; d < D; ++d) {
      qv(0, 3, i, d) = 2.f * normal(gen);
      kv(0, 3, i, d) = kv(0, 4, i, d) = normal(gen);
      qv(0, 4, i, d) = qv(0, 3, i, d) + 0.04f * normal(gen);
      qv(0, 5, i, d) = 2.f * normal(gen);
      kv(0, 5, i, d) = normal(gen);
    }
  }
  for (float& x : v) x = normal(gen);

  // The fast pass, keeping its LSE; the heatmaps are exact probabilities from it.
  attention_options opt;
  opt.causal = causal_mode::top_left;
  opt.lse = lse_view(lse.data(), 1, H, N);
  attention(qv, kv, bhsd(v.data(), 1, H, N, D), bhsd(out.data(), 1, H, N, D), opt);

  statistics_options so;
  so.sink_tokens = 1;
  so.tokens = tokens;
  const std::vector<head_statistics> stats = attention_statistics(qv, kv, opt, so);
  const char* planted[H] = {"previous-token", "uniform", "sink", "content", "near-duplicate", "content"};
  std::printf("head  planted         entropy  norm.H  max p  sink   prev   dup    induct  distance  top key\n");
  for (const head_statistics& st : stats) {
    const auto [key, share] = st.top_key();
    std::printf("%4zu  %-14s  %7.3f  %6.3f  %5.3f  %5.3f  %5.3f  %5.3f  %6.3f  %8.2f  %zu (%.0f%%)\n", st.head,
                planted[st.head], st.mean_entropy, st.mean_normalized_entropy, st.mean_max_probability,
                st.sink_share, st.previous_token, st.duplicate_token, st.induction, st.mean_distance, key,
                100 * share);
  }

  bool prev_found = false, sink_found = false, pair_found = false;
  for (const collapse_verdict& c : detect_collapse(stats)) {
    if (c.dominant_key)
      std::printf("collapsed: head %zu puts %.0f%% of its attention on key %zu\n", c.head, 100 * c.key_share, c.key);
    if (c.low_entropy) std::printf("low entropy: head %zu (nearly one-hot rows)\n", c.head);
    sink_found |= c.head == 2 && c.dominant_key && c.key == 0;
  }
  for (const head_role& r : head_roles(stats)) {
    if (r.previous_token) std::printf("previous-token head: %zu\n", r.head);
    if (r.duplicate_token) std::printf("duplicate-token head: %zu\n", r.head);
    if (r.induction) std::printf("induction head: %zu\n", r.head);
    prev_found |= r.previous_token && r.head == 0;
  }

  const redundancy_report rep = head_redundancy(qv, kv, opt);
  std::printf("Jensen-Shannon divergence between heads (bits):\n");
  for (std::size_t a = 0; a < H; ++a) {
    std::printf("  head %zu:", a);
    for (std::size_t b = 0; b < H; ++b) std::printf(" %6.3f", rep(a, b));
    std::printf("\n");
  }
  for (const prunable_head& p : prunable_heads(rep, stats)) {
    std::printf("redundant: prune head %zu (twin of head %zu, JS %.4f bits)\n", p.head, p.twin, p.js);
    pair_found |= (p.head == 3 && p.twin == 4) || (p.head == 4 && p.twin == 3);
  }

  std::vector<std::string> captions;
  for (std::size_t h = 0; h < H; ++h) captions.push_back("head " + std::to_string(h) + ": " + planted[h]);
  const std::string html = heads_html(layer_probabilities(qv, kv, opt, 0), labels, labels,
                                      "inspect_heads: 6 planted heads", captions);
  std::ofstream("heads.html") << html;
  std::printf("wrote heads.html (%zu bytes)\n", html.size());

  const bool ok = prev_found && sink_found && pair_found;
  std::printf("planted heads found: previous-token %s, sink %s, near-duplicate pair %s (%s)\n",
              prev_found ? "yes" : "no", sink_found ? "yes" : "no", pair_found ? "yes" : "no",
              ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
