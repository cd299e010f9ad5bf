// headwise/heatmap.hpp — pictures of attention: an SVG per head, an HTML page per layer.
//
//   heatmap_svg(p, query_labels, key_labels, options)  → one head's [rows × Nk] block as SVG
//   heads_html(heads, query_labels, key_labels, title)  → a self-contained page, one
//                                                         heatmap per head in a grid
// p comes from attention_probabilities / head_probabilities (inspect.hpp). Labels
// are token strings: query_labels one per row of p (or empty: row numbers),
// key_labels one per key (or empty: key numbers).
//
// Drawing: one <rect> per cell with p > 0, coloured on a white → dark blue ramp
// by sqrt(p) (attention is heavy-tailed: a linear ramp hides everything below
// 0.1), over a light grey ground that marks p = 0 (masked keys). Every drawn cell
// carries an SVG <title> ("query → key: value"), which browsers show on hover;
// the page adds a one-line inline script that copies the hovered cell's title
// into a read-out bar. No external script, stylesheet or font: generic font
// families only. Size: ~110 bytes per drawn cell, so 8 causal heads of 128
// tokens make a ~7 MB page; plot row blocks for longer sequences.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <string>
#include <vector>

#include "headwise/detail/internal_begin.hpp"

#include "headwise/detail/checks.hpp"
#include "headwise/detail/integer.hpp"
#include "headwise/inspect.hpp"

#include "headwise/detail/internal_end.hpp"

