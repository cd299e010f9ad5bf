# Warnings for the project's own targets (tests, benchmarks, examples) only;
# consumers of the INTERFACE library never inherit them. Warnings become errors
# through CMAKE_COMPILE_WARNING_AS_ERROR (the `test` and `gcc` presets set it; CMake >= 3.24),
# which initialises each target's COMPILE_WARNING_AS_ERROR property and which
# `cmake --compile-no-warning-as-error` overrides; the flags here never hold -Werror.
include_guard(GLOBAL)

# GCC 12's avx512fintrin.h initialises its "undefined" vectors from themselves
# (__m512 __Y = __Y;, GCC PR 105593, fixed in 13), so every inlined AVX-512 intrinsic
# warns -Wuninitialized in an AVX-512 build. Whether this build is one is asked of
# the compiler with the build's flags (any -march that implies AVX-512, -mavx512f,
# -march=native on an AVX-512 CPU), not read from CMAKE_CXX_FLAGS; re-asked at every
# configure, so changed flags are seen. A cache variable, not a normal one: the
# include guard is global and the function runs in sibling directories (tests/, bench/).
set(HEADWISE_GCC_PR105593 OFF CACHE INTERNAL "GCC < 13 building AVX-512 code")
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
  include(CheckCXXSourceCompiles)
  unset(HEADWISE_COMPILER_TARGETS_AVX512 CACHE)
  set(CMAKE_REQUIRED_QUIET ON)
  check_cxx_source_compiles("
#ifndef __AVX512F__
#error no AVX-512
#endif
int main() { return 0; }" HEADWISE_COMPILER_TARGETS_AVX512)
  unset(CMAKE_REQUIRED_QUIET)
  if(HEADWISE_COMPILER_TARGETS_AVX512)
    set(HEADWISE_GCC_PR105593 ON CACHE INTERNAL "GCC < 13 building AVX-512 code")
  endif()
endif()

# The warnings a demanding consumer turns on: the headers must add none to a build
# with them (tests/warnings), and the kernel objects compile with them too.
set(headwise_consumer_warnings -Wall -Wextra -Wpedantic -Wconversion -Wsign-conversion -Wshadow)

function(headwise_without_pr105593 target)
  if(HEADWISE_GCC_PR105593)
    target_compile_options(${target} PRIVATE -Wno-uninitialized -Wno-maybe-uninitialized)
  endif()
endfunction()

function(headwise_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wshadow
                         -Werror=return-type)
  headwise_without_pr105593(${target})
endfunction()

# The kernel objects: a demanding consumer's warnings.
function(headwise_consumer_warnings target)
  target_compile_options(${target} PRIVATE ${headwise_consumer_warnings})
  headwise_without_pr105593(${target})
endfunction()
