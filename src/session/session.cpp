#include "session/session.h"

#include "baselines/engines.h"
#include "faults/faulty_backend.h"
#include "measure/fault_audit.h"
#include "registry/registry.h"

namespace darknight::session {

namespace {

/// The mixtures of one virtual batch: K inputs, the noise, and the redundant one when checked.
int mixtures(const SessionOptions& o) {
  return o.k + 1 + (o.integrity == trusted::IntegrityMode::redundant ? 1 : 0);
}

}  // namespace

Session::Session(const SessionOptions& o) : opts_(o) {
  accel::BackendOptions bo;
  bo.tf32 = o.tf32;
  bo.timeout_s = o.accelerator_timeout;
  bo.worker_key = o.worker_key;
  bo.mixtures_per_batch = o.mode == Mode::darknight ? mixtures(o) : 0;  // labels a capture
  accelerator_ = accel::make_backend(o.accelerator, bo);
  device_ = accelerator_.get();
  check_options();
  make_faults();
  make_engine();
}

Session::~Session() = default;

void Session::check_options() const {
  const SessionOptions& o = opts_;
  DK_CHECK(!(o.training && o.mode == Mode::slalom), "--mode slalom cannot train (inference only)");
  if (o.integrity == trusted::IntegrityMode::none) return;
  const std::string mode = trusted::to_string(o.integrity);
  if (o.training)
    DK_CHECK(o.mode == Mode::darknight && o.grad_decode == trusted::GradDecode::folded,
             "--integrity {} needs --mode darknight --grad-decode folded", mode);
  else
    DK_CHECK(o.mode == Mode::darknight ||
                 (o.mode == Mode::slalom && o.integrity == trusted::IntegrityMode::freivalds),
             "--integrity {} needs --mode darknight (or freivalds with --mode slalom)", mode);
}

// FAULTS: the injector (its own seeded stream), the audit that judges the checks against
// its records, and the backend that injects them around the accelerator; armed by
// inject_faults().
void Session::make_faults() {
  if (!opts_.faults) return;
  DK_CHECK(opts_.mode != Mode::tee, "--inject-faults needs an accelerator (not --mode tee)");
  accel::FaultSpec spec = *opts_.faults;
  if (!spec.seed) spec.seed = opts_.seeds.faults();
  const bool checked = opts_.integrity != trusted::IntegrityMode::none;
  injector_ = std::make_unique<accel::FaultInjector>(spec, mixtures(opts_), checked);
  if (checked) audit_ = std::make_unique<measure::FaultAudit>(*injector_);
  auto faulty = std::make_unique<accel::FaultyBackend>(std::move(accelerator_));
  faulty_ = faulty.get();
  accelerator_ = std::move(faulty);
}

void Session::inject_faults() {
  if (!injector_) return;
  faulty_->set_injector(injector_.get());
  if (darknight_) darknight_->set_check_observer(audit_.get());
  if (slalom_) slalom_->set_check_observer(audit_.get());
}

int64_t Session::faulted_operations() const {
  return injector_ ? injector_->operations() : 0;
}

trusted::IntegrityCounters Session::integrity() const {
  trusted::IntegrityCounters c = darknight_ ? darknight_->integrity()
                                 : slalom_  ? slalom_->integrity()
                                            : trusted::IntegrityCounters{};
  if (audit_) {
    audit_->fill(c);
    return c;
  }
  if (injector_) c.injected = injector_->injected();
  (device_->name() == "remote" ? c.unattributed : c.false_alarms) = c.failed;
  return c;
}

void Session::reset_integrity() {
  if (darknight_) darknight_->reset_integrity();
  if (slalom_) slalom_->reset_integrity();
}

void Session::make_engine() {
  switch (opts_.mode) {
    case Mode::darknight:
      return make_darknight();
    case Mode::slalom:
      return make_slalom();
    case Mode::plain: {
      auto e = std::make_unique<baselines::PlainEngine>(*accelerator_, opts_.precision);
      train_engine_ = e.get();
      engine_ = std::move(e);
      return;
    }
    case Mode::tee: {
      auto e = std::make_unique<baselines::TeeEngine>(opts_.precision);
      train_engine_ = e.get();
      engine_ = std::move(e);
      return;
    }
  }
}

void Session::make_darknight() {
  const SessionOptions& o = opts_;
  trusted::CodecOptions co;
  co.k = o.k;
  co.noise = o.noise;
  co.mixing_scale = o.mixing_scale;
  co.insecure = o.insecure;
  co.precision = o.precision;
  co.redundancy = o.integrity == trusted::IntegrityMode::redundant ? 1 : 0;
  rng_ = o.seeds.blinding();
  // The check vectors come from a stream of their own, so that checks do not change the
  // blinding of a seeded run.
  check_rng_ = o.seeds.checks();
  auto e = std::make_unique<trusted::DarKnightEngine>(*accelerator_, co, *rng_, o.precompute_bytes,
                                                      o.grad_decode);
  e->set_integrity(o.integrity, check_rng_.get());
  if (o.overlap) e->set_overlap(*o.overlap);
  darknight_ = e.get();
  train_engine_ = e.get();
  engine_ = std::move(e);
}

void Session::make_slalom() {
  rng_ = opts_.seeds.blinding();
  check_rng_ = opts_.seeds.checks();
  auto e = std::make_unique<baselines::SlalomEngine>(*accelerator_, *rng_);
  e->set_integrity(opts_.integrity, check_rng_.get());
  slalom_ = e.get();
  engine_ = std::move(e);
}

trusted::TrainEngine& Session::train_engine() {
  DK_CHECK(train_engine_, "the {} engine cannot train", engine_->name());
  return *train_engine_;
}

trusted::RuntimeOptions Session::runtime_options() const {
  trusted::RuntimeOptions ro;
  ro.memory_budget = opts_.enclave_memory;
  ro.threads = opts_.trusted_threads;
  if (opts_.mode == Mode::plain || opts_.mode == Mode::tee) ro.enforce_budget = false;
  if (opts_.mode == Mode::tee) ro.threads = 1;  // the paper's single-threaded enclave
  return ro;
}

}  // namespace darknight::session
