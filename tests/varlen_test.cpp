// Tests of attention_varlen (varlen.hpp): a batch of sequences of different lengths,
// with K/V packed, padded ([B, Hkv, Nk, D] with seqused_k) or in pages of 16 and 32
// keys (shuffled in the pool, every unused slot NaN), and q packed or batched.
// Each sequence is checked against the oracle on that sequence alone, within the
// derived tolerance (test_util.hpp), on every kernel mode × the scalar build and
// every SIMD path × 1, 2, 3 threads; one mode and path gives the same bits at every
// thread count, and the same bits as attention() on the sequence alone. Lengths
// include 0 and 1 and straddle the SIMD width, the flash tiles and the decode chunk
// (1024 keys) and the page boundaries. Bad arguments throw headwise::error and leave
// out untouched.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kernel_harness.hpp"

namespace {

using namespace hwtest;

/// How K/V reach attention_varlen.
enum class kv_form { packed, padded, paged16, paged32 };
const char* form_name(kv_form f) {
  static const char* names[] = {"packed", "padded", "paged16", "paged32"};
  return names[int(f)];
}

struct varlen_case {
  std::vector<std::size_t> nq, nk;
  heads h = gqa;
  std::size_t Dk = 24, Dv = 20;
  mask_spec mask;
  bool batched_q = false;  // q [B, Hq, Nq, Dk] (every nq equal) instead of packed
};

constexpr float nan_f = std::numeric_limits<float>::quiet_NaN();

/// What fills K/V rows no sequence uses: NaN, or for int8 the largest code (its
/// scale there is NaN).
template <class S>
S unused() {
  if constexpr (is_storage_int8<S>)
    return S(127);
  else
    return S(nan_f);
}

/// One sequence: its own q/K/V (K/V as stored; int8 with its scales), the oracle's
/// output and LSE on them.
template <class T, class S, class Q>
struct sequence {
  tensor<Q> q;
  tensor<S> k, v;
  tensor<float> k_scale, v_scale;
  tensor<T> ref;
  std::vector<float> ref_lse;

  attention_options with_scales(attention_options opt) const {
    if constexpr (is_storage_int8<S>) opt.k_scale = k_scale.cview(), opt.v_scale = v_scale.cview();
    return opt;
  }
};

/// The batch of a case, its packed/padded/paged forms, and the oracle per sequence.
template <class T, class S, class Q>
struct varlen_problem {
  varlen_case c;
  std::size_t B, Tq = 0, Tk = 0, max_nk = 0;
  masked_options masks;
  std::vector<sequence<T, S, Q>> seqs;
  std::vector<std::int32_t> cu_q, cu_k, used;
  tensor<Q> q_packed;
  tensor<S> k_packed, v_packed, k_padded, v_padded;
  tensor<float> ks_packed, vs_packed, ks_padded, vs_padded;  // int8: the scales, laid out as K/V
  std::vector<S> k_pool, v_pool;
  std::vector<float> ks_pool, vs_pool;
  std::vector<std::int32_t> table;
  std::size_t pages_per_seq = 0, num_pages = 0;

