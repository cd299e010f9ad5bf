// Compiled by CTest (the internal_guard.* tests), never built into a program: it
// includes one internal header by itself, HEADWISE_GUARD_HEADER, as a user might,
// and the compilation must stop at that header's #error (detail/internal_begin.hpp).
#include HEADWISE_GUARD_HEADER
