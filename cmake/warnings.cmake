# Warnings for the project's own targets (tests, benchmarks, examples) only;
# consumers of the INTERFACE library never inherit them.
function(headwise_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wshadow
                         -Werror=return-type)
endfunction()
