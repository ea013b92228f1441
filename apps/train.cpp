#include "train.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>

#include "common.h"
#include "data/datasets.h"
#include "nn/model_file.h"
#include "nn/onnx_export.h"
#include "session/session.h"
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

/// One training run on one accelerator; `restarts` lists the earlier runs' stops (see
/// run_train), reported, and gets this run's when it stops.
class TrainRun {
 public:
  TrainRun(const TrainOptions& o, json& restarts)
      : o_(o),
        restarts_(restarts),
        seeds_(seeds_of(o.run)),
        spec_(model_spec(o.model, o.weights, o.run)),
        ckpt_path_(o.checkpoint.empty() ? "" : o.checkpoint + "/checkpoint.dkm") {}

  int run();

 private:
  void open_checkpoint();
  void load_data(const nn::Graph& model);
  void make_trainer(nn::Graph model);
  void restore_progress();
  void open_metrics();
  bool steps_done() const { return o_.steps && steps_ >= o_.steps; }
  void train_epochs();
  bool train_epoch(int epoch, EpochProgress& p, double e0);
  void end_epoch(int epoch, const EpochProgress& p, double e0, bool stopped_in_epoch);
  void save_checkpoint(int done, const json& in_epoch);
  json integrity_now(bool print);
  json report(const std::string& stopped, double seconds);
  void finish(const std::string& stopped);

  const TrainOptions& o_;
  json& restarts_;
  const session::Seeds seeds_;
  const ModelSpec spec_;
  const std::string ckpt_path_;
  bool resuming_ = false;
  nn::TensorFile resume_;  ///< the checkpoint resumed from
  data::Dataset train_, test_;
  int64_t n_ = 0;  ///< training examples
  data::Augment augment_;
  // The trainer is destroyed after the session: an interrupted step leaves tensors in the
  // engine that are charged to the trainer's memory meter.
  std::unique_ptr<trusted::Trainer> trainer_;
  std::unique_ptr<session::Session> session_;
  // Progress: restored from the checkpoint when resuming.
  json history_ = json::array();
  int first_epoch_ = 0;
  EpochProgress resumed_;  ///< within first_epoch_
  int64_t steps_ = 0, resumed_steps_ = 0;
  double train_seconds_ = 0;
  int64_t per_pass_ = 0;
  std::ofstream csv_;
  double t_start_ = 0;
};

int TrainRun::run() {
  warn_insecure(o_.run.seeded, o_.run.insecure);
  DK_CHECK(!o_.resume || !o_.checkpoint.empty(), "--resume needs --checkpoint DIR");
  DK_CHECK(!o_.checkpoint_every || !o_.checkpoint.empty(),
           "--checkpoint-every needs --checkpoint DIR");
  open_checkpoint();
  nn::Graph model = make_model(spec_);
  if (resuming_) nn::apply_model_tensors(model, resume_).throw_if_error();
  load_data(model);
  make_trainer(std::move(model));
  if (resuming_) restore_progress();
  resumed_steps_ = steps_;
  per_pass_ = trainer_->plan(std::min(o_.run.batch, n_));
  std::printf("%s training %s on %lld %s images, batch %lld (%lld per pass), K = %d\n",
              o_.run.mode.c_str(), o_.model.c_str(), static_cast<long long>(n_),
              train_.name.c_str(), static_cast<long long>(o_.run.batch),
              static_cast<long long>(per_pass_), o_.run.k);
  open_metrics();
  t_start_ = now();
  try {
    train_epochs();
  } catch (const trusted::IntegrityStop& e) {
    restarts_.push_back({{"reason", e.what()},
                         {"epochs_done", history_.size()},
                         {"integrity", integrity_now(false)}});
    finish(e.what());
    throw;
  }
  if (!o_.save.empty()) {
    nn::TensorFile f = snapshot(*trainer_, spec_, false);
    f.meta["kind"] = "model";
    nn::save_tensor_file(o_.save, f).throw_if_error();
  }
  if (!o_.export_onnx.empty())
    nn::export_onnx(
        trainer_->graph(), [&](int i) { return trainer_->engine().read_weights(i); },
        o_.export_onnx)
        .throw_if_error();
  finish("");
  return 0;
}

