#include "data/datasets.h"

#include <turbojpeg.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <sstream>

#include "protocol/checked.h"

namespace darknight::data {
namespace fs = std::filesystem;

namespace {

Result<std::vector<unsigned char>> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return Status::error(fmt::format("cannot open {}", path));
  std::vector<unsigned char> bytes((std::istreambuf_iterator<char>(f)), {});
  if (f.bad()) return Status::error(fmt::format("cannot read {}", path));
  return bytes;
}

uint32_t be32(const unsigned char* p) {
  return uint32_t{p[0]} << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 | p[3];
}

Result<Dataset> fashion_mnist(const std::string& dir, Split split) {
  const std::string prefix = split == Split::train ? "train" : "t10k";
  const std::string ipath = dir + "/" + prefix + "-images-idx3-ubyte.gz";
  const std::string lpath = dir + "/" + prefix + "-labels-idx1-ubyte.gz";
  auto img = read_gzip(ipath);
  if (!img.ok()) return img.status();
  auto lab = read_gzip(lpath);
  if (!lab.ok()) return lab.status();
  return decode_idx(img.value(), lab.value(), ipath, lpath);
}

/// Checks one CIFAR batch file (whole records, every label in range); its record count.
Result<int64_t> cifar_records(std::span<const unsigned char> bytes, int classes,
                              const std::string& name) {
  const int64_t header = classes == 10 ? 1 : 2, record = header + 3072;
  const auto size = static_cast<int64_t>(bytes.size());
  if (size == 0 || size % record != 0)
    return Status::error(
        fmt::format("{}: {} bytes is not a whole number of {}-byte records", name, size, record));
  for (int64_t r = 0; r < size / record; ++r) {
    const int label = bytes[static_cast<size_t>(r * record + header - 1)];
    if (label >= classes)
      return Status::error(
          fmt::format("{}: label {} of record {} is not in 0..{}", name, label, r, classes - 1));
  }
  return size / record;
}

/// Appends the records of checked CIFAR batch files to a dataset of `n` images in all.
Dataset cifar_dataset(const std::vector<std::span<const unsigned char>>& files, int classes,
                      int64_t n) {
  const int64_t header = classes == 10 ? 1 : 2, record = header + 3072;
  Dataset d;
  d.name = classes == 10 ? "cifar10" : "cifar100";
  d.classes = classes;
  d.images = Tensor::uninitialized(Shape{n, 3, 32, 32});
  int64_t i = 0;
  for (const auto& f : files)
    for (size_t r = 0; r < f.size() / static_cast<size_t>(record); ++r, ++i) {
      const unsigned char* rec = f.data() + r * static_cast<size_t>(record);
      d.labels.push_back(rec[header - 1]);
      for (int64_t p = 0; p < 3072; ++p) d.images[i * 3072 + p] = rec[header + p] / 255.0f;
    }
  DK_ASSERT(i == n);
  return d;
}

Result<Dataset> cifar(const std::string& dir, int classes, Split split) {
  // The files of the official binary archives, in the directory or its archive subfolder.
  std::vector<std::string> names;
  if (classes == 10) {
    if (split == Split::test)
      names = {"test_batch.bin"};
    else
      for (int i = 1; i <= 5; ++i) names.push_back(fmt::format("data_batch_{}.bin", i));
  } else {
    names = {split == Split::test ? "test.bin" : "train.bin"};
  }
  const std::string sub = classes == 10 ? "cifar-10-batches-bin" : "cifar-100-binary";
  std::vector<std::vector<unsigned char>> files;
  int64_t n = 0;
  for (const auto& name : names) {
    std::string path = dir + "/" + name;
    if (!fs::exists(path) && fs::exists(dir + "/" + sub + "/" + name))
      path = dir + "/" + sub + "/" + name;
    auto bytes = read_file(path);
    if (!bytes.ok()) return bytes.status();
    auto records = cifar_records(bytes.value(), classes, path);
    if (!records.ok()) return records.status();
    n += records.value();
    files.push_back(std::move(bytes).value());
  }
  return cifar_dataset({files.begin(), files.end()}, classes, n);
}

/// Bilinear resize of an interleaved RGB image so its shorter side is `size`, then a
/// centre crop, into planar [3, size, size] floats in [0, 1].
Tensor resize_crop(const unsigned char* rgb, int w, int h, int64_t size) {
  const double scale = double(size) / std::min(w, h);
  const double sw = w * scale, sh = h * scale;
  const double ox = (sw - double(size)) / 2, oy = (sh - double(size)) / 2;
  Tensor out = Tensor::uninitialized(Shape{3, size, size});
  for (int64_t y = 0; y < size; ++y) {
    const double fy = std::clamp((y + oy + 0.5) / scale - 0.5, 0.0, double(h - 1));
    const int y0 = static_cast<int>(fy), y1 = std::min(y0 + 1, h - 1);
    const double wy = fy - y0;
    for (int64_t x = 0; x < size; ++x) {
      const double fx = std::clamp((x + ox + 0.5) / scale - 0.5, 0.0, double(w - 1));
      const int x0 = static_cast<int>(fx), x1 = std::min(x0 + 1, w - 1);
      const double wx = fx - x0;
      for (int c = 0; c < 3; ++c) {
        auto px = [&](int yy, int xx) { return double(rgb[(size_t(yy) * w + xx) * 3 + c]); };
        const double v = (1 - wy) * ((1 - wx) * px(y0, x0) + wx * px(y0, x1)) +
                         wy * ((1 - wx) * px(y1, x0) + wx * px(y1, x1));
        out[(c * size + y) * size + x] = static_cast<float>(v / 255.0);
      }
    }
  }
  return out;
}

bool is_jpeg_name(const fs::path& p) {
  std::string e = p.extension().string();
  std::transform(e.begin(), e.end(), e.begin(), ::tolower);
  return e == ".jpg" || e == ".jpeg";
}

Result<Dataset> image_folder(const std::string& dir, Split split, int64_t size) {
  const fs::path root = fs::path(dir) / "train";
  fs::path part = fs::path(dir) / (split == Split::train ? "train" : "val");
  if (split == Split::test && !fs::is_directory(part)) part = fs::path(dir) / "test";
  if (!fs::is_directory(root) || !fs::is_directory(part))
    return Status::error(
        fmt::format("imagefolder: {} needs train/ and val/ (or test/) "
                    "folders with one sub-folder per class",
                    dir));
  std::vector<std::string> classes;
  for (const auto& e : fs::directory_iterator(root))
    if (e.is_directory()) classes.push_back(e.path().filename().string());
  std::sort(classes.begin(), classes.end());
  if (classes.empty())
    return Status::error(fmt::format("imagefolder: no class folders in {}", root.string()));
  std::vector<std::pair<std::string, int>> files;
  for (const auto& e : fs::directory_iterator(part)) {
    if (!e.is_directory()) continue;
    const auto it = std::find(classes.begin(), classes.end(), e.path().filename().string());
    if (it == classes.end())
      return Status::error(
          fmt::format("imagefolder: class {} of {} is not among the training "
                      "classes",
                      e.path().filename().string(), part.string()));
    for (const auto& f : fs::directory_iterator(e.path()))
      if (f.is_regular_file() && is_jpeg_name(f.path()))
        files.emplace_back(f.path().string(), static_cast<int>(it - classes.begin()));
  }
  std::sort(files.begin(), files.end());
  if (files.empty())
    return Status::error(fmt::format("imagefolder: no JPEG files in {}", part.string()));
  Dataset d;
  d.name = "imagefolder";
  d.classes = static_cast<int>(classes.size());
  d.images = Tensor::uninitialized(Shape{static_cast<int64_t>(files.size()), 3, size, size});
  for (size_t i = 0; i < files.size(); ++i) {
    auto img = load_jpeg(files[i].first, size);
    if (!img.ok()) return img.status();
    std::copy(img.value().data(), img.value().data() + 3 * size * size,
              d.images.data() + static_cast<int64_t>(i) * 3 * size * size);
    d.labels.push_back(files[i].second);
  }
  return d;
}

}  // namespace

