// heatmap_test: the SVG and HTML pictures of attention (heatmap.hpp), and a
// screenshot of the HTML page rendered by headless Chromium.
//
// The screenshot test runs when /usr/bin/chromium exists (Debian's chromium
// package) and decodes the PNG with zlib when the build found it: the page
// must not be blank — many distinct colours, a good share of non-white pixels.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <headwise/heatmap.hpp>

#ifdef HEADWISE_TEST_HAVE_ZLIB
#include <zlib.h>
#endif

#include "test_util.hpp"

namespace {

using namespace headwise;

/// Causal attention of H heads over a token sequence, with its labels.
struct layer {
  std::vector<std::string> tokens;
  std::vector<probability_matrix<float>> heads;

  explicit layer(std::vector<std::string> labels = {"<s>", "the", "cat", "sat", "on", "the", "mat", "&",
                                                    "\"slept\"", "<end>"},
                 std::size_t H = 3)
      : tokens(std::move(labels)) {
    const std::size_t N = tokens.size(), D = 8;
    hwtest::tensor<float> q(1, H, N, D), k(1, H, N, D), v(1, H, N, D), out(1, H, N, D);
    hwtest::fill_uniform(q, 5, 3.0);
    hwtest::fill_uniform(k, 6, 3.0);
    std::vector<float> lse(H * N);
    attention_options opt;
    opt.causal = causal_mode::top_left;
    opt.lse = lse_view(lse.data(), 1, H, N);
    attention(q.view, k.view, v.view, out.view, opt);
    heads = layer_probabilities(q.view, k.view, opt, 0);
  }
};

std::size_t count(const std::string& s, const std::string& what) {
  std::size_t n = 0;
  for (std::size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + 1)) ++n;
  return n;
}

TEST(Heatmap, SvgHasOneCellPerVisibleProbabilityAndEscapedLabels) {
  const layer l;
  const probability_matrix<float>& p = l.heads[0];
  const std::string svg = heatmap_svg(p, l.tokens, l.tokens, {10, "head 0 <causal>"});
  EXPECT_EQ(svg.rfind("<svg xmlns=\"http://www.w3.org/2000/svg\"", 0), 0u);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
  const std::size_t N = l.tokens.size();
  // Causal top-left: row i sees i + 1 keys, each a drawn cell with a hover title.
  EXPECT_EQ(count(svg, "<title>"), N * (N + 1) / 2);
  EXPECT_NE(svg.find("head 0 &lt;causal&gt;"), std::string::npos);
  EXPECT_NE(svg.find("&quot;slept&quot;"), std::string::npos);
  EXPECT_NE(svg.find("&amp;"), std::string::npos);
  EXPECT_EQ(svg.find("<s>"), std::string::npos) << "a raw '<' from a label leaked into the SVG";
  // The first row sees only key 0: probability 1, the darkest colour.
  EXPECT_NE(svg.find("fill=\"#08306b\"><title>&lt;s&gt; \u2192 &lt;s&gt;: 1</title>"), std::string::npos);
}

TEST(Heatmap, ColourRampIsMonotoneFromWhiteToDarkBlue) {
  EXPECT_EQ(detail::heat_colour(0.0), "#ffffff");
  EXPECT_EQ(detail::heat_colour(1.0), "#08306b");
  int previous = 3 * 255 + 1;
  for (double p = 0; p <= 1.0; p += 0.01) {
    const std::string c = detail::heat_colour(p);
    const int r = std::stoi(c.substr(1, 2), nullptr, 16), g = std::stoi(c.substr(3, 2), nullptr, 16),
              b = std::stoi(c.substr(5, 2), nullptr, 16);
    EXPECT_TRUE(r + g + b <= previous) << "brightness rises at p = " << p;
    previous = r + g + b;
  }
}

TEST(Heatmap, LabelCountsAreChecked) {
  const layer l;
  const std::vector<std::string> short_labels(3, "x");
  try {
    heatmap_svg(l.heads[0], short_labels, l.tokens);
    ADD_FAILURE() << "no error";
  } catch (const headwise::error& e) {
    EXPECT_NE(std::string(e.what()).find("query_labels.size()"), std::string::npos) << e.what();
  }
  EXPECT_THROW(heads_html(l.heads, l.tokens, l.tokens, "t", {"one caption"}), headwise::error);
}

