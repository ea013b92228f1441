#include "infer.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "baselines/slalom.h"
#include "common.h"
#include "data/datasets.h"
#include "session/session.h"
#include "trusted/runtime.h"

namespace darknight::app {
namespace {

using nlohmann::json;
using session::Mode;
using Probe = std::function<void(int, int64_t, const Tensor&)>;

struct Run {
  Tensor outputs;
  trusted::RunStats stats;
  double seconds = 0;
  int64_t chunk = 0;
  trusted::IntegrityCounters integrity;
  int64_t faulted_operations = 0;             ///< linear operations the injector could hit
  std::string accelerator;                    ///< what ran the linear operations
  int trusted_threads = 0;                    ///< threads of the trusted side
  bool overlap = false;                       ///< darknight's overlapped path was on
  std::optional<WorkerFaults> worker_faults;  ///< a worker's own count of its faults
  double offline_seconds = 0;                 ///< slalom: precomputing the unblinding factors
  int64_t sealed_peak_bytes = 0;              ///< slalom: the most sealed factors held at once
};

/// The run's typed options (parsed once). --precision is the mixtures' (plain and tee
/// compute in f32 here), --precompute darknight's.
session::SessionOptions infer_session(const InferOptions& o) {
  session::SessionOptions s = session_options(o.run);
  s.mixing_scale = o.mixing_scale;
  s.overlap = session::parse_overlap(o.overlap);
  if (s.mode != Mode::darknight)
    s.precision = DType::f32;
  else if (o.precompute != "0")
    s.precompute_bytes = parse_bytes(o.precompute);
  return s;
}

/// The reference run of --compare-plain: unprotected, without faults.
session::SessionOptions reference_session(session::SessionOptions s) {
  s.mode = Mode::plain;
  s.precision = DType::f32;
  s.faults.reset();
  return s;
}

/// slalom's offline phase (the unblinding factors) before each batch, timed on its own.
struct Offline {
  baselines::SlalomEngine* slalom;
  int64_t peak_bytes = 0;  ///< the most sealed factors held at once

  double operator()(int64_t inputs) {
    if (!slalom) return 0.0;
    const double p0 = now();
    slalom->precompute(inputs);
    peak_bytes = std::max(peak_bytes, slalom->store().peak_bytes());
    return now() - p0;
  }
};

/// Runs `images` through `rt` in batches of `b` into r.outputs, timed.
void timed_run(trusted::Runtime& rt, const Tensor& images, int64_t b, Offline& offline,
               Progress* bar, Run& r) {
  const int64_t n = images.shape()[0];
  r.outputs = Tensor(Shape{n, rt.graph().output_shape().numel()});
  const double t0 = now();
  for (int64_t start = 0; start < n; start += b) {
    const int64_t m = std::min(b, n - start);
    Tensor batch(images.shape().with_batch(m), images.items(start, m));
    r.offline_seconds += offline(m);
    const Tensor out = rt.infer(batch);
    std::copy(out.data(), out.data() + out.numel(),
              r.outputs.data() + start * out.shape().item_numel());
    if (bar) bar->update(start + m, n);
  }
  r.seconds = now() - t0 - r.offline_seconds;
}

/// Runs `images` through a runtime in batches of --batch, after --warmup untimed batches.
Run run_mode(const InferOptions& o, const session::SessionOptions& so, nn::Graph g,
             const Tensor& images, const Probe& probe, bool show_progress,
             std::vector<std::string>* layer_names = nullptr) {
  session::Session s(so);
  trusted::RuntimeOptions ro = s.runtime_options();
  ro.probe = probe;
  trusted::Runtime rt(std::move(g), s.engine(), ro);
  if (layer_names)
    for (const auto& node : rt.graph().nodes()) layer_names->push_back(node.name);
  const int64_t n = images.shape()[0], b = std::min(o.run.batch, n);
  Run r;
  r.accelerator = s.accelerator().describe();
  r.trusted_threads = ro.threads > 0 ? ro.threads : int(std::thread::hardware_concurrency());
  r.overlap = s.darknight() && s.darknight()->overlap();
  r.chunk = rt.plan(b);
  Offline offline{s.slalom()};
  for (int w = 0; w < o.warmup; ++w) {
    Tensor batch(images.shape().with_batch(b), images.items(0, b));
    offline(b);
    rt.infer(batch);
  }
  rt.reset_stats();
  s.reset_integrity();
  s.inject_faults();  // FAULTS: after the warm-up
  Progress bar(session::to_string(so.mode));
  timed_run(rt, images, b, offline, show_progress ? &bar : nullptr, r);
  r.sealed_peak_bytes = offline.peak_bytes;
  r.stats = rt.stats();
  r.integrity = s.integrity();
  r.faulted_operations = s.faulted_operations();
  if (so.integrity != trusted::IntegrityMode::none) r.worker_faults = worker_faults(s.device());
  return r;
}

/// Per-layer outputs of the first images in the reference run, and the run's error
/// against them (--compare-plain).
struct LayerComparison {
  int64_t images = 0;  ///< images compared
  std::map<int, Tensor> reference;
  std::map<int, double> error, rms;  ///< by node: max relative error, plain's RMS
  std::vector<std::string> names;    ///< every node's