/// With --resume, the checkpoint in --checkpoint, when there is a complete one.
void TrainRun::open_checkpoint() {
  // save_tensor_file writes checkpoint.dkm.tmp and renames it: checkpoint.dkm is complete
  // or absent, and a .tmp left by a killed run is never read.
  resuming_ = o_.resume && std::filesystem::exists(ckpt_path_);
  if (o_.resume && !resuming_)
    std::fprintf(stderr,
                 "darknight: --resume: no complete checkpoint in %s yet; starting from "
                 "the beginning\n",
                 o_.checkpoint.c_str());
  if (!resuming_) return;
  Result<nn::TensorFile> r = nn::load_tensor_file(ckpt_path_);
  if (!r.ok())
    throw Error(fmt::format("--resume: {} (remove it to start over)", r.status().message()));
  resume_ = std::move(r.value());
  DK_CHECK(resume_.meta.value("model", std::string()) == o_.model,
           "{} is a checkpoint of '{}', not '{}'", ckpt_path_,
           resume_.meta.value("model", std::string()), o_.model);
  const uint64_t seed = seeds_.base();
  DK_CHECK(resume_.meta.value("seed", seed) == seed &&
               resume_.meta.value("seeded", seeds_.seeded()) == seeds_.seeded(),
           "{} was made {}: resume with the same seed", ckpt_path_,
           resume_.meta.value("seeded", true)
               ? fmt::format("with --seed {}", resume_.meta.value("seed", uint64_t{0}))
               : std::string("without --seed"));
}

/// The train and test splits, in the model's input shape.
void TrainRun::load_data(const nn::Graph& model) {
  data::LoadOptions lo;
  lo.synthetic_item = model.input_shape();
  if (model.input_shape().rank() == 3) lo.image_size = model.input_shape()[1];
  lo.synthetic_classes = static_cast<int>(model.output_shape().numel());
  lo.seed = seeds_.base();
  lo.split = data::Split::train;
  lo.limit = o_.limit;
  lo.synthetic_count = 256;
  train_ = load_dataset(o_.data, lo);
  lo.split = data::Split::test;
  lo.limit = o_.test_limit;
  lo.synthetic_count = 64;
  lo.seed = seeds_.test_data();
  test_ = load_dataset(o_.data, lo);
  if (!o_.run.normalize.empty()) {
    data::normalize(train_, o_.run.normalize).throw_if_error();
    data::normalize(test_, o_.run.normalize).throw_if_error();
  }
  DK_CHECK(train_.images.shape().item_numel() == model.input_shape().numel(),
           "model {} takes {} inputs; {} images are {}", o_.model, model.input_shape().str(),
           train_.name, train_.images.shape().with_batch(1).str());
  DK_CHECK(!train_.labels.empty(), "training needs labelled data");
  n_ = train_.images.shape()[0];
  augment_ = data::Augment{
      o_.augment == "crop-flip" || (o_.augment == "auto" && model.input_shape()[0] == 3), 4};
}

void TrainRun::make_trainer(nn::Graph model) {
  session::SessionOptions so = session_options(o_.run);
  so.training = true;
  so.grad_decode = session::parse_grad_decode(o_.grad_decode);
  session_ = std::make_unique<session::Session>(so);
  session_->inject_faults();  // FAULTS: from the first step (training has no warm-up)
  trainer_ = std::make_unique<trusted::Trainer>(std::move(model), session_->train_engine(),
                                                session_->runtime_options());
}

/// The optimizer's state, the progress and the generators' positions of the checkpoint.
void TrainRun::restore_progress() {
  for (const nn::Node& node : trainer_->graph().nodes())
    if (node.is_linear())
      if (const Tensor* m = resume_.find(node.origin + ".weight.momentum"))
        trainer_->engine().write_momentum(node.weights, *m);
  for (trusted::TrustedParam& p : trainer_->params())
    if (const Tensor* m = resume_.find(p.name + ".momentum")) p.momentum = m->clone();
  try {
    const json& meta = resume_.meta;
    first_epoch_ = meta.at("epoch").get<int>() + 1;
    history_ = meta.value("epochs", json::array());
    steps_ = meta.value("steps", int64_t{0});
    train_seconds_ = meta.value("train_seconds", 0.0);
    if (meta.contains("in_epoch")) {
      resumed_ = meta.at("in_epoch").get<EpochProgress>();
      DK_CHECK(meta.at("batch").get<int64_t>() == o_.run.batch &&
                   meta.at("examples").get<int64_t>() == n_ && resumed_.next_start > 0 &&
                   resumed_.next_start < n_,
               "{} was taken in an epoch of batches of {} over {} examples: resume with the "
               "same --batch and data",
               ckpt_path_, meta.at("batch").get<int64_t>(), meta.at("examples").get<int64_t>());
    }
    // The generators go on from where the checkpoint left them (seeded runs; an unseeded
    // one is keyed afresh from the OS, and its stream never repeats).
    if (seeds_.seeded() && session_->blinding_rng() && meta.contains("rng")) {
      session_->blinding_rng()->seek(meta.at("rng").at("blinding").get<uint64_t>());
      session_->check_rng()->seek(meta.at("rng").at("check").get<uint64_t>());
    }
  } catch (const json::exception& e) {
    throw Error(fmt::format("{}: malformed checkpoint header: {}", ckpt_path_, e.what()));
  }
  std::fprintf(stderr, "darknight: resuming from %s at epoch %d, step %lld\n", ckpt_path_.c_str(),
               first_epoch_ + 1, static_cast<long long>(steps_));
}

