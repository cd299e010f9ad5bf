// tests/safetensors_test.cpp — the safetensors format (round trip, refusals of
// malformed files, the JSON reader behind it), adapter_config.json, and PEFT LoRA
// adapters saved, reloaded and read from a file written by a stdlib-only Python
// script (tests/data/make_peft_lora.py).
#include <headwise/safetensors.hpp>

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <unistd.h>

#ifndef HEADWISE_TEST_DATA_DIR
#error "HEADWISE_TEST_DATA_DIR must name tests/data"
#endif

#include "eigen_util.hpp"

namespace {

using hwtest::random_matrix;

using headwise::projection;
using headwise::safetensors_dtype;
using headwise::safetensors_file;
template <class T>
using mat = headwise::row_matrix<T>;

template <class T>
bool same_bits(const mat<T>& a, const mat<T>& b) {
  return a.rows() == b.rows() && a.cols() == b.cols() &&
         std::memcmp(a.data(), b.data(), sizeof(T) * std::size_t(a.size())) == 0;
}

/// A file of this header text and data: 8-byte little-endian length first.
std::string file_bytes(const std::string& header, const std::string& data = "",
                       std::uint64_t length = ~0ull) {
  if (length == ~0ull) length = header.size();
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[std::size_t(i)] = char((length >> (8 * i)) & 0xFF);
  return out + header + data;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::filesystem::path scratch_dir(const std::string& name) {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("headwise_safetensors_test_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  return dir;
}

// ------------------------------------------------------------------ format

TEST(safetensors, round_trip_is_bit_identical) {
  mat<float> a = random_matrix<float>(3, 5, 1);
  a(0, 0) = -0.0f;
  a(0, 1) = std::numeric_limits<float>::denorm_min();
  a(0, 2) = std::numeric_limits<float>::infinity();
  a(1, 0) = std::numeric_limits<float>::quiet_NaN();
  const mat<double> b = random_matrix<double>(4, 2, 2);
  const mat<float> wide = random_matrix<float>(2, 9, 3);
  safetensors_file f;
  f.tensors["a"] = headwise::to_safetensors(a);
  f.tensors["b \"quoted\" \\ name"] = headwise::to_safetensors(b);
  f.tensors["block"] = headwise::to_safetensors(wide.middleCols(2, 4));  // strided: written row by row
  f.tensors["empty"] = headwise::to_safetensors(mat<float>(0, 3));
  f.metadata["format"] = "pt";
  f.metadata["note"] = "tab\there, é, \x01";

  const auto path = scratch_dir("round_trip").string() + ".safetensors";
  headwise::save_safetensors(path, f);
  const safetensors_file g = headwise::load_safetensors(path);
  std::filesystem::remove(path);
  ASSERT_EQ(g.tensors.size(), 4u);
  EXPECT_EQ(g.metadata, f.metadata);
  for (const auto& [name, t] : f.tensors) {
    const auto& u = g.tensors.at(name);
    EXPECT_EQ(u.dtype, t.dtype) << name;
    EXPECT_EQ(u.shape, t.shape) << name;
    EXPECT_EQ(u.data, t.data) << name;
  }
  EXPECT_TRUE(same_bits(headwise::to_matrix<float>(g.tensors.at("a")), a));
  EXPECT_TRUE(same_bits(headwise::to_matrix<double>(g.tensors.at("b \"quoted\" \\ name")), b));
  EXPECT_TRUE(
      same_bits(headwise::to_matrix<float>(g.tensors.at("block")), mat<float>(wide.middleCols(2, 4))));
  EXPECT_EQ(headwise::to_matrix<float>(g.tensors.at("empty")).rows(), 0);
  // the bytes again: encoding is deterministic, the header padded to 8
  const std::string bytes = headwise::encode_safetensors(g);
  EXPECT_EQ(bytes, headwise::encode_safetensors(f));
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | std::uint8_t(bytes[std::size_t(i)]);
  EXPECT_EQ(n % 8, 0u);
}

TEST(safetensors, little_endian_bytes_as_the_format_says) {
  safetensors_file f;
  f.tensors["x"] = headwise::to_safetensors(mat<float>::Constant(1, 1, 1.0f));  // 0x3F800000
  const std::string bytes = headwise::encode_safetensors(f);
  EXPECT_EQ(bytes.substr(bytes.size() - 4), std::string("\x00\x00\x80\x3F", 4));
}

TEST(safetensors, reads_keys_in_any_order_and_padded_headers) {
  // data: y (2 floats) first, then x (1 float); x listed first in the JSON.
  const std::string data("\x00\x00\x80\x3F\x00\x00\x00\x40\x00\x00\x40\x40", 12);  // 1, 2, 3
  const std::string header = R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[8,12]},)"
                             R"( "y" : {"shape":[2,1],"data_offsets":[0,8],"dtype":"F32"}}   )";
  const safetensors_file f = headwise::decode_safetensors(file_bytes(header, data));
  EXPECT_EQ(headwise::to_matrix<float>(f.tensors.at("x"))(0, 0), 3.0f);
  const mat<double> y = headwise::to_matrix<double>(f.tensors.at("y"));
  EXPECT_EQ(y(0, 0), 1.0);
  EXPECT_EQ(y(1, 0), 2.0);
}

TEST(safetensors, malformed_files_throw) {
  const std::string ok_header = R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  const std::string data(8, '\0');
  ASSERT_NO_THROW(headwise::decode_safetensors(file_bytes(ok_header, data)));
  const std::string full = file_bytes(ok_header, data);
  const struct {
    const char* what;
    std::string bytes;
  } cases[] = {
      {"empty file", ""},
      {"shorter than the length", full.substr(0, 5)},
      {"truncated header", full.substr(0, 20)},
      {"truncated data", full.substr(0, full.size() - 1)},
      {"trailing data", full + "x"},
      {"header length too large", file_bytes(ok_header, data, 100'000'001)},
      {"header length past the end", file_bytes(ok_header, data, ok_header.size() + data.size() + 1)},
      {"header length 2^64 - 1", file_bytes(ok_header, data, ~0ull - 1) + ""},
      {"not JSON", file_bytes("{\"x\": nope}", data)},
      {"unterminated object", file_bytes(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})", data)},
      {"text after the object", file_bytes(ok_header + "{}", data)},
      {"header not an object", file_bytes("[1,2]", data)},
      {"duplicate key", file_bytes(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                   R"("x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                                   data)},
      {"unknown dtype", file_bytes(R"({"x":{"dtype":"I8","shape":[8],"data_offsets":[0,8]}})", data)},
      {"dtype not a string", file_bytes(R"({"x":{"dtype":4,"shape":[2],"data_offsets":[0,8]}})", data)},
      {"extra field", file_bytes(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"z":1}})", data)},
      {"negative shape", file_bytes(R"({"x":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", data)},
      {"fractional offset", file_bytes(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8.0]}})", data)},
      {"offsets past the end",
       file_bytes(R"({"x":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", data)},
      {"offsets reversed", file_bytes(R"({"x":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", data)},
      {"shape and offsets disagree",
       file_bytes(R"({"x":{"dtype":"F64","shape":[2],"data_offsets":[0,8]}})", data)},
      {"shape overflows", file_bytes(R"({"x":{"dtype":"F32","shape":[4294967296,4294967296],)"
                                     R"("data_offsets":[0,0]}})",
                                     data)},
      {"offset beyond 2^64",
       file_bytes(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,18446744073709551624]}})", data)},
      {"overlapping tensors", file_bytes(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                         R"("y":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                                         data)},
      {"gap before a tensor", file_bytes(R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", data)},
      {"metadata not strings", file_bytes(R"({"__metadata__":{"a":1},"x":{"dtype":"F32","shape":[2],)"
                                          R"("data_offsets":[0,8]}})",
                                          data)},
      {"control character in a name",
       file_bytes("{\"x\x01\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", data)},
      {"bad escape", file_bytes(R"({"x\q":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", data)},
      {"lone surrogate", file_bytes(R"({"x\udc00":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", data)},
      {"leading zero", file_bytes(R"({"x":{"dtype":"F32","shape":[02],"data_offsets":[0,8]}})", data)},
      {"too deep", file_bytes(std::string(100, '[') + std::string(100, ']'), data)},
  };
  for (const auto& c : cases) EXPECT_THROW(headwise::decode_safetensors(c.bytes), headwise::error) << c.what;
  EXPECT_THROW(headwise::load_safetensors("/nonexistent/headwise.safetensors"), headwise::error);
}

TEST(safetensors, json_escapes_and_unicode_in_names) {
  const std::string data(4, '\0');
  const std::string header =
      R"({"a\"b\\c\/\n\u00e9\ud83d\ude00":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  const safetensors_file f = headwise::decode_safetensors(file_bytes(header, data));
  ASSERT_EQ(f.tensors.size(), 1u);
  EXPECT_EQ(f.tensors.begin()->first, "a\"b\\c/\n\xC3\xA9\xF0\x9F\x98\x80");
  // and back through the writer: the same name after a round trip
  const safetensors_file g = headwise::decode_safetensors(headwise::encode_safetensors(f));
  EXPECT_EQ(g.tensors.begin()->first, f.tensors.begin()->first);
}

TEST(safetensors, reads_f16_and_bf16_exactly) {
  // 1.5 in F16 is 0x3E00, -2.0 in BF16 is 0xC000.
  const safetensors_file f =
      headwise::decode_safetensors(file_bytes(R"({"h":{"dtype":"F16","shape":[1,1],"data_offsets":[0,2]},)"
                                              R"("b":{"dtype":"BF16","shape":[1,1],"data_offsets":[2,4]}})",
                                              std::string("\x00\x3E\x00\xC0", 4)));
  EXPECT_EQ(headwise::to_matrix<float>(f.tensors.at("h"))(0, 0), 1.5f);
  EXPECT_EQ(headwise::to_matrix<double>(f.tensors.at("b"))(0, 0), -2.0);
}

TEST(safetensors, to_matrix_refuses_three_dimensions) {
  headwise::safetensors_tensor t;
  t.shape = {1, 1, 1};
  t.data.resize(4);
  EXPECT_THROW(headwise::to_matrix<float>(t, "t"), headwise::error);
}

// ------------------------------------------------------------------ adapter_config.json

TEST(adapter_config, round_trip) {
  headwise::peft_lora_config c;
  c.r = 8;
  c.lora_alpha = 16.5;
  c.use_rslora = true;
  c.target_modules = {projection::q, projection::k, projection::v, projection::o};
  c.lora_dropout = 0.05;
  c.task_type = "CAUSAL_LM";
  c.base_model_name_or_path = "meta-llama/Llama-3.2-1B";
  const std::string text = headwise::to_adapter_config_json(c);
  for (const char* field : {"\"peft_type\":\"LORA\"", "\"bias\":\"none\"", "\"r\":8", "\"lora_alpha\":16.5",
                            "\"use_rslora\":true", "\"lora_dropout\":0.05",
                            "\"target_modules\":[\"q_proj\",\"k_proj\",\"v_proj\",\"o_proj\"]"})
    EXPECT_NE(text.find(field), std::string::npos) << field << " in " << text;
  const headwise::peft_lora_config d = headwise::parse_adapter_config(text);
  EXPECT_EQ(d.r, c.r);
  EXPECT_EQ(d.lora_alpha, c.lora_alpha);
  EXPECT_EQ(d.use_rslora, c.use_rslora);
  EXPECT_EQ(d.target_modules, c.target_modules);
  EXPECT_EQ(d.lora_dropout, c.lora_dropout);
  EXPECT_EQ(d.task_type, c.task_type);
  EXPECT_EQ(d.base_model_name_or_path, c.base_model_name_or_path);
}

TEST(adapter_config, refuses_what_headwise_cannot_represent) {
  const std::string base = R"("peft_type":"LORA","r":4,"lora_alpha":8,"target_modules":["q_proj"])";
  ASSERT_NO_THROW(headwise::parse_adapter_config("{" + base + "}"));
  for (const std::string& bad :
       {std::string(R"({"peft_type":"LORA","r":4,"lora_alpha":8})"),                     // no targets
        std::string(R"({"peft_type":"IA3","r":4,"lora_alpha":8,"target_modules":[]})"),  // not LoRA
        std::string(R"({"peft_type":"LORA","r":0,"lora_alpha":8,"target_modules":[]})"),
        std::string(R"({"peft_type":"LORA","r":2.5,"lora_alpha":8,"target_modules":[]})"),
        std::string(R"({"peft_type":"LORA","r":4,"lora_alpha":"8","target_modules":[]})"),
        "{" + base + R"(,"bias":"all"})", "{" + base + R"(,"fan_in_fan_out":true})",
        "{" + base + R"(,"use_dora":true})", "{" + base + R"(,"rank_pattern":{"q_proj":8}})",
        std::string(R"({"peft_type":"LORA","r":4,"lora_alpha":8,"target_modules":["gate_proj"]})"),
        std::string(R"({"peft_type":"LORA","r":4,"lora_alpha":8,"target_modules":"q_proj"})"),
        std::string("[]"), std::string("{" + base + ",}")})
    EXPECT_THROW(headwise::parse_adapter_config(bad), headwise::error) << bad;
}

// ------------------------------------------------------------------ PEFT LoRA adapters

// The model of tests/data/make_peft_lora.py: q, o 8 → 8; k, v 8 → 4.
headwise::mha_config tiny_config() { return hwtest::layer_config(8, 2, 1, 4); }

TEST(lora_adapters, save_and_load_are_bit_identical) {
  using layer = headwise::multi_head_attention<float>;
  std::vector<layer> trained(3, layer(tiny_config()));
  for (std::size_t i = 0; i < trained.size(); ++i) {
    auto& set = trained[i].adapters();
    set.add("other");
    const auto id = set.add("task");
    for (std::size_t p = 0; p < headwise::projection_count; ++p) {
      const auto& s = set.shape(projection(p));
      set.attach(id, projection(p),
                 headwise::lora_delta<float>(random_matrix<float>(3, s.in, std::uint32_t(10 * i + p)),
                                             random_matrix<float>(s.out, 3, std::uint32_t(100 + 10 * i + p)),
                                             6.0, headwise::lora_scaling::rank_stabilized));
    }
  }
  const auto dir = scratch_dir("lora");
  headwise::peft_lora_config opts;
  opts.base_model_name_or_path = "tiny";
  headwise::save_lora_adapters(dir.string(), trained, "task", opts);

  std::vector<layer> fresh(3, layer(tiny_config()));
  const auto cfg = headwise::load_lora_adapters(dir.string(), fresh, "task");
  EXPECT_EQ(cfg.r, 3u);
  EXPECT_EQ(cfg.lora_alpha, 6.0);
  EXPECT_TRUE(cfg.use_rslora);
  EXPECT_EQ(cfg.base_model_name_or_path, "tiny");
  EXPECT_EQ(cfg.target_modules.size(), 4u);
  for (std::size_t i = 0; i < fresh.size(); ++i) {
    ASSERT_EQ(fresh[i].adapters().size(), 1u);
    EXPECT_FALSE(fresh[i].adapters().enabled());  // the active mix is left alone
    for (std::size_t p = 0; p < headwise::projection_count; ++p) {
      const auto* want = trained[i].adapters().delta(1, projection(p));
      const auto* got = fresh[i].adapters().delta(0, projection(p));
      ASSERT_NE(got, nullptr);
      EXPECT_TRUE(same_bits(got->a(), want->a()) && same_bits(got->b(), want->b())) << i << " " << p;
      EXPECT_EQ(got->scale(), want->scale());
    }
  }
  // forward through the loaded layer gives the trained layer's bits
  const mat<float> x = random_matrix<float>(5, 8, 7);
  mat<float> y1(5, 8), y2(5, 8);
  for (auto* l : {&trained[2], &fresh[2]}) {
    l->weight(projection::q) = random_matrix<float>(8, 8, 8);
    l->weight(projection::o) = random_matrix<float>(8, 8, 9);
    l->adapters().activate("task");
  }
  trained[2].forward(x, y1);
  fresh[2].forward(x, y2);
  EXPECT_TRUE(same_bits(y1, y2));
  // loading again replaces the deltas of the existing adapter
  EXPECT_NO_THROW(headwise::load_lora_adapters(dir.string(), fresh, "task"));
  EXPECT_EQ(fresh[0].adapters().size(), 1u);
  std::filesystem::remove_all(dir);
}

TEST(lora_adapters, loads_a_file_written_by_python) {
  // tests/data/make_peft_lora.py: element j of layer l's A is (l+1)(j+1)/64, of
  // its B −(l+1)(j+1)/128, in F32, F64 and BF16, all exact; alpha 4, rsLoRA, r 2.
  const std::string dir = std::string(HEADWISE_TEST_DATA_DIR) + "/peft_lora";
  std::vector<headwise::multi_head_attention<double>> layers;
  layers.emplace_back(tiny_config());
  layers.emplace_back(tiny_config());
  std::vector<headwise::multi_head_attention<double>*> pointers{&layers[0], &layers[1]};
  const auto cfg = headwise::load_lora_adapters(dir, pointers, "from_python");
  EXPECT_EQ(cfg.r, 2u);
  EXPECT_TRUE(cfg.use_rslora);
  EXPECT_EQ(cfg.lora_dropout, 0.05);
  EXPECT_EQ(cfg.base_model_name_or_path, "tiny-test-model");
  for (std::size_t l = 0; l < 2; ++l) {
    const auto& set = layers[l].adapters();
    EXPECT_EQ(set.delta(0, projection::k), nullptr);
    EXPECT_EQ(set.delta(0, projection::o), nullptr);
    for (projection p : {projection::q, projection::v}) {
      const auto* d = set.delta(0, p);
      ASSERT_NE(d, nullptr);
      EXPECT_EQ(d->scale(), 4.0 / std::sqrt(2.0));
      EXPECT_EQ(d->a().rows(), 2);
      EXPECT_EQ(d->b().rows(), p == projection::q ? 8 : 4);
      for (Eigen::Index j = 0; j < d->a().size(); ++j)
        ASSERT_EQ(d->a().data()[j], double(l + 1) * double(j + 1) / 64) << l << " A " << j;
      for (Eigen::Index j = 0; j < d->b().size(); ++j)
        ASSERT_EQ(d->b().data()[j], -double(l + 1) * double(j + 1) / 128) << l << " B " << j;
    }
  }
}

TEST(lora_adapters, mismatches_throw_and_leave_layers_unchanged) {
  const std::string python_dir = std::string(HEADWISE_TEST_DATA_DIR) + "/peft_lora";
  using layer = headwise::multi_head_attention<float>;

  // wrong sizes: model_dim 16 does not fit A [2 × 8]
  headwise::mha_config wide = tiny_config();
  wide.model_dim = 16;
  std::vector<layer> wrong(2, layer(wide));
  EXPECT_THROW(headwise::load_lora_adapters(python_dir, wrong, "x"), headwise::error);
  EXPECT_EQ(wrong[0].adapters().size(), 0u);

  // more layers than the file has; fewer (layer 1's tensors are left over)
  std::vector<layer> three(3, layer(tiny_config())), one(1, layer(tiny_config()));
  EXPECT_THROW(headwise::load_lora_adapters(python_dir, three, "x"), headwise::error);
  EXPECT_THROW(headwise::load_lora_adapters(python_dir, one, "x"), headwise::error);
  for (const auto& l : three) EXPECT_EQ(l.adapters().size(), 0u);
  EXPECT_EQ(one[0].adapters().size(), 0u);

  // an existing adapter of that name with a delta outside the file's targets
  std::vector<layer> busy(2, layer(tiny_config()));
  const auto id = busy[1].adapters().add("x");
  busy[1].adapters().attach(id, projection::k,
                            headwise::lora_delta<float>(mat<float>::Ones(1, 8), mat<float>::Ones(4, 1), 1.0));
  EXPECT_THROW(headwise::load_lora_adapters(python_dir, busy, "x"), headwise::error);
  EXPECT_EQ(busy[0].adapters().size(), 0u);
  EXPECT_EQ(busy[1].adapters().delta(id, projection::q), nullptr);

  // a merged layer, an empty name, a missing directory
  std::vector<layer> merged(2, layer(tiny_config()));
  merged[1].merge_adapters();
  EXPECT_THROW(headwise::load_lora_adapters(python_dir, merged, "x"), headwise::error);
  EXPECT_EQ(merged[0].adapters().size(), 0u);
  std::vector<layer> fine(2, layer(tiny_config()));
  EXPECT_THROW(headwise::load_lora_adapters(python_dir, fine, ""), headwise::error);
  EXPECT_THROW(headwise::load_lora_adapters("/nonexistent/adapter", fine, "x"), headwise::error);
  EXPECT_EQ(fine[0].adapters().size(), 0u);

  // a tensor file whose r disagrees with the config
  const auto dir = scratch_dir("bad_r");
  std::filesystem::create_directories(dir);
  std::filesystem::copy_file(python_dir + "/adapter_model.safetensors", dir / "adapter_model.safetensors");
  std::string config = read_text(python_dir + "/adapter_config.json");
  config.replace(config.find("\"r\": 2"), 6, "\"r\": 3");
  { std::ofstream(dir / "adapter_config.json") << config; }
  EXPECT_THROW(headwise::load_lora_adapters(dir.string(), fine, "x"), headwise::error);
  EXPECT_EQ(fine[0].adapters().size(), 0u);
  std::filesystem::remove_all(dir);
}

TEST(lora_adapters, save_refuses_what_one_config_cannot_describe) {
  using layer = headwise::multi_head_attention<float>;
  std::vector<layer> layers(2, layer(tiny_config()));
  for (auto& l : layers) l.adapters().add("t");
  auto delta = [](Eigen::Index r, double alpha) {
    return headwise::lora_delta<float>(mat<float>::Ones(r, 8), mat<float>::Ones(8, r), alpha);
  };
  const auto dir = scratch_dir("save_refusals").string();
  EXPECT_THROW(headwise::save_lora_adapters(dir, layers, "t"), headwise::error);  // no deltas
  layers[0].adapters().attach(0, projection::q, delta(2, 4.0));
  EXPECT_THROW(headwise::save_lora_adapters(dir, layers, "t"), headwise::error);  // layer 1 lacks q
  layers[1].adapters().attach(0, projection::q, delta(4, 4.0));
  EXPECT_THROW(headwise::save_lora_adapters(dir, layers, "t"), headwise::error);  // rank differs
  layers[1].adapters().attach(0, projection::q, delta(2, 8.0));
  EXPECT_THROW(headwise::save_lora_adapters(dir, layers, "t"), headwise::error);  // alpha differs
  EXPECT_THROW(headwise::save_lora_adapters(dir, layers, "missing"), headwise::error);
  EXPECT_FALSE(std::filesystem::exists(dir));
}

}  // namespace
