// bench/ab/decode_ab.cpp — the driver of scripts/decode-ab: two versions of the decode
// kernel (decode_ab_step.cpp built against two include trees) timed alternately in
// one process.
//
// Why a separate driver. On a shared VM the same build's step time drifts by 2×
// between minutes (docs/decode-notes.md), so two builds timed in two processes, or
// one after the other, compare minutes, not kernels. Here every round times A then
// B (B then A on odd rounds), best of `reps` steps each, and the verdict is the
// median over rounds of the per-round ratio B/A: each ratio compares two
// measurements seconds apart.
//
//   decode_ab [--threads T] [--batch B] [--kv N] [--rounds R] [--types f32,f16]
//             [--compute-only] [--probe] [--kblocks]
//     --compute-only  K/V views with seq stride 0: every key is one L1-resident row
//     --kblocks       K read in key blocks (key_blocks.hpp; both sides must have them,
//                     N a multiple of 16, not with --compute-only)
//     --probe         before each round, time the core's FMA rate and a plain read
//                     of one K/V copy, and print them per round: a round whose FMA
//                     rate is low ran on a shared core (its steps run up to 2× slow)
// Steps cycle through enough K/V copies (≥ 1 GiB, ≥ 2× the last-level cache) that
// no step finds K/V left in cache by the one before; buffers are 2 MiB-aligned and
// advised to transparent huge pages, as kv_cache allocates them.
#include <immintrin.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <headwise/storage.hpp>  // this checkout's: only to round the fp16 test data

extern "C" {
bool decode_ab_step_A(int, const float*, const void*, const void*, float*, std::size_t, std::size_t, unsigned, bool,
                      bool);
bool decode_ab_step_B(int, const float*, const void*, const void*, float*, std::size_t, std::size_t, unsigned, bool,
                      bool);
}

namespace {

using step_fn = bool (*)(int, const float*, const void*, const void*, float*, std::size_t, std::size_t, unsigned,
                         bool, bool);

struct huge_buffer {
  void* p = nullptr;
  explicit huge_buffer(std::size_t bytes) {
    constexpr std::size_t huge = std::size_t(2) << 20;
    bytes = (bytes + huge - 1) / huge * huge;
    p = std::aligned_alloc(huge, bytes);
    if (p == nullptr) {
      std::fprintf(stderr, "decode_ab: out of memory\n");
      std::exit(1);
    }
    madvise(p, bytes, MADV_HUGEPAGE);
  }
  huge_buffer(const huge_buffer&) = delete;
  huge_buffer& operator=(const huge_buffer&) = delete;
  ~huge_buffer() { std::free(p); }
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

/// GFLOP/s of 12 independent 512-bit (or 256-bit) FMA chains on this core, best of 5.
double fma_rate() {
#if defined(__AVX512F__)
  using V = __m512;
  auto fma = [](V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); };
  auto set1 = [](float x) { return _mm512_set1_ps(x); };
  constexpr int lanes = 16;
#else
  using V = __m256;
  auto fma = [](V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); };
  auto set1 = [](float x) { return _mm256_set1_ps(x); };
  constexpr int lanes = 8;
#endif
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    V a[12];
    for (int i = 0; i < 12; ++i) a[i] = set1(float(i));
    const V x = set1(1.0000001f), y = set1(0.9999999f);
    constexpr long n = 200000;
    const auto t0 = std::chrono::steady_clock::now();
    for (long k = 0; k < n; ++k) {
      for (V& e : a) e = fma(e, x, y);
      asm volatile("" : "+x"(a[0]), "+x"(a[1]), "+x"(a[2]), "+x"(a[3]), "+x"(a[4]), "+x"(a[5]), "+x"(a[6]),
                   "+x"(a[7]), "+x"(a[8]), "+x"(a[9]), "+x"(a[10]), "+x"(a[11]));
    }
    best = std::max(best, double(n) * 12 * lanes * 2 / seconds_since(t0) * 1e-9);
  }
  return best;
}

