#include "audit/image_grid.h"

#include <gtest/gtest.h>
#include <png.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <random>

namespace darknight::audit {
namespace {

namespace fs = std::filesystem;

constexpr int kH = 4, kW = 5;  // a cell: 4 rows of 5 pixels

struct Grey {
  int width = 0, height = 0;
  uint32_t format = 0;  // as stored in the file
  std::vector<uint8_t> pixels;
  uint8_t at(int y, int x) const { return pixels[static_cast<size_t>(y) * width + x]; }
};

/// Reads a PNG back with libpng's simplified API, as 8-bit grey.
Grey read_png(const std::string& path) {
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  Grey out;
  if (png_image_begin_read_from_file(&image, path.c_str()) == 0) {
    ADD_FAILURE() << "cannot read " << path << ": " << image.message;
    return out;
  }
  out.format = image.format;
  image.format = PNG_FORMAT_GRAY;
  out.width = static_cast<int>(image.width);
  out.height = static_cast<int>(image.height);
  out.pixels.resize(PNG_IMAGE_SIZE(image));
  if (png_image_finish_read(&image, nullptr, out.pixels.data(), 0, nullptr) == 0) {
    ADD_FAILURE() << "cannot decode " << path << ": " << image.message;
  }
  return out;
}

std::string temp_path(const std::string& name) {
  const fs::path dir = fs::path(::testing::TempDir()) / "dk_image_grid";
  fs::create_directories(dir);
  return (dir / name).string();
}

TEST(ImageGrid, WritesStretchedCellsWithGaps) {
  std::mt19937_64 g(3);
  std::normal_distribution<double> n(0, 10);
  std::vector<std::vector<Eigen::VectorXd>> cells(2, std::vector<Eigen::VectorXd>(3));
  for (auto& row : cells) {
    for (auto& cell : row) {
      cell.resize(kH * kW);
      for (double& v : cell) v = n(g);
    }
  }
  cells[0][1] = Eigen::VectorXd();                            // empty: black
  cells[1][0] = Eigen::VectorXd::Constant(kH * kW, 7.0);      // constant: black
  cells[1][1](3) = std::numeric_limits<double>::quiet_NaN();  // drawn 0, not stretched
  const std::string path = temp_path("grid.png");
  const Status st = write_png_grid(path, cells, kH, kW);
  ASSERT_TRUE(st.ok()) << st.message();

  const Grey png = read_png(path);
  EXPECT_EQ(png.format, static_cast<uint32_t>(PNG_FORMAT_GRAY));  // 8-bit grey, no alpha
  ASSERT_EQ(png.width, 3 * kW + 2 * 2);
  ASSERT_EQ(png.height, 2 * kH + 1 * 2);
  for (int r = 0; r < 2; ++r) {
    for (int c = 0; c < 3; ++c) {
      const Eigen::VectorXd& cell = cells[r][c];
      const int top = r * (kH + 2), left = c * (kW + 2);
      const bool drawn = cell.size() > 0 && cell.maxCoeff() > cell.minCoeff();
      double lo = 1e300, hi = -1e300;
      for (double v : cell) {
        if (std::isfinite(v)) {
          lo = std::min(lo, v);
          hi = std::max(hi, v);
        }
      }
      int n_black = 0, n_white = 0;
      for (int y = 0; y < kH; ++y) {
        for (int x = 0; x < kW; ++x) {
          const int got = png.at(top + y, left + x);
          const double v = drawn ? cell(y * kW + x) : 0.0;
          const int want = drawn && std::isfinite(v) ? std::lround(255 * (v - lo) / (hi - lo)) : 0;
          EXPECT_EQ(got, want) << "cell " << r << "," << c << " pixel " << y << "," << x;
          n_black += got == 0;
          n_white += got == 255;
        }
      }
      if (drawn) {
        EXPECT_GE(n_white, 1) << "cell " << r << "," << c;  // its maximum
      }
      EXPECT_GE(n_black, 1) << "cell " << r << "," << c;  // its minimum
    }
  }
  // The gaps: pixel rows 4 and 5, pixel columns 5, 6, 12 and 13.
  for (int y = 0; y < png.height; ++y) {
    for (int x : {5, 6, 12, 13}) EXPECT_EQ(png.at(y, x), 255) << y << "," << x;
  }
  for (int x = 0; x < png.width; ++x) {
    for (int y : {4, 5}) EXPECT_EQ(png.at(y, x), 255) << y << "," << x;
  }
}

TEST(ImageGrid, UnwritablePathIsAnError) {
  const std::string path = temp_path("no/such/folder/grid.png");
  const std::vector<std::vector<Eigen::VectorXd>> cells = {{Eigen::VectorXd::Zero(kH * kW)}};
  const Status st = write_png_grid(path, cells, kH, kW);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find(path), std::string::npos) << st.message();
  EXPECT_FALSE(fs::exists(path));
}

TEST(ImageGrid, MisuseThrows) {
  const std::vector<std::vector<Eigen::VectorXd>> ragged = {{Eigen::VectorXd()},
                                                            {Eigen::VectorXd(), Eigen::VectorXd()}};
  EXPECT_THROW((void)write_png_grid(temp_path("x.png"), ragged, kH, kW), Error);
  const std::vector<std::vector<Eigen::VectorXd>> wrong = {{Eigen::VectorXd::Zero(3)}};
  EXPECT_THROW((void)write_png_grid(temp_path("x.png"), wrong, kH, kW), Error);
  EXPECT_THROW((void)write_png_grid(temp_path("x.png"), {}, kH, kW), Error);
}

}  // namespace
}  // namespace darknight::audit