  explicit varlen_problem(const varlen_case& vc)
      : c(vc), B(vc.nq.size()), masks(vc.mask, 1, vc.h.Hq, 1, 1) {
    cu_q.push_back(0), cu_k.push_back(0);
    for (std::size_t b = 0; b < B; ++b) {
      Tq += c.nq[b], Tk += c.nk[b], max_nk = std::max(max_nk, c.nk[b]);
      cu_q.push_back(std::int32_t(Tq)), cu_k.push_back(std::int32_t(Tk)), used.push_back(std::int32_t(c.nk[b]));
      sequence<T, S, Q> s;
      tensor<T> q(1, c.h.Hq, c.nq[b], c.Dk), k(1, c.h.Hkv, c.nk[b], c.Dk), v(1, c.h.Hkv, c.nk[b], c.Dv);
      fill_uniform(q, 10 + std::uint32_t(b)), fill_uniform(k, 100 + std::uint32_t(b)), fill_uniform(v, 200 + std::uint32_t(b));
      s.q = converted<Q>(q, layout::bhsd);
      s.ref = tensor<T>(1, c.h.Hq, c.nq[b], c.Dv);
      s.ref_lse.assign(c.h.Hq * c.nq[b], 0.0f);
      attention_options opt = masks.opt;
      opt.lse = lse_view(s.ref_lse.data(), 1, c.h.Hq, c.nq[b]);
      if constexpr (is_storage_int8<S>) {
        s.k = quantized(k, layout::bhsd, s.k_scale), s.v = quantized(v, layout::bhsd, s.v_scale);
        if (c.nq[b] > 0)
          reference::attention(s.q.cview(), dequantized<T>(s.k, s.k_scale, layout::bhsd).cview(),
                               dequantized<T>(s.v, s.v_scale, layout::bhsd).cview(), s.ref.view, opt);
      } else {
        s.k = converted<S>(k, layout::bhsd), s.v = converted<S>(v, layout::bhsd);
        if (c.nq[b] > 0) reference::attention(s.q.cview(), s.k.cview(), s.v.cview(), s.ref.view, opt);
      }
      seqs.push_back(std::move(s));
    }
    // Packed q and K/V, token-major like FlashAttention's (bshd over one batch entry).
    q_packed = tensor<Q>(1, c.h.Hq, Tq, c.Dk, layout::bshd);
    k_packed = tensor<S>(1, c.h.Hkv, Tk, c.Dk, layout::bshd);
    v_packed = tensor<S>(1, c.h.Hkv, Tk, c.Dv, layout::bshd);
    // Padded K/V: [B, Hkv, max_nk, D], the unused rows NaN (they must never be read).
    k_padded = tensor<S>(B, c.h.Hkv, std::max<std::size_t>(max_nk, 1), c.Dk);
    v_padded = tensor<S>(B, c.h.Hkv, std::max<std::size_t>(max_nk, 1), c.Dv);
    std::fill(k_padded.storage.begin(), k_padded.storage.end(), unused<S>());
    std::fill(v_padded.storage.begin(), v_padded.storage.end(), unused<S>());
    ks_packed = tensor<float>(1, c.h.Hkv, Tk, 1, layout::bshd), vs_packed = ks_packed;
    ks_padded = tensor<float>(B, c.h.Hkv, std::max<std::size_t>(max_nk, 1), 1), vs_padded = ks_padded;
    std::fill(ks_padded.storage.begin(), ks_padded.storage.end(), nan_f);
    std::fill(vs_padded.storage.begin(), vs_padded.storage.end(), nan_f);
    for (std::size_t b = 0; b < B; ++b) {
      const sequence<T, S, Q>& s = seqs[b];
      for (std::size_t h = 0; h < c.h.Hq; ++h)
        for (std::size_t i = 0; i < c.nq[b]; ++i)
          for (std::size_t d = 0; d < c.Dk; ++d) q_packed(0, h, cu_q[b] + i, d) = s.q.view(0, h, i, d);
      for (std::size_t h = 0; h < c.h.Hkv; ++h)
        for (std::size_t j = 0; j < c.nk[b]; ++j) {
          for (std::size_t d = 0; d < c.Dk; ++d)
            k_packed(0, h, cu_k[b] + j, d) = k_padded(b, h, j, d) = s.k.view(0, h, j, d);
          for (std::size_t d = 0; d < c.Dv; ++d)
            v_packed(0, h, cu_k[b] + j, d) = v_padded(b, h, j, d) = s.v.view(0, h, j, d);
          if constexpr (is_storage_int8<S>) {
            ks_packed(0, h, cu_k[b] + j, 0) = ks_padded(b, h, j, 0) = s.k_scale.view(0, h, j, 0);
            vs_packed(0, h, cu_k[b] + j, 0) = vs_padded(b, h, j, 0) = s.v_scale.view(0, h, j, 0);
          }
        }
    }
  }

