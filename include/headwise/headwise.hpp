// headwise/headwise.hpp — umbrella header: includes the public headers, nothing else.
#pragma once

#include "headwise/detail/internal_begin.hpp"

#include "headwise/version.hpp"
#include "headwise/error.hpp"
#include "headwise/isa.hpp"
#include "headwise/tensor.hpp"
#include "headwise/options.hpp"
#include "headwise/storage.hpp"
#include "headwise/quantize.hpp"
#include "headwise/reference.hpp"
#include "headwise/attention.hpp"
#include "headwise/backward.hpp"
#include "headwise/inspect.hpp"
#include "headwise/diagnostics.hpp"
#include "headwise/heatmap.hpp"
#include "headwise/merge.hpp"
#include "headwise/key_view.hpp"
#include "headwise/key_blocks.hpp"
#include "headwise/workspace.hpp"
#include "headwise/kv_cache.hpp"
#include "headwise/paged_view.hpp"
#include "headwise/paged_kv_cache.hpp"
#include "headwise/varlen.hpp"
#include "headwise/rope.hpp"

#include "headwise/detail/internal_end.hpp"

// Eigen-based (link headwise::eigen, include directly): <headwise/eigen.hpp>,
// <headwise/lora.hpp>, <headwise/mha.hpp>, <headwise/optim.hpp>, <headwise/safetensors.hpp>.
