// tests/fuzz/attention_fuzz.cpp — the libFuzzer target: attention(), merge_states
// and kv_cache under every shape, layout, storage type, mask, option, kernel mode,
// SIMD path and thread count that bytes can describe.
//
// Four modes (HEADWISE_FUZZ_MODE=oracle|bad|sequence|differential runs one; unset,
// the first byte picks):
//   oracle        a valid call (problem.hpp; sometimes NaN and ±inf in the inputs)
//                 against reference::attention within the derived tolerances, plus
//                 canaries around every output, every output element written, the
//                 same bits at a second thread count. A free output layout that
//                 overlaps (decided by brute force) must be refused instead.
//   bad           a valid call broken one way (bad_arguments.hpp): headwise::error
//                 from attention() and the oracle, and not one output byte changed.
//   sequence      kv_cache appends and steps, and merge_states over split keys
//                 (sequences.hpp).
//   differential  larger shapes (up to 300 × 3000, d 160) where the oracle is too
//                 slow: two variants (flash, decode, plain; scalar or each SIMD path)
//                 must agree within twice the tolerance, and threads bit for bit.
// A finding prints the case and aborts: libFuzzer saves the input, which replays
// with the same HEADWISE_FUZZ_MODE. docs/development.md has the commands.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bad_arguments.hpp"
#include "sequences.hpp"

