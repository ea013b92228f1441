// Datasets: Fashion-MNIST (IDX, gzip read in place), CIFAR-10/100 (binary), synthetic.
// Files are untrusted input: every file is validated whole before any example is used.
#pragma once

#include <string>
#include <vector>

#include "protocol/error.h"
#include "protocol/tensor.h"

namespace darknight::data {

enum class Split { train, test };

struct Dataset {
  std::string name;
  Tensor images;            ///< [N, C, H, W], pixels in [0, 1] (then normalised if asked)
  std::vector<int> labels;  ///< empty when the data has none (synthetic)
  int classes = 0;
};

struct LoadOptions {
  Split split = Split::test;
  int64_t limit = 0;     ///< keep the first N examples (0: all)
  Shape synthetic_item;  ///< item shape of synthetic data ([C, H, W])
  int64_t synthetic_count = 64;
  int synthetic_classes = 0;  ///< > 0: synthetic data gets random labels in 0..classes-1
  int64_t image_size = 224;   ///< imagefolder: the model's input height and width
  uint64_t seed = 1;
};

/// Loads "synthetic", "fashion-mnist[:DIR]", "cifar10:DIR", "cifar100:DIR" or
/// "imagefolder:DIR" (JPEG files in DIR/train/<class>/ and DIR/val/<class>/, classes in
/// name order, each image resized so its shorter side is opts.image_size and centre-cropped
/// to image_size x image_size).
Result<Dataset> load(const std::string& spec, const LoadOptions& opts);

/// Parses "MEAN[,MEAN..]:STD[,STD..]" and normalises each channel: (x - mean) / std.
/// One value applies to every channel.
Status normalize(Dataset& d, const std::string& spec);

/// The order of an epoch's examples: a permutation of 0..n-1 drawn from (seed, epoch),
/// so a resumed run sees the same order.
std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int epoch);

/// Random crop (after zero padding by `pad`) and horizontal flip, per image, as
/// torchvision's RandomCrop(size, padding) + RandomHorizontalFlip do.
struct Augment {
  bool crop_flip = false;
  int pad = 4;
};

/// Images order[begin, begin + count) as a batch, augmented, with their labels.
Tensor gather(const Dataset& d, const std::vector<int64_t>& order, int64_t begin, int64_t count,
              const Augment& aug, uint64_t seed, std::vector<int>& labels);

/// Decodes a JPEG file into [3, size, size] floats in [0, 1]: shorter side resized to
/// `size` (bilinear), centre crop.
Result<Tensor> load_jpeg(const std::string& path, int64_t size);

/// Decompresses a whole gzip file, verifying its CRC and length (zlib).
Result<std::vector<unsigned char>> read_gzip(const std::string& path);

}  // namespace darknight::data