void TrainRun::open_metrics() {
  if (o_.metrics.empty()) return;
  // Written afresh, with the checkpoint's epochs when resuming: rows of epochs done after
  // the checkpoint by a killed run are dropped, none is lost or repeated.
  csv_.open(o_.metrics, std::ios::trunc);
  DK_CHECK(csv_.good(), "cannot write {}", o_.metrics);
  csv_ << "epoch,train_loss,train_accuracy,test_accuracy,seconds\n";
  for (const json& row : history_) csv_ << csv_row(row);
  csv_ << std::flush;
}

void TrainRun::train_epochs() {
  for (int epoch = first_epoch_; epoch < o_.epochs && !steps_done(); ++epoch) {
    EpochProgress p = epoch == first_epoch_ ? resumed_ : EpochProgress{};
    const double e0 = now() - p.seconds;
    const bool stopped_in_epoch = train_epoch(epoch, p, e0);
    end_epoch(epoch, p, e0, stopped_in_epoch);
    if (steps_done()) break;
  }
}

/// The epoch's batches from p.next_start on, adding to `p`; true when --steps stopped the
/// run with batches of the epoch left.
bool TrainRun::train_epoch(int epoch, EpochProgress& p, double e0) {
  const SgdParams sgd{.lr = scheduled_lr(o_, epoch),
                      .momentum = o_.momentum,
                      .weight_decay = o_.weight_decay,
                      .nesterov = o_.nesterov};
  const std::vector<int64_t> order = data::epoch_order(n_, seeds_.base(), epoch);
  Progress bar(fmt::format("epoch {}", epoch + 1));
  const int64_t batch = o_.run.batch;
  for (int64_t start = p.next_start; start < n_; start += batch) {
    const int64_t m = std::min(batch, n_ - start);
    std::vector<int> labels;
    const Tensor x = data::gather(train_, order, start, m, augment_,
                                  seeds_.augmentation(epoch, n_, start), labels);
    const double s0 = now();
    const trusted::StepStats s = trainer_->step(x, labels, sgd);
    p.train_seconds += now() - s0;
    p.loss += s.loss * double(m), p.correct += s.correct, p.seen += m;
    bar.update(p.seen, n_,
               fmt::format("loss {:.4f} acc {:.4f} {:.0f} img/s", p.loss / double(p.seen),
                           double(p.correct) / double(p.seen), double(p.seen) / p.train_seconds));
    ++steps_;
    const bool stop = steps_done();
    // Mid-epoch checkpoints; one where --steps stops the run inside an epoch (taken
    // before the evaluation, so that a resumed run goes on as one never stopped).
    if (!ckpt_path_.empty() && start + m < n_ &&
        (stop || (o_.checkpoint_every && steps_ % o_.checkpoint_every == 0)))
      save_checkpoint(epoch - 1, EpochProgress{start + m, p.loss, p.correct, p.seen,
                                               p.train_seconds, now() - e0});
    if (stop) return start + m < n_;
  }
  return false;
}

