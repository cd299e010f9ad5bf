// bench_table: reads a Google Benchmark JSON file (--benchmark_out_format=json of
// headwise_bench or headwise_lora_bench), prints the comparison tables and writes an
// SVG bar chart.
//
//   headwise_bench_table run.json [--svg out.svg]
//
// A benchmark's name is BM_<impl>/<arg>:<value>/...; its args minus `threads` are its
// shape. Runs that report the same rate counter over the same arg names form a table:
//   FLOPS             GFLOP/s, % of BM_fma_peak at the same thread count
//   bytes_per_second  GB/s,    % of BM_dram_read at the same thread count
//   items_per_second  items/s
// and a row per (shape, threads, impl): ms per iteration, the rate, % of peak, the
// speed-up over each baseline impl present (its time / this time, same shape and
// threads), over the same impl on 1 thread, and the other counters and the label. A
// label's unit=<peak> makes that row's % of peak a share of BM_<peak> (the bf16 rows
// on vdpbf16ps: bf16_dot_peak) instead of the rate's own. With repetitions,
// a row is the best one (least time): on a shared machine the least disturbed, and a
// peak is a maximum. The SVG has one panel per table with a peak and two or more
// impls: 1-thread rows, a group of bars per shape, the peak as a dashed line.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

// --- a JSON reader for what Google Benchmark writes --------------------------------

struct json {
  enum kind_t { null, boolean, number, string, array, object } kind = null;
  double num = 0;
  std::string str;
  std::vector<json> items;                            // array
  std::vector<std::pair<std::string, json>> members;  // object, in file order

  const json* get(const std::string& key) const {
    for (const auto& [k, v] : members)
      if (k == key) return &v;
    return nullptr;
  }
  std::string text(const std::string& key) const {
    const json* v = get(key);
    return v && v->kind == string ? v->str : v && v->kind == number ? std::to_string(v->num) : "";
  }
  double value(const std::string& key, double otherwise = NAN) const {
    const json* v = get(key);
    return v && v->kind == number ? v->num : otherwise;
  }
};

struct json_parser {
  const std::string& s;
  std::size_t at = 0;

  [[noreturn]] void fail(const char* what) const {
    throw std::runtime_error("JSON: " + std::string(what) + " at byte " + std::to_string(at));
  }
  void space() {
    while (at < s.size() && std::isspace(static_cast<unsigned char>(s[at]))) ++at;
  }
  bool take(const char* word) {
    const std::size_t n = std::char_traits<char>::length(word);
    if (s.compare(at, n, word) != 0) return false;
    at += n;
    return true;
  }
  std::string quoted() {
    if (!take("\"")) fail("expected a string");
    std::string out;
    while (at < s.size() && s[at] != '"') {
      char c = s[at++];
      if (c == '\\') {
        if (at >= s.size()) fail("unfinished escape");
        c = s[at++];
        if (c == 'u') {  // \uXXXX, as UTF-8 (Basic Multilingual Plane)
          const unsigned u = unsigned(std::stoul(s.substr(at, 4), nullptr, 16));
          at += 4;
          if (u < 0x80) {
            out += char(u);
          } else if (u < 0x800) {
            out += char(0xC0 | (u >> 6)), out += char(0x80 | (u & 0x3F));
          } else {
            out += char(0xE0 | (u >> 12)), out += char(0x80 | ((u >> 6) & 0x3F)),
                out += char(0x80 | (u & 0x3F));
          }
          continue;
        }
        c = c == 'n' ? '\n' : c == 't' ? '\t' : c == 'r' ? '\r' : c == 'b' ? '\b' : c == 'f' ? '\f' : c;
      }
      out += c;
    }
    if (!take("\"")) fail("unterminated string");
    return out;
  }
  json parse() {
    space();
    json v;
    if (at >= s.size()) fail("unexpected end");
    if (s[at] == '{') {
      v.kind = json::object, ++at, space();
      if (take("}")) return v;
      do {
        space();
        std::string key = quoted();
        space();
        if (!take(":")) fail("expected ':'");
        v.members.emplace_back(std::move(key), parse());
        space();
      } while (take(","));
      if (!take("}")) fail("expected '}'");
    } else if (s[at] == '[') {
      v.kind = json::array, ++at, space();
      if (take("]")) return v;
      do v.items.push_back(parse()), space();
      while (take(","));
      if (!take("]")) fail("expected ']'");
    } else if (s[at] == '"') {
      v.kind = json::string, v.str = quoted();
    } else if (take("true")) {
      v.kind = json::boolean, v.num = 1;
    } else if (take("false")) {
      v.kind = json::boolean;
    } else if (take("null")) {
    } else {  // a number; Google Benchmark also writes NaN, Infinity, -Infinity
      v.kind = json::number;
      const bool minus = take("-");
      if (take("NaN")) {
        v.num = NAN;
      } else if (take("Infinity")) {
        v.num = minus ? -INFINITY : INFINITY;
      } else {
        const char* begin = s.c_str() + at - (minus ? 1 : 0);
        char* end = nullptr;
        v.num = std::strtod(begin, &end);
        if (end == begin) fail("unexpected character");
        at = std::size_t(end - s.c_str());
      }
    }
    return v;
  }
};

