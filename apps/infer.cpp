#include "infer.h"

#include "common.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <thread>
#include <nlohmann/json.hpp>

#include "accel/backend.h"
#include "accel/faults.h"
#include "baselines/engines.h"
#include "data/datasets.h"
#include "nn/onnx_import.h"
#include "nn/zoo.h"
#include "trusted/darknight_engine.h"
#include "trusted/slalom.h"

namespace darknight::app {
namespace {

using nlohmann::json;

ModelSpec spec_of(const InferOptions& o) {
  ModelSpec s;
  s.model = o.model, s.input_size = o.input_size, s.classes = o.classes;
  s.seed = o.seeded ? o.seed : 1;
  s.weights = o.weights;
  return s;
}

nn::Graph make_model(const InferOptions& o) {
  return app::make_model(spec_of(o));
}

struct Run {
  Tensor outputs;
  trusted::RunStats stats;
  double seconds = 0;
  int64_t chunk = 0;
  trusted::IntegrityCounters integrity;
  int64_t faulted_operations = 0;  ///< linear operations the injector could hit
  std::string accelerator;         ///< what ran the linear operations
  bool overlap = false;            ///< darknight's overlapped path was on
  std::optional<WorkerFaults> worker_faults;  ///< a worker's own count of its faults
  double offline_seconds = 0;      ///< slalom: precomputing the unblinding factors
  int64_t sealed_peak_bytes = 0;   ///< slalom: the most sealed factors held at once
};

/// Runs `images` through a runtime in batches of o.batch, after o.warmup untimed batches.
Run run_mode(const InferOptions& o, const std::string& mode, nn::Graph g, const Tensor& images,
             const std::function<void(int, int64_t, const Tensor&)>& probe, bool show_progress,
             std::vector<std::string>* layer_names = nullptr) {
  const auto integrity = trusted::parse_integrity_mode(o.integrity);
  auto accel = make_accelerator(
      o.accelerator, o.accelerator_timeout,
      mode == "darknight" ? o.k + 1 + (integrity == trusted::IntegrityMode::redundant) : 0, o.tf32);
  DK_CHECK(integrity == trusted::IntegrityMode::none || mode == "darknight" ||
               (mode == "slalom" && integrity == trusted::IntegrityMode::freivalds),
           "--integrity {} needs --mode darknight (or freivalds with --mode slalom)", o.integrity);
  std::unique_ptr<accel::FaultInjector> faults;
  std::unique_ptr<measure::FaultAudit> audit;
  if (!o.inject_faults.empty() && mode == o.mode) {  // not the reference run
    DK_CHECK(mode != "tee", "--inject-faults needs an accelerator (not --mode tee)");
    accel::FaultSpec spec = accel::FaultSpec::parse(o.inject_faults);
    if (!spec.seed && o.seeded) spec.seed = o.seed ^ 0x6661756c7473ULL;  // its own stream
    faults = std::make_unique<accel::FaultInjector>(
        spec, o.k + 1 + (integrity == trusted::IntegrityMode::redundant ? 1 : 0),
        integrity != trusted::IntegrityMode::none);
    if (integrity != trusted::IntegrityMode::none)
      audit = std::make_unique<measure::FaultAudit>(*faults);
  }
  std::unique_ptr<trusted::Csprng> rng, check_rng;
  trusted::DarKnightEngine* dk = nullptr;
  trusted::SlalomEngine* slalom = nullptr;
  std::unique_ptr<trusted::LinearEngine> engine;
  trusted::RuntimeOptions ro;
  ro.memory_budget = parse_bytes(o.enclave_memory);
  ro.threads = o.trusted_threads;
  if (mode == "darknight") {
    trusted::CodecOptions co;
    co.k = o.k;
    co.noise = {o.noise_mean, o.noise_std};
    co.mixing_scale = o.mixing_scale;
    co.insecure = o.insecure;
    co.precision = o.precision == "f64" ? DType::f64 : DType::f32;
    co.redundancy = integrity == trusted::IntegrityMode::redundant ? 1 : 0;
    rng =
        o.seeded ? std::make_unique<trusted::Csprng>(o.seed) : std::make_unique<trusted::Csprng>();
    // The check vectors come from a stream of their own, so that checks do not change the
    // blinding of a seeded run.
    check_rng = o.seeded ? std::make_unique<trusted::Csprng>(o.seed ^ 0x636865636bULL)
                         : std::make_unique<trusted::Csprng>();
    const int64_t pool = o.precompute == "0" ? 0 : parse_bytes(o.precompute);
    auto e = std::make_unique<trusted::DarKnightEngine>(*accel, co, *rng, pool);
    e->set_integrity(integrity, check_rng.get());
    if (o.overlap != "auto") e->set_overlap(o.overlap == "on");
    dk = e.get();
    engine = std::move(e);
  } else if (mode == "slalom") {
    rng =
        o.seeded ? std::make_unique<trusted::Csprng>(o.seed) : std::make_unique<trusted::Csprng>();
    check_rng = o.seeded ? std::make_unique<trusted::Csprng>(o.seed ^ 0x636865636bULL)
                         : std::make_unique<trusted::Csprng>();
    auto e = std::make_unique<trusted::SlalomEngine>(*accel, *rng);
    e->set_integrity(integrity, check_rng.get());
    slalom = e.get();
    engine = std::move(e);
  } else if (mode == "plain") {
    engine = std::make_unique<baselines::PlainEngine>(*accel);
    ro.enforce_budget = false;
  } else {
    engine = std::make_unique<baselines::TeeEngine>();
    ro.enforce_budget = false;
    ro.threads = 1;  // the paper's single-threaded enclave
  }
  ro.probe = probe;
  trusted::Runtime rt(std::move(g), *engine, ro);
  if (layer_names)
    for (const auto& node : rt.graph().nodes()) layer_names->push_back(node.name);
  const int64_t n = images.shape()[0], b = std::min(o.batch, n);
  Run r;
  r.accelerator = accel->describe();
  r.overlap = dk && dk->overlap();
  r.chunk = rt.plan(b);
  // slalom: the offline phase (unblinding factors) before each batch, timed on its own.
  auto offline = [&](int64_t m) {
    if (!slalom) return 0.0;
    const double p0 = now();
    slalom->precompute(m);
    r.sealed_peak_bytes = std::max(r.sealed_peak_bytes, slalom->store().peak_bytes());
    return now() - p0;
  };
  for (int w = 0; w < o.warmup; ++w) {
    Tensor batch(images.shape().with_batch(b), images.items(0, b));
    offline(b);
    rt.infer(batch);
  }
  rt.reset_stats();
  if (dk) dk->reset_integrity();
  if (slalom) slalom->reset_integrity();
  accel->set_fault_injector(faults.get());  // after the warm-up
  if (dk) dk->set_check_observer(audit.get());
  if (slalom) slalom->set_check_observer(audit.get());
  Progress bar(mode);
  r.outputs = Tensor(Shape{n, rt.graph().output_shape().numel()});
  const double t0 = now();
  for (int64_t start = 0; start < n; start += b) {
    const int64_t m = std::min(b, n - start);
    Tensor batch(images.shape().with_batch(m), images.items(start, m));
    r.offline_seconds += offline(m);
    const Tensor out = rt.infer(batch);
    std::copy(out.data(), out.data() + out.numel(),
              r.outputs.data() + start * out.shape().item_numel());
    if (show_progress) bar.update(start + m, n);
  }
  r.seconds = now() - t0 - r.offline_seconds;
  r.stats = rt.stats();
  r.integrity = attributed(dk       ? dk->integrity()
                           : slalom ? slalom->integrity()
                                    : trusted::IntegrityCounters{},
                           audit.get(), faults.get(), *accel);
  if (faults) r.faulted_operations = faults->operations();
  if (integrity != trusted::IntegrityMode::none) r.worker_faults = worker_faults(*accel);
  return r;
}

}  // namespace

CLI::App* add_infer_command(CLI::App& app, InferOptions& o) {
  auto* c = app.add_subcommand("infer", "Private inference (DarKnight) or a baseline on a dataset");
  c->add_option("--model", o.model, "Built-in model or an ONNX file (.onnx)")
      ->capture_default_str();
  c->add_option("--weights", o.weights,
                "Trained parameters from `darknight train --save` for the model");
  c->add_option("--data", o.data,
                "synthetic | fashion-mnist[:DIR] | cifar10:DIR | cifar100:DIR | sealed:FILE "
                "(darknight seal) (test split)")
      ->capture_default_str();
  c->add_option("--mode", o.mode,
                "darknight | plain (unprotected) | tee (all in the enclave) | slalom (the Slalom "
                "baseline: 8-bit fixed point, one-time masks in F_p, one input at a time)")
      ->check(CLI::IsMember({"darknight", "plain", "tee", "slalom"}))
      ->capture_default_str();
  add_accelerator_options(c, o.accelerator, o.accelerator_timeout, o.tf32);
  c->add_option("-k,--virtual-batch", o.k, "Inputs mixed together (K, 1..16)")
      ->check(CLI::Range(1, 16))
      ->capture_default_str();
  c->add_option("--batch", o.batch, "Images per batch (B)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  c->add_option("--limit", o.limit,
                "Use the first N examples (synthetic: how many to make; default 64)")
      ->check(CLI::NonNegativeNumber);
  c->add_option("--input-size", o.input_size, "Input height/width of built-in models")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  c->add_option("--classes", o.classes, "Classes of built-in models")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  c->add_option("--noise-mean", o.noise_mean, "Mean of the blinding noise")->capture_default_str();
  c->add_option("--noise-std", o.noise_std, "Standard deviation of the blinding noise")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  c->add_option("--mixing-scale", o.mixing_scale, "Scale of the random orthogonal mixing matrix")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  c->add_option("--precision", o.precision, "Element type of the mixtures")
      ->check(CLI::IsMember({"f32", "f64"}))
      ->capture_default_str();
  c->add_flag("--compare-plain", o.compare_plain,
              "Also run unprotected and report the error and top-1 agreement against it "
              "(sends plaintext to the accelerator: for evaluation only)");
  c->add_option("--seed", o.seed,
                "Seed the model weights and the trusted generator (reproducible runs; "
                "weakens secrecy)")
      ->each([&o](const std::string&) { o.seeded = true; });
  c->add_flag("--insecure", o.insecure,
              "Allow blinding noise that leaves the mixtures noise-free (--noise-std 0; with K = "
              "1 each mixture is then a scaled copy of its input): for tests of the audit only");
  c->add_option("--report", o.report, "Write a JSON report to this file");
  c->add_option("--predictions", o.predictions,
                "Write each image's top-1 class (and label) to this CSV file");
  c->add_option("--enclave-memory", o.enclave_memory,
                "Trusted memory budget (darknight: enforced; tee: reported)")
      ->capture_default_str();
  c->add_option("--normalize", o.normalize, "Per-channel MEAN[,MEAN..]:STD[,STD..] of the inputs");
  c->add_option("--trusted-threads", o.trusted_threads,
                "Threads of the trusted side (0: all cores; tee always uses 1)")
      ->check(CLI::NonNegativeNumber)
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
  c->add_option("--integrity", o.integrity,
                "Check the accelerator's results: none | redundant (the paper's K+2-th mixture) "
                "| freivalds (secret random projection); docs/SECURITY.md")
      ->check(CLI::IsMember({"none", "redundant", "freivalds"}))
      ->capture_default_str();
  c->add_option("--inject-faults", o.inject_faults,
                "KIND:RATE[:SEED]: corrupt that fraction of the in-process accelerator's linear "
                "operations (bitflip, scale, wrong-weights, drop, adversarial), to measure the "
                "integrity checks");
  c->add_option("--warmup", o.warmup, "Untimed batches before the timed run")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  return c;
}

int run_infer(const InferOptions& o) {
  warn_insecure(o.seeded, o.insecure);
  if (o.compare_plain && o.mode != "plain")
    std::fprintf(stderr,
                 "darknight: warning: --compare-plain also runs the model unprotected: the "
                 "accelerator receives the plaintext images. Use it for evaluation only.\n");
  // Data, in the model's input shape.
  const nn::Graph probe_model = make_model(o);  // each run takes a copy of its weights
  data::LoadOptions lo;
  lo.limit = o.limit;
  lo.synthetic_item = probe_model.input_shape();
  if (probe_model.input_shape().rank() == 3) lo.image_size = probe_model.input_shape()[1];
  lo.seed = o.seeded ? o.seed : 1;
  data::Dataset ds = load_dataset(o.data, lo);
  if (!o.normalize.empty()) data::normalize(ds, o.normalize).throw_if_error();
  const Shape item = ds.images.shape().with_batch(1);
  DK_CHECK(item.item_numel() == probe_model.input_shape().numel() &&
               item.rank() == probe_model.input_shape().rank() + 1,
           "model {} takes {} inputs; {} images are {}", o.model, probe_model.input_shape().str(),
           ds.name, item.str());
  const int64_t n = ds.images.shape()[0];
  DK_CHECK(n > 0, "no images to run");

  // Reference run first when comparing; keep per-layer outputs of the first images.
  std::map<int, Tensor> reference_layers;
  const int64_t probe_images = std::min<int64_t>(n, o.input_size >= 128 ? 2 : 8);
  Run plain;
  if (o.compare_plain && o.mode != "plain") {
    plain = run_mode(
        o, "plain", probe_model.clone(), ds.images,
        [&](int node, int64_t first, const Tensor& v) {
          if (first > 0) return;
          const int64_t m = std::min(probe_images, v.shape()[0]);
          reference_layers[node] = Tensor(v.shape().with_batch(m), v.items(0, m));
        },
        false);
  }
  std::map<int, double> layer_error, layer_rms;
  std::vector<std::string> names;
  Run run = run_mode(
      o, o.mode, probe_model.clone(), ds.images,
      [&](int node, int64_t first, const Tensor& v) {
        auto it = reference_layers.find(node);
        if (first > 0 || it == reference_layers.end()) return;
        const Tensor& ref = it->second;
        const int64_t m = ref.shape()[0], s = ref.shape().item_numel();
        double worst = 0, rms = 0;
        for (int64_t i = 0; i < m; ++i) {
          double diff = 0, mag = 0;
          for (int64_t e = 0; e < s; ++e) {
            const double d = std::abs(double(v[i * s + e]) - double(ref[i * s + e]));
            diff = std::isfinite(d) ? std::max(diff, d) : std::numeric_limits<double>::infinity();
            mag = std::max(mag, double(std::abs(ref[i * s + e])));
            rms += double(ref[i * s + e]) * ref[i * s + e];
          }
          worst = std::max(worst, mag > 0 ? diff / mag : diff);
        }
        layer_error[node] = worst;
        layer_rms[node] = std::sqrt(rms / double(m * s));
      },
      true, &names);
  if (o.compare_plain && o.mode == "plain") plain.outputs = run.outputs.clone();

  // Results.
  const int64_t classes = run.outputs.shape().item_numel();
  json rep;
  rep["mode"] = o.mode;
  rep["insecure"] = o.seeded || o.insecure || o.compare_plain;
  rep["model"] = o.model;
  rep["data"] = o.data;
  rep["images"] = n;
  rep["batch"] = std::min(o.batch, n);
  rep["seconds"] = run.seconds;
  rep["images_per_second"] = n / run.seconds;
  rep["peak_trusted_bytes"] = run.stats.peak_trusted_bytes;
  rep["enclave_memory_bytes"] = parse_bytes(o.enclave_memory);
  rep["images_per_pass"] = run.chunk;
  rep["accelerator"] = run.accelerator;
  rep["trusted_threads"] = o.mode == "tee" ? 1
                           : o.trusted_threads > 0
                               ? o.trusted_threads
                               : static_cast<int>(std::thread::hardware_concurrency());
  rep["weight_bytes"] = probe_model.weight_bytes();
  if (o.mode == "darknight") {
    rep["virtual_batch"] = o.k;
    rep["overlap"] = run.overlap;
    rep["precision"] = o.precision;
    rep["noise_mean"] = o.noise_mean;
    rep["noise_std"] = o.noise_std;
  }
  if (o.mode == "slalom") {
    rep["offline_seconds"] = run.offline_seconds;
    rep["slalom"] = {{"prime", trusted::slalom::kPrime},
                     {"activation_bits", 8},
                     {"weight_bits", 8},
                     {"max_fan_in", trusted::slalom::kMaxFanIn},
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
  if (o.integrity != "none" || !o.inject_faults.empty())
    rep["integrity"] =
        integrity_report(o.integrity, o.inject_faults, run.faulted_operations, run.integrity,
                         run.worker_faults);
  rep["bytes_to_accelerator"] = run.stats.bytes_to_accelerator;
  rep["bytes_from_accelerator"] = run.stats.bytes_from_accelerator;
  auto accuracy = [&](const Tensor& out) {
    int64_t correct = 0;
    for (int64_t i = 0; i < n; ++i)
      correct += argmax(out.data() + i * classes, classes) == ds.labels[static_cast<size_t>(i)];
    return double(correct) / double(n);
  };
  if (!ds.labels.empty()) {
    rep["accuracy"] = accuracy(run.outputs);
    if (o.compare_plain) rep["accuracy_plain"] = accuracy(plain.outputs);
  }
  if (o.compare_plain) {
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
    // How close plain's two best classes are (relative to its largest logit): a
    // disagreement can only happen where the error reaches this margin.
    double margin = std::numeric_limits<double>::infinity();
    for (int64_t i = 0; i < n; ++i) {
      std::vector<float> p(plain.outputs.data() + i * classes,
                           plain.outputs.data() + (i + 1) * classes);
      double mag = 0;
      for (float v : p) mag = std::max(mag, double(std::abs(v)));
      std::partial_sort(p.begin(), p.begin() + std::min<int64_t>(2, classes), p.end(),
                        std::greater<float>());
      if (classes > 1 && mag > 0) margin = std::min(margin, (p[0] - p[1]) / mag);
    }
    rep["min_top1_margin_plain"] = margin;
    if (o.mode != "plain") {
      rep["plain_seconds"] = plain.seconds;
      rep["time_ratio_vs_plain"] = run.seconds / plain.seconds;
    }
    rep["max_rel_error_vs_plain"] = worst;
    json layers = json::array();
    for (const auto& [node, err] : layer_error)
      layers.push_back({{"layer", names[static_cast<size_t>(node)]},
                        {"max_rel_error_vs_plain", err},
                        {"rms_plain", layer_rms[node]}});
    rep["layers"] = layers;
    rep["layer_error_images"] = probe_images;
  }

  std::printf("%s %s on %lld %s images: %.3f s, %.2f images/s, peak trusted memory %.1f MiB\n",
              o.mode.c_str(), o.model.c_str(), static_cast<long long>(n), ds.name.c_str(),
              run.seconds, n / run.seconds, run.stats.peak_trusted_bytes / 1048576.0);
  std::printf("  time: encode %.3f s, accelerator %.3f s, decode %.3f s, non-linear %.3f s\n",
              run.stats.times.encode, run.stats.times.accelerator, run.stats.times.decode,
              run.stats.times.nonlinear);
  if (o.mode == "slalom")
    std::printf(
        "  offline (not in the time above): %.3f s to precompute and seal the unblinding "
        "factors, at most %.1f MiB of them stored\n",
        run.offline_seconds, run.sealed_peak_bytes / 1048576.0);
  if (o.mode == "tee" && run.stats.peak_trusted_bytes > parse_bytes(o.enclave_memory))
    std::printf(
        "  tee holds %.1f MiB in the trusted runtime, %.1f MiB over the %s enclave budget "
        "(SGX would page it)\n",
        run.stats.peak_trusted_bytes / 1048576.0,
        (run.stats.peak_trusted_bytes - parse_bytes(o.enclave_memory)) / 1048576.0,
        o.enclave_memory.c_str());
  if (rep.contains("accuracy_plain"))
    std::printf("  accuracy %.4f (plain: %.4f)\n", rep["accuracy"].get<double>(),
                rep["accuracy_plain"].get<double>());
  else if (rep.contains("accuracy"))
    std::printf("  accuracy %.4f\n", rep["accuracy"].get<double>());
  if (rep.contains("integrity")) print_integrity(o.integrity, run.integrity, run.worker_faults);
  if (o.compare_plain) {
    std::printf(
        "  vs plain: top-1 agreement %.4f, max relative error %.3e (smallest top-1 "
        "margin of plain %.3e)\n",
        rep["top1_agreement_vs_plain"].get<double>(), rep["max_rel_error_vs_plain"].get<double>(),
        rep["min_top1_margin_plain"].get<double>());
    if (rep.contains("plain_seconds"))
      std::printf("  plain took %.3f s: %s/plain time %.2f\n", plain.seconds, o.mode.c_str(),
                  rep["time_ratio_vs_plain"].get<double>());
    for (const auto& l : rep["layers"])
      std::printf("    %-32s max relative error %.3e\n", l["layer"].get<std::string>().c_str(),
                  l["max_rel_error_vs_plain"].get<double>());
  }
  if (!o.predictions.empty()) {
    std::ofstream f(o.predictions);
    DK_CHECK(f.good(), "cannot write {}", o.predictions);
    f << (ds.labels.empty() ? "image,prediction\n" : "image,prediction,label\n");
    for (int64_t i = 0; i < n; ++i) {
      f << i << "," << argmax(run.outputs.data() + i * classes, classes);
      if (!ds.labels.empty()) f << "," << ds.labels[static_cast<size_t>(i)];
      f << "\n";
    }
  }
  if (!o.report.empty()) {
    std::ofstream f(o.report);
    DK_CHECK(f.good(), "cannot write the report {}", o.report);
    f << rep.dump(2) << "\n";
  }
  return 0;
}

}  // namespace darknight::app
