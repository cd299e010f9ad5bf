// headwise/workspace.hpp — the scratch memory of attention calls, owned by the caller.
//
//   headwise::workspace ws;                  // empty; grows to the largest call it serves
//   options.scratch = &ws;                   // attention() takes its scratch from ws
//   attention(q, k, v, out, options);        // the first call allocates, later ones reuse
//   ws.bytes(); ws.release();                // what it holds; give it back
//
// A kernel's scratch is one buffer per worker thread (the flash kernel's Q, O, K and
// V tiles, 0.1–0.3 MiB; a decode task's scores) and one shared buffer (the decode
// kernel's per-chunk partials, its chunk list and its active rows), plus, for
// attention_varlen, the list of per-sequence calls. A workspace keeps
// each buffer at the largest size any call asked of it, rounded up to a power of two,
// and never shrinks: a model that runs the same shapes step after step allocates
// only on its first step, and a decode loop whose KV grows a token a step
// reallocates only when a buffer crosses a power of two.
// Without options.scratch, attention() uses a workspace owned by the calling thread
// (thread_local, freed when the thread ends): the same zero-allocation steady state,
// with memory the caller cannot release early.
//
// A workspace serves one call at a time: two threads calling attention() at once
// need two workspaces (the thread-local default gives each its own).
#pragma once

#include <cstddef>
#include <memory>
#include <new>
#include <vector>

namespace headwise {

namespace detail {
struct workspace_access;
}

class workspace {
 public:
  workspace() = default;
  workspace(workspace&&) noexcept = default;
  workspace& operator=(workspace&&) noexcept = default;

  /// Bytes held now, over all buffers.
  std::size_t bytes() const noexcept {
    std::size_t n = shared_.size + calls_.size;
    for (const buffer& b : workers_) n += b.size;
    return n;
  }

  /// Frees every buffer; the next call allocates again.
  void release() noexcept {
    shared_ = buffer{};
    calls_ = buffer{};
    workers_.clear();
    workers_.shrink_to_fit();
  }

 private:
  friend struct detail::workspace_access;

  /// A 64-byte-aligned buffer that only grows, to a power of two of at least 4 KiB:
  /// scratch that follows a growing KV cache (a row of Nk logits, the partials of
  /// Nk / 1024 chunks) then reallocates O(log Nk) times, not once per step.
  struct buffer {
    struct aligned_delete {
      void operator()(std::byte* p) const noexcept { ::operator delete[](p, std::align_val_t{64}); }
    };
    std::unique_ptr<std::byte[], aligned_delete> data;
    std::size_t size = 0;

    std::byte* at_least(std::size_t bytes) {
      if (bytes > size) {
        std::size_t grown = 4096;
        while (grown < bytes) grown *= 2;
        data.reset();  // free first: the peak stays at the larger of the two
        size = 0;
        data.reset(static_cast<std::byte*>(::operator new[](grown, std::align_val_t{64})));
        size = grown;
      }
      return data.get();
    }
  };

  buffer shared_;
  buffer calls_;  // attention_varlen's per-sequence calls and rules
  std::vector<buffer> workers_;
};

namespace detail {

/// How kernels take their scratch from a workspace, on the calling thread, before
/// their workers start (so workers only read the pointers).
struct workspace_access {
  /// The shared buffer, at least `bytes` long.
  static std::byte* shared(workspace& ws, std::size_t bytes) { return ws.shared_.at_least(bytes); }

  /// The buffer attention_varlen builds its per-sequence calls in (the kernels never
  /// touch it), at least `bytes` long.
  static std::byte* calls(workspace& ws, std::size_t bytes) { return ws.calls_.at_least(bytes); }

  /// Makes `workers` worker buffers of at least `bytes` each.
  static void reserve_workers(workspace& ws, unsigned workers, std::size_t bytes) {
    if (ws.workers_.size() < workers) ws.workers_.resize(workers);
    for (unsigned w = 0; w < workers; ++w) ws.workers_[w].at_least(bytes);
  }
  /// Worker w's buffer (after reserve_workers); workers only read the list.
  static std::byte* worker(workspace& ws, unsigned w) noexcept { return ws.workers_[w].data.get(); }
};

/// The calling thread's own workspace: attention()'s scratch when options.scratch is null.
inline workspace& thread_workspace() {
  thread_local workspace ws;
  return ws;
}

/// Hands out 64-byte-aligned pieces of one buffer in order. Constructed on a null
/// base it only counts, so one function of a kernel both sizes its scratch (count,
/// then bytes()) and carves it (the same calls on the real buffer).
class scratch_carver {
 public:
  explicit scratch_carver(std::byte* base = nullptr) noexcept : base_(base) {}

  template <class U>
  U* take(std::size_t count) noexcept {
    U* p = base_ ? reinterpret_cast<U*>(base_ + used_) : nullptr;
    used_ += (count * sizeof(U) + 63) / 64 * 64;
    return p;
  }
  std::size_t bytes() const noexcept { return used_; }

 private:
  std::byte* base_;
  std::size_t used_ = 0;
};

/// Bytes of a kernel's per-worker Scratch (carved from a scratch_carver and a tiling),
/// counted by carving it from a null base.
template <class Scratch, class Tiling>
std::size_t scratch_bytes_of(const Tiling& t) {
  scratch_carver count;
  Scratch(count, t);
  return count.bytes();
}

}  // namespace detail

}  // namespace headwise
