// Datasets: Fashion-MNIST (IDX, gzip read in place), CIFAR-10/100 (binary), synthetic.
// Files are untrusted input: every file is validated whole before any example is used.
#pragma once

#include <span>
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

/// The largest image a JPEG may declare (64 megapixels: a 192 MiB RGB buffer).
inline constexpr int64_t kMaxJpegPixels = int64_t{1} << 26;
/// Decodes a JPEG into [3, size, size] floats in [0, 1]: shorter side resized to `size`
/// (bilinear), centre crop. The declared size is checked against `max_pixels` before the
/// decode buffer is allocated; `name` names the image in errors.
Result<Tensor> decode_jpeg(std::span<const unsigned char> bytes, int64_t size,
                           const std::string& name, int64_t max_pixels = kMaxJpegPixels);
/// Reads a JPEG file and decodes it (decode_jpeg).
Result<Tensor> load_jpeg(const std::string& path, int64_t size);

/// The most a gzip file may decompress to (1 GiB; Fashion-MNIST's largest file is 47 MB):
/// decompression stops with an error there, so a small file cannot fill the memory.
inline constexpr size_t kMaxGzipBytes = size_t{1} << 30;
/// Decompresses a whole gzip stream, verifying its CRC and length (zlib); more than
/// `max_bytes` of output is an error, found before the output grows past the cap.
Result<std::vector<unsigned char>> gunzip(std::span<const unsigned char> bytes, size_t max_bytes,
                                          const std::string& name);
/// Reads a gzip file and decompresses it (gunzip).
Result<std::vector<unsigned char>> read_gzip(const std::string& path,
                                             size_t max_bytes = kMaxGzipBytes);

/// Decodes Fashion-MNIST's IDX files (decompressed): images (magic 0x803, [N, rows, cols]
/// bytes) and labels (magic 0x801, N bytes in 0..9). Every size in the headers is checked
/// against the bytes present before anything is allocated.
Result<Dataset> decode_idx(std::span<const unsigned char> images,
                           std::span<const unsigned char> labels, const std::string& images_name,
                           const std::string& labels_name);
/// Decodes one CIFAR binary batch file (CIFAR-10: label byte + 3072 pixel bytes per record;
/// CIFAR-100: coarse and fine label bytes + 3072), checked whole first. `classes`: 10, 100.
Result<Dataset> decode_cifar_batch(std::span<const unsigned char> bytes, int classes,
                                   const std::string& name);

}  // namespace darknight::data
