#include "measure/fault_audit.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace darknight::measure {

double FaultAudit::excess(const trusted::CheckEvent& event, int i, const Tensor64& e,
                          const Tensor64& bound) {
  constexpr double inf = std::numeric_limits<double>::infinity();
  const std::optional<Tensor64> d = event.decode(i, e, false);
  if (!d) return 0;
  for (int64_t k = 0; k < e.numel(); ++k)
    if (!std::isfinite(e[k])) return inf;
  if (event.modulus > 0) {
    for (int64_t k = 0; k < e.numel(); ++k)
      if (e[k] != std::trunc(e[k]) || std::fmod(e[k], event.modulus) != 0) return inf;
    return 0;
  }
  const Tensor64 b = *event.decode(i, bound, true);
  double worst = 0;
  for (int64_t k = 0; k < d->numel(); ++k) {
    const double r = std::abs((*d)[k]) / b[k];  // 0/0: an output the fault did not touch
    if (r > worst) worst = r;
  }
  return worst;
}

void FaultAudit::on_check(const trusted::CheckEvent& e) {
  // The check covered the injector's last `e.operations` operations; faults recorded before
  // those hit operations nothing checked (counted as injected, judged by nothing).
  const int64_t first = faults_.calls() - e.operations;
  std::vector<accel::FaultRecord> records;
  for (accel::FaultRecord& r : faults_.take()) {
    ++injected_;
    if (r.seq >= first)
      records.push_back(std::move(r));
    else
      ++unchecked_;
  }
  std::vector<const Tensor64*> errors(static_cast<size_t>(e.operations), nullptr);
  for (const accel::FaultRecord& r : records) errors[static_cast<size_t>(r.seq - first)] = &r.error;
  if (!e.passed) {
    detected_ += std::ssize(records);
    false_alarms_ += records.empty();
  }
  if (records.empty()) return;
  above_ += e.above_tolerance(errors) ? std::ssize(records) : 0;
  for (const accel::FaultRecord& r : records) {
    const double x = excess(e, static_cast<int>(r.seq - first), r.error, r.bound);
    const bool changed = x > 1;
    changed_ += changed;
    if (changed && e.passed) ++missed_, largest_missed_ = std::max(largest_missed_, x);
  }
}

void FaultAudit::fill(trusted::IntegrityCounters& c) const {
  DK_CHECK(unchecked_ == 0, "fault audit: {} faults hit operations that nothing checked",
           unchecked_);
  c.injected = injected_;
  c.injected_above_tolerance = above_;
  c.changed_output = changed_;
  c.detected = detected_;
  c.missed = missed_;
  c.largest_missed_excess = largest_missed_;
  c.false_alarms = false_alarms_;
}

}  // namespace darknight::measure
