// headwise/detail/checks_io.hpp — the checks of what comes from files: the JSON
// reader (detail/json.hpp), safetensors headers and data, adapter_config.json, and
// their match with the layers they are loaded into (safetensors.hpp). Eigen-free:
// sizes come as integers. Each failure throws headwise::error naming the function,
// what was expected and what was found.
#pragma once

#ifndef HEADWISE_INTERNAL
#error "headwise/detail/* is internal: include <headwise/headwise.hpp>"
#endif

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "headwise/detail/checks_base.hpp"

namespace headwise::detail {

/// JSON text: `ok`, else "malformed JSON at byte <pos>: <what>".
inline void check_json(bool ok, std::size_t pos, const char* what) {
  if (!ok) fail("json", "malformed JSON at byte ", pos, ": ", what);
}

/// A JSON value has the kind the reader of a file expects (`ok`).
inline void check_json_kind(bool ok, const char* where, std::string_view name, const char* kind) {
  if (!ok) fail(where, "\"", name, "\" must be ", kind);
}

/// A file could be opened, read or written in full.
inline void check_file(bool ok, const char* where, const std::string& path, const char* what) {
  if (!ok) fail(where, "cannot ", what, " '", path, "'");
}

/// A safetensors file: 8 bytes of header length n, then n bytes of header, with
/// n <= max_header and n <= size − 8.
inline void check_safetensors_header_size(std::size_t size, std::uint64_t n, std::uint64_t max_header) {
  const char* where = "safetensors";
  if (size < 8) fail(where, "the file is shorter than its 8-byte header length (", size, " bytes)");
  if (n > max_header) fail(where, "the header length ", n, " exceeds the limit of ", max_header, " bytes");
  if (n > size - 8) fail(where, "the header length ", n, " runs past the end of the file (", size, " bytes)");
}

/// A condition on one tensor of a safetensors header (names the tensor).
inline void check_safetensors_tensor(bool ok, std::string_view name, const char* what) {
  if (!ok) fail("safetensors", "tensor '", name, "': ", what);
}

/// The tensors' data, sorted by offset, tile [0, data_size) with no gap and no
/// overlap (as the safetensors crate requires): tensor `name` starts at `expected`.
inline void check_safetensors_layout(std::string_view name, std::uint64_t begin, std::uint64_t expected) {
  if (begin != expected)
    fail("safetensors", "tensor '", name, "' data starts at ", begin, ", expected ", expected,
         " (tensor data must follow one another without gaps or overlaps)");
}

/// The last tensor ends where the file's data ends.
inline void check_safetensors_end(std::uint64_t end, std::uint64_t data_size) {
  if (end != data_size)
    fail("safetensors", "the tensors' data ends at ", end, " but the file holds ", data_size,
         " bytes of data after the header");
}

/// A tensor name is unique in a file being written.
inline void check_safetensors_unique(bool ok, std::string_view name) {
  if (!ok) fail("save_safetensors", "tensor '", name, "' appears twice");
}

/// A tensor read as a matrix: 2-D (or 1-D, one row).
inline void check_safetensors_matrix(std::string_view name, std::size_t dims) {
  if (dims != 1 && dims != 2)
    fail("safetensors", "tensor '", name, "' has ", dims, " dimensions, expected 2");
}

/// adapter_config.json: a condition on one of its fields.
inline void check_adapter_config(bool ok, const char* field, const std::string& what) {
  if (!ok) fail("load_lora_adapters", "adapter_config.json: \"", field, "\" ", what);
}

/// A LoRA file's tensor matches the layer it is loaded into, or the file's config.
inline void check_lora_tensor(bool ok, std::string_view name, const std::string& what) {
  if (!ok) fail("load_lora_adapters", "tensor '", name, "': ", what);
}

/// Saving: a condition on the layers' adapters (same rank, alpha and scaling, same
/// projections in every layer: what one adapter_config.json can describe).
inline void check_lora_save(bool ok, const std::string& what) {
  if (!ok) fail("save_lora_adapters", what);
}

/// Loading into layer i: not merged, a non-empty adapter name, and an existing
/// adapter of that name has no delta outside the file's target_modules.
inline void check_lora_load(std::size_t layer, bool unmerged, bool named, bool only_targets) {
  const char* where = "load_lora_adapters";
  if (!unmerged) fail(where, "layer ", layer, " has merged adapters (call unmerge_adapters() first)");
  if (!named) fail(where, "the adapter name must not be empty");
  if (!only_targets)
    fail(where, "layer ", layer, "'s adapter of that name has deltas on projections the file does not target",
         " (load into a new adapter name)");
}

}  // namespace headwise::detail