Result<Dataset> decode_idx(std::span<const unsigned char> ib, std::span<const unsigned char> lb,
                           const std::string& ipath, const std::string& lpath) {
  if (ib.size() < 16 || be32(ib.data()) != 0x803)
    return Status::error(fmt::format("{}: not an IDX image file (bad magic)", ipath));
  if (lb.size() < 8 || be32(lb.data()) != 0x801)
    return Status::error(fmt::format("{}: not an IDX label file (bad magic)", lpath));
  const int64_t n = be32(ib.data() + 4), rows = be32(ib.data() + 8), cols = be32(ib.data() + 12);
  if (rows == 0 || cols == 0 || rows > 4096 || cols > 4096)
    return Status::error(fmt::format("{}: absurd image size {}x{}", ipath, rows, cols));
  const int64_t dims[] = {n, rows, cols};
  const auto pixels = checked_product(dims, Shape::kMaxElements);
  const uint64_t have = ib.size() - 16;
  if (!pixels || have != static_cast<uint64_t>(*pixels))
    return Status::error(
        fmt::format("{}: header says {} images of {}x{} ({} bytes), payload has {}", ipath, n, rows,
                    cols, pixels ? fmt::to_string(*pixels) : "too many", have));
  const int64_t nl = be32(lb.data() + 4);
  if (lb.size() - 8 != static_cast<uint64_t>(nl))
    return Status::error(
        fmt::format("{}: header says {} labels, payload has {}", lpath, nl, lb.size() - 8));
  if (nl != n)
    return Status::error(fmt::format("{} images but {} labels ({}, {})", n, nl, ipath, lpath));
  for (int64_t i = 0; i < n; ++i)
    if (lb[static_cast<size_t>(8 + i)] >= 10)
      return Status::error(fmt::format("{}: label {} of example {} is not in 0..9", lpath,
                                       lb[static_cast<size_t>(8 + i)], i));
  Dataset d;
  d.name = "fashion-mnist";
  d.classes = 10;
  d.images = Tensor::uninitialized(Shape{n, 1, rows, cols});
  for (int64_t i = 0; i < *pixels; ++i)
    d.images[i] = static_cast<float>(ib[static_cast<size_t>(16 + i)]) / 255.0f;
  d.labels.assign(lb.begin() + 8, lb.end());
  return d;
}

