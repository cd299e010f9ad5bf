# Warnings for the project's own targets (tests, benchmarks, examples) only;
# consumers of the INTERFACE library never inherit them.
function(headwise_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wshadow
                         -Werror=return-type)
  # GCC 12's avx512fintrin.h initialises its "undefined" vectors from themselves
  # (__m512 __Y = __Y;, GCC PR 105593, fixed in 13), so every inlined AVX-512
  # intrinsic warns -Wuninitialized in an AVX-512 build.
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13
     AND CMAKE_CXX_FLAGS MATCHES "avx512|march=native")
    target_compile_options(${target} PRIVATE -Wno-uninitialized -Wno-maybe-uninitialized)
  endif()
endfunction()
