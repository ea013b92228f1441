// The one engine factory of the apps (infer, train), the benchmarks and the Python module:
// from typed options (session/modes.h), the untrusted accelerator, the trusted generators
// (session/seeds.h) and the engine of a mode, with its integrity checks; and, for
// measurement runs, the faults injected into the accelerator and their audit. Knows
// nothing of the command line.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "accel/backend.h"
#include "baselines/slalom.h"
#include "faults/faults.h"
#include "session/modes.h"
#include "session/seeds.h"
#include "trusted/codec.h"
#include "trusted/darknight_engine.h"
#include "trusted/integrity.h"
#include "trusted/runtime.h"

namespace darknight::accel {
class FaultyBackend;
}
namespace darknight::measure {
class FaultAudit;
}

namespace darknight::session {

struct SessionOptions {
  Mode mode = Mode::darknight;
  /// For a trainer (train_engine()): slalom is refused, and checks need the folded decode.
  bool training = false;

  // The accelerator (registry/registry.h): a backend's name or a worker's endpoint.
  std::string accelerator = "cpu";
  double accelerator_timeout = 300;  ///< seconds for one reply of a remote worker
  std::string worker_key;  ///< the remote worker's CurveZMQ public key (empty: a plain link)
  bool tf32 = false;

  // darknight's blinding (trusted/codec.h).
  int k = 4;
  /// darknight: the mixtures' element type; plain and tee: the one they compute in.
  DType precision = DType::f32;
  trusted::NoiseSpec noise;
  double mixing_scale = 1.0;
  bool insecure = false;  ///< allow noise-free blinding (tests of the audit only)
  trusted::GradDecode grad_decode = trusted::GradDecode::trusted;
  int64_t precompute_bytes = 0;  ///< inference secrets drawn ahead (0: when needed)
  std::optional<bool> overlap;   ///< nullopt: the engine's default

  /// Checks of the accelerator's results: darknight (training: with the folded decode), or
  /// freivalds with slalom.
  trusted::IntegrityMode integrity = trusted::IntegrityMode::none;

  // The trusted runtime.
  int64_t enclave_memory = int64_t{128} << 20;  ///< darknight: enforced; plain, tee: reported
  int trusted_threads = 0;                      ///< 0: all cores; tee always uses 1

  Seeds seeds;
  /// Measurement runs: faults to inject into the accelerator's linear operations (not with
  /// tee, which has none), from inject_faults() on.
  std::optional<accel::FaultSpec> faults;
};

class Session {
 public:
  /// Connects to or makes the accelerator, then the engine; throws Error when the options
  /// do not go together.
  explicit Session(const SessionOptions& o);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  const SessionOptions& options() const { return opts_; }
  /// What the engine runs on (with faults: the backend that injects them).
  accel::Backend& accelerator() { return *accelerator_; }
  /// The accelerator itself (a worker's client, say), under any fault injection.
  accel::Backend& device() { return *device_; }
  trusted::LinearEngine& engine() { return *engine_; }
  /// The engine as a trainer's; throws Error for an engine that cannot train (slalom).
  trusted::TrainEngine& train_engine();
  trusted::DarKnightEngine* darknight() { return darknight_; }
  baselines::SlalomEngine* slalom() { return slalom_; }
  /// The trusted generators (darknight, slalom; null otherwise).
  trusted::Csprng* blinding_rng() { return rng_.get(); }
  trusted::Csprng* check_rng() { return check_rng_.get(); }
  /// The trusted runtime's options for this engine (budget, threads).
  trusted::RuntimeOptions runtime_options() const;

  /// Forgets the integrity counters so far (after a warm-up).
  void reset_integrity();
  /// From now on the accelerator corrupts linear outputs as options().faults says, and the
  /// engine's checks go to the audit. Nothing without faults.
  void inject_faults();
  /// The linear operations the injected faults could hit (0 without faults).
  int64_t faulted_operations() const;
  /// The engine's integrity counters, its failed checks attributed: by the audit with
  /// faults and checks; else as unattributed for a remote worker (only it knows what it
  /// did) and as false alarms otherwise; with faults but no checks, their count only.
  trusted::IntegrityCounters integrity() const;

 private:
  void check_options() const;
  void make_faults();
  void make_engine();
  void make_darknight();
  void make_slalom();

  SessionOptions opts_;
  // FAULTS: declared before the accelerator, which uses them, and the engine, which reports
  // to the audit.
  std::unique_ptr<accel::FaultInjector> injector_;
  std::unique_ptr<measure::FaultAudit> audit_;
  std::unique_ptr<accel::Backend> accelerator_;
  accel::Backend* device_ = nullptr;
  accel::FaultyBackend* faulty_ = nullptr;
  std::unique_ptr<trusted::Csprng> rng_, check_rng_;
  std::unique_ptr<trusted::LinearEngine> engine_;
  trusted::TrainEngine* train_engine_ = nullptr;
  trusted::DarKnightEngine* darknight_ = nullptr;
  baselines::SlalomEngine* slalom_ = nullptr;
};

}  // namespace darknight::session