Result<Dataset> decode_cifar_batch(std::span<const unsigned char> bytes, int classes,
                                   const std::string& name) {
  DK_CHECK(classes == 10 || classes == 100, "CIFAR has 10 or 100 classes, not {}", classes);
  auto n = cifar_records(bytes, classes, name);
  if (!n.ok()) return n.status();
  return cifar_dataset({bytes}, classes, n.value());
}

Result<Tensor> decode_jpeg(std::span<const unsigned char> b, int64_t size, const std::string& name,
                           int64_t max_pixels) {
  DK_CHECK(size > 0 && size <= 1 << 16, "image size {} is not in 1..65536", size);
  tjhandle tj = tjInitDecompress();
  if (!tj) return Status::error("libjpeg-turbo failed to initialise");
  int w = 0, h = 0, subsamp = 0, colorspace = 0;
  Result<Tensor> out = Status::error("unset");
  if (b.size() > std::numeric_limits<unsigned long>::max() ||
      tjDecompressHeader3(tj, b.data(), static_cast<unsigned long>(b.size()), &w, &h, &subsamp,
                          &colorspace) != 0) {
    out = Status::error(fmt::format("{}: not a readable JPEG: {}", name, tjGetErrorStr2(tj)));
  } else if (w <= 0 || h <= 0 || int64_t{w} * h > max_pixels) {
    out = Status::error(
        fmt::format("{}: JPEG size {}x{} is more than {} pixels", name, w, h, max_pixels));
  } else {
    std::vector<unsigned char> rgb(static_cast<size_t>(w) * h * 3);
    if (tjDecompress2(tj, b.data(), static_cast<unsigned long>(b.size()), rgb.data(), w, 0, h,
                      TJPF_RGB, 0) != 0 &&
        tjGetErrorCode(tj) == TJERR_FATAL)
      out = Status::error(fmt::format("{}: corrupt JPEG: {}", name, tjGetErrorStr2(tj)));
    else
      out = resize_crop(rgb.data(), w, h, size);
  }
  tjDestroy(tj);
  return out;
}

Result<Tensor> load_jpeg(const std::string& path, int64_t size) {
  auto bytes = read_file(path);
  if (!bytes.ok()) return bytes.status();
  return decode_jpeg(bytes.value(), size, path);
}