  /// Pages of `page` keys, [num_pages, Hkv, page, D], handed out in a shuffled order
  /// with two spare pages; every slot no sequence uses is NaN.
  void make_pages(std::size_t page) {
    pages_per_seq = std::max<std::size_t>(1, (max_nk + page - 1) / page);
    std::size_t needed = 0;
    for (std::size_t b = 0; b < B; ++b) needed += (c.nk[b] + page - 1) / page;
    num_pages = needed + 2;
    std::vector<std::int32_t> order(num_pages);
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), std::mt19937(7));
    k_pool.assign(num_pages * c.h.Hkv * page * c.Dk, unused<S>());
    v_pool.assign(num_pages * c.h.Hkv * page * c.Dv, unused<S>());
    ks_pool.assign(num_pages * c.h.Hkv * page, nan_f);
    vs_pool.assign(num_pages * c.h.Hkv * page, nan_f);
    table.assign(B * pages_per_seq, -1);
    const tensor_view<S> kp = bhsd(k_pool.data(), num_pages, c.h.Hkv, page, c.Dk),
                         vp = bhsd(v_pool.data(), num_pages, c.h.Hkv, page, c.Dv);
    std::size_t next = 0;
    for (std::size_t b = 0; b < B; ++b)
      for (std::size_t p = 0; p * page < c.nk[b]; ++p) table[b * pages_per_seq + p] = order[next++];
    for (std::size_t b = 0; b < B; ++b)
      for (std::size_t h = 0; h < c.h.Hkv; ++h)
        for (std::size_t j = 0; j < c.nk[b]; ++j) {
          const auto pg = std::size_t(table[b * pages_per_seq + j / page]);
          for (std::size_t d = 0; d < c.Dk; ++d) kp(pg, h, j % page, d) = seqs[b].k.view(0, h, j, d);
          for (std::size_t d = 0; d < c.Dv; ++d) vp(pg, h, j % page, d) = seqs[b].v.view(0, h, j, d);
          if constexpr (is_storage_int8<S>) {
            ks_pool[(pg * c.h.Hkv + h) * page + j % page] = seqs[b].k_scale.view(0, h, j, 0);
            vs_pool[(pg * c.h.Hkv + h) * page + j % page] = seqs[b].v_scale.view(0, h, j, 0);
          }
        }
  }

  paged_kv_view<const S> paged(std::size_t page) const {
    paged_kv_view<const S> kv;
    kv.k_pages = bhsd(static_cast<const S*>(k_pool.data()), num_pages, c.h.Hkv, page, c.Dk);
    kv.v_pages = bhsd(static_cast<const S*>(v_pool.data()), num_pages, c.h.Hkv, page, c.Dv);
    kv.block_table = table;
    kv.pages_per_seq = pages_per_seq;
    if constexpr (is_storage_int8<S>) {
      kv.k_scale_pages = bhsd(static_cast<const float*>(ks_pool.data()), num_pages, c.h.Hkv, page, 1);
      kv.v_scale_pages = bhsd(static_cast<const float*>(vs_pool.data()), num_pages, c.h.Hkv, page, 1);
    }
    return kv;
  }

  /// q and out in the case's layout: packed [1, Hq, Tq, ·] or batched [B, Hq, Nq, ·].
  tensor<Q> q_view() const {
    if (!c.batched_q) return q_packed;
    tensor<Q> q(B, c.h.Hq, c.nq[0], c.Dk, layout::bshd);
    for (std::size_t b = 0; b < B; ++b)
      for (std::size_t h = 0; h < c.h.Hq; ++h)
        for (std::size_t i = 0; i < c.nq[0]; ++i)
          for (std::size_t d = 0; d < c.Dk; ++d) q(b, h, i, d) = seqs[b].q.view(0, h, i, d);
    return q;
  }
  tensor<T> fresh_out() const {
    tensor<T> out = c.batched_q ? tensor<T>(B, c.h.Hq, c.nq[0], c.Dv, layout::bshd)
                                : tensor<T>(1, c.h.Hq, Tq, c.Dv, layout::bshd);
    std::fill(out.storage.begin(), out.storage.end(), T(nan_f));
    return out;
  }
  std::size_t q_batch() const { return c.batched_q ? B : 1; }
  std::size_t q_rows() const { return c.batched_q ? c.nq[0] : Tq; }
  /// Row i of sequence b in the out/lse layout: (batch entry, row).
  std::pair<std::size_t, std::size_t> at(std::size_t b, std::size_t i) const {
    return c.batched_q ? std::pair{b, i} : std::pair{std::size_t(0), std::size_t(cu_q[b]) + i};
  }

  varlen_batch lengths(kv_form f) const {
    varlen_batch vb;
    if (!c.batched_q) vb.cu_seqlens_q = cu_q;
    if (f == kv_form::packed) vb.cu_seqlens_k = cu_k;
    if (f != kv_form::packed) vb.seqused_k = used;
    return vb;
  }

  void run(kv_form f, const tensor<Q>& q, const variant& var, tensor<T>& out, std::vector<float>& lse) {
    attention_options opt = masks.opt;
    var.apply(opt);
    opt.lse = lse_view(lse.data(), q_batch(), c.h.Hq, q_rows());
    const varlen_batch vb = lengths(f);
    if constexpr (is_storage_int8<S>) {
      if (f == kv_form::packed) opt.k_scale = ks_packed.cview(), opt.v_scale = vs_packed.cview();
      if (f == kv_form::padded) opt.k_scale = ks_padded.cview(), opt.v_scale = vs_padded.cview();
    }
    switch (f) {
      case kv_form::packed:
        return attention_varlen(q.cview(), k_packed.cview(), v_packed.cview(), out.view, vb, opt);
      case kv_form::padded:
        return attention_varlen(q.cview(), k_padded.cview(), v_padded.cview(), out.view, vb, opt);
      case kv_form::paged16:
      case kv_form::paged32:
        return attention_varlen(q.cview(), paged(f == kv_form::paged16 ? 16 : 32), out.view, vb, opt);
    }
  }

  /// attention() on sequence b alone, with the variant: the bits varlen must give.
  void run_alone(std::size_t b, const variant& var, tensor<T>& out, std::vector<float>& lse) const {
    attention_options opt = seqs[b].with_scales(masks.opt);
    var.apply(opt);
    opt.lse = lse_view(lse.data(), 1, c.h.Hq, c.nq[b]);
    attention(seqs[b].q.cview(), seqs[b].k.cview(), seqs[b].v.cview(), out.view, opt);
  }
};

