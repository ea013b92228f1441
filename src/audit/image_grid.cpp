#include "audit/image_grid.h"

#include <png.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace darknight::audit {
namespace {

constexpr int kGap = 2;
constexpr uint8_t kGapGrey = 255;

/// Draws `cell` (height x width, row-major) into the canvas from `origin` (rows `stride`
/// bytes apart), stretched by its own minimum and maximum over its finite pixels to
/// [0, 255]. Non-finite pixels, and every pixel of a constant image, draw 0.
void draw_cell(const Eigen::VectorXd& cell, int height, int width, uint8_t* origin, size_t stride) {
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (double v : cell) {
    if (std::isfinite(v)) {
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
  }
  const double scale = hi > lo ? 255 / (hi - lo) : 0.0;
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      const double v = cell(static_cast<Eigen::Index>(y) * width + x);
      origin[y * stride + x] =
          std::isfinite(v) ? static_cast<uint8_t>(std::lround((v - lo) * scale)) : 0;
    }
  }
}

}  // namespace

Status write_png_grid(const std::string& path,
                      const std::vector<std::vector<Eigen::VectorXd>>& cells, int height,
                      int width) {
  DK_CHECK(height > 0 && width > 0, "write_png_grid: cells of {} x {} pixels", height, width);
  DK_CHECK(!cells.empty() && !cells[0].empty(), "write_png_grid: no cells");
  const size_t rows = cells.size(), cols = cells[0].size();
  for (const auto& row : cells) {
    DK_CHECK(row.size() == cols, "write_png_grid: rows of {} and {} cells", cols, row.size());
    for (const auto& cell : row) {
      DK_CHECK(cell.size() == 0 || cell.size() == static_cast<Eigen::Index>(height) * width,
               "write_png_grid: a cell of {} values, not {} x {}", cell.size(), height, width);
    }
  }
  const size_t canvas_w = cols * width + (cols - 1) * kGap;
  const size_t canvas_h = rows * height + (rows - 1) * kGap;
  DK_CHECK(canvas_w <= PNG_USER_WIDTH_MAX && canvas_h <= PNG_USER_HEIGHT_MAX,
           "write_png_grid: a grid of {} x {} pixels is too large", canvas_h, canvas_w);
  std::vector<uint8_t> canvas(canvas_w * canvas_h, kGapGrey);
  for (size_t r = 0; r < rows; ++r) {
    for (size_t c = 0; c < cols; ++c) {
      uint8_t* origin = canvas.data() + r * (height + kGap) * canvas_w + c * (width + kGap);
      if (cells[r][c].size() == 0) {
        for (int y = 0; y < height; ++y) std::fill_n(origin + y * canvas_w, width, 0);
      } else {
        draw_cell(cells[r][c], height, width, origin, canvas_w);
      }
    }
  }
  // libpng's simplified API: it keeps its setjmp/longjmp inside and reports failure (an
  // unopenable path, a write error; it then removes the partial file) in image.message.
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  image.width = static_cast<png_uint_32>(canvas_w);
  image.height = static_cast<png_uint_32>(canvas_h);
  image.format = PNG_FORMAT_GRAY;
  if (png_image_write_to_file(&image, path.c_str(), 0, canvas.data(),
                              static_cast<png_int_32>(canvas_w), nullptr) == 0) {
    Status failed = Status::error(fmt::format("cannot write PNG {}: {}", path, image.message));
    png_image_free(&image);
    return failed;
  }
  return {};
}

}  // namespace darknight::audit
