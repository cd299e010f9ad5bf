// headwise/detail/json.hpp — the JSON that safetensors headers and
// adapter_config.json need, and no more: a value tree, a strict reader, a writer.
//
// Reader (RFC 8259): objects, arrays, strings with every escape (\uXXXX with
// surrogate pairs → UTF-8), numbers, true, false, null; whitespace around values.
// A number keeps its literal: as_uint() parses it exactly (no double in between,
// so offsets up to 2⁶⁴ − 1 survive), as_double() with from_chars. Refused with
// headwise::error, naming the byte: anything else, trailing text, control characters
// in strings, lone surrogates, duplicate keys, nesting deeper than 64 (the
// recursion's stack bound). Bytes >= 0x80 pass through unchecked (names are
// compared as bytes).
// Writer: compact output, strings escaped (", \, control characters), integers
// exactly, doubles in the shortest form that reads back to the same double.
#pragma once

#ifndef HEADWISE_INTERNAL
#error "headwise/detail/* is internal: include <headwise/headwise.hpp>"
#endif

#include <charconv>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "headwise/detail/checks_io.hpp"

namespace headwise::detail {

struct json_value {
  enum class kind { null, boolean, number, string, array, object };
  kind type = kind::null;
  bool boolean = false;
  std::string text;                                         // a string, or a number's literal
  std::vector<json_value> items;                            // array
  std::vector<std::pair<std::string, json_value>> members;  // object, in file order

  bool is(kind k) const noexcept { return type == k; }
  /// The member named key, or nullptr.
  const json_value* find(std::string_view key) const {
    for (const auto& m : members)
      if (m.first == key) return &m.second;
    return nullptr;
  }
  /// A non-negative integer literal that fits in 64 bits, else false.
  bool as_uint(std::uint64_t& out) const {
    if (type != kind::number) return false;
    const char* end = text.data() + text.size();
    const auto r = std::from_chars(text.data(), end, out);
    return r.ec == std::errc() && r.ptr == end;
  }
  double as_double() const {
    double d = 0;
    std::from_chars(text.data(), text.data() + text.size(), d);
    return d;
  }
};

class json_reader {
 public:
  static json_value parse(std::string_view text) {
    json_reader r(text);
    json_value v = r.value(0);
    r.space();
    check_json(r.pos_ == text.size(), r.pos_, "text after the value");
    return v;
  }

 private:
  static constexpr int max_depth = 64;

  explicit json_reader(std::string_view t) : s_(t) {}

  void space() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r'))
      ++pos_;
  }
  char peek() const { return pos_ < s_.size() ? s_[pos_] : '\0'; }
  void expect(char c, const char* what) {
    check_json(peek() == c && pos_ < s_.size(), pos_, what);
    ++pos_;
  }
  void literal(std::string_view word) {
    check_json(s_.substr(pos_, word.size()) == word, pos_, "unknown literal");
    pos_ += word.size();
  }

  /// An object's or array's elements, from its opening bracket through `close`:
  /// element() reads one, commas between them.
  template <class Element>
  void elements(char close, const char* what, Element&& element) {
    ++pos_;
    space();
    if (peek() == close) return void(++pos_);
    for (;;) {
      element();
      space();
      if (peek() == close) return void(++pos_);
      expect(',', what);
    }
  }

  json_value value(int depth) {
    check_json(depth < max_depth, pos_, "nesting deeper than 64");
    space();
    json_value v;
    const char c = peek();
    if (c == '{') {
      v.type = json_value::kind::object;
      elements('}', "',' or '}' expected in an object", [&] {
        space();
        const std::size_t at = pos_;
        std::string key = string();
        check_json(v.find(key) == nullptr, at, "duplicate key");
        space();
        expect(':', "':' expected after a key");
        v.members.emplace_back(std::move(key), value(depth + 1));
      });
      return v;
    }
    if (c == '[') {
      v.type = json_value::kind::array;
      elements(']', "',' or ']' expected in an array", [&] { v.items.push_back(value(depth + 1)); });
      return v;
    }
    if (c == '"') {
      v.type = json_value::kind::string;
      v.text = string();
    } else if (c == 't' || c == 'f') {
      v.type = json_value::kind::boolean;
      v.boolean = c == 't';
      literal(c == 't' ? "true" : "false");
    } else if (c == 'n') {
      literal("null");
    } else {
      v.type = json_value::kind::number;
      v.text = number();
    }
    return v;
  }

  /// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
  std::string number() {
    const std::size_t start = pos_;
    auto digits = [&] {
      const std::size_t from = pos_;
      while (peek() >= '0' && peek() <= '9') ++pos_;
      check_json(pos_ > from, pos_, "a digit expected");
    };
    if (peek() == '-') ++pos_;
    if (peek() == '0')
      ++pos_;
    else
      digits();
    if (peek() == '.') ++pos_, digits();
    if (peek() == 'e' || peek() == 'E') {
      ++pos_;
      if (peek() == '+' || peek() == '-') ++pos_;
      digits();
    }
    return std::string(s_.substr(start, pos_ - start));
  }

