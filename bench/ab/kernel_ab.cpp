// bench/ab/kernel_ab.cpp — the driver of scripts/kernel-ab: two versions of the
// kernels (kernel_ab_step.cpp built against two include trees, or one tree with two
// sets of flags) timed alternately in one process, on the README's shapes, each as a
// share of a peak measured in the same process between rounds.
//
// Why one process. On a shared VM the same build's time drifts by up to 2× between
// minutes (docs/decode-notes.md), so two builds timed in two processes, or one after
// the other, compare minutes, not kernels. Here every round times A then B (B then A
// on odd rounds), best of `reps` calls each, and the verdict is the median over
// rounds of the per-round ratio B/A (B's rate over A's: above 1, B is faster): each
// ratio compares two measurements seconds apart. Before each round a probe measures
// the ceiling the shape is held to: the FMA rate (prefill, GFLOP/s) or a plain read
// of 1 GiB (decode, GB/s), on as many threads as the kernels get; "% of peak" is the
// median over rounds of rate / that round's probe.
//
//   kernel_ab [--shapes LIST] [--rounds R] [--threads T] [--min-ms M] [--per-round]
//             [--kv N,..] [--types f32,f16] [--layouts rows,kblocks] [--batch B]
//             [--compute-only] [--name-a X] [--name-b Y] [--swap] [--summary FILE]
//   kernel_ab --combine FILE1 FILE2 [--tolerance F]
//     --rounds     rounds per shape (default 20: the prefill and decode shapes, both orders,
//                  in about 4 minutes; the backward ones add about 4 on one thread)
//     --shapes     comma-separated: prefill, backward, decode, or shape ids and id prefixes
//                  (S1, S2, N2048, S3, S4, window, S6, BS2, BS3, BMQA, KV512-f32-rows,
//                  KV32768, ...); default all
//     --kv, --types, --layouts  the decode shapes: every KV × type × K layout
//                  (default 512,4096,32768 × f32,f16 × rows,kblocks); kblocks reads K as
//                  key blocks (both sides must have them; KV a multiple of 16)
//     --batch      decode sequences (default 1; the prefill shapes are batch 1)
//     --min-ms     each side's measurement in a round is the best of as many calls as
//                  take about M ms (default 50), the same count for both sides
//     --compute-only  decode K/V views of seq stride 0: every key is one L1-resident row
//     --per-round  print each round's probe, times and ratio under the shape's row
//     --swap       side A runs tree b and side B tree a (scripts/kernel-ab's second order)
//     --summary    write each shape's median ratio to FILE, for --combine
//     --combine    read the summaries of both orders; print tree b over tree a in each
//                  and whether they agree beyond ±tolerance (default 0.02)
// Decode rows at KV >= 32768 cycle through enough K/V copies (≥ 1 GiB, ≥ 2× the
// last-level cache) that no call finds K/V left in cache by the one before, as
// decode_bench does; buffers are 2 MiB-aligned and advised to transparent huge pages,
// as kv_cache allocates them. Smaller KV rows run on one copy, as in decode_bench.
#include <immintrin.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <headwise/storage.hpp>  // this checkout's: only to round the fp16 test data

#include "../on_threads.hpp"
#include "kernel_ab.hpp"

namespace {

using run_fn = const char* (*)(const kernel_ab_call*);
using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

struct huge_buffer {
  void* p = nullptr;
  explicit huge_buffer(std::size_t bytes) {
    constexpr std::size_t huge = std::size_t(2) << 20;
    bytes = (bytes + huge - 1) / huge * huge;
    p = std::aligned_alloc(huge, bytes);
    if (p == nullptr) {
      std::fprintf(stderr, "kernel_ab: out of memory\n");
      std::exit(1);
    }
    madvise(p, bytes, MADV_HUGEPAGE);
  }
  huge_buffer(const huge_buffer&) = delete;
  huge_buffer& operator=(const huge_buffer&) = delete;
  ~huge_buffer() { std::free(p); }
};

// --- the probes -------------------------------------------------------------------

#if defined(__AVX512F__)
constexpr int fma_bits = 512;
#else
constexpr int fma_bits = 256;
#endif

/// GFLOP/s of one thread's 12 independent FMA chains on the widest registers this
/// build has (-march=native: the CPU's), over one burst of ~3.5 ms. 12 chains: 2 FMA
/// ports × 4–5 cycles of latency need 8–10 in flight, so the loop is bound by throughput.
double fma_burst() {
#if defined(__AVX512F__)
  using V = __m512;
  auto fma = [](V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); };
  auto set1 = [](float x) { return _mm512_set1_ps(x); };
#else
  using V = __m256;
  auto fma = [](V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); };
  auto set1 = [](float x) { return _mm256_set1_ps(x); };
