// serving: what an inference server's attention does on headwise. Three prompts of
// different lengths prefill into a paged fp16 KV cache in one call, one request forks
// (parallel sampling: the fork shares the prompt's pages), then every live sequence
// decodes a token a step in one attention_varlen call over the pages. Each step is
// checked against the oracle on that sequence's own K/V.
#include <headwise/headwise.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

namespace {

constexpr std::size_t Hq = 8, Hkv = 2, D = 64;

/// Random rows [1, H, n, D] in token-major (packed) memory.
struct rows {
  std::size_t heads, n;
  std::vector<float> data;
  rows(std::size_t h, std::size_t tokens, std::mt19937& gen) : heads(h), n(tokens), data(h * tokens * D) {
    std::normal_distribution<float> normal;
    for (float& x : data) x = normal(gen);
  }
  headwise::tensor_view<const float> view() const { return headwise::bshd(data.data(), 1, n, heads, D); }
};

/// One sequence's K/V as the cache stores them (fp16), for the oracle.
struct history {
  std::vector<std::vector<float>> k = std::vector<std::vector<float>>(Hkv), v = k;
  void add(const headwise::tensor_view<const float>& ks, const headwise::tensor_view<const float>& vs) {
    for (std::size_t h = 0; h < Hkv; ++h)
      for (std::size_t s = 0; s < ks.seq(); ++s)
        for (std::size_t d = 0; d < D; ++d) {
          k[h].push_back(float(headwise::half(ks(0, h, s, d))));
          v[h].push_back(float(headwise::half(vs(0, h, s, d))));
        }
  }
  std::size_t size() const { return k[0].size() / D; }
};

/// max |out - oracle| over sequence b's rows [r0, r0 + nq) of out, q in the same rows.
double check(const headwise::tensor_view<const float>& q, const headwise::tensor_view<float>& out, std::size_t b,
             std::size_t r0, std::size_t nq, const history& h, const headwise::attention_options& opt) {
  const std::size_t nk = h.size();
  std::vector<float> k(Hkv * nk * D), v(k.size()), want(Hq * nq * D);
  for (std::size_t x = 0; x < Hkv; ++x)
    std::copy(h.k[x].begin(), h.k[x].end(), k.begin() + std::ptrdiff_t(x * nk * D)),
        std::copy(h.v[x].begin(), h.v[x].end(), v.begin() + std::ptrdiff_t(x * nk * D));
  const auto qb = headwise::tensor_view<const float>(q.row(b, 0, r0), 1, Hq, nq, D, q.batch_stride(), q.head_stride(),
                                                     q.seq_stride());
  headwise::reference::attention(qb, headwise::bhsd<const float>(k.data(), 1, Hkv, nk, D),
                                 headwise::bhsd<const float>(v.data(), 1, Hkv, nk, D),
                                 headwise::bhsd(want.data(), 1, Hq, nq, D), opt);
  double worst = 0;
  for (std::size_t x = 0; x < Hq; ++x)
    for (std::size_t i = 0; i < nq; ++i)
      for (std::size_t d = 0; d < D; ++d)
        worst = std::fmax(worst, std::fabs(out(b, x, r0 + i, d) - want[(x * nq + i) * D + d]));
  return worst;
}

}  // namespace