Result<std::vector<unsigned char>> gunzip(std::span<const unsigned char> in, size_t max_bytes,
                                          const std::string& name) {
  z_stream z{};
  if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK)
    return Status::error(fmt::format("{}: zlib failed to initialise", name));
  std::vector<unsigned char> out;
  unsigned char buf[1 << 16];
  size_t fed = 0;  // bytes of `in` handed to zlib so far
  bool too_big = false;
  int rc = Z_OK;
  for (;;) {
    if (z.avail_in == 0 && fed < in.size()) {
      const size_t k = std::min<size_t>(in.size() - fed, std::numeric_limits<uInt>::max());
      z.next_in = const_cast<unsigned char*>(in.data() + fed);
      z.avail_in = static_cast<uInt>(k);
      fed += k;
    }
    z.next_out = buf;
    z.avail_out = sizeof buf;
    rc = inflate(&z, Z_NO_FLUSH);
    const size_t produced = sizeof buf - z.avail_out;
    if (produced > max_bytes - out.size()) {  // the cap, checked before the output grows
      too_big = true;
      break;
    }
    out.insert(out.end(), buf, buf + produced);
    if (rc == Z_OK || (rc == Z_BUF_ERROR && z.avail_in == 0 && fed < in.size())) continue;
    break;  // the end, an error, or the input ended early (Z_BUF_ERROR)
  }
  const size_t left = z.avail_in + (in.size() - fed);
  inflateEnd(&z);
  if (too_big)
    return Status::error(fmt::format(
        "{}: decompresses to more than {} bytes, the limit (not a dataset file, or a gzip bomb)",
        name, max_bytes));
  if (rc == Z_DATA_ERROR)
    return Status::error(fmt::format("{}: corrupt gzip data or CRC mismatch", name));
  if (rc != Z_STREAM_END)
    return Status::error(fmt::format("{}: truncated gzip file (no complete trailer)", name));
  if (left != 0)
    return Status::error(fmt::format("{}: {} unexpected bytes after the gzip stream", name, left));
  return out;
}

Result<std::vector<unsigned char>> read_gzip(const std::string& path, size_t max_bytes) {
  auto raw = read_file(path);
  if (!raw.ok()) return raw.status();
  return gunzip(raw.value(), max_bytes, path);
}

Result<Dataset> load(const std::string& spec, const LoadOptions& opts) {
  const auto colon = spec.find(':');
  const std::string kind = spec.substr(0, colon);
  const std::string dir = colon == std::string::npos ? "" : spec.substr(colon + 1);
  Result<Dataset> d = Status::error("unset");
  if (kind == "synthetic") {
    DK_CHECK(opts.synthetic_item.rank() == 3, "synthetic data needs an item shape");
    const int64_t n = opts.limit > 0 ? opts.limit : opts.synthetic_count;
    Dataset s;
    s.name = "synthetic";
    std::vector<int64_t> dims{n};
    for (int64_t v : opts.synthetic_item.dims()) dims.push_back(v);
    s.images = Tensor(Shape(std::span<const int64_t>(dims)));
    std::mt19937_64 rng(opts.seed);
    std::uniform_real_distribution<float> u(0.0f, 1.0f);
    for (int64_t i = 0; i < s.images.numel(); ++i) s.images[i] = u(rng);
    if (opts.synthetic_classes > 0) {
      s.classes = opts.synthetic_classes;
      for (int64_t i = 0; i < n; ++i)
        s.labels.push_back(static_cast<int>(rng() % static_cast<uint64_t>(s.classes)));
    }
    return s;
  } else if (kind == "fashion-mnist") {
    d = fashion_mnist(dir.empty() ? "/usr/share/datasets/fashion-mnist" : dir, opts.split);
  } else if (kind == "cifar10" || kind == "cifar100") {
    if (dir.empty()) return Status::error(kind + " needs a directory: " + kind + ":DIR");
    d = cifar(dir, kind == "cifar10" ? 10 : 100, opts.split);
  } else if (kind == "imagefolder") {
    if (dir.empty()) return Status::error("imagefolder needs a directory: imagefolder:DIR");
    d = image_folder(dir, opts.split, opts.image_size);
  } else {
    return Status::error(
        fmt::format("unknown data '{}' (synthetic, fashion-mnist[:DIR], "
                    "cifar10:DIR, cifar100:DIR, imagefolder:DIR)",
                    spec));
  }
  if (!d.ok() || opts.limit <= 0 || opts.limit >= d.value().images.shape()[0]) return d;
  Dataset& full = d.value();
  Dataset cut;
  cut.name = full.name;
  cut.classes = full.classes;
  cut.images = Tensor(full.images.shape().with_batch(opts.limit), full.images.items(0, opts.limit));
  cut.labels.assign(full.labels.begin(), full.labels.begin() + opts.limit);
  return cut;
}