template <class T, class S, class Q>
void check_varlen(const varlen_case& c, const std::vector<kv_form>& forms) {
  varlen_problem<T, S, Q> p(c);
  const tensor<Q> q = p.q_view();
  error_model model = p.masks.model(c.Dk, std::max<std::size_t>(p.max_nk, 1));
  // int8: the oracle read scale·q rounded to T, the kernels use it unrounded.
  if (is_storage_int8<S>) model.storage_u = unit_roundoff<T>();
  const bool bf16_inputs = std::is_same_v<Q, bfloat16>;
  for (kv_form f : forms) {
    if (f == kv_form::paged16) p.make_pages(16);
    if (f == kv_form::paged32) p.make_pages(32);
    const variant* first = nullptr;
    tensor<T> first_out;
    std::vector<float> first_lse;
    for (const variant& var : every_variant(every_kernel_mode(), {1, 2, 3}, bf16_inputs)) {
      SCOPED_TRACE(std::string(form_name(f)) + " " + var.name());
      ++variants_per_path()[var.scalar ? "scalar" : isa_name(var.isa)];
      error_model m = model;
      const bool bf16_tiles = bf16_inputs && !var.scalar &&
                              (var.isa == simd_isa::avx512_bf16 ||
                               (var.isa == simd_isa::automatic && simd_path() == std::string("avx512_bf16")));
      if (bf16_tiles) m.weight_u = unit_roundoff<bfloat16>();
      const double tol = attention_tolerance<T>(m), lse_tol = lse_tolerance<T>(m);
      tensor<T> out = p.fresh_out();
      std::vector<float> lse(p.q_batch() * c.h.Hq * p.q_rows(), nan_f);
      p.run(f, q, var, out, lse);
      ASSERT_TRUE(std::isnan(out.storage[0])) << "wrote the element before out";
      const auto lse_at = [&](std::size_t b, std::size_t h, std::size_t i) {
        const auto [bb, r] = p.at(b, i);
        return lse[(bb * c.h.Hq + h) * p.q_rows() + r];
      };
      for (std::size_t b = 0; b < p.B; ++b) {
        if (c.nq[b] == 0) continue;
        tensor<T> alone(1, c.h.Hq, c.nq[b], c.Dv);
        std::vector<float> alone_lse(c.h.Hq * c.nq[b]);
        p.run_alone(b, var, alone, alone_lse);
        double err = 0, lse_err = 0;
        bool same_bits = true;
        for (std::size_t h = 0; h < c.h.Hq; ++h)
          for (std::size_t i = 0; i < c.nq[b]; ++i) {
            const auto [bb, r] = p.at(b, i);
            for (std::size_t d = 0; d < c.Dv; ++d) {
              const T got = out(bb, h, r, d);
              err = std::max(err, std::abs(double(got) - double(p.seqs[b].ref(0, h, i, d))));
              if (std::isnan(double(got))) err = INFINITY;
              same_bits &= std::memcmp(&got, &alone(0, h, i, d), sizeof(T)) == 0;
            }
            const float l = lse_at(b, h, i), want = p.seqs[b].ref_lse[h * c.nq[b] + i];
            lse_err = std::max(lse_err, l == want ? 0.0 : std::abs(double(l) - double(want)));
            if (std::isnan(l)) lse_err = INFINITY;
            same_bits &= std::memcmp(&l, &alone_lse[h * c.nq[b] + i], sizeof(float)) == 0;
          }
        EXPECT_LE(err, tol) << "sequence " << b << " (nq " << c.nq[b] << ", nk " << c.nk[b] << ")";
        EXPECT_LE(lse_err, lse_tol) << "sequence " << b << " LSE";
        EXPECT_TRUE(same_bits) << "sequence " << b << ": not the bits of attention() on it alone";
      }
      if (first == nullptr || !first->same_path(var)) {
        first = &var, first_out = std::move(out), first_lse = std::move(lse);
        continue;
      }
      EXPECT_EQ(0, std::memcmp(first_out.storage.data(), out.storage.data(), out.storage.size() * sizeof(T)))
          << "not the bits of " << first->name();
      EXPECT_EQ(0, std::memcmp(first_lse.data(), lse.data(), lse.size() * sizeof(float)));
    }
  }
}