/// The epoch's evaluation, its row in the history and the metrics, and its checkpoint.
void TrainRun::end_epoch(int epoch, const EpochProgress& p, double e0, bool stopped_in_epoch) {
  train_seconds_ += p.train_seconds;
  const double test_acc = evaluate(*trainer_, test_, o_.run.batch);
  const double seconds = now() - e0;
  const json row = {{"epoch", epoch + 1},
                    {"train_loss", p.loss / double(p.seen)},
                    {"train_accuracy", double(p.correct) / double(p.seen)},
                    {"test_accuracy", test_acc},
                    {"seconds", seconds},
                    {"train_seconds", p.train_seconds}};
  history_.push_back(row);
  std::printf(
      "epoch %d: train loss %.4f, train accuracy %.4f, test accuracy %.4f, %.1f s "
      "(%.1f images/s)\n",
      epoch + 1, p.loss / double(p.seen), double(p.correct) / double(p.seen), test_acc, seconds,
      double(p.seen) / p.train_seconds);
  if (csv_.is_open()) csv_ << csv_row(row) << std::flush;
  if (!ckpt_path_.empty() && !stopped_in_epoch) save_checkpoint(epoch, json());
}

/// A checkpoint: `done` is the last complete epoch (-1: none), `in_epoch` where the run
/// stands in the next (null after a complete epoch).
void TrainRun::save_checkpoint(int done, const json& in_epoch) {
  std::filesystem::create_directories(o_.checkpoint);
  nn::TensorFile ck = snapshot(*trainer_, spec_, true);
  ck.meta["kind"] = "checkpoint";
  ck.meta["epoch"] = done;
  ck.meta["seed"] = seeds_.base();
  ck.meta["seeded"] = seeds_.seeded();
  ck.meta["epochs"] = history_;
  ck.meta["steps"] = steps_;
  ck.meta["train_seconds"] = train_seconds_;
  ck.meta["batch"] = o_.run.batch;
  ck.meta["examples"] = n_;
  if (!in_epoch.is_null()) ck.meta["in_epoch"] = in_epoch;
  // The generators' positions (not their keys): with --seed, a resumed run draws what the
  // uninterrupted one would have.
  if (seeds_.seeded() && session_->blinding_rng())
    ck.meta["rng"] = {{"blinding", session_->blinding_rng()->position()},
                      {"check", session_->check_rng()->position()}};
  nn::save_tensor_file(ckpt_path_, ck).throw_if_error();
}

/// The integrity counters so far (printed with `print`); null without checks or faults.
json TrainRun::integrity_now(bool print) {
  const session::SessionOptions& so = session_->options();
  if (so.integrity == trusted::IntegrityMode::none && !so.faults) return json();
  const trusted::IntegrityCounters ic = session_->integrity();
  const std::optional<WorkerFaults> worker = worker_faults(session_->device());
  json j = integrity_report(o_.run.integrity, o_.run.inject_faults, session_->faulted_operations(),
                            ic, worker);
  if (print) print_integrity(o_.run.integrity, ic, worker);
  return j;
}

/// The summary and the report: at the end, or (`stopped`) when the accelerator failed for
/// good, with what was done until then.
void TrainRun::finish(const std::string& stopped) {
  const double seconds = now() - t_start_;
  const trusted::RunStats& st = trainer_->stats();
  std::printf(
      "  peak trusted memory %.1f MiB; forward: encode %.2f s, accelerator %.2f s, "
      "decode %.2f s, non-linear %.2f s; backward: encode %.2f s, accelerator %.2f s, "
      "decode %.2f s, non-linear %.2f s\n",
      st.peak_trusted_bytes / 1048576.0, st.times.encode, st.times.accelerator, st.times.decode,
      st.times.nonlinear, st.backward_times.encode, st.backward_times.accelerator,
      st.backward_times.decode, st.backward_times.nonlinear);
  const json integrity = integrity_now(true);
  if (o_.run.report.empty()) return;
  json rep = report(stopped, seconds);
  if (!integrity.is_null()) rep["integrity"] = integrity;
  std::ofstream f(o_.run.report);
  DK_CHECK(f.good(), "cannot write the report {}", o_.run.report);
  f << rep.dump(2) << "\n";
}

