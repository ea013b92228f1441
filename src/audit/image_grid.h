// PNG grids of images (libpng): the audit's recovered inputs next to the originals.
#pragma once

#include <Eigen/Dense>
#include <string>
#include <vector>

#include "protocol/error.h"

namespace darknight::audit {

/// Writes a grid of grey images as one 8-bit PNG: `cells[r][c]` is the image of row r,
/// column c (height x width values in row-major order; an empty vector leaves the cell
/// black), each stretched to [0, 255] by its own minimum and maximum, with a 2-pixel gap.
/// All rows have the same number of columns. An error when the file cannot be written.
///
/// Layout: white (255) gaps between neighbouring cells only, no border, so the PNG is
/// cols * width + (cols - 1) * 2 pixels wide and rows * height + (rows - 1) * 2 high; cell
/// (r, c) starts at pixel row r * (height + 2), column c * (width + 2). Within a cell,
/// non-finite values are ignored by the stretch and drawn 0, as is a constant image.
/// Throws darknight::Error on misuse: no cells, height or width < 1, rows of different
/// lengths, a non-empty cell without height * width values, a grid past libpng's limits.
Status write_png_grid(const std::string& path,
                      const std::vector<std::vector<Eigen::VectorXd>>& cells, int height,
                      int width);

}  // namespace darknight::audit