#endif
  V a[12];  // both loops unrolled, or -O2 keeps a[] in memory: loads and stores, not FMAs
#pragma GCC unroll 12
  for (int i = 0; i < 12; ++i) a[i] = set1(float(i));
  const V x = set1(1.0000001f), y = set1(0.9999999f);
  constexpr long n = 1 << 20;
  const auto t0 = clock_type::now();
  for (long k = 0; k < n; ++k) {
#pragma GCC unroll 12
    for (V& e : a) e = fma(e, x, y);
    asm volatile(""
                 : "+x"(a[0]), "+x"(a[1]), "+x"(a[2]), "+x"(a[3]), "+x"(a[4]), "+x"(a[5]), "+x"(a[6]),
                   "+x"(a[7]), "+x"(a[8]), "+x"(a[9]), "+x"(a[10]), "+x"(a[11]));
  }
  return double(n) * 12 * (fma_bits / 32) * 2 / seconds_since(t0) * 1e-9;
}

/// The FMA rate of `threads` threads at once (GFLOP/s, summed), best of 5 bursts.
double fma_rate(unsigned threads) {
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    std::vector<double> rate(threads);
    headwise_bench::on_threads(threads, [&](unsigned t) { rate[t] = fma_burst(); });
    double sum = 0;
    for (double r : rate) sum += r;
    best = std::max(best, sum);
  }
  return best;
}

/// GB/s of a plain vector read of [p, p + bytes) by `threads` threads, one slice each.
double read_rate(const float* p, std::size_t bytes, unsigned threads) {
  const std::size_t n = bytes / sizeof(float) / threads / 32 * 32;
  std::vector<float> sink(threads);
  const auto t0 = clock_type::now();
  headwise_bench::on_threads(threads, [&](unsigned t) {
    const float* s = p + n * t;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (std::size_t i = 0; i < n; i += 32) {
      a0 = _mm256_add_ps(a0, _mm256_load_ps(s + i));
      a1 = _mm256_add_ps(a1, _mm256_load_ps(s + i + 8));
      a2 = _mm256_add_ps(a2, _mm256_load_ps(s + i + 16));
      a3 = _mm256_add_ps(a3, _mm256_load_ps(s + i + 24));
    }
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    sink[t] = lanes[0];
  });
  const double s = seconds_since(t0);
  asm volatile("" : : "r"(sink.data()) : "memory");
  return double(n * threads * sizeof(float)) / s * 1e-9;
}

std::size_t llc_bytes() {
  const long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
  return l3 > 0 ? std::size_t(l3) : std::size_t(64) << 20;
}

// --- the shapes ---------------------------------------------------------------------

struct shape {
  std::string id, name;
  bool decode = false, backward = false;
  std::size_t Hq = 8, Hkv = 8, N = 1024, d = 64;
  int causal = 0;           // prefill: 0 none, 1 top_left; decode is bottom_right
  std::int64_t window = 0;  // keys a query sees, itself included; 0 = no window
  bool half_kv = false, key_blocks = false;

  /// Prefill: 4·Hq·d per visible (query, key) pair, counted as prefill_bench counts
  /// them (N²/2 causal), so the rates read against the README's table; the backward
  /// 10·Hq·d (FlashAttention's 2.5×, as BM_headwise_backward counts).
  double flops() const {
    double pairs = double(N) * double(N) / (causal ? 2 : 1);
    if (window > 0) {
      pairs = 0;
      for (std::size_t i = 0; i < N; ++i) pairs += double(std::min<std::size_t>(i + 1, std::size_t(window)));
    }
    return (backward ? 10.0 : 4.0) * double(Hq) * double(d) * pairs;
  }
  /// Decode: the K+V bytes of one step, counted once, as decode_bench counts them.
  double bytes(std::size_t B) const { return double(B * Hkv * N * 2 * d) * (half_kv ? 2 : 4); }
};