namespace {

using namespace hwfuzz;

enum class mode { oracle, bad, sequence, differential };
constexpr const char* mode_names[] = {"oracle", "bad", "sequence", "differential"};
int forced_mode = -1;  // from HEADWISE_FUZZ_MODE
bool verbose = false;  // HEADWISE_FUZZ_VERBOSE: each case in words on stderr
mode current = mode::oracle;

// Sizes: the oracle's cost is capped near 2·10^5 multiply-adds per case (about a
// millisecond under ASan), the differential mode's near 1.5·10^7 (its scalar runs
// near 3·10^6, the plain kernel's near 10^6: tens of milliseconds under ASan).
constexpr limits oracle_limits{2, 3, 3, 48, 1100, 72, 2e5};
constexpr limits differential_limits{2, 4, 4, 300, 3000, 160, 1.5e7};
constexpr limits merge_limits{2, 2, 3, 24, 200, 40, 1e5};

[[noreturn]] void finding(const std::string& what, const std::string& about) {
  std::fprintf(stderr, "\nheadwise fuzz finding (mode %s): %s\n  case: %s\n", mode_names[int(current)],
               what.c_str(), about.c_str());
  std::abort();
}

/// The checks every successful run makes: canaries, written outputs.
template <class T, class S>
void check_guards(const problem<T, S>& p, const std::string& who) {
  if (p.out.damaged()) finding(who + ": wrote outside out's view", p.about);
  if (p.out.unwritten()) finding(who + ": left out elements unwritten", p.about);
  if (p.opt.lse.is_set() && (p.lse.damaged() || p.lse.unwritten()))
    finding(who + ": wrote outside the LSE view or left it unwritten", p.about);
}

/// Runs r on p twice (r's threads, then another count): the second must give the
/// first's bits. Leaves the first run's results in p.
template <class T, class S>
void run_twice(problem<T, S>& p, const run_choice& r, workspace& ws) {
  p.run(r, r.var.threads, ws);
  check_guards(p, r.var.name());
  const auto first = p.out.bytes(), first_lse = p.lse.bytes();
  p.run(r, r.other_threads, ws);
  if (first != p.out.bytes() || first_lse != p.lse.bytes())
    finding(r.var.name() + ": not the same bits with " + std::to_string(r.other_threads) + " threads",
            p.about);
}

template <class T, class S>
void compare(const problem<T, S>& p, const tensor_view<const T>& ref, const tensor_view<const float>& ref_lse,
             double factor, const std::string& who) {
  const double err = hwtest::max_abs_diff(p.out.view, ref), tol = factor * p.tolerance();
  if (!(err <= tol))
    finding(who + ": |out - reference| = " + std::to_string(err) + " > " + std::to_string(tol), p.about);
  if (!p.opt.lse.is_set()) return;
  const double lse_err = hwtest::max_abs_diff(p.lse.view, ref_lse), lse_tol = factor * p.lse_tolerance();
  if (!(lse_err <= lse_tol))
    finding(who + ": |lse - reference| = " + std::to_string(lse_err) + " > " + std::to_string(lse_tol),
            p.about);
}

workspace& caller_workspace() {
  static workspace ws;  // grows across cases, as a caller's would
  return ws;
}

template <class T, class S>
void oracle_case(byte_source& in) {
  const run_choice r = pick_run(in);  // first: short inputs still vary the run
  problem<T, S> p(in, oracle_limits, in.chance(64), true);
  if (!p.out.distinct()) {
    const attention_options o = p.prepare(r, r.var.threads, caller_workspace());
    const auto before = p.out.bytes();
    try {
      p.call(o);
    } catch (const headwise::error&) {
      if (before != p.out.bytes()) finding("rejected an overlapping output after writing to it", p.about);
      return;
    }
    finding("an output whose elements overlap was accepted", p.about);
  }
  try {
    run_twice(p, r, caller_workspace());
  } catch (const headwise::error& e) {
    finding(std::string("a valid call threw: ") + e.what(), p.about + " | " + r.var.name());
  }
  hwtest::tensor<T> ref;
  std::vector<float> ref_lse;
  p.oracle(ref, ref_lse);
  if (verbose) std::fprintf(stderr, "oracle case: %s | %s\n", p.about.c_str(), r.var.name().c_str());
  compare(p, ref.cview(), p.lse_of(ref_lse), 1.0, r.var.name());
}

template <class T, class S>
void differential_case(byte_source& in) {
  run_choice a = pick_run(in), b = pick_run(in);
  problem<T, S> p(in, differential_limits, in.chance(32), false);
  const double cost = double(p.B) * double(p.Hq) * double(p.Nq) * double(p.Nk) * double(p.Dk + p.Dv);
  for (run_choice* r : {&a, &b}) {  // the scalar builds only on smaller shapes
    if (r->var.mode == kernel_mode::plain && cost > 1e6) r->var.mode = kernel_mode::flash;
    if (r->var.scalar && cost > 3e6) r->var.scalar = false;
  }
  try {
    p.run(b, b.var.threads, caller_workspace());
    check_guards(p, b.var.name());
    hwtest::tensor<T> copy(p.B, p.Hq, p.Nq, p.Dv);
    std::vector<float> copy_lse(p.B * p.Hq * p.Nq);
    for (std::size_t x = 0; x < p.B; ++x)
      for (std::size_t h = 0; h < p.Hq; ++h)
        for (std::size_t i = 0; i < p.Nq; ++i) {
          for (std::size_t d = 0; d < p.Dv; ++d) copy(x, h, i, d) = p.out.view(x, h, i, d);
          if (p.opt.lse.is_set()) copy_lse[(x * p.Hq + h) * p.Nq + i] = p.lse.view(x, h, i, 0);
        }
    run_twice(p, a, caller_workspace());
    compare(p, copy.cview(), p.lse_of(copy_lse), 2.0, a.var.name() + " against " + b.var.name());
  } catch (const headwise::error& e) {
    finding(std::string("a valid call threw: ") + e.what(), p.about);
  }
}

template <class T, class S>
void bad_case(byte_source& in) {
  problem<T, S> p(in, {2, 3, 3, 12, 40, 12, 1e5}, false, false);
  call_args<T, S> a(p);
  pick_run(in).var.apply(a.opt);
  const std::string what = corrupt(in, p, a);
  if (what.empty()) return;
  const auto out_before = p.out.bytes(), lse_before = p.lse.bytes();
  auto expect_error = [&](bool reference_call) {
    try {
      if (reference_call)
        reference::attention(a.q, a.k, a.v, a.out, a.opt);
      else if (a.blocked)
        attention(a.q, a.kb, a.v, a.out, a.opt);
      else
        attention(a.q, a.k, a.v, a.out, a.opt);
    } catch (const headwise::error&) {
      if (out_before != p.out.bytes() || lse_before != p.lse.bytes())
        finding(std::string(reference_call ? "reference: " : "") + what + ": rejected after writing",
                p.about);
      return;
    }
    finding(std::string(reference_call ? "reference accepted: " : "accepted: ") + what, p.about);
  };
  expect_error(false);
  if (a.reference_checks && !a.blocked) expect_error(true);
}

template <class T>
struct type_tag {
  using type = T;
};

/// Calls fn(type_tag<T>, type_tag<S>) for the compute and storage types a byte picks.
template <class Fn>
void with_types(byte_source& in, Fn&& fn) {
  switch (in.below(4)) {
    case 0:
      return fn(type_tag<float>{}, type_tag<float>{});
    case 1:
      return fn(type_tag<float>{}, type_tag<half>{});
    case 2:
      return fn(type_tag<float>{}, type_tag<bfloat16>{});
    default:
      return fn(type_tag<double>{}, type_tag<double>{});
  }
}

template <class Tag>
using type_of = typename Tag::type;

/// A kv_cache of each storage type and layout (a third of the cases each: merges).
void sequence_case(byte_source& in) {
  static constexpr void (*caches[])(byte_source&, report) = {
      &cache_sequence<float, kv_layout::rows>,    &cache_sequence<float, kv_layout::key_blocks>,
      &cache_sequence<half, kv_layout::rows>,     &cache_sequence<half, kv_layout::key_blocks>,
      &cache_sequence<bfloat16, kv_layout::rows>, &cache_sequence<bfloat16, kv_layout::key_blocks>,
      &cache_sequence<double, kv_layout::rows>,   &cache_sequence<double, kv_layout::key_blocks>};
  const std::size_t pick = in.below(12);
  if (pick < 8) return caches[pick](in, finding);
  with_types(in, [&](auto t, auto s) {
    merge_sequence<type_of<decltype(t)>, type_of<decltype(s)>>(in, merge_limits, finding);
  });
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  verbose = std::getenv("HEADWISE_FUZZ_VERBOSE") != nullptr;
  if (const char* m = std::getenv("HEADWISE_FUZZ_MODE")) {
    for (int i = 0; i < 4; ++i)
      if (std::strcmp(m, mode_names[i]) == 0) forced_mode = i;
    if (forced_mode < 0) {
      std::fprintf(stderr, "HEADWISE_FUZZ_MODE must be oracle, bad, sequence or differential (got %s)\n", m);
      std::exit(2);
    }
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  byte_source in(data, size);
  current = mode(forced_mode >= 0 ? forced_mode : int(in.below(4)));
  switch (current) {
    case mode::oracle:
      with_types(in, [&](auto t, auto s) { oracle_case<type_of<decltype(t)>, type_of<decltype(s)>>(in); });
      break;
    case mode::bad:
      with_types(in, [&](auto t, auto s) { bad_case<type_of<decltype(t)>, type_of<decltype(s)>>(in); });
      break;
    case mode::sequence:
      sequence_case(in);
      break;
    case mode::differential:
      with_types(in,
                 [&](auto t, auto s) { differential_case<type_of<decltype(t)>, type_of<decltype(s)>>(in); });
      break;
  }
  return 0;
}