/// GB/s of a plain vector read of [p, p + bytes).
double read_rate(const float* p, std::size_t bytes) {
  const std::size_t n = bytes / sizeof(float);
  const auto t0 = std::chrono::steady_clock::now();
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (std::size_t i = 0; i + 32 <= n; i += 32) {
    a0 = _mm256_add_ps(a0, _mm256_load_ps(p + i));
    a1 = _mm256_add_ps(a1, _mm256_load_ps(p + i + 8));
    a2 = _mm256_add_ps(a2, _mm256_load_ps(p + i + 16));
    a3 = _mm256_add_ps(a3, _mm256_load_ps(p + i + 24));
  }
  const double s = seconds_since(t0);
  alignas(32) float sink[8];
  _mm256_store_ps(sink, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  asm volatile("" : : "r"(sink) : "memory");
  return double(bytes) / s * 1e-9;
}

std::size_t llc_bytes() {
  const long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
  return l3 > 0 ? std::size_t(l3) : std::size_t(64) << 20;
}

double median(std::vector<double> x) {
  std::sort(x.begin(), x.end());
  return x[x.size() / 2];
}

[[noreturn]] void usage() {
  std::fprintf(stderr,
               "usage: decode_ab [--threads T] [--batch B] [--kv N] [--rounds R] [--types f32,f16]"
               " [--compute-only] [--probe] [--kblocks]\n");
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  unsigned threads = 1;
  std::size_t B = 1, N = 32768;
  int rounds = 8;
  bool f32 = true, f16 = true, compute_only = false, probe = false, kblocks = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> const char* { return i + 1 < argc ? argv[++i] : (usage(), nullptr); };
    if (a == "--threads") threads = unsigned(std::atoi(value()));
    else if (a == "--batch") B = std::size_t(std::atol(value()));
    else if (a == "--kv") N = std::size_t(std::atol(value()));
    else if (a == "--rounds") rounds = std::atoi(value());
    else if (a == "--types") {
      const std::string t = value();
      f32 = t.find("f32") != std::string::npos;
      f16 = t.find("f16") != std::string::npos;
    } else if (a == "--compute-only") compute_only = true;
    else if (a == "--probe") probe = true;
    else if (a == "--kblocks") kblocks = true;
    else usage();
  }
  if (threads == 0 || B == 0 || N == 0 || rounds < 1 || !(f32 || f16)) usage();
  if (kblocks && (N % 16 != 0 || compute_only)) {
    std::fprintf(stderr, "decode_ab: --kblocks needs --kv a multiple of 16 and no --compute-only\n");
    return 2;
  }

  const std::size_t elems = B * 8 * N * 128, f32_bytes = 2 * elems * sizeof(float);
  const std::size_t want = std::max(std::size_t(1) << 30, 2 * llc_bytes());
  const std::size_t copies = compute_only ? 1 : std::max<std::size_t>(1, (want + f32_bytes - 1) / f32_bytes);
  std::vector<std::unique_ptr<huge_buffer>> kf, vf, kh, vh;
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
  std::vector<float> q(B * 32 * 128), out(B * 32 * 128);
  for (float& x : q) x = rnd();

  const step_fn steps[2] = {decode_ab_step_A, decode_ab_step_B};
  std::vector<int> types;
  if (f32) types.push_back(0);
  if (f16) types.push_back(1);
  const int reps = N >= 32768 ? 4 : N >= 4096 ? 20 : 200;
  std::vector<double> best[2][2];  // [side][type]: best step time (ms) per round
  std::vector<double> probe_fma, probe_read;
  std::size_t c = 0;
  for (int r = 0; r < rounds; ++r) {
    if (probe) {
      probe_fma.push_back(fma_rate());
      // the copy used longest ago and next used last, so the read warms no step's cache
      probe_read.push_back(read_rate(static_cast<const float*>(kf[(c + copies - 1) % copies]->p), elems * 4));
    }
    for (int o = 0; o < 2; ++o) {
      const int side = (o + r) % 2;
      for (int type : types) {
        double b = 1e300;
        for (int i = 0; i < reps; ++i) {
          const void* k = type == 0 ? kf[c]->p : kh[c]->p;
          const void* v = type == 0 ? vf[c]->p : vh[c]->p;
          const auto t0 = std::chrono::steady_clock::now();
          if (!steps[side](type, q.data(), k, v, out.data(), B, N, threads, compute_only, kblocks)) {
            std::fprintf(stderr, "decode_ab: side %c's tree has no key blocks\n", "AB"[side]);
            return 2;
          }
          b = std::min(b, seconds_since(t0) * 1e3);
          c = (c + 1) % copies;
        }
        best[side][type].push_back(b);
      }
    }
  }

  std::printf("decode B%zu Hq32 Hkv8 d128 N%zu, %u thread(s), %d rounds%s%s, %zu K/V copies\n", B, N, threads,
              rounds, compute_only ? ", compute only" : "", kblocks ? ", K in key blocks" : "", copies);
  if (probe) {
    std::printf("round      ");
    for (int r = 0; r < rounds; ++r) std::printf(" %6d", r);
    std::printf("\nFMA GF/s   ");
    for (double x : probe_fma) std::printf(" %6.0f", x);
    std::printf("\nread GB/s  ");
    for (double x : probe_read) std::printf(" %6.1f", x);
    for (int type : types)
      for (int side = 0; side < 2; ++side) {
        std::printf("\n%s %c ms   ", type == 0 ? "f32" : "f16", "AB"[side]);
        for (double x : best[side][type]) std::printf(" %6.2f", x);
      }
    std::printf("\n");
  }
  for (int type : types) {
    std::vector<double> ratio;
    for (int r = 0; r < rounds; ++r) ratio.push_back(best[1][type][std::size_t(r)] / best[0][type][std::size_t(r)]);
    const auto [lo, hi] = std::minmax_element(ratio.begin(), ratio.end());
    std::printf("%s: A median %.3f ms (min %.3f) | B median %.3f ms (min %.3f) | B/A median %.3f [%.3f .. %.3f]\n",
                type == 0 ? "f32" : "f16", median(best[0][type]),
                *std::min_element(best[0][type].begin(), best[0][type].end()), median(best[1][type]),
                *std::min_element(best[1][type].begin(), best[1][type].end()), median(ratio), *lo, *hi);
  }
  return 0;
}
