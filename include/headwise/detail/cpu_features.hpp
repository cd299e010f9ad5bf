// headwise/detail/cpu_model.hpp — which x86 core this process runs on, read once.
//
// Vector width and instruction sets are compile-time choices (-march, simd/pack.hpp).
// What a compiler flag cannot tell is how the core's hardware prefetchers treat an
// access pattern, and that decides how a memory-bound kernel should request its
// data: the decode kernel's stream requests are tuned per core (kernels/decode.hpp).
// cpuid gives vendor, family and model; anything else (other architectures,
// compilers without <cpuid.h>) reads as unknown and gets the default tuning.
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
  amd_zen4,  ///< AMD family 19h, models 10h–1Fh, 60h–7Fh, A0h–AFh (Genoa, Raphael, Phoenix, Bergamo)
};

/// The x86 family and model as cpuid reports them (base plus extended fields).
struct cpu_signature {
  bool amd = false;
  unsigned family = 0, model = 0;
};

inline cpu_signature read_cpu_signature() {
  cpu_signature s;
#ifdef HEADWISE_HAS_CPUID
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid(0, &eax, &ebx, &ecx, &edx)) return s;
  s.amd = ebx == 0x68747541u && edx == 0x69746e65u && ecx == 0x444d4163u;  // "AuthenticAMD"
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return s;
  const unsigned base_family = (eax >> 8) & 0xf, base_model = (eax >> 4) & 0xf;
  s.family = base_family == 0xf ? base_family + ((eax >> 20) & 0xff) : base_family;
  s.model = base_family == 0xf || base_family == 0x6 ? (((eax >> 16) & 0xf) << 4) | base_model : base_model;
#endif
  return s;
}

inline cpu_core classify(const cpu_signature& s) {
  if (s.amd && s.family == 0x19) {
    const unsigned m = s.model;
    if ((m >= 0x10 && m <= 0x1f) || (m >= 0x60 && m <= 0x7f) || (m >= 0xa0 && m <= 0xaf))
      return cpu_core::amd_zen4;
  }
  return cpu_core::unknown;
}

/// This process's core, read on first use.
inline cpu_core this_cpu_core() {
  static const cpu_core core = classify(read_cpu_signature());
  return core;
}

}  // namespace headwise::detail