/// The README's prefill rows (bench/prefill_bench.cpp: square_heads, odd_shapes,
/// long_sequence), in its order.
std::vector<shape> prefill_shapes() {
  auto p = [](const char* id, const char* name, std::size_t Hq, std::size_t Hkv, std::size_t N, std::size_t d,
              int causal, std::int64_t window) {
    shape s;
    s.id = id, s.name = name, s.Hq = Hq, s.Hkv = Hkv, s.N = N, s.d = d, s.causal = causal, s.window = window;
    return s;
  };
  return {p("S1", "H8 N1024 d64", 8, 8, 1024, 64, 0, 0),
          p("S2", "H8 N1024 d128", 8, 8, 1024, 128, 0, 0),
          p("N2048", "H8 N2048 d128", 8, 8, 2048, 128, 0, 0),
          p("S3", "causal H8 N2048 d128", 8, 8, 2048, 128, 1, 0),
          p("S4", "GQA causal Hq32 Hkv8 N512 d128", 32, 8, 512, 128, 1, 0),
          p("window", "causal window 512, H8 N4096 d64", 8, 8, 4096, 64, 1, 512),
          p("S6", "causal H1 N16384 d64", 1, 1, 16384, 64, 1, 0)};
}

/// attention_backward on BM_headwise_backward's shapes: S2, S3 and MQA (Hkv 1: one
/// whole task at B 1, so two threads run its key tiles as tasks: flash_backward.hpp).
std::vector<shape> backward_shapes() {
  std::vector<shape> out;
  for (shape s : prefill_shapes())
    if (s.id == "S2" || s.id == "S3") {
      s.backward = true, s.id = "B" + s.id, s.name = "backward " + s.name;
      out.push_back(s);
    }
  for (int causal : {0, 1}) {
    shape s;
    s.backward = true, s.Hq = 8, s.Hkv = 1, s.N = causal ? 2048 : 1024, s.d = 128, s.causal = causal;
    s.id = causal ? "BMQA-causal" : "BMQA";
    s.name = causal ? "backward causal MQA 8/1 N2048 d128" : "backward MQA 8/1 N1024 d128";
    out.push_back(s);
  }
  return out;
}

/// decode_bench's shape, Hq 32, Hkv 8, d 128, one query token: every KV × type × layout.
std::vector<shape> decode_shapes(const std::vector<std::size_t>& kvs, const std::vector<std::string>& types,
                                 const std::vector<std::string>& layouts) {
  std::vector<shape> out;
  for (std::size_t N : kvs)
    for (const std::string& t : types)
      for (const std::string& l : layouts) {
        shape s;
        s.decode = true, s.Hq = 32, s.Hkv = 8, s.N = N, s.d = 128;
        s.half_kv = t == "f16", s.key_blocks = l == "kblocks";
        s.id = "KV" + std::to_string(N) + "-" + t + "-" + l;
        s.name = "decode KV" + std::to_string(N) + " " + t + " " + l;
        out.push_back(s);
      }
  return out;
}

// --- small helpers ------------------------------------------------------------------

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

double median(std::vector<double> x) {
  std::sort(x.begin(), x.end());
  const std::size_t h = x.size() / 2;
  return x.size() % 2 == 1 ? x[h] : (x[h - 1] + x[h]) / 2;
}

[[noreturn]] void usage() {
  std::fprintf(stderr,
               "usage: kernel_ab [--shapes LIST] [--rounds R] [--threads T] [--min-ms M] [--per-round]\n"
               "                 [--kv N,..] [--types f32,f16] [--layouts rows,kblocks] [--batch B]\n"
               "                 [--compute-only] [--name-a X] [--name-b Y] [--swap] [--summary FILE]\n"
               "       kernel_ab --combine FILE1 FILE2 [--tolerance F]\n");
  std::exit(2);
}

