// tests/kernel_instances.cpp — the one copy of the attention kernels the tests link
// (why: kernel_instances.hpp).
#include "kernel_instances.hpp"

namespace headwise {
HWTEST_KERNEL_INSTANCES();
}  // namespace headwise