  void record(int node, int64_t first, const Tensor& v) {
    if (first > 0) return;
    const int64_t m = std::min(images, v.shape()[0]);
    reference[node] = Tensor(v.shape().with_batch(m), v.items(0, m));
  }

  void compare(int node, int64_t first, const Tensor& v) {
    auto it = reference.find(node);
    if (first > 0 || it == reference.end()) return;
    const Tensor& ref = it->second;
    const int64_t m = ref.shape()[0], s = ref.shape().item_numel();
    double worst = 0, sum_squares = 0;
    for (int64_t i = 0; i < m; ++i) {
      double diff = 0, mag = 0;
      for (int64_t e = 0; e < s; ++e) {
        const double d = std::abs(double(v[i * s + e]) - double(ref[i * s + e]));
        diff = std::isfinite(d) ? std::max(diff, d) : std::numeric_limits<double>::infinity();
        mag = std::max(mag, double(std::abs(ref[i * s + e])));
        sum_squares += double(ref[i * s + e]) * ref[i * s + e];
      }
      worst = std::max(worst, mag > 0 ? diff / mag : diff);
    }
    error[node] = worst;
    rms[node] = std::sqrt(sum_squares / double(m * s));
  }
};

/// The test split in the model's input shape (synthetic: made in that shape).
data::Dataset load_data(const InferOptions& o, const nn::Graph& model) {
  data::LoadOptions lo;
  lo.limit = o.limit;
  lo.synthetic_item = model.input_shape();
  if (model.input_shape().rank() == 3) lo.image_size = model.input_shape()[1];
  lo.seed = seeds_of(o.run).base();
  data::Dataset ds = load_dataset(o.data, lo);
  if (!o.run.normalize.empty()) data::normalize(ds, o.run.normalize).throw_if_error();
  const Shape item = ds.images.shape().with_batch(1);
  DK_CHECK(item.item_numel() == model.input_shape().numel() &&
               item.rank() == model.input_shape().rank() + 1,
           "model {} takes {} inputs; {} images are {}", o.model, model.input_shape().str(),
           ds.name, item.str());
  DK_CHECK(ds.images.shape()[0] > 0, "no images to run");
  return ds;
}

/// The report's figures of the run itself.
json run_report(const InferOptions& o, const session::SessionOptions& so, const nn::Graph& model,
                const data::Dataset& ds, const Run& run) {
  const int64_t n = ds.images.shape()[0];
  json rep;
  rep["mode"] = session::to_string(so.mode);
  rep["insecure"] = o.run.seeded || o.run.insecure || o.compare_plain;
  rep["model"] = o.model;
  rep["data"] = o.data;
  rep["images"] = n;
  rep["batch"] = std::min(o.run.batch, n);
  rep["seconds"] = run.seconds;
  rep["images_per_second"] = n / run.seconds;
  rep["peak_trusted_bytes"] = run.stats.peak_trusted_bytes;
  rep["enclave_memory_bytes"] = so.enclave_memory;
  rep["images_per_pass"] = run.chunk;
  rep["accelerator"] = run.accelerator;
  rep["trusted_threads"] = run.trusted_threads;
  rep["weight_bytes"] = model.weight_bytes();
  if (so.mode == Mode::darknight) {
    rep["virtual_batch"] = so.k;
    rep["overlap"] = run.overlap;
    rep["precision"] = dtype_name(so.precision);
    rep["noise_mean"] = so.noise.mean;
    rep["noise_std"] = so.noise.std;
  }
  if (so.mode == Mode::slalom) {
    rep["offline_seconds"] = run.offline_seconds;
    rep["slalom"] = {{"prime", baselines::slalom::kPrime},
                     {"activation_bits", 8},
                     {"weight_bits", 8},
                     {"max_fan_in", baselines::slalom::kMaxFanIn},
                     {"sealed_peak_bytes", run.sealed_peak_bytes}};
  }
  rep["seconds_by_kind"] = {{"encode", run.stats.times.encode},
                            {"accelerator", run.stats.times.accelerator},
                            {"transfer", run.stats.times.transfer},
                            {"decode", run.stats.times.decode},
                            {"nonlinear", run.stats.times.nonlinear}};
  rep["accelerator_calls"] = run.stats.accelerator_calls;
  int64_t nonfinite = 0;
  for (int64_t i = 0; i < run.outputs.numel(); ++i) nonfinite += !std::isfinite(run.outputs[i]);
  rep["nonfinite_outputs"] = nonfinite;
  if (nonfinite)
    std::fprintf(stderr, "darknight: warning: %lld output values are not finite\n",
                 static_cast<long long>(nonfinite));
  if (so.integrity != trusted::IntegrityMode::none || so.faults)
    rep["integrity"] = integrity_report(o.run.integrity, o.run.inject_faults,
                                        run.faulted_operations, run.integrity, run.worker_faults);
  rep["bytes_to_accelerator"] = run.stats.bytes_to_accelerator;
  rep["bytes_from_accelerator"] = run.stats.bytes_from_accelerator;
  return rep;
}

/// Top-1 accuracy of `out` ([n, classes]) on the labels.
double accuracy(const Tensor& out, const std::vector<int>& labels) {
  const int64_t n = out.shape()[0], classes = out.shape().item_numel();
  int64_t correct = 0;
  for (int64_t i = 0; i < n; ++i)
    correct += argmax(out.data() + i * classes, classes) == labels[static_cast<size_t>(i)];
  return double(correct) / double(n);
}

/// How close plain's two best classes come (relative to its largest logit), over the
/// images: a disagreement can only happen where the error reaches this margin.
double min_top1_margin(const Tensor& plain) {
  const int64_t n = plain.shape()[0], classes = plain.shape().item_numel();
  double margin = std::numeric_limits<double>::infinity();
  for (int64_t i = 0; i < n; ++i) {
    std::vector<float> p(plain.data() + i * classes, plain.data() + (i + 1) * classes);
    double mag = 0;
    for (float v : p) mag = std::max(mag, double(std::abs(v)));
    std::partial_sort(p.begin(), p.begin() + std::min<int64_t>(2, classes), p.end(),
                      std::greater<float>());
    if (classes > 1 && mag > 0) margin = std::min(margin, (p[0] - p[1]) / mag);
  }
  return margin;
}

/// The report's comparison with the unprotected run (--compare-plain).
void add_comparison(json& rep, Mode mode, const Run& run, const Run& plain,
                    const LayerComparison& layers) {
  const int64_t n = run.outputs.shape()[0], classes = run.outputs.shape().item_numel();
  int64_t agree = 0;
  double worst = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float* a = run.outputs.data() + i * classes;
    const float* p = plain.outputs.data() + i * classes;
    agree += argmax(a, classes) == argmax(p, classes);
    double diff = 0, mag = 0;
    for (int64_t c = 0; c < classes; ++c)
      diff = std::max(diff, double(std::abs(a[c] - p[c]))),
      mag = std::max(mag, double(std::abs(p[c])));
    worst = std::max(worst, mag > 0 ? diff / mag : diff);
  }
  rep["top1_agreement_vs_plain"] = double(agree) / double(n);
  rep["min_top1_margin_plain"] = min_top1_margin(plain.outputs);
  if (mode != Mode::plain) {
    rep["plain_seconds"] = plain.seconds;
    rep["time_ratio_vs_plain"] = run.seconds / plain.seconds;
  }
  rep["max_rel_error_vs_plain"] = worst;
  json by_layer = json::array();
  for (const auto& [node, err] : layers.error)
    by_layer.push_back({{"layer", layers.names[static_cast<size_t>(node)]},
                        {"max_rel_error_vs_plain", err},
                        {"rms_plain", layers.rms.at(node)}});
  rep["layers"] = by_layer;
  rep["layer_error_images"] = layers.images;
}

/// The summary on stdout.
void print_summary(const InferOptions& o, const session::SessionOptions& so,
                   const data::Dataset& ds, const Run& run, const Run& plain, const json& rep) {
  const int64_t n = ds.images.shape()[0];
  const std::string mode = session::to_string(so.mode);
  std::printf("%s %s on %lld %s images: %.3f s, %.2f images/s, peak trusted memory %.1f MiB\n",
              mode.c_str(), o.model.c_str(), static_cast<long long>(n), ds.name.c_str(),
              run.seconds, n / run.seconds, run.stats.peak_trusted_bytes / 1048576.0);
  std::printf("  time: encode %.3f s, accelerator %.3f s, decode %.3f s, non-linear %.3f s\n",
              run.stats.times.encode, run.stats.times.accelerator, run.stats.times.decode,
              run.stats.times.nonlinear);
  if (so.mode == Mode::slalom)
    std::printf(
        "  offline (not in the time above): %.3f s to precompute and seal the unblinding "
        "factors, at most %.1f MiB of them stored\n",
        run.offline_seconds, run.sealed_peak_bytes / 1048576.0);
  if (so.mode == Mode::tee && run.stats.peak_trusted_bytes > so.enclave_memory)
    std::printf(
        "  tee holds %.1f MiB in the trusted runtime, %.1f MiB over the %s enclave budget "
        "(SGX would page it)\n",
        run.stats.peak_trusted_bytes / 1048576.0,
        (run.stats.peak_trusted_bytes - so.enclave_memory) / 1048576.0,
        o.run.enclave_memory.c_str());
  if (rep.contains("accuracy_plain"))
    std::printf("  accuracy %.4f (plain: %.4f)\n", rep["accuracy"].get<double>(),
                rep["accuracy_plain"].get<double>());
  else if (rep.contains("accuracy"))
    std::printf("  accuracy %.4f\n", rep["accuracy"].get<double>());
  if (rep.contains("integrity")) print_integrity(o.run.integrity, run.integrity, run.worker_faults);
  if (!o.compare_plain) return;
  std::printf(
      "  vs plain: top-1 agreement %.4f, max relative error %.3e (smallest top-1 "
      "margin of plain %.3e)\n",
      rep["top1_agreement_vs_plain"].get<double>(), rep["max_rel_error_vs_plain"].get<double>(),
      rep["min_top1_margin_plain"].get<double>());
  if (rep.contains("plain_seconds"))
    std::printf("  plain took %.3f s: %s/plain time %.2f\n", plain.seconds, mode.c_str(),
                rep["time_ratio_vs_plain"].get<double>());
  for (const auto& l : rep["layers"])
    std::printf("    %-32s max relative error %.3e\n", l["layer"].get<std::string>().c_str(),
                l["max_rel_error_vs_plain"].get<double>());
}

/// Each image's top-1 class (and label) as CSV (--predictions).
void write_predictions(const std::string& path, const data::Dataset& ds, const Tensor& outputs) {
  const int64_t n = outputs.shape()[0], classes = outputs.shape().item_numel();
  std::ofstream f(path);
  DK_CHECK(f.good(), "cannot write {}", path);
  f << (ds.labels.empty() ? "image,prediction\n" : "image,prediction,label\n");
  for (int64_t i = 0; i < n; ++i) {
    f << i << "," << argmax(outputs.data() + i * classes, classes);
    if (!ds.labels.empty()) f << "," << ds.labels[static_cast<size_t>(i)];
    f << "\n";
  }
}

/// The model and data options of infer (the shared ones: options.h).
void add_data_options(CLI::App* c, InferOptions& o) {
  c->add_option("--model", o.model, "Built-in model or an ONNX file (.onnx)")
      ->capture_default_str();
  c->add_option("--weights", o.weights,
                "Trained parameters from `darknight train --save` for the model");
  c->add_option("--data", o.data,
                "synthetic | fashion-mnist[:DIR] | cifar10:DIR | cifar100:DIR | sealed:FILE "
                "(darknight seal) (test split)")
      ->capture_default_str();
  c->add_option("--limit", o.limit,
                "Use the first N examples (synthetic: how many to make; default 64)")
      ->check(CLI::NonNegativeNumber);
  c->add_option("--predictions", o.predictions,
                "Write each image's top-1 class (and label) to this CSV file");
  c->add_flag("--compare-plain", o.compare_plain,
              "Also run unprotected and report the error and top-1 agreement against it "
              "(sends plaintext to the accelerator: for evaluation only)");
}

/// darknight's own options for inference, and --warmup.
void add_engine_options(CLI::App* c, InferOptions& o) {
  c->add_option("--mixing-scale", o.mixing_scale, "Scale of the random orthogonal mixing matrix")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  c->add_option("--overlap", o.overlap,
                "darknight: encode and decode chunks of a layer's virtual batches while the "
                "accelerator runs others (auto: on for an asynchronous accelerator, a GPU)")
      ->check(CLI::IsMember({"auto", "on", "off"}))
      ->capture_default_str();
  c->add_option("--precompute", o.precompute,
                "Draw coefficients and noise ahead on a background thread, holding up to this "
                "many bytes (counted in the enclave budget); 0: draw when needed")
      ->capture_default_str();
  c->add_option("--warmup", o.warmup, "Untimed batches before the timed run")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
}

}  // namespace