/// --combine: both orders' summaries, as tree b over tree a.
int combine(const std::string& f1, const std::string& f2, double tol) {
  struct row {
    std::string name;
    double ratio[2] = {0, 0};
    int seen = 0;
  };
  std::vector<std::string> order;
  std::map<std::string, row> rows;
  std::string name_a = "a", name_b = "b";
  for (int f = 0; f < 2; ++f) {
    std::ifstream in(f == 0 ? f1 : f2);
    if (!in) {
      std::fprintf(stderr, "kernel_ab: cannot read %s\n", (f == 0 ? f1 : f2).c_str());
      return 2;
    }
    // id \t name \t swapped \t B/A median; "#names" \t tree a \t tree b
    for (std::string line; std::getline(in, line);) {
      std::vector<std::string> col;
      std::stringstream cols(line);
      for (std::string c; std::getline(cols, c, '\t');) col.push_back(c);
      if (col.size() == 3 && col[0] == "#names") {
        name_a = col[1], name_b = col[2];
        continue;
      }
      if (col.size() != 4) continue;
      row& r = rows[col[0]];
      if (r.seen == 0) order.push_back(col[0]);
      r.name = col[1];
      const double x = std::atof(col[3].c_str());
      r.ratio[f] = col[2] == "1" ? 1 / x : x;
      r.seen |= 1 << f;
    }
  }
  std::printf("\nboth orders, %s over %s (only a ratio that holds in both counts; ±%.3g%%):\n",
              name_b.c_str(), name_a.c_str(), tol * 100);
  std::printf("%-34s %9s %9s  %s\n", "shape", "order 1", "order 2", "verdict");
  for (const std::string& id : order) {
    const row& r = rows[id];
    if (r.seen != 3) continue;
    const double lo = std::min(r.ratio[0], r.ratio[1]), hi = std::max(r.ratio[0], r.ratio[1]);
    const bool slow = lo < 1 - tol;
    const bool fast = hi > 1 + tol;
    const std::string verdict = hi < 1 - tol   ? name_b + " slower"
                                : lo > 1 + tol ? name_b + " faster"
                                : slow && fast ? "orders disagree"
                                : slow         ? name_b + " slower in one order only"
                                : fast         ? name_b + " faster in one order only"
                                               : "same within tolerance";
    std::printf("%-34s %9.3f %9.3f  %s\n", r.name.c_str(), r.ratio[0], r.ratio[1], verdict.c_str());
  }
  return 0;
}

// --- one run ------------------------------------------------------------------------

struct options {
  unsigned threads = 1;
  std::size_t B = 1;
  // All shapes at 1 thread on 2 vCPUs of a Zen 4 VM: ~7 s of set-up, ~2 s of warm-up
  // and 4-6 s a round (quiet or shared), so both orders take about 4 minutes.
  int rounds = 20;
  double min_ms = 50, tol = 0.02;
  bool compute_only = false, per_round = false, swap = false;
  std::string selected = "all", summary, combine1, combine2, name[2] = {"a", "b"};
  std::vector<std::size_t> kvs = {512, 4096, 32768};
  std::vector<std::string> types = {"f32", "f16"}, layouts = {"rows", "kblocks"};
};

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string { return i + 1 < argc ? argv[++i] : (usage(), ""); };
    // clang-format off
    if (a == "--threads") o.threads = unsigned(std::atoi(value().c_str()));
    else if (a == "--batch") o.B = std::size_t(std::atol(value().c_str()));
    else if (a == "--rounds") o.rounds = std::atoi(value().c_str());
    else if (a == "--min-ms") o.min_ms = std::atof(value().c_str());
    else if (a == "--shapes") o.selected = value();
    else if (a == "--kv") {
      o.kvs.clear();
      for (const std::string& n : split(value())) o.kvs.push_back(std::size_t(std::atol(n.c_str())));
    } else if (a == "--types") o.types = split(value());
    else if (a == "--layouts") o.layouts = split(value());
    else if (a == "--compute-only") o.compute_only = true;
    else if (a == "--per-round") o.per_round = true;
    else if (a == "--swap") o.swap = true;
    else if (a == "--name-a") o.name[0] = value();
    else if (a == "--name-b") o.name[1] = value();
    else if (a == "--summary") o.summary = value();
    else if (a == "--tolerance") o.tol = std::atof(value().c_str());
    else if (a == "--combine") o.combine1 = value(), o.combine2 = value();
    else usage();
    // clang-format on
  }
  for (const std::string& t : o.types)
    if (t != "f32" && t != "f16") usage();
  for (const std::string& l : o.layouts)
    if (l != "rows" && l != "kblocks") usage();
  if (o.threads == 0 || o.B == 0 || o.rounds < 1 || !(o.min_ms > 0)) usage();
  return o;
}