// --- the runs ----------------------------------------------------------------------

struct run {
  std::string impl;                                // "headwise_flash" for BM_headwise_flash
  std::vector<std::pair<std::string, long>> args;  // in name order, threads included
  std::string shape;                               // the args but threads, "Hq:8 N:1024 causal:1"
  std::string signature;                           // the args' names but threads
  int threads = 1;
  double ms = 0, family = 0, instance = 0;
  std::map<std::string, double> counters;
  std::string label;  // the benchmark's label: "path=avx512_bf16 unit=bf16_dot_peak"
  std::string unit;   // the peak its rate is a share of, when the label names one

  /// The value of `key=` in the label, or "".
  std::string label_field(const std::string& key) const {
    std::stringstream words(label);
    std::string w;
    while (words >> w)
      if (w.rfind(key + "=", 0) == 0) return w.substr(key.size() + 1);
    return "";
  }
};

const char* const rate_counters[] = {"FLOPS", "bytes_per_second", "items_per_second"};

std::string rate_of(const run& r) {
  for (const char* c : rate_counters)
    if (r.counters.count(c)) return c;
  return "";
}

/// The unit a rate counter is printed in, its scale, and the peak benchmark it is a share of.
struct rate_info {
  const char* unit;
  double scale;
  const char* peak;
};
rate_info info(const std::string& rate) {
  if (rate == "FLOPS") return {"GFLOP/s", 1e-9, "fma_peak"};
  if (rate == "bytes_per_second") return {"GB/s", 1e-9, "dram_read"};
  if (rate == "items_per_second") return {"items/s", 1, ""};
  return {"", 1, ""};
}

/// Implementations other rows are compared to: a "× impl" column where the table has them.
const char* const baselines[] = {"eigen_full",         "eigen_blocked",     "headwise_flash",  "headwise_decode_f32",
                                 "headwise_plain_f32", "headwise_unpruned", "lora_base",
                                 "lora_mixed_per_row"};

const char* const skipped_fields[] = {"family_index", "per_family_instance_index",
                                      "repetitions",  "repetition_index",
                                      "threads",      "iterations",
                                      "real_time",    "cpu_time"};