namespace headwise {

struct heatmap_options {
  std::size_t cell = 0;  ///< pixels per cell; 0 = fit the larger side into ~320 px (2 … 16): three maps across a 1200 px window
  std::string title;     ///< drawn above the map; empty = none
};

namespace detail {

inline std::string xml_escape(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

/// "#rrggbb" for probability p on the white → dark blue ramp, by sqrt(p).
inline std::string heat_colour(double p) {
  static const double stops[4][3] = {{255, 255, 255}, {198, 219, 239}, {66, 146, 198}, {8, 48, 107}};
  const double t = std::sqrt(std::clamp(p, 0.0, 1.0)) * 3;
  const int s = std::min(2, int(t));
  const double f = t - s;
  char buf[8];
  std::snprintf(buf, sizeof buf, "#%02x%02x%02x", int(std::lround(stops[s][0] + f * (stops[s + 1][0] - stops[s][0]))),
                int(std::lround(stops[s][1] + f * (stops[s + 1][1] - stops[s][1]))),
                int(std::lround(stops[s][2] + f * (stops[s + 1][2] - stops[s][2]))));
  return buf;
}

inline std::string label_or_index(const std::vector<std::string>& labels, std::size_t i) {
  return labels.empty() ? std::to_string(i) : labels[i];
}

}  // namespace detail

/// One head's probability block as a standalone SVG document.
template <class T>
std::string heatmap_svg(const probability_matrix<T>& p, const std::vector<std::string>& query_labels,
                        const std::vector<std::string>& key_labels, const heatmap_options& o = {}) {
  detail::check_heatmap_labels(query_labels.size(), key_labels.size(), p.rows, p.cols);
  const std::size_t side = std::max<std::size_t>({p.rows, p.cols, 1});
  const std::size_t cell = o.cell ? o.cell : std::clamp<std::size_t>(320 / side, 2, 16);
  const std::size_t font = std::clamp<std::size_t>(cell - 2, 7, 11);
  const std::size_t every = detail::ceil_div(font, cell);  // label every n-th token so text never overlaps
  std::size_t longest = 1;
  for (const auto* labels : {&query_labels, &key_labels})
    for (const std::string& s : *labels) longest = std::max(longest, s.size());
  if (query_labels.empty() || key_labels.empty()) longest = std::max(longest, std::to_string(side).size());
  const std::size_t margin = std::min<std::size_t>(longest, 16) * font * 6 / 10 + 8;
  const std::size_t top = margin + (o.title.empty() ? 0 : font + 10);
  const std::size_t width = margin + p.cols * cell + 4, height = top + p.rows * cell + 4;

  std::string s;
  s.reserve(256 + p.rows * p.cols * 110);
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%zu\" height=\"%zu\" "
                "font-family=\"sans-serif\" font-size=\"%zu\">\n",
                width, height, font);
  s += buf;
  if (!o.title.empty()) {
    std::snprintf(buf, sizeof buf, "<text x=\"%zu\" y=\"%zu\" font-weight=\"bold\">", margin, font + 4);
    s += buf + detail::xml_escape(o.title) + "</text>\n";
  }
  std::snprintf(buf, sizeof buf, "<rect x=\"%zu\" y=\"%zu\" width=\"%zu\" height=\"%zu\" fill=\"#e6e6e6\"/>\n",
                margin, top, p.cols * cell, p.rows * cell);
  s += buf;
  for (std::size_t j = 0; j < p.cols; j += every) {  // key labels, rotated over the columns
    const double x = double(margin + j * cell) + double(cell) / 2.0;
    std::snprintf(buf, sizeof buf, "<text transform=\"translate(%.1f,%zu) rotate(-90)\">", x + double(font) / 3.0,
                  top - 4);
    s += buf + detail::xml_escape(detail::label_or_index(key_labels, j)) + "</text>\n";
  }
  for (std::size_t r = 0; r < p.rows; r += every) {  // query labels, right-aligned left of the rows
    std::snprintf(buf, sizeof buf, "<text x=\"%zu\" y=\"%.1f\" text-anchor=\"end\">", margin - 4,
                  double(top + r * cell) + double(cell) / 2.0 + double(font) / 3.0);
    s += buf + detail::xml_escape(detail::label_or_index(query_labels, p.first_row + r)) + "</text>\n";
  }
  for (std::size_t r = 0; r < p.rows; ++r) {
    const std::string q_label = detail::xml_escape(detail::label_or_index(query_labels, p.first_row + r));
    for (std::size_t j = 0; j < p.cols; ++j) {
      const double v = double(p(r, j));
      if (!(v > 0)) continue;
      std::snprintf(buf, sizeof buf, "<rect x=\"%zu\" y=\"%zu\" width=\"%zu\" height=\"%zu\" fill=\"%s\"><title>",
                    margin + j * cell, top + r * cell, cell, cell, detail::heat_colour(v).c_str());
      s += buf;
      s += q_label + " \u2192 " + detail::xml_escape(detail::label_or_index(key_labels, j));
      std::snprintf(buf, sizeof buf, ": %.4g</title></rect>\n", v);
      s += buf;
    }
  }
  s += "</svg>\n";
  return s;
}

/// A self-contained HTML page: every head of a layer as a heatmap in a grid,
/// captions[h] under head h (empty: "head h"), hover read-out, no external files.
template <class T>
std::string heads_html(const std::vector<probability_matrix<T>>& heads,
                       const std::vector<std::string>& query_labels,
                       const std::vector<std::string>& key_labels, const std::string& title,
                       const std::vector<std::string>& captions = {}) {
  detail::check_heads_html(heads.size(), captions.size());
  std::string s =
      "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>" + detail::xml_escape(title) +
      "</title>\n<style>\n"
      "body{font-family:sans-serif;margin:16px;background:#fff;color:#222}\n"
      "h1{font-size:18px;margin:0 0 8px}\n"
      "#readout{font-family:monospace;background:#f4f4f4;padding:4px 8px;margin:0 0 12px;min-height:1.2em}\n"
      ".grid{display:flex;flex-wrap:wrap;gap:16px}\n"
      "figure{margin:0;border:1px solid #ddd;padding:6px}\n"
      "figcaption{font-size:13px;text-align:center}\n"
      "rect:hover{stroke:#d62728;stroke-width:1}\n"
      "</style></head>\n<body>\n<h1>" + detail::xml_escape(title) +
      "</h1>\n<p id=\"readout\">hover a cell: query \u2192 key: probability</p>\n<div class=\"grid\">\n";
  for (std::size_t h = 0; h < heads.size(); ++h) {
    s += "<figure>\n" + heatmap_svg(heads[h], query_labels, key_labels) + "<figcaption>" +
         detail::xml_escape(captions.empty() ? "head " + std::to_string(h) : captions[h]) +
         "</figcaption></figure>\n";
  }
  s += "</div>\n<script>\n"
       "document.addEventListener('mouseover', function (e) {\n"
       "  var t = e.target.querySelector ? e.target.querySelector('title') : null;\n"
       "  if (t) document.getElementById('readout').textContent = t.textContent;\n"
       "});\n"
       "</script>\n</body></html>\n";
  return s;
}

}  // namespace headwise