/// The shapes --shapes names: "all", "prefill", "backward", "decode", ids and prefixes of ids.
std::vector<shape> select_shapes(const options& o) {
  std::vector<shape> all = prefill_shapes(), out;
  for (const shape& s : backward_shapes()) all.push_back(s);
  for (const shape& s : decode_shapes(o.kvs, o.types, o.layouts)) all.push_back(s);
  const std::vector<std::string> want = split(lower(o.selected));
  for (const shape& s : all) {
    const std::string id = lower(s.id);
    if (std::any_of(want.begin(), want.end(), [&](const std::string& w) {
          const char* group = s.decode ? "decode" : s.backward ? "backward" : "prefill";
          return w == "all" || w == group || id.compare(0, w.size(), w) == 0;
        }))
      out.push_back(s);
  }
  return out;
}

/// The decode K/V: copies sized for the largest KV asked for, in fp32 and rounded to
/// fp16 (smaller KV rows view the first copy's prefix), and the read probe's buffer.
struct decode_data {
  std::size_t copies = 0, probe_bytes = std::max(std::size_t(1) << 30, 2 * llc_bytes());
  std::vector<std::unique_ptr<huge_buffer>> kf, vf, kh, vh;
  std::unique_ptr<huge_buffer> probe;

  decode_data(const std::vector<shape>& shapes, const options& o) {
    std::size_t kv_max = 0;
    bool cold = false;
    for (const shape& s : shapes)
      if (s.decode) kv_max = std::max(kv_max, s.N), cold = cold || (s.N >= 32768 && !o.compute_only);
    if (kv_max == 0) return;
    const std::size_t elems = o.B * 8 * kv_max * 128, copy_bytes = 2 * elems * sizeof(float);
    copies = !cold ? 1 : std::max<std::size_t>(2, (probe_bytes + copy_bytes - 1) / copy_bytes);
    std::uint32_t s = 1;
    auto rnd = [&] {
      s = s * 1664525u + 1013904223u;
      return float(s >> 8) * (2.0f / 16777216.0f) - 1.0f;
    };
    for (std::size_t c = 0; c < copies; ++c) {
      kf.push_back(std::make_unique<huge_buffer>(elems * 4));
      vf.push_back(std::make_unique<huge_buffer>(elems * 4));
      kh.push_back(std::make_unique<huge_buffer>(elems * 2));
      vh.push_back(std::make_unique<huge_buffer>(elems * 2));
      auto* k32 = static_cast<float*>(kf.back()->p);
      auto* v32 = static_cast<float*>(vf.back()->p);
      auto* k16 = static_cast<std::uint16_t*>(kh.back()->p);
      auto* v16 = static_cast<std::uint16_t*>(vh.back()->p);
      for (std::size_t i = 0; i < elems; ++i) {
        k32[i] = rnd();
        v32[i] = rnd();
        k16[i] = headwise::half(k32[i]).bits;
        v16[i] = headwise::half(v32[i]).bits;
      }
    }
    probe = std::make_unique<huge_buffer>(probe_bytes);
    std::memset(probe->p, 0, probe_bytes);
  }
};

/// One shape's rounds: the probe and each side's best time (ms) per round.
struct measurement {
  std::string why;  // not empty: a side could not run the shape
  double diff = 0;  // max |out_B - out_A| (backward: of dq, dk, dv) after one call each
  int reps = 0;
  std::vector<double> peak, ms[2];
};