run parse_run(const json& b) {
  run r;
  r.family = b.value("family_index", 0);
  r.instance = b.value("per_family_instance_index", 0);
  std::stringstream name(b.text("run_name").empty() ? b.text("name") : b.text("run_name"));
  std::string part;
  std::getline(name, part, '/');
  r.impl = part.rfind("BM_", 0) == 0 ? part.substr(3) : part;
  int unnamed = 0;
  while (std::getline(name, part, '/')) {
    const std::size_t colon = part.find(':');
    std::string key = colon == std::string::npos ? "" : part.substr(0, colon);
    const std::string value = colon == std::string::npos ? part : part.substr(colon + 1);
    if (key == "min_time" || key == "min_warmup_time" || key == "iterations" || key == "repeats") continue;
    if (value.empty() || !(std::isdigit(static_cast<unsigned char>(value[0])) || value[0] == '-'))
      continue;  // real_time, process_time, manual_time
    if (key.empty()) key = "arg" + std::to_string(unnamed++);
    const long v = std::stol(value);
    r.args.emplace_back(key, v);
    if (key == "threads") {
      r.threads = int(v);
      continue;
    }
    r.signature += key + ",";
    if (v != 0) r.shape += (r.shape.empty() ? "" : " ") + key + ":" + value;  // 0 = off: causal:0
  }
  const std::string unit = b.text("time_unit");
  const double to_ms = unit == "ns" ? 1e-6 : unit == "us" ? 1e-3 : unit == "s" ? 1e3 : 1;
  r.ms = b.value("real_time") * to_ms;
  r.label = b.text("label");
  r.unit = r.label_field("unit");
  for (const auto& [key, v] : b.members)
    if (v.kind == json::number &&
        std::find(std::begin(skipped_fields), std::end(skipped_fields), key) == std::end(skipped_fields))
      r.counters[key] = v.num;
  return r;
}

/// Best (least time) repetition of each benchmark, in registration order.
std::vector<run> read_runs(const json& doc) {
  std::map<std::string, run> best;
  const json* list = doc.get("benchmarks");
  if (!list) throw std::runtime_error("no \"benchmarks\" in the file");
  for (const json& b : list->items) {
    if (b.text("run_type") == "aggregate") continue;
    const json* error = b.get("error_occurred");
    if (error && error->num != 0) continue;
    run r = parse_run(b);
    const std::string key = b.text("run_name").empty() ? b.text("name") : b.text("run_name");
    auto it = best.find(key);
    if (it == best.end() || r.ms < it->second.ms) best[key] = std::move(r);
  }
  std::vector<run> runs;
  for (auto& [key, r] : best) runs.push_back(std::move(r));
  std::sort(runs.begin(), runs.end(), [](const run& a, const run& b) {
    return a.family != b.family ? a.family < b.family : a.instance < b.instance;
  });
  return runs;
}

// --- the tables ----------------------------------------------------------------------

struct table {
  std::string rate, signature;
  std::vector<const run*> rows;  // ordered: shape (first appearance), threads, impl
  std::vector<std::string> baselines;
  bool has_threads = false;
};

/// A baseline's column header: "x" + its name without "headwise_".
std::string short_name(const std::string& impl) {
  return impl.rfind("headwise_", 0) == 0 ? impl.substr(9) : impl;
}
int column_width(const std::string& impl) {
  return int(std::max<std::size_t>(short_name(impl).size() + 1, 6));
}

std::string fmt(double x, const char* f) {
  if (!std::isfinite(x)) return "-";
  char buf[64];
  std::snprintf(buf, sizeof buf, f, x);
  return buf;
}

struct report {
  std::vector<run> runs;
  std::vector<table> tables;