std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int epoch) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[static_cast<size_t>(i)] = i;
  std::mt19937_64 rng(seed * 1000003 + static_cast<uint64_t>(epoch));
  std::shuffle(order.begin(), order.end(), rng);
  return order;
}

Tensor gather(const Dataset& d, const std::vector<int64_t>& order, int64_t begin, int64_t count,
              const Augment& aug, uint64_t seed, std::vector<int>& labels) {
  const Shape& full = d.images.shape();
  const int64_t item = full.item_numel();
  Tensor batch = Tensor::uninitialized(full.with_batch(count));
  labels.resize(static_cast<size_t>(count));
  std::mt19937_64 rng(seed);
  for (int64_t i = 0; i < count; ++i) {
    const int64_t src = order[static_cast<size_t>(begin + i)];
    labels[static_cast<size_t>(i)] = d.labels.empty() ? 0 : d.labels[static_cast<size_t>(src)];
    const float* in = d.images.data() + src * item;
    float* out = batch.data() + i * item;
    if (!aug.crop_flip || full.rank() != 4) {
      std::copy(in, in + item, out);
      continue;
    }
    const int64_t c = full[1], h = full[2], w = full[3];
    const int64_t dy =
        static_cast<int64_t>(rng() % static_cast<uint64_t>(2 * aug.pad + 1)) - aug.pad;
    const int64_t dx =
        static_cast<int64_t>(rng() % static_cast<uint64_t>(2 * aug.pad + 1)) - aug.pad;
    const bool flip = rng() & 1;
    for (int64_t k = 0; k < c; ++k)
      for (int64_t y = 0; y < h; ++y)
        for (int64_t x = 0; x < w; ++x) {
          const int64_t sy = y + dy, sx = (flip ? w - 1 - x : x) + dx;
          out[(k * h + y) * w + x] =
              (sy >= 0 && sy < h && sx >= 0 && sx < w) ? in[(k * h + sy) * w + sx] : 0.0f;
        }
  }
  return batch;
}

Status normalize(Dataset& d, const std::string& spec) {
  const auto colon = spec.find(':');
  if (colon == std::string::npos)
    return Status::error("--normalize takes MEAN[,MEAN..]:STD[,STD..]");
  auto parse = [](const std::string& s, std::vector<float>& out) {
    std::stringstream ss(s);
    std::string tok;
    while (std::getline(ss, tok, ',')) {
      try {
        size_t used = 0;
        out.push_back(std::stof(tok, &used));
        if (used != tok.size()) return false;
      } catch (const std::exception&) {
        return false;
      }
    }
    return !out.empty();
  };
  std::vector<float> mean, std;
  if (!parse(spec.substr(0, colon), mean) || !parse(spec.substr(colon + 1), std))
    return Status::error(fmt::format("--normalize '{}': not MEAN[,MEAN..]:STD[,STD..]", spec));
  const int64_t c = d.images.shape()[1], inner = d.images.shape().item_numel() / c;
  for (auto* v : {&mean, &std})
    if (v->size() != 1 && static_cast<int64_t>(v->size()) != c)
      return Status::error(fmt::format("--normalize: {} values for {} channels", v->size(), c));
  for (float s : std)
    if (!(s > 0)) return Status::error("--normalize: standard deviations must be positive");
  const int64_t n = d.images.shape()[0];
  for (int64_t i = 0; i < n; ++i)
    for (int64_t k = 0; k < c; ++k) {
      const float m = mean.size() == 1 ? mean[0] : mean[static_cast<size_t>(k)];
      const float s = std.size() == 1 ? std[0] : std[static_cast<size_t>(k)];
      float* p = d.images.data() + (i * c + k) * inner;
      for (int64_t j = 0; j < inner; ++j) p[j] = (p[j] - m) / s;
    }
  return {};
}

}  // namespace darknight::data