const std::vector<kv_form> every_form = {kv_form::packed, kv_form::padded, kv_form::paged16, kv_form::paged32};

mask_spec bottom_right() {
  mask_spec m;
  m.causal = causal_mode::bottom_right;
  return m;
}

// Prefill of prompts of mixed lengths (0, 1, around the SIMD width and the flash
// tiles), causal, GQA; every form of K/V.
TEST(Varlen, PrefillMixedLengthsCausalGqa) {
  varlen_case c;
  c.nq = c.nk = {17, 0, 1, 40, 3, 129, 16};
  c.mask = bottom_right();
  check_varlen<float, float, float>(c, every_form);
}

// Chunked prefill: a chunk of new queries against a longer prefix, with a window,
// sinks and ALiBi, per sequence bottom-right aligned; MQA.
TEST(Varlen, ChunkedPrefillWindowSinksAlibiMqa) {
  varlen_case c;
  c.nq = {5, 1, 33, 0, 12};
  c.nk = {40, 7, 70, 12, 12};
  c.h = mqa;
  c.mask = bottom_right();
  c.mask.left = 9, c.mask.sinks = 2, c.mask.alibi = true;
  check_varlen<float, float, float>(c, every_form);
}

// Batched decode over different lengths (0, 1, 16, 17, past a 1024-key chunk), q
// batched, softcap and pruned heads; K/V padded and paged.
TEST(Varlen, BatchedDecodeMixedLengths) {
  varlen_case c;
  c.nq = {1, 1, 1, 1, 1, 1};
  c.nk = {0, 1, 16, 17, 1030, 100};
  c.batched_q = true;
  c.Dk = 32, c.Dv = 17;
  c.mask = bottom_right();
  c.mask.softcap = 5, c.mask.head_scale = true;
  check_varlen<float, float, float>(c, {kv_form::padded, kv_form::paged16, kv_form::paged32});
}