int main() {
  std::mt19937 gen(11);
  headwise::paged_kv_cache<headwise::half> cache(/*pages*/ 64, Hkv, /*page size*/ 16, D, D, /*sequences*/ 8,
                                                 /*pages per sequence*/ 16);
  headwise::attention_options opt;
  opt.causal = headwise::causal_mode::bottom_right;  // each sequence's last query on its last key

  // Prefill: three prompts packed along the token axis, appended and attended in one call each.
  const std::vector<std::int32_t> cu = {0, 37, 42, 122};  // prompts of 37, 5 and 80 tokens
  std::vector<std::int32_t> seqs = {cache.add_sequence(), cache.add_sequence(), cache.add_sequence()};
  rows q(Hq, 122, gen), k(Hkv, 122, gen), v(Hkv, 122, gen);
  std::vector<float> out(Hq * 122 * D);
  cache.append(seqs, k.view(), v.view(), cu);
  std::vector<history> past(8);
  for (std::size_t i = 0; i < 3; ++i)
    past[std::size_t(seqs[i])].add(k.view().seq_slice(std::size_t(cu[i]), std::size_t(cu[i + 1] - cu[i])),
                                   v.view().seq_slice(std::size_t(cu[i]), std::size_t(cu[i + 1] - cu[i])));
  std::vector<std::int32_t> used;
  for (std::int32_t s : seqs) used.push_back(std::int32_t(cache.length(s)));
  const auto out_prefill = headwise::bshd(out.data(), 1, 122, Hq, D);
  headwise::attention_varlen(q.view(), cache.view(seqs), out_prefill, headwise::varlen_batch{cu, {}, used}, opt);
  double worst = 0;
  for (std::size_t i = 0; i < 3; ++i)
    worst = std::fmax(worst, check(q.view(), out_prefill, 0, std::size_t(cu[i]), std::size_t(cu[i + 1] - cu[i]),
                                   past[std::size_t(seqs[i])], opt));

  // Parallel sampling: request 0 forks; the fork shares its 3 pages, nothing is copied.
  const std::size_t free_before = cache.free_pages();
  const std::int32_t fork = cache.fork(seqs[0]);
  past[std::size_t(fork)] = past[std::size_t(seqs[0])];
  seqs.push_back(fork);
  const bool shared = cache.free_pages() == free_before;

  // Decode: every live sequence appends its token and attends, one call per step.
  const int steps = 20;
  std::vector<std::int32_t> one_each = {0, 1, 2, 3, 4};
  std::vector<float> step_out(seqs.size() * Hq * D);
  const auto out_step = headwise::bhsd(step_out.data(), seqs.size(), Hq, 1, D);
  for (int step = 0; step < steps; ++step) {
    rows qs(Hq, seqs.size(), gen), ks(Hkv, seqs.size(), gen), vs(Hkv, seqs.size(), gen);
    cache.append(seqs, ks.view(), vs.view(), one_each);  // the fork's first token copies its shared last page
    used.clear();
    for (std::size_t b = 0; b < seqs.size(); ++b) {
      past[std::size_t(seqs[b])].add(ks.view().seq_slice(b, 1), vs.view().seq_slice(b, 1));
      used.push_back(std::int32_t(cache.length(seqs[b])));
    }
    const auto q_step = headwise::tensor_view<const float>(qs.data.data(), seqs.size(), Hq, 1, D, Hq * D, D, D);
    headwise::attention_varlen(q_step, cache.view(seqs), out_step, headwise::varlen_batch{{}, {}, used}, opt);
    for (std::size_t b = 0; b < seqs.size(); ++b)
      worst = std::fmax(worst, check(q_step, out_step, b, 0, 1, past[std::size_t(seqs[b])], opt));
  }

  const bool ok = worst < 1e-4 && shared;  // the oracle reads the same fp16-rounded K/V
  std::printf("serving: 3 prompts (37, 5, 80 tokens) prefilled into a paged fp16 cache of 16-token pages\n");
  std::printf("fork of request 0: %s pages, nothing copied\n", shared ? "shares its" : "DID NOT SHARE its");
  std::printf("%d decode steps of %zu sequences, lengths now %zu..%zu; %zu of %zu pages in use\n", steps, seqs.size(),
              std::size_t(*std::min_element(used.begin(), used.end())),
              std::size_t(*std::max_element(used.begin(), used.end())), cache.num_pages() - cache.free_pages(),
              cache.num_pages());
  std::printf("max |paged attention - reference| = %.3g (%s)\n", worst, ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