measurement measure(const shape& s, const options& o, decode_data& kv, std::size_t& next_copy) {
  const run_fn trees[2] = {kernel_ab_run_a, kernel_ab_run_b};
  const run_fn side_run[2] = {trees[o.swap ? 1 : 0], trees[o.swap ? 0 : 1]};
  kernel_ab_call call{};
  call.decode = s.decode, call.half_kv = s.half_kv, call.key_blocks = s.key_blocks;
  call.seq_stride_zero = s.decode && o.compute_only;
  call.causal = s.decode ? 2 : s.causal;
  call.window_left = s.window > 0 ? s.window - 1 : -1;
  call.B = s.decode ? o.B : 1, call.Hq = s.Hq, call.Hkv = s.Hkv, call.Nq = s.decode ? 1 : s.N, call.Nk = s.N;
  call.d = s.d, call.threads = o.threads;
  // prefill_bench's data: one normal generator for q, then k, then v
  std::mt19937 gen(1);
  std::normal_distribution<float> normal;
  std::vector<float> q(call.B * s.Hq * call.Nq * s.d), out(q.size()), k, v;
  for (float& x : q) x = normal(gen);
  if (!s.decode) {
    k.resize(s.Hkv * s.N * s.d), v.resize(k.size());
    for (float& x : k) x = normal(gen);
    for (float& x : v) x = normal(gen);
  }
  call.q = q.data(), call.out = out.data();
  // The backward's inputs: dout from the same generator, out and the LSE by side A's
  // forward, once; both sides then differentiate the same forward.
  std::vector<float> lse, dout, grads[3];
  if (s.backward) {
    lse.resize(s.Hq * s.N), dout.resize(q.size());
    for (float& x : dout) x = normal(gen);
    grads[0].resize(q.size()), grads[1].resize(k.size()), grads[2].resize(k.size());
    call.k = k.data(), call.v = v.data(), call.lse = lse.data();
    if (const char* e = side_run[0](&call)) {
      measurement m;
      m.why = std::string("side A's forward: ") + e;
      return m;
    }
    call.backward = true, call.dout = dout.data();
    call.dq = grads[0].data(), call.dk = grads[1].data(), call.dv = grads[2].data();
  }
  const auto results = [&] {
    std::vector<float> r = s.backward ? grads[0] : out;
    if (s.backward)
      r.insert(r.end(), grads[1].begin(), grads[1].end()),
          r.insert(r.end(), grads[2].begin(), grads[2].end());
    return r;
  };
  bool cycle = false;  // on after the warm-up, which runs both sides on one copy
  auto run = [&](int side) {
    if (s.decode) {
      const std::size_t c = cycle ? next_copy : 0;
      call.k = s.half_kv ? kv.kh[c]->p : kv.kf[c]->p;
      call.v = s.half_kv ? kv.vh[c]->p : kv.vf[c]->p;
      if (cycle) next_copy = (next_copy + 1) % kv.copies;
    } else {
      call.k = k.data(), call.v = v.data();
    }
    return side_run[side](&call);
  };

  // Warm-up: one call a side, timed only to count the calls of a measurement.
  measurement m;
  double once = 0;
  std::vector<float> result_a;
  for (int side = 0; side < 2; ++side) {
    const auto t0 = clock_type::now();
    if (const char* e = run(side)) {
      m.why = std::string("side ") + "AB"[side] + ": " + e;
      return m;
    }
    once = std::max(once, seconds_since(t0) * 1e3);
    if (side == 0) result_a = results();
  }
  const std::vector<float> result_b = results();
  for (std::size_t i = 0; i < result_b.size(); ++i)
    m.diff = std::max(m.diff, double(std::fabs(result_b[i] - result_a[i])));
  m.reps = std::max(1, int(std::lround(o.min_ms / once)));
  cycle = s.decode && s.N >= 32768 && !o.compute_only;

  for (int r = 0; r < o.rounds; ++r) {
    m.peak.push_back(s.decode ? read_rate(static_cast<const float*>(kv.probe->p), kv.probe_bytes, o.threads)
                              : fma_rate(o.threads));
    for (int order = 0; order < 2; ++order) {
      const int side = (order + r) % 2;
      double best = 1e300;
      for (int i = 0; i < m.reps; ++i) {
        const auto t0 = clock_type::now();
        run(side);
        best = std::min(best, seconds_since(t0) * 1e3);
      }
      m.ms[side].push_back(best);
    }
  }
  return m;
}

