#include "train.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "accel/backend.h"
#include "accel/faults.h"
#include "baselines/engines.h"
#include "common.h"
#include "data/datasets.h"
#include "nn/model_file.h"
#include "nn/onnx_export.h"
#include "trusted/darknight_engine.h"
#include "trusted/trainer.h"

namespace darknight::app {
namespace {

using nlohmann::json;

/// The learning rate of an epoch: none | step:EVERY:GAMMA | cosine (over the run).
double scheduled_lr(const TrainOptions& o, int epoch) {
  if (o.lr_schedule == "none") return o.lr;
  if (o.lr_schedule == "cosine")
    return 0.5 * o.lr * (1 + std::cos(M_PI * epoch / std::max(1, o.epochs)));
  int every = 0;
  double gamma = 0;
  if (std::sscanf(o.lr_schedule.c_str(), "step:%d:%lf", &every, &gamma) == 2 && every > 0)
    return o.lr * std::pow(gamma, epoch / every);
  throw Error(
      fmt::format("--lr-schedule '{}': expected none, cosine or step:EVERY:GAMMA", o.lr_schedule));
}

json times_json(const trusted::OpTimes& t) {
  return {{"encode", t.encode},
          {"accelerator", t.accelerator},
          {"decode", t.decode},
          {"nonlinear", t.nonlinear}};
}

/// Top-1 accuracy of the trainer's model (evaluation mode) on a dataset.
double evaluate(trusted::Trainer& t, const data::Dataset& d, int64_t batch) {
  if (d.labels.empty()) return 0;
  const int64_t n = d.images.shape()[0];
  int64_t correct = 0;
  for (int64_t start = 0; start < n; start += batch) {
    const int64_t m = std::min(batch, n - start);
    const Tensor x(d.images.shape().with_batch(m), d.images.items(start, m));
    const Tensor y = t.predict(x);
    const int64_t c = y.shape().item_numel();
    for (int64_t i = 0; i < m; ++i)
      correct += argmax(y.data() + i * c, c) == d.labels[static_cast<size_t>(start + i)];
  }
  return double(correct) / double(n);
}

/// The model and optimizer state, for --checkpoint, --save and --export.
nn::TensorFile snapshot(trusted::Trainer& t, const ModelSpec& spec, bool with_optimizer) {
  nn::TensorFile f;
  f.meta["model"] = spec.model;
  f.meta["input_size"] = spec.input_size;
  f.meta["classes"] = spec.classes;
  nn::add_model_tensors(
      t.graph(), [&](int i) { return t.engine().read_weights(i); }, f);
  if (with_optimizer) {
    for (const nn::Node& n : t.graph().nodes())
      if (n.is_linear()) {
        Tensor m = t.engine().read_momentum(n.weights);
        if (!m.empty()) f.tensors.emplace_back(n.origin + ".weight.momentum", std::move(m));
      }
    for (const trusted::TrustedParam& p : t.params())
      if (!p.momentum.empty()) f.tensors.emplace_back(p.name + ".momentum", p.momentum.clone());
  }
  return f;
}

/// Where a run stands inside an epoch (a checkpoint taken mid-epoch, --checkpoint-every):
/// the next batch's first example in the epoch's order and the epoch's running figures.
struct EpochProgress {
  int64_t next_start = 0;
  double loss = 0;  ///< summed over the examples seen
  int64_t correct = 0;
  int64_t seen = 0;
  double train_seconds = 0;
  double seconds = 0;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(EpochProgress, next_start, loss, correct, seen, train_seconds,
                                   seconds)

/// A metrics CSV row.
std::string csv_row(const json& row) {
  return fmt::format("{},{:.6f},{:.6f},{:.6f},{:.3f}\n", row.at("epoch").get<int>(),
                     row.at("train_loss").get<double>(), row.at("train_accuracy").get<double>(),
                     row.at("test_accuracy").get<double>(), row.at("seconds").get<double>());
}

}  // namespace

CLI::App* add_train_command(CLI::App& app, TrainOptions& o) {
  auto* c = app.add_subcommand("train", "Private training (DarKnight) or a baseline on a dataset");
  c->add_option("--model", o.model,
                "Built-in model or an ONNX file (its initializers are the "
                "initial weights)")
      ->capture_default_str();
  c->add_option("--weights", o.weights, "Start from parameters saved by --save");
  c->add_option("--data", o.data,
                "fashion-mnist[:DIR] | cifar10:DIR | cifar100:DIR | synthetic | sealed:FILE "
                "(darknight seal) (train split; "
                "test accuracy on the test split)")
      ->capture_default_str();
  c->add_option("--mode", o.mode, "darknight | plain (unprotected) | tee (all in the enclave)")
      ->check(CLI::IsMember({"darknight", "plain", "tee"}))
      ->capture_default_str();
  add_accelerator_options(c, o.accelerator, o.accelerator_timeout, o.tf32);
  c->add_option("--epochs", o.epochs, "Epochs")->check(CLI::PositiveNumber)->capture_default_str();
  c->add_option("--steps", o.steps, "Stop after this many SGD steps (0: run whole epochs)")
      ->check(CLI::NonNegativeNumber);
  c->add_option("--batch", o.batch, "Images per SGD step (B)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  c->add_option("-k,--virtual-batch", o.k, "Inputs mixed together (K, 1..16)")
      ->check(CLI::Range(1, 16))
      ->capture_default_str();
  c->add_option("--lr", o.lr, "Learning rate")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  c->add_option("--momentum", o.momentum, "SGD momentum")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  c->add_option("--weight-decay", o.weight_decay, "L2 weight decay")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  c->add_flag("--nesterov", o.nesterov, "Nesterov momentum");
  c->add_option("--lr-schedule", o.lr_schedule, "none | cosine | step:EVERY:GAMMA (per epoch)")
      ->capture_default_str();
  c->add_option("--noise-mean", o.noise_mean, "Mean of the blinding noise")->capture_default_str();
  c->add_option("--noise-std", o.noise_std, "Standard deviation of the blinding noise")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  c->add_option("--precision", o.precision, "Element type of the mixtures (and of plain/tee)")
      ->check(CLI::IsMember({"f32", "f64"}))
      ->capture_default_str();
  c->add_option("--grad-decode", o.grad_decode,
                "trusted (the paper's: Eq_j decoded by the trusted side) | folded (gamma in the "
                "deltas: the gradient stays on the accelerator)")
      ->check(CLI::IsMember({"trusted", "folded"}))
      ->capture_default_str();
  c->add_option("--integrity", o.integrity,
                "Check the accelerator's results: none | redundant (the paper's K+2-th mixture, "
                "extended to the backward pass) | freivalds; both need --grad-decode folded; "
                "docs/SECURITY.md")
      ->check(CLI::IsMember({"none", "redundant", "freivalds"}))
      ->capture_default_str();
  c->add_option("--inject-faults", o.inject_faults,
                "KIND:RATE[:SEED]: corrupt that fraction of the in-process accelerator's linear "
                "operations (bitflip, scale, wrong-weights, drop, adversarial)");
  c->add_option("--checkpoint", o.checkpoint, "Directory for a checkpoint after every epoch");
  c->add_option("--checkpoint-every", o.checkpoint_every,
                "Also a checkpoint every this many SGD steps (--resume continues mid-epoch)")
      ->check(CLI::NonNegativeNumber);
  c->add_option("--fallback-accelerator", o.fallback_accelerator,
                "When the accelerator keeps failing integrity checks: restore the last "
                "checkpoint (else the initial weights) on this one and continue");
  c->add_flag("--resume", o.resume,
              "Continue from the checkpoint in --checkpoint (from the beginning when there is "
              "none yet); with --seed the result is the uninterrupted run's");
  c->add_option("--metrics", o.metrics, "Per-epoch metrics CSV");
  c->add_flag("--insecure", o.insecure,
              "Allow blinding noise that leaves the mixtures noise-free (--noise-std 0; with K = "
              "1 each mixture is then a scaled copy of its input): for tests of the audit only");
  c->add_option("--report", o.report, "JSON report");
  c->add_option("--seed", o.seed,
                "Seed weights, data order, augmentation and the trusted "
                "generator (reproducible; weakens secrecy)")
      ->each([&o](const std::string&) { o.seeded = true; });
  c->add_option("--save", o.save, "Write the trained model (read by infer --weights)");
  c->add_option("--export", o.export_onnx, "Write the trained model as ONNX");
  c->add_option("--input-size", o.input_size, "Input height/width of built-in models")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  c->add_option("--classes", o.classes, "Classes of built-in models")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  c->add_option("--normalize", o.normalize, "Per-channel MEAN[,MEAN..]:STD[,STD..] of the inputs");
  c->add_option(
       "--augment", o.augment,
       "auto (random crop + flip for colour images, none for greyscale) | none | crop-flip")
      ->check(CLI::IsMember({"auto", "none", "crop-flip"}))
      ->capture_default_str();
  c->add_option("--enclave-memory", o.enclave_memory, "Trusted memory budget")
      ->capture_default_str();
  c->add_option("--trusted-threads", o.trusted_threads, "Threads of the trusted side (0: all)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  c->add_option("--limit", o.limit, "Use the first N training examples")
      ->check(CLI::NonNegativeNumber);
  c->add_option("--test-limit", o.test_limit, "Use the first N test examples")
      ->check(CLI::NonNegativeNumber);
  return c;
}

namespace {

/// One training run on one accelerator; `restarts` lists the earlier runs' stops (see
/// run_train), reported, and gets this run's when it stops.
int train_once(const TrainOptions& o, json& restarts) {
  warn_insecure(o.seeded, o.insecure);
  DK_CHECK(!o.resume || !o.checkpoint.empty(), "--resume needs --checkpoint DIR");
  DK_CHECK(!o.checkpoint_every || !o.checkpoint.empty(),
           "--checkpoint-every needs --checkpoint DIR");
  const uint64_t seed = o.seeded ? o.seed : 1;
  ModelSpec spec;
  spec.model = o.model, spec.input_size = o.input_size, spec.classes = o.classes;
  spec.seed = seed, spec.weights = o.weights;
  const std::string ckpt_path = o.checkpoint.empty() ? "" : o.checkpoint + "/checkpoint.dkm";
  // save_tensor_file writes checkpoint.dkm.tmp and renames it: checkpoint.dkm is complete
  // or absent, and a .tmp left by a killed run is never read.
  nn::TensorFile resume;
  const bool resuming = o.resume && std::filesystem::exists(ckpt_path);
  if (o.resume && !resuming)
    std::fprintf(stderr,
                 "darknight: --resume: no complete checkpoint in %s yet; starting from "
                 "the beginning\n",
                 o.checkpoint.c_str());
  if (resuming) {
    Result<nn::TensorFile> r = nn::load_tensor_file(ckpt_path);
    if (!r.ok())
      throw Error(fmt::format("--resume: {} (remove it to start over)", r.status().message()));
    resume = std::move(r.value());
    DK_CHECK(resume.meta.value("model", std::string()) == o.model,
             "{} is a checkpoint of '{}', not '{}'", ckpt_path,
             resume.meta.value("model", std::string()), o.model);
    DK_CHECK(resume.meta.value("seed", seed) == seed &&
                 resume.meta.value("seeded", o.seeded) == o.seeded,
             "{} was made {}: resume with the same seed", ckpt_path,
             resume.meta.value("seeded", true)
                 ? fmt::format("with --seed {}", resume.meta.value("seed", uint64_t{0}))
                 : std::string("without --seed"));
  }
  nn::Graph model = make_model(spec);
  if (resuming) nn::apply_model_tensors(model, resume).throw_if_error();

  // Data.
  data::LoadOptions lo;
  lo.synthetic_item = model.input_shape();
  if (model.input_shape().rank() == 3) lo.image_size = model.input_shape()[1];
  lo.synthetic_classes = static_cast<int>(model.output_shape().numel());
  lo.seed = seed;
  lo.split = data::Split::train;
  lo.limit = o.limit;
  lo.synthetic_count = 256;
  data::Dataset train = load_dataset(o.data, lo);
  lo.split = data::Split::test;
  lo.limit = o.test_limit;
  lo.synthetic_count = 64;
  lo.seed = seed + 1;
  data::Dataset test = load_dataset(o.data, lo);
  if (!o.normalize.empty()) {
    data::normalize(train, o.normalize).throw_if_error();
    data::normalize(test, o.normalize).throw_if_error();
  }
  DK_CHECK(train.images.shape().item_numel() == model.input_shape().numel(),
           "model {} takes {} inputs; {} images are {}", o.model, model.input_shape().str(),
           train.name, train.images.shape().with_batch(1).str());
  DK_CHECK(!train.labels.empty(), "training needs labelled data");
  const data::Augment augment{
      o.augment == "crop-flip" || (o.augment == "auto" && model.input_shape()[0] == 3), 4};

  // Engine and trainer.
  const DType dtype = o.precision == "f64" ? DType::f64 : DType::f32;
  const auto integrity = trusted::parse_integrity_mode(o.integrity);
  const int redundancy = integrity == trusted::IntegrityMode::redundant ? 1 : 0;
  auto accel = make_accelerator(o.accelerator, o.accelerator_timeout,
                                o.mode == "darknight" ? o.k + 1 + redundancy : 0, o.tf32);
  DK_CHECK(integrity == trusted::IntegrityMode::none ||
               (o.mode == "darknight" && o.grad_decode == "folded"),
           "--integrity {} needs --mode darknight --grad-decode folded", o.integrity);
  std::unique_ptr<accel::FaultInjector> faults;
  std::unique_ptr<measure::FaultAudit> audit;
  if (!o.inject_faults.empty()) {
    DK_CHECK(o.mode != "tee", "--inject-faults needs an accelerator (not --mode tee)");
    accel::FaultSpec spec = accel::FaultSpec::parse(o.inject_faults);
    if (!spec.seed && o.seeded) spec.seed = o.seed ^ 0x6661756c7473ULL;  // its own stream
    faults = std::make_unique<accel::FaultInjector>(spec, o.k + 1 + redundancy,
                                                    integrity != trusted::IntegrityMode::none);
    if (integrity != trusted::IntegrityMode::none)
      audit = std::make_unique<measure::FaultAudit>(*faults);
    accel->set_fault_injector(faults.get());
  }
  std::unique_ptr<trusted::Csprng> rng, check_rng;
  trusted::DarKnightEngine* dk = nullptr;
  std::unique_ptr<trusted::TrainEngine> engine;
  trusted::RuntimeOptions ro;
  ro.memory_budget = parse_bytes(o.enclave_memory);
  ro.threads = o.trusted_threads;
  if (o.mode == "darknight") {
    trusted::CodecOptions co;
    co.k = o.k, co.noise = {o.noise_mean, o.noise_std}, co.precision = dtype;
    co.redundancy = redundancy;
    co.insecure = o.insecure;
    rng =
        o.seeded ? std::make_unique<trusted::Csprng>(o.seed) : std::make_unique<trusted::Csprng>();
    auto e = std::make_unique<trusted::DarKnightEngine>(
        *accel, co, *rng, 0,
        o.grad_decode == "folded" ? trusted::GradDecode::folded : trusted::GradDecode::trusted);
    // The check vectors come from a stream of their own (a checked run blinds as an
    // unchecked one does).
    check_rng = o.seeded ? std::make_unique<trusted::Csprng>(o.seed ^ 0x636865636bULL)
                         : std::make_unique<trusted::Csprng>();
    e->set_integrity(integrity, check_rng.get());
    e->set_check_observer(audit.get());
    dk = e.get();
    engine = std::move(e);
  } else if (o.mode == "plain") {
    engine = std::make_unique<baselines::PlainEngine>(*accel, dtype);
    ro.enforce_budget = false;
  } else {
    engine = std::make_unique<baselines::TeeEngine>(dtype);
    ro.enforce_budget = false;
    ro.threads = 1;
  }
  trusted::Trainer trainer(std::move(model), *engine, ro);
  const int64_t n = train.images.shape()[0];
  json history = json::array();
  int first_epoch = 0;
  EpochProgress resumed;  // within first_epoch
  int64_t steps = 0;
  double train_seconds = 0;
  if (resuming) {
    for (const nn::Node& node : trainer.graph().nodes())
      if (node.is_linear())
        if (const Tensor* m = resume.find(node.origin + ".weight.momentum"))
          engine->write_momentum(node.weights, *m);
    for (trusted::TrustedParam& p : trainer.params())
      if (const Tensor* m = resume.find(p.name + ".momentum")) p.momentum = m->clone();
    try {
      const json& meta = resume.meta;
      first_epoch = meta.at("epoch").get<int>() + 1;
      history = meta.value("epochs", json::array());
      steps = meta.value("steps", int64_t{0});
      train_seconds = meta.value("train_seconds", 0.0);
      if (meta.contains("in_epoch")) {
        resumed = meta.at("in_epoch").get<EpochProgress>();
        DK_CHECK(meta.at("batch").get<int64_t>() == o.batch &&
                     meta.at("examples").get<int64_t>() == n && resumed.next_start > 0 &&
                     resumed.next_start < n,
                 "{} was taken in an epoch of batches of {} over {} examples: resume with the "
                 "same --batch and data",
                 ckpt_path, meta.at("batch").get<int64_t>(), meta.at("examples").get<int64_t>());
      }
      // The generators go on from where the checkpoint left them (seeded runs; an unseeded
      // one is keyed afresh from the OS, and its stream never repeats).
      if (o.seeded && rng && meta.contains("rng")) {
        rng->seek(meta.at("rng").at("blinding").get<uint64_t>());
        check_rng->seek(meta.at("rng").at("check").get<uint64_t>());
      }
    } catch (const json::exception& e) {
      throw Error(fmt::format("{}: malformed checkpoint header: {}", ckpt_path, e.what()));
    }
    std::fprintf(stderr, "darknight: resuming from %s at epoch %d, step %lld\n", ckpt_path.c_str(),
                 first_epoch + 1, static_cast<long long>(steps));
  }
  const int64_t resumed_steps = steps;
  const int64_t per_pass = trainer.plan(std::min(o.batch, train.images.shape()[0]));
  std::printf("%s training %s on %lld %s images, batch %lld (%lld per pass), K = %d\n",
              o.mode.c_str(), o.model.c_str(), static_cast<long long>(train.images.shape()[0]),
              train.name.c_str(), static_cast<long long>(o.batch), static_cast<long long>(per_pass),
              o.k);

  std::ofstream csv;
  if (!o.metrics.empty()) {
    // Written afresh, with the checkpoint's epochs when resuming: rows of epochs done after
    // the checkpoint by a killed run are dropped, none is lost or repeated.
    csv.open(o.metrics, std::ios::trunc);
    DK_CHECK(csv.good(), "cannot write {}", o.metrics);
    csv << "epoch,train_loss,train_accuracy,test_accuracy,seconds\n";
    for (const json& row : history) csv << csv_row(row);
    csv << std::flush;
  }
  const double t_start = now();
  // The integrity counters so far (printed with `print`).
  auto integrity_now = [&](bool print) {
    json j;
    if (o.integrity != "none" || faults) {
      const trusted::IntegrityCounters ic =
          attributed(dk ? dk->integrity() : trusted::IntegrityCounters{}, audit.get(),
                     faults.get(), *accel);
      const std::optional<WorkerFaults> worker = worker_faults(*accel);
      j = integrity_report(o.integrity, o.inject_faults, faults ? faults->operations() : 0, ic,
                           worker);
      if (print) print_integrity(o.integrity, ic, worker);
    }
    return j;
  };
  // The summary and the report: at the end, or (`stopped`) when the accelerator failed for
  // good, with what was done until then.
  auto finish = [&](const std::string& stopped) {
    const double seconds = now() - t_start;
    const trusted::RunStats& st = trainer.stats();
    std::printf(
        "  peak trusted memory %.1f MiB; forward: encode %.2f s, accelerator %.2f s, "
        "decode %.2f s, non-linear %.2f s; backward: encode %.2f s, accelerator %.2f s, "
        "decode %.2f s, non-linear %.2f s\n",
        st.peak_trusted_bytes / 1048576.0, st.times.encode, st.times.accelerator, st.times.decode,
        st.times.nonlinear, st.backward_times.encode, st.backward_times.accelerator,
        st.backward_times.decode, st.backward_times.nonlinear);
    const json integrity_json = integrity_now(true);
    if (!o.report.empty()) {
      json rep;
      if (!integrity_json.is_null()) rep["integrity"] = integrity_json;
      if (!stopped.empty()) rep["stopped"] = stopped;
      if (!restarts.empty()) rep["restarts"] = restarts;
      if (resuming) rep["resumed"] = {{"epoch", first_epoch + 1}, {"step", resumed_steps}};
      rep["mode"] = o.mode;
      rep["insecure"] = o.seeded || o.insecure;
      rep["model"] = o.model;
      rep["data"] = o.data;
      rep["batch"] = o.batch;
      rep["images_per_pass"] = per_pass;
      if (o.mode == "darknight") {
        rep["virtual_batch"] = o.k;
        rep["noise_mean"] = o.noise_mean;
        rep["noise_std"] = o.noise_std;
        rep["grad_decode"] = o.grad_decode;
      }
      rep["precision"] = o.precision;
      rep["epochs"] = history;
      rep["final_test_accuracy"] =
          history.empty() ? 0.0 : history.back()["test_accuracy"].get<double>();
      rep["peak_trusted_bytes"] = st.peak_trusted_bytes;
      rep["seconds"] = seconds;
      rep["train_seconds"] = train_seconds;
      rep["steps"] = steps;
      rep["images"] = st.images;
      rep["seconds_by_kind"] = {{"forward", times_json(st.times)},
                                {"backward", times_json(st.backward_times)}};
      rep["accelerator_calls"] = st.accelerator_calls;
      rep["bytes_to_accelerator"] = st.bytes_to_accelerator;
      rep["bytes_from_accelerator"] = st.bytes_from_accelerator;
      std::ofstream f(o.report);
      DK_CHECK(f.good(), "cannot write the report {}", o.report);
      f << rep.dump(2) << "\n";
    }
  };
  // A checkpoint: `done` is the last complete epoch (-1: none), `in_epoch` where the run
  // stands in the next (null after a complete epoch).
  auto save_checkpoint = [&](int done, const json& in_epoch) {
    std::filesystem::create_directories(o.checkpoint);
    nn::TensorFile ck = snapshot(trainer, spec, true);
    ck.meta["kind"] = "checkpoint";
    ck.meta["epoch"] = done;
    ck.meta["seed"] = seed;
    ck.meta["seeded"] = o.seeded;
    ck.meta["epochs"] = history;
    ck.meta["steps"] = steps;
    ck.meta["train_seconds"] = train_seconds;
    ck.meta["batch"] = o.batch;
    ck.meta["examples"] = n;
    if (!in_epoch.is_null()) ck.meta["in_epoch"] = in_epoch;
    // The generators' positions (not their keys): with --seed, a resumed run draws what the
    // uninterrupted one would have.
    if (o.seeded && rng)
      ck.meta["rng"] = {{"blinding", rng->position()}, {"check", check_rng->position()}};
    nn::save_tensor_file(ckpt_path, ck).throw_if_error();
  };
  try {
    for (int epoch = first_epoch; epoch < o.epochs && !(o.steps && steps >= o.steps); ++epoch) {
      const SgdParams sgd{.lr = scheduled_lr(o, epoch),
                          .momentum = o.momentum,
                          .weight_decay = o.weight_decay,
                          .nesterov = o.nesterov};
      const std::vector<int64_t> order = data::epoch_order(n, seed, epoch);
      Progress bar(fmt::format("epoch {}", epoch + 1));
      const EpochProgress from = epoch == first_epoch ? resumed : EpochProgress{};
      const double e0 = now() - from.seconds;
      double loss = from.loss, epoch_train = from.train_seconds;
      int64_t correct = from.correct, seen = from.seen;
      bool stopped_in_epoch = false;  // by --steps, with batches of the epoch left
      for (int64_t start = from.next_start; start < n; start += o.batch) {
        const int64_t m = std::min(o.batch, n - start);
        std::vector<int> labels;
        const Tensor x = data::gather(train, order, start, m, augment,
                                      seed * 7919 + static_cast<uint64_t>(epoch * n + start), labels);
        const double s0 = now();
        const trusted::StepStats s = trainer.step(x, labels, sgd);
        epoch_train += now() - s0;
        loss += s.loss * double(m), correct += s.correct, seen += m;
        bar.update(seen, n,
                   fmt::format("loss {:.4f} acc {:.4f} {:.0f} img/s", loss / double(seen),
                               double(correct) / double(seen), double(seen) / epoch_train));
        ++steps;
        const bool stop = o.steps && steps >= o.steps;
        stopped_in_epoch = stop && start + m < n;
        // Mid-epoch checkpoints; one where --steps stops the run inside an epoch (taken
        // before the evaluation, so that a resumed run goes on as one never stopped).
        if (!ckpt_path.empty() && start + m < n &&
            (stop || (o.checkpoint_every && steps % o.checkpoint_every == 0)))
          save_checkpoint(epoch - 1,
                          EpochProgress{start + m, loss, correct, seen, epoch_train, now() - e0});
        if (stop) break;
      }
      train_seconds += epoch_train;
      const double test_acc = evaluate(trainer, test, o.batch);
      const double seconds = now() - e0;
      const json row = {{"epoch", epoch + 1},
                        {"train_loss", loss / double(seen)},
                        {"train_accuracy", double(correct) / double(seen)},
                        {"test_accuracy", test_acc},
                        {"seconds", seconds},
                        {"train_seconds", epoch_train}};
      history.push_back(row);
      std::printf(
          "epoch %d: train loss %.4f, train accuracy %.4f, test accuracy %.4f, %.1f s "
          "(%.1f images/s)\n",
          epoch + 1, loss / double(seen), double(correct) / double(seen), test_acc, seconds,
          double(seen) / epoch_train);
      if (csv.is_open()) csv << csv_row(row) << std::flush;
      if (!ckpt_path.empty() && !stopped_in_epoch) save_checkpoint(epoch, json());
      if (o.steps && steps >= o.steps) break;
    }
  } catch (const trusted::IntegrityStop& e) {
    restarts.push_back({{"reason", e.what()},
                        {"epochs_done", history.size()},
                        {"integrity", integrity_now(false)}});
    finish(e.what());
    throw;
  }
  if (!o.save.empty()) {
    nn::TensorFile f = snapshot(trainer, spec, false);
    f.meta["kind"] = "model";
    nn::save_tensor_file(o.save, f).throw_if_error();
  }
  if (!o.export_onnx.empty())
    nn::export_onnx(
        trainer.graph(), [&](int i) { return engine->read_weights(i); }, o.export_onnx)
        .throw_if_error();
  finish("");
  return 0;
}

}  // namespace

int run_train(const TrainOptions& o) {
  json restarts = json::array();
  try {
    return train_once(o, restarts);
  } catch (const trusted::IntegrityStop& e) {
    if (o.fallback_accelerator.empty()) throw;
    // The weights on the failed accelerator cannot be trusted: restore the last checkpoint
    // (its weights were verified, with Freivalds' check) or the initial weights on the
    // fallback, which is not faulted on purpose, and continue there.
    TrainOptions f = o;
    f.accelerator = o.fallback_accelerator;
    f.fallback_accelerator.clear();
    f.inject_faults.clear();
    f.resume = !o.checkpoint.empty() && std::filesystem::exists(o.checkpoint + "/checkpoint.dkm");
    if (restarts.empty()) restarts.push_back({{"reason", e.what()}});  // stopped while saving
    restarts.back()["restored"] = f.resume ? "checkpoint" : "initial weights";
    restarts.back()["accelerator"] = f.accelerator;
    std::fprintf(stderr, "darknight: %s\ndarknight: restoring the %s on %s and continuing\n",
                 e.what(), f.resume ? "last checkpoint" : "initial weights", f.accelerator.c_str());
    return train_once(f, restarts);
  }
}

}  // namespace darknight::app