// Speculative decode (4 queries per sequence), top-left causal and a right window, MHA,
// no causal bottom-right: the diagonal per sequence.
TEST(Varlen, SpeculativeStepTopLeftWindowMha) {
  varlen_case c;
  c.nq = {4, 4, 4};
  c.nk = {4, 37, 64};
  c.h = mha;
  c.mask.causal = causal_mode::top_left;
  c.mask.right = 3;
  check_varlen<float, float, float>(c, every_form);
}

// 16-bit K/V (float q), bfloat16 q/K/V (the vdpbf16ps tiles where the CPU has them)
// and double.
TEST(Varlen, SixteenBitAndDouble) {
  varlen_case c;
  c.nq = {1, 9, 1, 20};
  c.nk = {33, 9, 200, 20};
  c.mask = bottom_right();
  check_varlen<float, half, float>(c, {kv_form::packed, kv_form::paged16});
  check_varlen<float, bfloat16, bfloat16>(c, {kv_form::packed, kv_form::paged32});
  check_varlen<double, double, double>(c, {kv_form::padded, kv_form::paged16});
}

// int8 K/V: scales packed and padded as the rows, or paged as the rows; prefill
// and decode sequences around the SIMD width, a tile and a 1024-key chunk.
TEST(Varlen, Int8) {
  varlen_case c;
  c.nq = {1, 9, 1, 20, 0, 1};
  c.nk = {33, 9, 1030, 20, 5, 16};
  c.mask = bottom_right();
  check_varlen<float, std::int8_t, float>(c, every_form);
}