  report(const report&) = delete;
  explicit report(std::vector<run> rs) : runs(std::move(rs)) {  // rows point into runs: no copies

    std::vector<std::string> shapes;  // "signature|shape" in order of first appearance
    for (const run& r : runs) {
      const std::string rate = rate_of(r);
      auto t = std::find_if(tables.begin(), tables.end(),
                            [&](const table& x) { return x.rate == rate && x.signature == r.signature; });
      if (t == tables.end()) t = tables.insert(tables.end(), table{rate, r.signature, {}, {}, false});
      t->rows.push_back(&r);
      t->has_threads |=
          std::any_of(r.args.begin(), r.args.end(), [](const auto& a) { return a.first == "threads"; });
      if (std::find(shapes.begin(), shapes.end(), r.signature + "|" + r.shape) == shapes.end())
        shapes.push_back(r.signature + "|" + r.shape);
    }
    for (table& t : tables) {
      const auto order = [&](const run* r) {
        return std::find(shapes.begin(), shapes.end(), r->signature + "|" + r->shape) - shapes.begin();
      };
      std::stable_sort(t.rows.begin(), t.rows.end(), [&](const run* a, const run* b) {
        return order(a) != order(b) ? order(a) < order(b) : a->threads < b->threads;
      });
      for (const char* b : baselines)
        if (std::any_of(t.rows.begin(), t.rows.end(), [&](const run* r) { return r->impl == b; }))
          t.baselines.push_back(b);
    }
  }

  const run* find(const std::string& impl, const std::string& signature, const std::string& shape,
                  int threads) const {
    for (const run& r : runs)
      if (r.impl == impl && r.signature == signature && r.shape == shape && r.threads == threads) return &r;
    return nullptr;
  }

  /// The peak rate for `rate` at `threads` threads (its best run), or NaN: of the
  /// unit a row's label names (unit=bf16_dot_peak), else of the rate's own peak.
  double peak(const std::string& rate, int threads, const std::string& unit = "") const {
    double best = NAN;
    const std::string impl = unit.empty() ? info(rate).peak : unit;
    for (const run& r : runs)
      if (!impl.empty() && r.impl == impl && r.threads == threads && r.counters.count(rate))
        best = std::isnan(best) ? r.counters.at(rate) : std::max(best, r.counters.at(rate));
    return best;
  }

  void print(const table& t) const {
    const rate_info ri = info(t.rate);
    std::string names = t.signature + (t.has_threads ? "threads" : "");
    if (!names.empty() && names.back() == ',') names.pop_back();
    std::replace(names.begin(), names.end(), ',', ' ');
    std::printf("\n== %s%s", names.empty() ? "(no args)" : names.c_str(),
                t.rate.empty() ? "" : (": " + std::string(ri.unit)).c_str());
    if (*ri.peak) std::printf(", %% of BM_%s at the same thread count", ri.peak);
    std::printf(" ==\n");
    std::size_t shape_w = 5, impl_w = 4;
    for (const run* r : t.rows)
      shape_w = std::max(shape_w, r->shape.size()), impl_w = std::max(impl_w, r->impl.size());
    std::printf("%-*s %3s  %-*s %10s %10s %6s", int(shape_w), "shape", "thr", int(impl_w), "impl", "ms",
                ri.unit, "%peak");
    for (const std::string& b : t.baselines)
      std::printf(" %*s", column_width(b), ("x" + short_name(b)).c_str());
    if (t.has_threads) std::printf(" %6s", "x1thr");
    std::printf("  other counters\n");
    std::string last = "\n";  // no shape
    for (const run* r : t.rows) {
      const double value = t.rate.empty() ? NAN : r->counters.at(t.rate) * ri.scale;
      const double pk = peak(t.rate, r->threads, r->unit) * ri.scale;
      const std::string shown = r->shape == last ? "" : r->shape.empty() ? "-" : r->shape;
      last = r->shape;
      std::printf("%-*s %3d  %-*s %10s %10s %6s", int(shape_w), shown.c_str(), r->threads, int(impl_w),
                  r->impl.c_str(), fmt(r->ms, r->ms < 10 ? "%.4f" : "%.2f").c_str(),
                  fmt(value, value < 100 ? "%.2f" : "%.1f").c_str(), fmt(100 * value / pk, "%.1f").c_str());
      for (const std::string& b : t.baselines) {
        const run* base = find(b, r->signature, r->shape, r->threads);
        std::printf(" %*s", column_width(b), fmt(base ? base->ms / r->ms : NAN, "%.2f").c_str());
      }
      if (t.has_threads) {
        const run* one = find(r->impl, r->signature, r->shape, 1);
        std::printf(" %6s", fmt(one && r->threads != 1 ? one->ms / r->ms : NAN, "%.2f").c_str());
      }
      std::printf(" ");
      for (const auto& [key, v] : r->counters)
        if (key != t.rate) std::printf(" %s=%s", key.c_str(), fmt(v, "%.4g").c_str());
      if (!r->label.empty()) std::printf(" %s", r->label.c_str());
      std::printf("\n");
    }
  }

