// Measuring the integrity checks (docs/SECURITY.md "Integrity"), outside the trusted
// engines: joins what the fault injector did to each operation (faults/faults.h: the clean
// output, the error, the fault-free rounding bound) with what the engine's check said about
// it (trusted/integrity.h: CheckEvent), and judges each fault by its effect on the decoded
// result against the clean computation, not by the check's own secrets or tolerance.
#pragma once

#include "faults/faults.h"
#include "trusted/integrity.h"

namespace darknight::measure {

class FaultAudit final : public trusted::CheckObserver {
 public:
  /// `faults` must record (FaultInjector's `record`) and be the injector of the backend
  /// whose operations the engine checks.
  explicit FaultAudit(accel::FaultInjector& faults) : faults_(faults) {}

  void on_check(const trusted::CheckEvent& e) override;

  /// Fills the measured fields (injected, injected_above_tolerance, changed_output,
  /// detected, missed, largest_missed_excess, false_alarms) of the engine's counters. Throws Error
  /// when faults hit operations that no check covered (the figures would not mean what they say).
  void fill(trusted::IntegrityCounters& c) const;

  /// How far an error `e` on an output moves the decoded result, in units of the
  /// fault-free rounding bound: max |D e| / (|D| bound) over the elements (D the decode of
  /// `event`'s operation `i`; infinite when e is not finite; 0 when the output is not
  /// used). Above 1: the fault changed the output. With a modulus (exact arithmetic):
  /// infinite unless e is a multiple of it, then 0.
  static double excess(const trusted::CheckEvent& event, int i, const Tensor64& e,
                       const Tensor64& bound);

 private:
  accel::FaultInjector& faults_;
  double largest_missed_ = 0;
  int64_t unchecked_ = 0, injected_ = 0, above_ = 0, changed_ = 0, detected_ = 0, missed_ = 0,
          false_alarms_ = 0;
};

}  // namespace darknight::measure
