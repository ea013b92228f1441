// The DarKnight engine's books on its integrity checks, and what it does after one fails:
// every check is counted (IntegrityCounters), failures logged and the observer told
// (CheckEvent); a failed operation is recomputed on the accelerator, then its result is
// obtained some other way (inference: the trusted runtime computes the layer) or the run
// stops (training: the weights are only on the accelerator).
#pragma once

#include <functional>

#include "nn/graph.h"
#include "trusted/codec.h"
#include "trusted/integrity.h"

namespace darknight::trusted {

class CheckBooks {
 public:
  void set_mode(IntegrityMode mode) { mode_ = mode; }
  /// From now on, every check is reported to `observer` (null: none). Not owned.
  void set_observer(CheckObserver* observer) { observer_ = observer; }
  const IntegrityCounters& counters() const { return counters_; }
  void reset() { counters_ = {}; }

  /// Counts a check of `operations` accelerator operations of `node` (`op`: forward,
  /// backward-data, backward-weights), logs a failure, and tells the observer (CheckEvent:
  /// `decode`, `above`).
  void record(const nn::Node& node, const char* op, bool passed, int operations,
              const decltype(CheckEvent::decode)& decode,
              const decltype(CheckEvent::above_tolerance)& above);
  /// record() of one operation whose output is decoded with `d` (see apply_decode; called
  /// only for an observer).
  void record(const nn::Node& node, const char* op, bool passed,
              const std::function<CoefficientList()>& d,
              const std::function<bool(const Tensor64&)>& above);

  /// Recompute, then fall back: runs `attempt` (the operation on the accelerator, its
  /// decode and check; true when the check passed or there is none) until it passes. After
  /// a failure it recomputes (counted), at most `recomputes` times; then `fallback` gives
  /// the result another way (counted when it returns) or throws.
  void recompute_then_fallback(const std::function<bool()>& attempt, int recomputes,
                               const std::function<void()>& fallback);
  /// In training: recompute_then_fallback() with 8 recomputations per accelerator operation
  /// the check covers (`operations`), then IntegrityStop.
  void recompute_or_stop(const nn::Node& node, const char* op, int operations,
                         const std::function<bool()>& attempt);

 private:
  IntegrityMode mode_ = IntegrityMode::none;
  CheckObserver* observer_ = nullptr;
  IntegrityCounters counters_;
};

}  // namespace darknight::trusted