  unsigned hex4() {
    unsigned u = 0;
    for (int i = 0; i < 4; ++i, ++pos_) {
      const char c = peek();
      const int d = c >= '0' && c <= '9'   ? c - '0'
                    : c >= 'a' && c <= 'f' ? c - 'a' + 10
                    : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                           : -1;
      check_json(d >= 0 && pos_ < s_.size(), pos_, "four hex digits expected after \\u");
      u = u * 16 + unsigned(d);
    }
    return u;
  }

  std::string string() {
    expect('"', "'\"' expected");
    std::string out;
    for (;;) {
      check_json(pos_ < s_.size(), pos_, "unterminated string");
      const char c = s_[pos_++];
      if (c == '"') return out;
      check_json(static_cast<unsigned char>(c) >= 0x20, pos_ - 1, "control character in a string");
      if (c != '\\') {
        out += c;
        continue;
      }
      const char e = peek();
      ++pos_;
      switch (e) {
        case '"':
        case '\\':
        case '/':
          out += e;
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'u': {
          unsigned cp = hex4();
          if (cp >= 0xD800 && cp < 0xDC00) {
            check_json(s_.substr(pos_, 2) == "\\u", pos_, "a high surrogate must be followed by \\u");
            pos_ += 2;
            const unsigned lo = hex4();
            check_json(lo >= 0xDC00 && lo < 0xE000, pos_, "a low surrogate expected");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          } else {
            check_json(!(cp >= 0xDC00 && cp < 0xE000), pos_, "a lone low surrogate");
          }
          utf8(out, cp);
          break;
        }
        default:
          check_json(false, pos_ - 1, "unknown escape");
      }
    }
  }

  static void utf8(std::string& out, unsigned cp) {
    auto byte = [&](unsigned b) { out += static_cast<char>(static_cast<unsigned char>(b)); };
    if (cp < 0x80) {
      byte(cp);
    } else if (cp < 0x800) {
      byte(0xC0 | (cp >> 6)), byte(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      byte(0xE0 | (cp >> 12)), byte(0x80 | ((cp >> 6) & 0x3F)), byte(0x80 | (cp & 0x3F));
    } else {
      byte(0xF0 | (cp >> 18)), byte(0x80 | ((cp >> 12) & 0x3F)), byte(0x80 | ((cp >> 6) & 0x3F)),
          byte(0x80 | (cp & 0x3F));
    }
  }

  std::string_view s_;
  std::size_t pos_ = 0;
};

/// Compact JSON out: the caller writes the structure, this escapes and separates.
class json_writer {
 public:
  json_writer& begin_object() { return open('{'); }
  json_writer& end_object() { return close('}'); }
  json_writer& begin_array() { return open('['); }
  json_writer& end_array() { return close(']'); }
  json_writer& key(std::string_view k) {
    separate();
    quoted(k);
    out_ += ':';
    after_key_ = true;
    return *this;
  }
  json_writer& string(std::string_view s) {
    separate();
    quoted(s);
    return *this;
  }
  json_writer& number(std::uint64_t n) {
    separate();
    out_ += std::to_string(n);
    return *this;
  }
  json_writer& number(double d) {
    separate();
    char buf[32];
    const auto r = std::to_chars(buf, buf + sizeof buf, d);
    out_.append(buf, r.ptr);
    return *this;
  }
  json_writer& boolean(bool b) {
    separate();
    out_ += b ? "true" : "false";
    return *this;
  }
  json_writer& null() {
    separate();
    out_ += "null";
    return *this;
  }
  const std::string& str() const noexcept { return out_; }

 private:
  json_writer& open(char c) {
    separate();
    out_ += c;
    first_ = true;
    return *this;
  }
  json_writer& close(char c) {
    out_ += c;
    first_ = false;
    return *this;
  }
  /// A comma before every value but the first of its container and one after a key.
  void separate() {
    if (!first_ && !after_key_ && !out_.empty()) out_ += ',';
    first_ = false;
    after_key_ = false;
  }
  void quoted(std::string_view s) {
    static const char hex[] = "0123456789abcdef";
    out_ += '"';
    for (const char c : s) {
      const auto u = static_cast<unsigned char>(c);
      if (c == '"' || c == '\\') {
        out_ += '\\', out_ += c;
      } else if (u < 0x20) {
        out_ += "\\u00", out_ += hex[u >> 4], out_ += hex[u & 15];
      } else {
        out_ += c;
      }
    }
    out_ += '"';
  }

  std::string out_;
  bool first_ = true, after_key_ = false;
};

}  // namespace headwise::detail