TEST(Heatmap, HtmlPageIsSelfContained) {
  const layer l;
  const std::string html = heads_html(l.heads, l.tokens, l.tokens, "layer 0", {"prev", "uniform", "sink"});
  EXPECT_EQ(html.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_EQ(count(html, "<svg "), 3u);
  EXPECT_EQ(count(html, "<figcaption>"), 3u);
  EXPECT_NE(html.find("<figcaption>sink</figcaption>"), std::string::npos);
  EXPECT_NE(html.find("id=\"readout\""), std::string::npos);
  for (const char* external : {"src=", "href=", "@import", "url(", "@font-face"})
    EXPECT_EQ(html.find(external), std::string::npos) << "the page loads something: " << external;
}

#ifdef HEADWISE_TEST_HAVE_ZLIB
std::uint32_t big_endian(const unsigned char* p) {
  return std::uint32_t(p[0]) << 24 | std::uint32_t(p[1]) << 16 | std::uint32_t(p[2]) << 8 | p[3];
}

/// Decodes an 8-bit RGB or RGBA, non-interlaced PNG (what Chromium writes) into
/// RGB triples: chunks → zlib inflate of the IDAT stream → per-row unfiltering.
bool read_png(const std::string& path, std::vector<unsigned char>& rgb) {
  std::ifstream f(path, std::ios::binary);
  const std::vector<unsigned char> file((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const unsigned char signature[8] = {137, 'P', 'N', 'G', '\r', '\n', 26, '\n'};
  if (file.size() < 8 || !std::equal(signature, signature + 8, file.begin())) return false;
  std::uint32_t width = 0, height = 0, channels = 0;
  std::vector<unsigned char> idat;
  for (std::size_t at = 8; at + 12 <= file.size();) {
    const std::uint32_t len = big_endian(&file[at]);
    const std::string type(file.begin() + long(at) + 4, file.begin() + long(at) + 8);
    const unsigned char* data = &file[at + 8];
    if (at + 12 + len > file.size()) return false;
    if (type == "IHDR") {
      width = big_endian(data), height = big_endian(data + 4);
      channels = data[9] == 2 ? 3 : data[9] == 6 ? 4 : 0;
      if (data[8] != 8 || channels == 0 || data[12] != 0) return false;  // 8-bit RGB(A), no interlace
    } else if (type == "IDAT") {
      idat.insert(idat.end(), data, data + len);
    }
    at += 12 + len;
  }
  const std::size_t stride = std::size_t(width) * channels;
  std::vector<unsigned char> raw(std::size_t(height) * (stride + 1));
  uLongf raw_size = raw.size();
  if (width == 0 || uncompress(raw.data(), &raw_size, idat.data(), idat.size()) != Z_OK || raw_size != raw.size())
    return false;
  std::vector<unsigned char> image(std::size_t(height) * stride);
  for (std::size_t y = 0; y < height; ++y) {
    const unsigned char filter = raw[y * (stride + 1)];
    const unsigned char* in = &raw[y * (stride + 1) + 1];
    unsigned char* row = &image[y * stride];
    const unsigned char* up = y ? row - stride : nullptr;
    for (std::size_t x = 0; x < stride; ++x) {
      const int a = x >= channels ? row[x - channels] : 0, b = up ? up[x] : 0,
                c = up && x >= channels ? up[x - channels] : 0;
      const int p = a + b - c, pa = std::abs(p - a), pb = std::abs(p - b), pc = std::abs(p - c);
      const int paeth = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      const int predictor[5] = {0, a, b, (a + b) / 2, paeth};
      if (filter > 4) return false;
      row[x] = static_cast<unsigned char>(in[x] + predictor[filter]);
    }
  }
  rgb.clear();
  for (std::size_t px = 0; px < std::size_t(width) * height; ++px)
    rgb.insert(rgb.end(), &image[px * channels], &image[px * channels] + 3);
  return true;
}

/// Distinct colours and the share of non-white pixels of a PNG file.
bool png_summary(const std::string& path, std::size_t& colours, double& ink) {
  std::vector<unsigned char> px;
  if (!read_png(path, px) || px.empty()) return false;
  std::set<unsigned> distinct;
  std::size_t non_white = 0;
  for (std::size_t i = 0; i + 2 < px.size(); i += 3) {
    distinct.insert(unsigned(px[i]) << 16 | unsigned(px[i + 1]) << 8 | px[i + 2]);
    non_white += px[i] < 250 || px[i + 1] < 250 || px[i + 2] < 250;
  }
  colours = distinct.size();
  ink = double(non_white) / double(px.size() / 3);
  return true;
}
#endif

TEST(Heatmap, ChromiumScreenshotIsNotBlank) {
  const char* chromium = "/usr/bin/chromium";
  if (std::FILE* f = std::fopen(chromium, "r"))
    std::fclose(f);
  else
    GTEST_SKIP() << chromium << " not installed (apt-get install chromium)";
#ifndef HEADWISE_TEST_HAVE_ZLIB
  GTEST_SKIP() << "zlib not found at configure time: cannot decode the screenshot";
#else
  char dir_template[] = "/tmp/headwise_heatmap_XXXXXX";
  const char* dir_c = mkdtemp(dir_template);
  ASSERT_NE(dir_c, nullptr);
  const std::string dir = dir_c, page = dir + "/heads.html", png = dir + "/heads.png";
  {
    std::vector<std::string> tokens;  // 6 heads of 32 tokens: two rows of maps fill the window
    for (int i = 0; i < 32; ++i) tokens.push_back("tok" + std::to_string(i));
    const layer l(tokens, 6);
    std::ofstream(page) << heads_html(l.heads, l.tokens, l.tokens, "heatmap_test layer");
  }
  // Offline, no GPU, no sandbox (CI runs as root), a throw-away profile; timeout
  // bounds the run well under the 60 s test budget.
  const std::string cmd = std::string("timeout 45 ") + chromium +
                          " --headless --no-sandbox --disable-gpu --disable-quic --no-first-run"
                          " --disable-background-networking --disable-component-update --disable-sync"
                          " --user-data-dir=" + dir + "/profile --screenshot=" + png +
                          " --window-size=1200,900 file://" + page + " > " + dir + "/chromium.log 2>&1";
  const int rc = std::system(cmd.c_str());
  std::size_t colours = 0;
  double ink = 0;
  ASSERT_TRUE(png_summary(png, colours, ink)) << "no readable screenshot; chromium exit " << rc << ", see "
                                              << dir << "/chromium.log";
  EXPECT_TRUE(colours >= 20) << colours << " distinct colours in " << png;
  EXPECT_TRUE(ink >= 0.05) << "only " << ink * 100 << "% of the pixels are not white in " << png;
  std::filesystem::remove_all(dir);
#endif
}

}  // namespace
