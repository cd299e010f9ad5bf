// headwise/safetensors.hpp — tensors in the safetensors format, and LoRA adapters
// saved and loaded the way PEFT does (adapter_model.safetensors + adapter_config.json).
//
// The format (huggingface/safetensors): 8 bytes, the header length n as a
// little-endian u64; n bytes of JSON header (padded with spaces to a multiple of 8
// when written here), an object mapping each tensor name to
//   {"dtype": "F32", "shape": [rows, cols], "data_offsets": [begin, end]}
// plus an optional "__metadata__" object of strings; then the data, raw
// little-endian, row-major, offsets relative to the end of the header. Reading
// refuses with headwise::error, before anything is returned: a file shorter than
// 8 bytes, n above 100 MB (the crate's limit) or past the end, JSON that is not
// exactly that shape, an unknown dtype, a shape whose bytes differ from its
// offsets (sizes overflow-checked), and data that does not tile [0, data size)
// without gaps or overlaps once sorted by offset (the crate's rule; JSON order is
// free). dtypes: F32 and F64 read and written; F16 and BF16 read (headwise::half and
// bfloat16 widen them exactly). Element bytes are shifted in and out, so the code
// does not depend on the host's byte order.
//
// PEFT LoRA files: layer i's delta on projection p is stored as
//   base_model.model.model.layers.{i}.self_attn.{p}_proj.lora_A.weight   A [r × in]
//   base_model.model.model.layers.{i}.self_attn.{p}_proj.lora_B.weight   B [out × r]
// (row-major, as PEFT's nn.Linear weights are), and adapter_config.json carries
// "peft_type": "LORA", "r", "lora_alpha", "target_modules" (q_proj … o_proj),
// "use_rslora", "lora_dropout", "bias": "none", "task_type". One config describes
// every layer, so saving needs the same projections, rank, alpha and scaling in
// every layer (PEFT's rank_pattern / alpha_pattern are neither written nor read).
// Loading parses and checks everything — names, shapes against each layer's
// projections, the config — and builds every delta before it attaches any: on an
// error the layers are unchanged. Refused on load: modules other than q/k/v/o
// (an MLP's), bias other than "none", fan_in_fan_out, DoRA, rank or alpha patterns,
// a layer or projection the file lacks. The loaded adapter is added to each layer
// (or its deltas replaced, when it exists with deltas on the target projections
// only); the active mix is left as it was. lora_dropout is written as given and
// ignored on load (training-time only; headwise has no dropout).
//
// Layers: any range (std::vector, std::array, span) of multi_head_attention<T> or
// lora_adapter_set<T>, or of pointers to them; element i is model layer i.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "headwise/detail/internal_begin.hpp"

#include "headwise/detail/checks_io.hpp"
#include "headwise/detail/json.hpp"
#include "headwise/eigen.hpp"
#include "headwise/lora.hpp"
#include "headwise/mha.hpp"
#include "headwise/storage.hpp"

#include "headwise/detail/internal_end.hpp"