  /// One panel per table with a peak and two or more impls (not the peaks' own
  /// tables): bars of the rate per shape at 1 thread, one color per impl, the
  /// 1-thread peak dashed.
  void write_svg(const std::string& path) const {
    const char* colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e",
                            "#9467bd", "#8c564b", "#17becf", "#7f7f7f"};
    std::ostringstream body;
    double width = 0, y0 = 0;
    for (const table& t : tables) {
      const rate_info ri = info(t.rate);
      if (!*ri.peak ||
          std::any_of(t.rows.begin(), t.rows.end(), [&](const run* r) { return r->impl == ri.peak; }))
        continue;
      std::vector<std::string> shapes, impls;
      double top = peak(t.rate, 1) * ri.scale;
      for (const run* r : t.rows) {
        if (r->threads != 1) continue;
        if (std::find(shapes.begin(), shapes.end(), r->shape) == shapes.end()) shapes.push_back(r->shape);
        if (std::find(impls.begin(), impls.end(), r->impl) == impls.end()) impls.push_back(r->impl);
        top = std::isfinite(top) ? std::max(top, r->counters.at(t.rate) * ri.scale)
                                 : r->counters.at(t.rate) * ri.scale;
      }
      if (impls.size() < 2) continue;  // nothing to compare (BM_eigen_gemm)
      std::size_t lines = 1;           // a shape's label: one arg per line under its group
      for (const std::string& sh : shapes)
        lines = std::max<std::size_t>(lines, std::size_t(std::count(sh.begin(), sh.end(), ' ')) + 1);
      const double bar = 11, group = std::max(bar * double(impls.size()) + 18, 80.0), left = 60, plot_h = 220,
                   top_margin = 40;
      const double w = left + group * double(shapes.size()) + 200,
                   h = top_margin + plot_h + 14 * double(lines) + 30;
      width = std::max(width, w);
      const auto y = [&](double v) { return y0 + top_margin + plot_h * (1 - v / (top * 1.05)); };
      std::string names = t.signature;
      if (!names.empty()) names.pop_back();
      std::replace(names.begin(), names.end(), ',', ' ');
      body << "<text x='" << left << "' y='" << y0 + 22 << "' font-size='15'>" << ri.unit
           << " at 1 thread, by " << names << "</text>\n";
      double step = std::pow(10.0, std::floor(std::log10(top * 1.05 / 5)));  // 1-2-5: 4 to 8 grid lines
      for (double f : {1.0, 2.0, 5.0})
        if (top * 1.05 / (step * f) <= 8) {
          step *= f;
          break;
        }
      for (double v = 0; v <= top * 1.05; v += step)
        body << "<line x1='" << left << "' x2='" << w - 200 << "' y1='" << y(v) << "' y2='" << y(v)
             << "' stroke='#ddd'/><text x='" << left - 6 << "' y='" << y(v) + 4 << "' text-anchor='end'>"
             << fmt(v, "%g") << "</text>\n";
      for (std::size_t s = 0; s < shapes.size(); ++s) {
        const double gx = left + group * double(s) + (group - bar * double(impls.size())) / 2;
        for (std::size_t i = 0; i < impls.size(); ++i)
          for (const run* r : t.rows)
            if (r->threads == 1 && r->shape == shapes[s] && r->impl == impls[i]) {
              const double v = r->counters.at(t.rate) * ri.scale;
              body << "<rect x='" << gx + bar * double(i) << "' y='" << y(v) << "' width='" << bar - 1
                   << "' height='" << y(0) - y(v) << "' fill='" << colors[i % 8] << "'><title>" << r->impl
                   << " " << r->shape << ": " << fmt(v, "%.2f") << " " << ri.unit << "</title></rect>\n";
            }
        std::istringstream words(shapes[s]);
        body << "<text font-size='10' text-anchor='middle'>";
        int line = 0;
        for (std::string word; words >> word; ++line)
          body << "<tspan x='" << gx + bar * double(impls.size()) / 2 << "' y='" << y(0) + 14 + 13 * line
               << "'>" << word << "</tspan>";
        body << "</text>\n";
      }
      const double pk = peak(t.rate, 1) * ri.scale;
      if (std::isfinite(pk))
        body << "<line x1='" << left << "' x2='" << w - 200 << "' y1='" << y(pk) << "' y2='" << y(pk)
             << "' stroke='black' stroke-dasharray='6 4'/><text x='" << left + 4 << "' y='" << y(pk) - 4
             << "'>BM_" << ri.peak << " " << fmt(pk, "%.1f") << "</text>\n";
      for (std::size_t i = 0; i < impls.size(); ++i)
        body << "<rect x='" << w - 190 << "' y='" << y0 + top_margin + 18 * double(i)
             << "' width='10' height='10' fill='" << colors[i % 8] << "'/><text x='" << w - 175 << "' y='"
             << y0 + top_margin + 18 * double(i) + 10 << "'>" << impls[i] << "</text>\n";
      y0 += h;
    }
    if (y0 == 0) return;
    std::ofstream f(path);
    f << "<svg xmlns='http://www.w3.org/2000/svg' width='" << width << "' height='" << y0
      << "' font-family='sans-serif' font-size='12'>\n<rect width='100%' height='100%' fill='white'/>\n"
      << body.str() << "</svg>\n";
    std::printf("\nwrote %s\n", path.c_str());
  }
};

}  // namespace

