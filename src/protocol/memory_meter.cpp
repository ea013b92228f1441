#include "protocol/memory_meter.h"

namespace darknight {
namespace {
thread_local MemoryMeter* t_meter = nullptr;
}

MemoryMeter* current_meter() {
  return t_meter;
}

MeterScope::MeterScope(MemoryMeter* meter) : previous_(t_meter) {
  t_meter = meter;
}
MeterScope::~MeterScope() {
  t_meter = previous_;
}

}  // namespace darknight