json TrainRun::report(const std::string& stopped, double seconds) {
  const session::SessionOptions& so = session_->options();
  const trusted::RunStats& st = trainer_->stats();
  json rep;
  if (!stopped.empty()) rep["stopped"] = stopped;
  if (!restarts_.empty()) rep["restarts"] = restarts_;
  if (resuming_) rep["resumed"] = {{"epoch", first_epoch_ + 1}, {"step", resumed_steps_}};
  rep["mode"] = session::to_string(so.mode);
  rep["insecure"] = seeds_.seeded() || so.insecure;
  rep["model"] = o_.model;
  rep["data"] = o_.data;
  rep["batch"] = o_.run.batch;
  rep["images_per_pass"] = per_pass_;
  if (so.mode == session::Mode::darknight) {
    rep["virtual_batch"] = so.k;
    rep["noise_mean"] = so.noise.mean;
    rep["noise_std"] = so.noise.std;
    rep["grad_decode"] = session::to_string(so.grad_decode);
  }
  rep["precision"] = dtype_name(so.precision);
  rep["epochs"] = history_;
  rep["final_test_accuracy"] =
      history_.empty() ? 0.0 : history_.back()["test_accuracy"].get<double>();
  rep["peak_trusted_bytes"] = st.peak_trusted_bytes;
  rep["seconds"] = seconds;
  rep["train_seconds"] = train_seconds_;
  rep["steps"] = steps_;
  rep["images"] = st.images;
  rep["seconds_by_kind"] = {{"forward", times_json(st.times)},
                            {"backward", times_json(st.backward_times)}};
  rep["accelerator_calls"] = st.accelerator_calls;
  rep["bytes_to_accelerator"] = st.bytes_to_accelerator;
  rep["bytes_from_accelerator"] = st.bytes_from_accelerator;
  return rep;
}

/// The model and data options of train (the shared ones: options.h).
void add_data_options(CLI::App* c, TrainOptions& o) {
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
  c->add_option(
       "--augment", o.augment,
       "auto (random crop + flip for colour images, none for greyscale) | none | crop-flip")
      ->check(CLI::IsMember({"auto", "none", "crop-flip"}))
      ->capture_default_str();
  c->add_option("--limit", o.limit, "Use the first N training examples")
      ->check(CLI::NonNegativeNumber);
  c->add_option("--test-limit", o.test_limit, "Use the first N test examples")
      ->check(CLI::NonNegativeNumber);
}

/// The optimizer's options and the gradient decode.
void add_sgd_options(CLI::App* c, TrainOptions& o) {
  c->add_option("--epochs", o.epochs, "Epochs")->check(CLI::PositiveNumber)->capture_default_str();
  c->add_option("--steps", o.steps, "Stop after this many SGD steps (0: run whole epochs)")
      ->check(CLI::NonNegativeNumber);
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
  c->add_option("--grad-decode", o.grad_decode,
                "trusted (the paper's: Eq_j decoded by the trusted side) | folded (gamma in the "
                "deltas: the gradient stays on the accelerator)")
      ->check(CLI::IsMember({"trusted", "folded"}))
      ->capture_default_str();
}

/// Checkpoints, the fallback accelerator and what the run writes.
void add_output_options(CLI::App* c, TrainOptions& o) {
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
  c->add_option("--save", o.save, "Write the trained model (read by infer --weights)");
  c->add_option("--export", o.export_onnx, "Write the trained model as ONNX");
}

}  // namespace

CLI::App* add_train_command(CLI::App& app, TrainOptions& o) {
  auto* c = app.add_subcommand("train", "Private training (DarKnight) or a baseline on a dataset");
  add_data_options(c, o);
  add_run_options(c, o.run, Command::train,
                  {session::Mode::darknight, session::Mode::plain, session::Mode::tee});
  add_sgd_options(c, o);
  add_output_options(c, o);
  return c;
}

int run_train(const TrainOptions& o) {
  json restarts = json::array();
  try {
    return TrainRun(o, restarts).run();
  } catch (const trusted::IntegrityStop& e) {
    if (o.fallback_accelerator.empty()) throw;
    // The weights on the failed accelerator cannot be trusted: restore the last checkpoint
    // (its weights were verified, with Freivalds' check) or the initial weights on the
    // fallback, which is not faulted on purpose, and continue there.
    TrainOptions f = o;
    f.run.accelerator = o.fallback_accelerator;
    f.fallback_accelerator.clear();
    f.run.inject_faults.clear();
    f.resume = !o.checkpoint.empty() && std::filesystem::exists(o.checkpoint + "/checkpoint.dkm");
    if (restarts.empty()) restarts.push_back({{"reason", e.what()}});  // stopped while saving
    restarts.back()["restored"] = f.resume ? "checkpoint" : "initial weights";
    restarts.back()["accelerator"] = f.run.accelerator;
    std::fprintf(stderr, "darknight: %s\ndarknight: restoring the %s on %s and continuing\n",
                 e.what(), f.resume ? "last checkpoint" : "initial weights",
                 f.run.accelerator.c_str());
    return TrainRun(f, restarts).run();
  }
}

}  // namespace darknight::app