// A serving loop on paged_kv_cache: three prompts appended in one call (pages of 16),
// a fork of one, different tokens appended to parent and child (copy-on-write of a
// shared last page), a rollback by truncate, then one decode step for every live
// sequence through cache.view(seqs) and cache.lengths(): each row against the oracle
// on that sequence's own K/V, kept here as dense rows.
TEST(Varlen, PagedCacheForkTruncateDecode) {
  constexpr std::size_t Hq = 4, Hkv = 2, D = 16;
  paged_kv_cache<float> cache(32, Hkv, 16, D, D, 8, 8);
  tensor<float> k(1, Hkv, 120, D), v(1, Hkv, 120, D);
  fill_uniform(k, 1), fill_uniform(v, 2);
  std::vector<std::vector<std::size_t>> rows(8);  // token rows of k/v each slot holds
  std::vector<std::int32_t> seqs = {cache.add_sequence(), cache.add_sequence(), cache.add_sequence()};
  const std::vector<std::int32_t> cu = {0, 20, 37, 70};
  cache.append(seqs, k.cview().seq_slice(0, 70), v.cview().seq_slice(0, 70), cu);
  for (std::size_t i = 0; i < 3; ++i)
    for (auto t = std::size_t(cu[i]); t < std::size_t(cu[i + 1]); ++t) rows[std::size_t(seqs[i])].push_back(t);
  const std::int32_t child = cache.fork(seqs[1]);  // 17 tokens: a shared, partly filled page
  rows[std::size_t(child)] = rows[std::size_t(seqs[1])];
  const std::size_t free_before = cache.free_pages();
  cache.append(child, k.cview().seq_slice(70, 5), v.cview().seq_slice(70, 5));
  EXPECT_EQ(cache.free_pages(), free_before - 1) << "the child's append copies the shared page";
  cache.append(seqs[1], k.cview().seq_slice(75, 2), v.cview().seq_slice(75, 2));
  for (std::size_t t = 70; t < 75; ++t) rows[std::size_t(child)].push_back(t);
  for (std::size_t t = 75; t < 77; ++t) rows[std::size_t(seqs[1])].push_back(t);
  cache.truncate(seqs[2], 18);  // a rejected speculation: 33 → 18 tokens
  rows[std::size_t(seqs[2])].resize(18);
  cache.append(seqs[2], k.cview().seq_slice(80, 3), v.cview().seq_slice(80, 3));
  for (std::size_t t = 80; t < 83; ++t) rows[std::size_t(seqs[2])].push_back(t);

  const std::vector<std::int32_t> live = {seqs[0], seqs[1], seqs[2], child};
  std::vector<std::int32_t> used;
  for (std::int32_t s : live) used.push_back(std::int32_t(cache.length(s)));
  tensor<float> q(live.size(), Hq, 1, D), out(live.size(), Hq, 1, D);
  fill_uniform(q, 3);
  attention_options opt;
  opt.causal = causal_mode::bottom_right;
  for (unsigned threads : {1u, 2u}) {
    opt.threads = threads;
    attention_varlen(q.cview(), cache.view(live), out.view, varlen_batch{{}, {}, used}, opt);
    for (std::size_t b = 0; b < live.size(); ++b) {
      const std::vector<std::size_t>& r = rows[std::size_t(live[b])];
      ASSERT_EQ(r.size(), cache.length(live[b]));
      tensor<float> kb(1, Hkv, r.size(), D), vb(1, Hkv, r.size(), D), qb(1, Hq, 1, D), want(1, Hq, 1, D);
      for (std::size_t h = 0; h < Hkv; ++h)
        for (std::size_t j = 0; j < r.size(); ++j)
          for (std::size_t d = 0; d < D; ++d) kb(0, h, j, d) = k(0, h, r[j], d), vb(0, h, j, d) = v(0, h, r[j], d);
      for (std::size_t h = 0; h < Hq; ++h)
        for (std::size_t d = 0; d < D; ++d) qb(0, h, 0, d) = q(b, h, 0, d);
      reference::attention(qb.cview(), kb.cview(), vb.cview(), want.view, opt);
      error_model m;
      m.Dk = D, m.Nk = r.size(), m.scale = 1 / std::sqrt(double(D));
      for (std::size_t h = 0; h < Hq; ++h)
        for (std::size_t d = 0; d < D; ++d)
          EXPECT_NEAR(out(b, h, 0, d), want(0, h, 0, d), attention_tolerance<float>(m))
              << "slot " << live[b] << " head " << h << ", " << threads << " threads";
    }
  }
}

// ---- bad arguments: a clear error, nothing written --------------------------------

struct bad_fixture {
  varlen_problem<float, float, float> p{[] {
    varlen_case c;
    c.nq = c.nk = {3, 5};
    return c;
  }()};
  tensor<float> out = p.fresh_out();

