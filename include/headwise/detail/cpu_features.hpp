// headwise/detail/cpu_features.hpp — what this process's CPU can run, read once.
//
// Two questions are answered here and nowhere else:
//   which SIMD paths the CPU and the OS support (cpuid leaf 1 and 7, and xgetbv:
//     the OS must save the ymm/zmm state, or an AVX-512 CPU still faults on zmm);
//   which core it is (vendor, family): the decode kernel's stream requests
//     are tuned to how a core's hardware prefetchers treat its access pattern.
// Anything without cpuid (other architectures, compilers without <cpuid.h>) reads
// as "no x86 features" and unknown core.
#pragma once

#ifndef HEADWISE_INTERNAL
#error "headwise/detail/* is internal: include <headwise/headwise.hpp>"
#endif

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#define HEADWISE_HAS_CPUID 1
#endif

namespace headwise::detail {

enum class cpu_core {
  unknown,
  amd_family_19h,  ///< AMD family 19h: Zen 3 (Milan, Vermeer, ...) and Zen 4 (Genoa, Raphael, Bergamo, ...)
};

/// The vendor and x86 family as cpuid reports them (base plus extended family).
struct cpu_signature {
  bool amd = false;
  unsigned family = 0;
};

/// The instruction-set extensions the kernels' paths need, each usable (CPU and OS).
struct cpu_features {
  bool sse2 = false;
  bool avx2 = false, fma = false, f16c = false;                          // x86-64-v3 path
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false;  // x86-64-v4 path
  bool avx512bf16 = false;  // avx512_bf16 path
  bool amx_bf16 = false;    // reported, not yet used
};

struct cpu_info {
  cpu_signature signature;
  cpu_features features;
};

inline cpu_info read_cpu_info() {
  cpu_info info;
#ifdef HEADWISE_HAS_CPUID
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid(0, &eax, &ebx, &ecx, &edx)) return info;
  const unsigned max_leaf = eax;
  cpu_signature& s = info.signature;
  s.amd = ebx == 0x68747541u && edx == 0x69746e65u && ecx == 0x444d4163u;  // "AuthenticAMD"
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return info;
  const unsigned base_family = (eax >> 8) & 0xf;
  s.family = base_family == 0xf ? base_family + ((eax >> 20) & 0xff) : base_family;

  cpu_features& f = info.features;
  f.sse2 = (edx >> 26) & 1;
  const bool osxsave = (ecx >> 27) & 1, avx = (ecx >> 28) & 1;
  f.fma = (ecx >> 12) & 1;
  f.f16c = (ecx >> 29) & 1;
  // XCR0: bits 1–2 = xmm/ymm state saved by the OS, 5–7 = opmask and zmm state.
  unsigned xcr0 = 0;
  if (osxsave) {
    unsigned hi = 0;
    __asm__ volatile("xgetbv" : "=a"(xcr0), "=d"(hi) : "c"(0));
  }
  const bool os_ymm = (xcr0 & 0x6) == 0x6, os_zmm = (xcr0 & 0xe6) == 0xe6;
  if (!(avx && os_ymm)) f.fma = f.f16c = false;
  if (max_leaf >= 7) {
    __cpuid_count(7, 0, eax, ebx, ecx, edx);
    f.avx2 = avx && os_ymm && ((ebx >> 5) & 1);
    const bool zmm = os_zmm && f.avx2;
    f.avx512f = zmm && ((ebx >> 16) & 1);
    f.avx512dq = f.avx512f && ((ebx >> 17) & 1);
    f.avx512bw = f.avx512f && ((ebx >> 30) & 1);
    f.avx512vl = f.avx512f && ((ebx >> 31) & 1);
    f.amx_bf16 = (edx >> 22) & 1;
    __cpuid_count(7, 1, eax, ebx, ecx, edx);
    f.avx512bf16 = f.avx512f && ((eax >> 5) & 1);
  }
#endif
  return info;
}

inline cpu_core classify(const cpu_signature& s) {
  return s.amd && s.family == 0x19 ? cpu_core::amd_family_19h : cpu_core::unknown;
}

/// This process's CPU, read on first use.
inline const cpu_info& this_cpu() {
  static const cpu_info info = read_cpu_info();
  return info;
}

inline cpu_core this_cpu_core() { return classify(this_cpu().signature); }

}  // namespace headwise::detail