CLI::App* add_infer_command(CLI::App& app, InferOptions& o) {
  auto* c = app.add_subcommand("infer", "Private inference (DarKnight) or a baseline on a dataset");
  add_data_options(c, o);
  add_run_options(c, o.run, Command::infer, session::all_modes());
  add_engine_options(c, o);
  return c;
}

int run_infer(const InferOptions& o) {
  warn_insecure(o.run.seeded, o.run.insecure);
  if (o.compare_plain && o.run.mode != "plain")
    std::fprintf(stderr,
                 "darknight: warning: --compare-plain also runs the model unprotected: the "
                 "accelerator receives the plaintext images. Use it for evaluation only.\n");
  const nn::Graph model = make_model(model_spec(o.model, o.weights, o.run));  // runs copy it
  const data::Dataset ds = load_data(o, model);
  const session::SessionOptions so = infer_session(o);
  const int64_t n = ds.images.shape()[0];

  // Reference run first when comparing; keep per-layer outputs of the first images.
  LayerComparison layers;
  layers.images = std::min<int64_t>(n, o.run.input_size >= 128 ? 2 : 8);
  Run plain;
  if (o.compare_plain && so.mode != Mode::plain)
    plain = run_mode(
        o, reference_session(so), model.clone(), ds.images,
        [&](int node, int64_t first, const Tensor& v) { layers.record(node, first, v); }, false);
  Run run = run_mode(
      o, so, model.clone(), ds.images,
      [&](int node, int64_t first, const Tensor& v) { layers.compare(node, first, v); }, true,
      &layers.names);
  if (o.compare_plain && so.mode == Mode::plain) plain.outputs = run.outputs.clone();

  json rep = run_report(o, so, model, ds, run);
  if (!ds.labels.empty()) {
    rep["accuracy"] = accuracy(run.outputs, ds.labels);
    if (o.compare_plain) rep["accuracy_plain"] = accuracy(plain.outputs, ds.labels);
  }
  if (o.compare_plain) add_comparison(rep, so.mode, run, plain, layers);
  print_summary(o, so, ds, run, plain, rep);
  if (!o.predictions.empty()) write_predictions(o.predictions, ds, run.outputs);
  if (!o.run.report.empty()) {
    std::ofstream f(o.run.report);
    DK_CHECK(f.good(), "cannot write the report {}", o.run.report);
    f << rep.dump(2) << "\n";
  }
  return 0;
}

}  // namespace darknight::app