  template <class Fn>
  void expect_error(Fn&& fn, const std::string& words) {
    try {
      fn();
      ADD_FAILURE() << "no error; expected one naming: " << words;
    } catch (const headwise::error& e) {
      EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
    }
    for (std::size_t i = 0; i < out.storage.size(); ++i)
      if (!std::isnan(out.storage[i])) return ADD_FAILURE() << "out written at " << i;
  }
};

TEST(VarlenErrors, OffsetsLengthsAndMasks) {
  bad_fixture f;
  auto& p = f.p;
  auto run = [&](varlen_batch vb, attention_options opt = {}) {
    attention_varlen(p.q_packed.cview(), p.k_packed.cview(), p.v_packed.cview(), f.out.view, vb, opt);
  };
  std::vector<std::int32_t> decreasing = {0, 4, 3}, short_end = {0, 3, 7}, too_many = {4, 6};
  f.expect_error([&] { run({decreasing, p.cu_k, {}}); }, "must not decrease");
  f.expect_error([&] { run({short_end, p.cu_k, {}}); }, "cu_seqlens_q[B] must equal q.seq()");
  f.expect_error([&] { run({p.cu_q, p.cu_k, too_many}); }, "seqused_k[0] must lie in [0, 3]");
  attention_options masked;
  std::unique_ptr<bool[]> m(new bool[64]());
  masked.boolean_mask = mask_view<const bool>(m.get(), 1, 1, 8, 8);
  f.expect_error([&] { run({p.cu_q, p.cu_k, {}}, masked); }, "masks are per call");
  f.expect_error([&] { run({p.cu_q, {}, {}}); }, "k.batch() must equal the batch");
}

TEST(VarlenErrors, PagesAndAliasing) {
  bad_fixture f;
  auto& p = f.p;
  p.make_pages(16);
  varlen_batch vb{p.cu_q, {}, p.used};
  paged_kv_view<const float> kv = p.paged(16);
  paged_kv_view<const float> odd = kv;
  odd.k_pages = bhsd(static_cast<const float*>(p.k_pool.data()), p.num_pages, 2, 8, p.c.Dk);
  odd.v_pages = bhsd(static_cast<const float*>(p.v_pool.data()), p.num_pages, 2, 8, p.c.Dv);
  f.expect_error([&] { attention_varlen(p.q_packed.cview(), odd, f.out.view, vb); }, "multiple of 16");
  std::vector<std::int32_t> bad_table = p.table;
  bad_table[0] = std::int32_t(p.num_pages);
  paged_kv_view<const float> outside = kv;
  outside.block_table = bad_table;
  f.expect_error([&] { attention_varlen(p.q_packed.cview(), outside, f.out.view, vb); }, "outside the pool");
  f.expect_error([&] { attention_varlen(p.q_packed.cview(), kv, f.out.view, varlen_batch{p.cu_q, {}, {}}); },
                 "seqused_k must be given");
  std::vector<std::int32_t> too_long = {3, 17};  // 17 keys > one page of 16
  f.expect_error([&] { attention_varlen(p.q_packed.cview(), kv, f.out.view, varlen_batch{p.cu_q, {}, too_long}); },
                 "seqused_k[1] must lie in [0, 16]");
  // out over q's memory
  tensor<float> qf = p.q_packed;
  const tensor_view<float> out_on_q(qf.view.data(), 1, p.c.h.Hq, p.Tq, p.c.Dv, qf.view.batch_stride(),
                                    qf.view.head_stride(), qf.view.seq_stride());
  try {
    attention_varlen(qf.cview(), p.k_packed.cview(), p.v_packed.cview(), out_on_q, varlen_batch{p.cu_q, p.cu_k, {}});
    ADD_FAILURE() << "no error for out overlapping q";
  } catch (const headwise::error& e) {
    EXPECT_NE(std::string(e.what()).find("out overlaps the memory of q"), std::string::npos) << e.what();
  }
}

}  // namespace