/// Prints the shape's row (medians over rounds); returns the median B/A.
double print_row(const shape& s, const options& o, const measurement& m) {
  const double work = s.decode ? s.bytes(o.B) : s.flops();  // per call: FLOPs or bytes
  std::vector<double> rate[2], share[2], ratio;
  for (std::size_t r = 0; r < m.peak.size(); ++r) {
    for (int side = 0; side < 2; ++side) {
      rate[side].push_back(work / (m.ms[side][r] * 1e-3) * 1e-9);
      share[side].push_back(rate[side].back() / m.peak[r] * 100);
    }
    ratio.push_back(m.ms[0][r] / m.ms[1][r]);  // B's rate over A's
  }
  const auto [lo, hi] = std::minmax_element(ratio.begin(), ratio.end());
  char range[40];
  std::snprintf(range, sizeof range, "%.3f [%.3f..%.3f]", median(ratio), *lo, *hi);
  std::printf("%-34s %4s %6.1f %7.1f %6.1f %7.1f %6.1f  %-22s %8.1e\n", s.name.c_str(),
              s.decode ? "GB/s" : "GF/s", median(m.peak), median(rate[0]), median(share[0]), median(rate[1]),
              median(share[1]), range, m.diff);
  if (o.per_round)
    for (std::size_t r = 0; r < ratio.size(); ++r)
      std::printf("    round %2zu: peak %6.1f  A %8.3f ms  B %8.3f ms  B/A %.3f  (best of %d)\n", r,
                  m.peak[r], m.ms[0][r], m.ms[1][r], ratio[r], m.reps);
  return median(ratio);
}

}  // namespace

int main(int argc, char** argv) {
  const options o = parse(argc, argv);
  if (!o.combine1.empty()) return combine(o.combine1, o.combine2, o.tol);
  const std::vector<shape> shapes = select_shapes(o);
  if (shapes.empty()) {
    std::fprintf(stderr, "kernel_ab: --shapes %s selects no shape\n", o.selected.c_str());
    return 2;
  }
  for (const shape& s : shapes)
    if (s.key_blocks && (s.N % 16 != 0 || o.compute_only)) {
      std::fprintf(stderr, "kernel_ab: %s: key blocks need KV a multiple of 16 and no --compute-only\n",
                   s.id.c_str());
      return 2;
    }
  decode_data kv(shapes, o);

  const int tree_of_side[2] = {o.swap ? 1 : 0, o.swap ? 0 : 1};
  const char* const about[2] = {kernel_ab_about_a(), kernel_ab_about_b()};
  std::printf(
      "kernel_ab: A = %s (%s), B = %s (%s); %u thread(s), %d rounds, best of ~%.0f ms a side a round\n",
      o.name[tree_of_side[0]].c_str(), about[tree_of_side[0]], o.name[tree_of_side[1]].c_str(),
      about[tree_of_side[1]], o.threads, o.rounds, o.min_ms);
  std::printf(
      "peak: prefill against %u thread(s) of %d-bit FMAs (GFLOP/s), decode against a plain read of "
      "%zu MiB (GB/s), measured before every round; %% = rate / that round's peak\n",
      o.threads, fma_bits, kv.probe_bytes >> 20);
  if (kv.copies > 0)
    std::printf("decode: B%zu Hq32 Hkv8 d128; %s%s\n", o.B,
                kv.copies == 1 ? "one K/V copy"
                               : (std::to_string(kv.copies) + " K/V copies, cycled at KV >= 32768").c_str(),
                o.compute_only ? "; compute only (K/V seq stride 0)" : "");
  std::printf("\n%-34s %4s %6s %7s %6s %7s %6s  %-22s %8s\n", "shape", "unit", "peak", "A", "A %", "B", "B %",
              "B/A median [min..max]", "max|B-A|");
  std::fflush(stdout);

  std::ofstream summary;
  if (!o.summary.empty()) {
    summary.open(o.summary);
    summary << "#names\t" << o.name[0] << '\t' << o.name[1] << '\n';
  }
  std::size_t next_copy = 0;
  for (const shape& s : shapes) {
    const measurement m = measure(s, o, kv, next_copy);
    if (!m.why.empty()) {
      std::printf("%-34s skipped: %s\n", s.name.c_str(), m.why.c_str());
    } else {
      const double ratio = print_row(s, o, m);
      if (summary) summary << s.id << '\t' << s.name << '\t' << (o.swap ? 1 : 0) << '\t' << ratio << '\n';
    }
    std::fflush(stdout);
  }
  return 0;
}
