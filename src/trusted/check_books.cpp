#include "trusted/check_books.h"

namespace darknight::trusted {

void CheckBooks::record(const nn::Node& node, const char* op, bool passed, int operations,
                        const decltype(CheckEvent::decode)& decode,
                        const decltype(CheckEvent::above_tolerance)& above) {
  counters_.checks += 1;
  if (!passed) counters_.note_failure(node.name, op, to_string(mode_));
  if (observer_)
    observer_->on_check(CheckEvent{node.name, op, passed, operations, decode, 0.0, above});
}

void CheckBooks::record(const nn::Node& node, const char* op, bool passed,
                        const std::function<CoefficientList()>& d,
                        const std::function<bool(const Tensor64&)>& above) {
  if (!observer_) return record(node, op, passed, 1, {}, {});
  const CoefficientList decode = d();
  record(
      node, op, passed, 1,
      [&](int, const Tensor64& e, bool absolute) -> std::optional<Tensor64> {
        return apply_decode(decode, e, absolute);
      },
      [&](const std::vector<const Tensor64*>& e) { return e[0] && above(*e[0]); });
}

void CheckBooks::recompute_then_fallback(const std::function<bool()>& attempt, int recomputes,
                                         const std::function<void()>& fallback) {
  for (int failures = 0; !attempt(); ++failures) {
    if (failures == recomputes) {
      fallback();
      counters_.fallbacks += 1;
      return;
    }
    counters_.recomputed += 1;
  }
}

void CheckBooks::recompute_or_stop(const nn::Node& node, const char* op, int operations,
                                   const std::function<bool()>& attempt) {
  // The limit is on the accelerator's operations: an attempt of the redundant check's
  // gradient pair is two of them, each of which may fail.
  const int limit = 8 * operations;
  recompute_then_fallback(attempt, limit, [&] {
    throw IntegrityStop(fmt::format(
        "integrity: layer '{}': the accelerator's {} failed the check {} times in a row; "
        "stopping. The weights are only on the accelerator: resume from the last checkpoint "
        "(--resume, or --fallback-accelerator) with a healthy one",
        node.name, op, limit + 1));
  });
}

}  // namespace darknight::trusted