namespace headwise {

enum class safetensors_dtype { f16, bf16, f32, f64 };

struct safetensors_tensor {
  safetensors_dtype dtype = safetensors_dtype::f32;
  std::vector<std::uint64_t> shape;
  std::vector<unsigned char> data;  ///< raw little-endian, row-major
};

struct safetensors_file {
  std::map<std::string, safetensors_tensor> tensors;
  std::map<std::string, std::string> metadata;  ///< "__metadata__", when not empty
};

namespace detail {

inline constexpr std::uint64_t safetensors_max_header = 100'000'000;

struct dtype_info {
  safetensors_dtype dtype;
  const char* name;
  std::size_t bytes;
};
inline constexpr dtype_info safetensors_dtypes[] = {{safetensors_dtype::f16, "F16", 2},
                                                    {safetensors_dtype::bf16, "BF16", 2},
                                                    {safetensors_dtype::f32, "F32", 4},
                                                    {safetensors_dtype::f64, "F64", 8}};
inline const dtype_info& info(safetensors_dtype d) { return safetensors_dtypes[static_cast<int>(d)]; }

inline std::uint64_t load_le(const unsigned char* p, std::size_t bytes) {
  std::uint64_t v = 0;
  for (std::size_t i = bytes; i-- > 0;) v = (v << 8) | p[i];
  return v;
}
inline void store_le(unsigned char* p, std::uint64_t v, std::size_t bytes) {
  for (std::size_t i = 0; i < bytes; ++i, v >>= 8) p[i] = static_cast<unsigned char>(v & 0xFF);
}

/// Element i of a tensor, widened to double (exact for every dtype here).
inline double element(const safetensors_tensor& t, std::size_t i) {
  const std::size_t n = info(t.dtype).bytes;
  const std::uint64_t bits = load_le(t.data.data() + i * n, n);
  switch (t.dtype) {
    case safetensors_dtype::f16:
      return static_cast<double>(static_cast<float>(half::from_bits(static_cast<std::uint16_t>(bits))));
    case safetensors_dtype::bf16:
      return static_cast<double>(static_cast<float>(bfloat16::from_bits(static_cast<std::uint16_t>(bits))));
    case safetensors_dtype::f32: {
      const auto u = static_cast<std::uint32_t>(bits);
      float f;
      std::memcpy(&f, &u, 4);
      return static_cast<double>(f);
    }
    default: {
      double d;
      std::memcpy(&d, &bits, 8);
      return d;
    }
  }
}

/// Bytes a tensor of this shape and dtype holds, or false when that overflows.
inline bool tensor_bytes(const std::vector<std::uint64_t>& shape, std::size_t element, std::uint64_t& out) {
  out = element;
  for (std::uint64_t s : shape)
    if (__builtin_mul_overflow(out, s, &out)) return false;
  return true;
}

}  // namespace detail

/// The bytes of a safetensors file holding f (header comment).
inline std::string encode_safetensors(const safetensors_file& f) {
  detail::json_writer w;
  w.begin_object();
  if (!f.metadata.empty()) {
    w.key("__metadata__").begin_object();
    for (const auto& [k, v] : f.metadata) w.key(k).string(v);
    w.end_object();
  }
  std::uint64_t offset = 0;
  for (const auto& [name, t] : f.tensors) {
    std::uint64_t bytes = 0;
    detail::check_safetensors_tensor(
        detail::tensor_bytes(t.shape, detail::info(t.dtype).bytes, bytes) && bytes == t.data.size(), name,
        "data.size() must equal the product of its shape times the dtype size");
    w.key(name).begin_object().key("dtype").string(detail::info(t.dtype).name).key("shape").begin_array();
    for (std::uint64_t s : t.shape) w.number(s);
    w.end_array()
        .key("data_offsets")
        .begin_array()
        .number(offset)
        .number(offset + bytes)
        .end_array()
        .end_object();
    offset += bytes;
  }
  w.end_object();
  std::string header = w.str();
  header.append((8 - header.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  detail::store_le(reinterpret_cast<unsigned char*>(out.data()), header.size(), 8);
  out += header;
  for (const auto& entry : f.tensors) out.append(entry.second.data.begin(), entry.second.data.end());
  return out;
}

/// Parses and checks the bytes of a safetensors file (header comment).
inline safetensors_file decode_safetensors(std::string_view bytes) {
  using kind = detail::json_value::kind;
  std::uint64_t n =
      bytes.size() >= 8 ? detail::load_le(reinterpret_cast<const unsigned char*>(bytes.data()), 8) : 0;
  detail::check_safetensors_header_size(bytes.size(), n, detail::safetensors_max_header);
  const detail::json_value header = detail::json_reader::parse(bytes.substr(8, n));
  detail::check_json_kind(header.is(kind::object), "safetensors", "header", "an object");
  const std::string_view data = bytes.substr(8 + n);

  safetensors_file f;
  struct span_of {
    std::uint64_t begin, end;
    const std::string* name;
  };
  std::vector<span_of> spans;
  for (const auto& [name, v] : header.members) {
    if (name == "__metadata__") {
      detail::check_json_kind(v.is(kind::object), "safetensors", name, "an object");
      for (const auto& [k, s] : v.members) {
        detail::check_json_kind(s.is(kind::string), "safetensors", k,
                                "a string (metadata values are strings)");
        f.metadata.emplace(k, s.text);
      }
      continue;
    }
    detail::check_safetensors_tensor(v.is(kind::object) && v.members.size() == 3, name,
                                     "must be an object of exactly dtype, shape and data_offsets");
    const detail::json_value* dtype = v.find("dtype");
    const detail::json_value* shape = v.find("shape");
    const detail::json_value* offsets = v.find("data_offsets");
    detail::check_safetensors_tensor(
        dtype && dtype->is(kind::string) && shape && shape->is(kind::array) && offsets &&
            offsets->is(kind::array) && offsets->items.size() == 2,
        name, "needs \"dtype\" (a string), \"shape\" and \"data_offsets\" [begin, end]");
    safetensors_tensor t;
    const detail::dtype_info* di = nullptr;
    for (const auto& d : detail::safetensors_dtypes)
      if (dtype->text == d.name) di = &d;
    detail::check_safetensors_tensor(di != nullptr, name, "dtype must be F16, BF16, F32 or F64");
    t.dtype = di->dtype;
    for (const auto& s : shape->items) {
      t.shape.emplace_back();
      detail::check_safetensors_tensor(s.as_uint(t.shape.back()), name,
                                       "shape must hold non-negative integers");
    }
    std::uint64_t begin = 0, end = 0, size = 0;
    detail::check_safetensors_tensor(offsets->items[0].as_uint(begin) && offsets->items[1].as_uint(end), name,
                                     "data_offsets must be non-negative integers");
    detail::check_safetensors_tensor(begin <= end && end <= data.size(), name,
                                     "data_offsets must satisfy begin <= end <= the data size");
    detail::check_safetensors_tensor(detail::tensor_bytes(t.shape, di->bytes, size) && size == end - begin,
                                     name,
                                     "data_offsets must span the product of its shape times the dtype size");
    auto& slot = f.tensors[name];
    slot = std::move(t);
    spans.push_back({begin, end, &name});
  }
  std::sort(spans.begin(), spans.end(), [](const span_of& a, const span_of& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  std::uint64_t at = 0;
  for (const span_of& s : spans) {
    detail::check_safetensors_layout(*s.name, s.begin, at);
    at = s.end;
    const auto* p = reinterpret_cast<const unsigned char*>(data.data()) + s.begin;
    f.tensors[*s.name].data.assign(p, p + (s.end - s.begin));
  }
  detail::check_safetensors_end(at, data.size());
  return f;
}

namespace detail {

inline std::string read_file(const char* where, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  check_file(bool(in), where, path, "open");
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  check_file(!in.bad(), where, path, "read");
  return bytes;
}

inline void write_file(const char* where, const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  check_file(bool(out), where, path, "create");
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  check_file(!out.fail(), where, path, "write");
}

}  // namespace detail

inline void save_safetensors(const std::string& path, const safetensors_file& f) {
  detail::write_file("save_safetensors", path, encode_safetensors(f));
}
inline safetensors_file load_safetensors(const std::string& path) {
  return decode_safetensors(detail::read_file("load_safetensors", path));
}

/// A matrix (any Eigen expression of float or double) as a tensor [rows, cols] of
/// its dtype, F32 or F64, row-major, bit for bit.
template <class Derived>
safetensors_tensor to_safetensors(const Eigen::DenseBase<Derived>& m) {
  using T = typename Derived::Scalar;
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "F32 or F64");
  safetensors_tensor t;
  t.dtype = std::is_same_v<T, float> ? safetensors_dtype::f32 : safetensors_dtype::f64;
  t.shape = {std::uint64_t(m.rows()), std::uint64_t(m.cols())};
  t.data.resize(std::size_t(m.size()) * sizeof(T));
  unsigned char* p = t.data.data();
  for (Eigen::Index r = 0; r < m.rows(); ++r)
    for (Eigen::Index c = 0; c < m.cols(); ++c, p += sizeof(T)) {
      std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t> bits;
      const T value = m(r, c);
      std::memcpy(&bits, &value, sizeof(T));
      detail::store_le(p, bits, sizeof(T));
    }
  return t;
}

/// A tensor [rows, cols] (or [n], one row) of any dtype here as a matrix of T:
/// exact when T is at least as wide, rounded to nearest when F64 goes to float.
template <class T>
row_matrix<T> to_matrix(const safetensors_tensor& t, std::string_view name = "tensor") {
  detail::check_safetensors_matrix(name, t.shape.size());
  const auto rows = static_cast<Eigen::Index>(t.shape.size() == 2 ? t.shape[0] : 1);
  const auto cols = static_cast<Eigen::Index>(t.shape.back());
  row_matrix<T> m(rows, cols);
  for (std::size_t i = 0; i < std::size_t(m.size()); ++i) m.data()[i] = static_cast<T>(detail::element(t, i));
  return m;
}

// ------------------------------------------------------------------ PEFT LoRA

/// adapter_config.json, the fields headwise reads and writes.
struct peft_lora_config {
  std::size_t r = 0;
  double lora_alpha = 0;
  bool use_rslora = false;
  std::vector<projection> target_modules;  ///< q, k, v, o as q_proj … o_proj
  double lora_dropout = 0;
  std::string task_type = "CAUSAL_LM";
  std::string base_model_name_or_path;  ///< written as null when empty
};

namespace detail {

inline std::string module_name(projection p) { return std::string(projection_name(p)) + "_proj"; }

/// "base_model.model.model.layers.{layer}.self_attn.{p}_proj.lora_{A|B}.weight"
inline std::string peft_tensor_name(std::size_t layer, projection p, bool b) {
  return "base_model.model.model.layers." + std::to_string(layer) + ".self_attn." + module_name(p) +
         ".lora_" + (b ? "B" : "A") + ".weight";
}

/// The field's value when present and of kind k, else nullptr after checking it is absent.
inline const json_value* config_field(const json_value& cfg, const char* field, json_value::kind k,
                                      const char* kind_name, bool required) {
  const json_value* v = cfg.find(field);
  check_adapter_config(v != nullptr || !required, field, "is missing");
  if (v) check_adapter_config(v->is(k), field, std::string("must be ") + kind_name);
  return v;
}

/// An element of a layer range: the layer (or adapter set) it is or points to.
template <class E>
auto& deref(E& e) {
  if constexpr (std::is_pointer_v<std::remove_cv_t<E>>)
    return *e;
  else
    return e;
}
template <class T>
lora_adapter_set<T>& adapter_set(multi_head_attention<T>& l) {
  return l.adapters();
}
template <class T>
const lora_adapter_set<T>& adapter_set(const multi_head_attention<T>& l) {
  return l.adapters();
}
template <class T>
lora_adapter_set<T>& adapter_set(lora_adapter_set<T>& s) {
  return s;
}
template <class T>
const lora_adapter_set<T>& adapter_set(const lora_adapter_set<T>& s) {
  return s;
}
template <class T>
bool merged(const multi_head_attention<T>& l) {
  return l.adapters_merged();
}
template <class T>
bool merged(const lora_adapter_set<T>&) {
  return false;
}
template <class T>
T scalar_of(const lora_adapter_set<T>&);

/// The id of the adapter named name, or set.size() when there is none.
template <class T>
std::size_t find_adapter(const lora_adapter_set<T>& set, std::string_view name) {
  std::size_t id = 0;
  while (id < set.size() && set.name(typename lora_adapter_set<T>::adapter_id(id)) != name) ++id;
  return id;
}

/// Adapter id has a delta on a projection outside targets.
template <class T>
bool has_other_deltas(const lora_adapter_set<T>& set, std::size_t id,
                      const std::vector<projection>& targets) {
  for (std::size_t p = 0; p < projection_count; ++p)
    if (set.delta(typename lora_adapter_set<T>::adapter_id(id), projection(p)) &&
        std::find(targets.begin(), targets.end(), projection(p)) == targets.end())
      return true;
  return false;
}

}  // namespace detail

/// adapter_config.json text for c (PEFT's field names; inference_mode true).
inline std::string to_adapter_config_json(const peft_lora_config& c) {
  detail::json_writer w;
  w.begin_object().key("peft_type").string("LORA").key("task_type").string(c.task_type);
  w.key("base_model_name_or_path");
  c.base_model_name_or_path.empty() ? w.null() : w.string(c.base_model_name_or_path);
  w.key("r").number(std::uint64_t(c.r)).key("lora_alpha").number(c.lora_alpha);
  w.key("lora_dropout").number(c.lora_dropout).key("use_rslora").boolean(c.use_rslora);
  w.key("target_modules").begin_array();
  for (projection p : c.target_modules) w.string(detail::module_name(p));
  w.end_array().key("bias").string("none").key("fan_in_fan_out").boolean(false);
  w.key("inference_mode").boolean(true).key("modules_to_save").null();
  w.key("rank_pattern").begin_object().end_object().key("alpha_pattern").begin_object().end_object();
  return w.end_object().str();
}

/// Parses adapter_config.json and refuses what headwise cannot represent (header comment).
inline peft_lora_config parse_adapter_config(std::string_view text) {
  using kind = detail::json_value::kind;
  const detail::json_value cfg = detail::json_reader::parse(text);
  detail::check_adapter_config(cfg.is(kind::object), "(top level)", "must be an object");
  peft_lora_config c;
  const auto* type = detail::config_field(cfg, "peft_type", kind::string, "a string", true);
  detail::check_adapter_config(type->text == "LORA", "peft_type",
                               "must be \"LORA\" (got \"" + type->text + "\")");
  std::uint64_t r = 0;
  detail::check_adapter_config(
      detail::config_field(cfg, "r", kind::number, "a number", true)->as_uint(r) && r >= 1, "r",
      "must be an integer >= 1");
  c.r = std::size_t(r);
  c.lora_alpha = detail::config_field(cfg, "lora_alpha", kind::number, "a number", true)->as_double();
  if (const auto* v = detail::config_field(cfg, "use_rslora", kind::boolean, "a boolean", false))
    c.use_rslora = v->boolean;
  if (const auto* v = detail::config_field(cfg, "lora_dropout", kind::number, "a number", false))
    c.lora_dropout = v->as_double();
  if (const auto* v = detail::config_field(cfg, "task_type", kind::string, "a string", false))
    c.task_type = v->text;
  if (const auto* v = cfg.find("base_model_name_or_path"); v && v->is(kind::string))
    c.base_model_name_or_path = v->text;
  if (const auto* v = cfg.find("bias"))
    detail::check_adapter_config(v->is(kind::string) && v->text == "none", "bias",
                                 "must be \"none\": headwise loads no bias tensors");
  for (const char* flag : {"fan_in_fan_out", "use_dora"})
    if (const auto* v = cfg.find(flag))
      detail::check_adapter_config(v->is(kind::boolean) && !v->boolean, flag, "must be false");
  for (const char* pattern : {"rank_pattern", "alpha_pattern"})
    if (const auto* v = cfg.find(pattern))
      detail::check_adapter_config(v->is(kind::null) || (v->is(kind::object) && v->members.empty()), pattern,
                                   "must be empty: one rank and one alpha for every module");
  const auto* targets =
      detail::config_field(cfg, "target_modules", kind::array, "a list of module names", true);
  for (const auto& t : targets->items) {
    std::optional<projection> found;
    for (std::size_t p = 0; p < projection_count; ++p)
      if (t.is(kind::string) && t.text == detail::module_name(projection(p))) found = projection(p);
    detail::check_adapter_config(found.has_value(), "target_modules",
                                 "may name only q_proj, k_proj, v_proj and o_proj (got \"" + t.text + "\")");
    c.target_modules.push_back(*found);
  }
  return c;
}

/// Writes adapter `adapter` of every layer to directory/adapter_model.safetensors
/// and directory/adapter_config.json (the directory is created when missing).
/// Every layer needs deltas on the same projections with one rank, alpha and
/// scaling; options supplies task_type, base_model_name_or_path and lora_dropout.
template <class Layers>
void save_lora_adapters(const std::string& directory, const Layers& layers, std::string_view adapter,
                        peft_lora_config options = {}) {
  safetensors_file file;
  file.metadata["format"] = "pt";
  std::size_t i = 0;
  std::optional<std::pair<std::size_t, std::vector<projection>>> first;
  for (const auto& element : layers) {
    const auto& set = detail::adapter_set(detail::deref(element));
    const auto id = set.find(adapter);
    std::vector<projection> targets;
    for (std::size_t p = 0; p < projection_count; ++p)
      if (const auto* d = set.delta(id, projection(p))) {
        targets.push_back(projection(p));
        if (!first) {
          options.r = std::size_t(d->rank());
          options.lora_alpha = d->alpha();
          options.use_rslora = d->scaling_mode() == lora_scaling::rank_stabilized;
        }
        detail::check_lora_save(
            std::size_t(d->rank()) == options.r && d->alpha() == options.lora_alpha &&
                options.use_rslora == (d->scaling_mode() == lora_scaling::rank_stabilized),
            "layer " + std::to_string(i) + "'s " + detail::module_name(projection(p)) +
                " differs from the first delta in rank, alpha or scaling");
        file.tensors[detail::peft_tensor_name(i, projection(p), false)] = to_safetensors(d->a());
        file.tensors[detail::peft_tensor_name(i, projection(p), true)] = to_safetensors(d->b());
      }
    if (!first) first.emplace(i, targets);
    detail::check_lora_save(
        !targets.empty() && targets == first->second,
        "layer " + std::to_string(i) + " has adapter deltas on other projections than layer 0");
    ++i;
  }
  detail::check_lora_save(first.has_value(), "no layers given");
  options.target_modules = first->second;
  std::filesystem::create_directories(directory);
  const std::filesystem::path dir(directory);
  detail::write_file("save_lora_adapters", (dir / "adapter_model.safetensors").string(),
                     encode_safetensors(file));
  detail::write_file("save_lora_adapters", (dir / "adapter_config.json").string(),
                     to_adapter_config_json(options));
}

/// Loads directory/adapter_model.safetensors and adapter_config.json into adapter
/// `adapter` of every layer; returns the config read. All checks come first: on
/// an error no layer has changed (header comment).
template <class Layers>
peft_lora_config load_lora_adapters(const std::string& directory, Layers&& layers, std::string_view adapter) {
  const std::filesystem::path dir(directory);
  const peft_lora_config cfg =
      parse_adapter_config(detail::read_file("load_lora_adapters", (dir / "adapter_config.json").string()));
  const safetensors_file file = load_safetensors((dir / "adapter_model.safetensors").string());
  using T = decltype(detail::scalar_of(detail::adapter_set(detail::deref(*std::begin(layers)))));
  const lora_scaling scaling = cfg.use_rslora ? lora_scaling::rank_stabilized : lora_scaling::standard;

  // 1. Check and build every delta; nothing is attached yet.
  std::vector<std::array<std::optional<lora_delta<T>>, projection_count>> deltas;
  std::set<std::string> expected;
  for (auto& element : layers) {
    const std::size_t i = deltas.size();
    const auto& layer = detail::deref(element);
    const auto& set = detail::adapter_set(layer);
    const auto id = detail::find_adapter(set, adapter);
    detail::check_lora_load(i, !detail::merged(layer), !adapter.empty(),
                            id == set.size() || !detail::has_other_deltas(set, id, cfg.target_modules));
    auto& per = deltas.emplace_back();
    for (projection p : cfg.target_modules) {
      const std::string names[] = {detail::peft_tensor_name(i, p, false),
                                   detail::peft_tensor_name(i, p, true)};
      const projection_shape& s = set.shape(p);
      const std::uint64_t want[2][2] = {{cfg.r, std::uint64_t(s.in)}, {std::uint64_t(s.out), cfg.r}};
      for (int f = 0; f < 2; ++f) {
        const auto it = file.tensors.find(names[f]);
        detail::check_lora_tensor(it != file.tensors.end(), names[f],
                                  "missing from adapter_model.safetensors");
        const auto& shape = it->second.shape;
        detail::check_lora_tensor(
            shape.size() == 2 && shape[0] == want[f][0] && shape[1] == want[f][1], names[f],
            "shape must be [" + std::to_string(want[f][0]) + ", " + std::to_string(want[f][1]) +
                "] (r from adapter_config.json, the layer's projection sizes)");
        expected.insert(names[f]);
      }
      per[std::size_t(p)].emplace(to_matrix<T>(file.tensors.at(names[0])),
                                  to_matrix<T>(file.tensors.at(names[1])), cfg.lora_alpha, scaling);
    }
  }
  for (const auto& entry : file.tensors)
    detail::check_lora_tensor(expected.count(entry.first) == 1, entry.first,
                              "is not a LoRA factor of the given layers' target_modules");
  // 2. Attach: nothing below can fail.
  std::size_t i = 0;
  for (auto& element : layers) {
    auto& set = detail::adapter_set(detail::deref(element));
    const std::size_t found = detail::find_adapter(set, adapter);
    const auto id = found < set.size() ? static_cast<typename lora_adapter_set<T>::adapter_id>(found)
                                       : set.add(std::string(adapter));
    for (projection p : cfg.target_modules) set.attach(id, p, std::move(*deltas[i][std::size_t(p)]));
    ++i;
  }
  return cfg;
}

}  // namespace headwise