int main(int argc, char** argv) {
  std::string in, svg;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--svg" && i + 1 < argc)
      svg = argv[++i];
    else if (!a.empty() && a[0] != '-' && in.empty())
      in = a;
    else {
      std::fprintf(stderr, "usage: %s results.json [--svg out.svg]\n", argv[0]);
      return 2;
    }
  }
  if (in.empty()) {
    std::fprintf(stderr, "usage: %s results.json [--svg out.svg]\n", argv[0]);
    return 2;
  }
  try {
    std::ifstream file(in);
    if (!file) throw std::runtime_error("cannot read " + in);
    const std::string text((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
    json_parser parser{text};
    const json doc = parser.parse();
    if (const json* ctx = doc.get("context")) {
      std::printf("%s on %s, %g CPUs at %g MHz", ctx->text("date").c_str(), ctx->text("host_name").c_str(),
                  ctx->value("num_cpus"), ctx->value("mhz_per_cpu"));
      if (const json* load = ctx->get("load_avg"); load && !load->items.empty())
        std::printf(", load %.2f", load->items[0].num);
      std::printf("\nheadwise %s: SIMD path %s (available: %s); BM_fma_peak on xsimd's %s\n",
                  ctx->text("headwise_version").c_str(), ctx->text("headwise_simd_path").c_str(),
                  ctx->text("headwise_isas").c_str(), ctx->text("fma_peak_arch").c_str());
    }
    const report rep(read_runs(doc));
    for (const table& t : rep.tables) rep.print(t);
    if (!svg.empty()) rep.write_svg(svg);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "headwise_bench_table: %s\n", e.what());
    return 1;
  }
  return 0;
}
