// headwise/detail/internal_end.hpp — closes what detail/internal_begin.hpp opened:
// HEADWISE_INTERNAL is back to what it was before (undefined, for a user's code).
// No include guard: included once per public header.
#pragma pop_macro("HEADWISE_INTERNAL")
