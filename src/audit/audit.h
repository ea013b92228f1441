// `darknight audit`: the accelerator's attacks on what it captured, scored against a
// reference the attacks never see (docs/SECURITY.md, "The audit").
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <vector>

namespace darknight::audit {

struct AuditOptions {
  std::vector<std::string> captures;  ///< one or more capture directories (pooled)
  std::string reference;              ///< dataset spec or plain capture; empty: no scores
  std::string images_dir;             ///< PNG grids of recovered inputs (empty: none)
  int64_t field_prime = 2147483647;   ///< the field of field-masked captures (Slalom's)
  uint64_t seed = 1;                  ///< the control's noise and FastICA's start
};

/// Runs every attack that applies to the captures and scores it. The report:
/// {"captures", "reference", "attacks": {"noise_strip"|"ica"|"labels"|"weak_noise"|
/// "lattice"|"gradient": null | {"score", "chance", "frac_recovered", "per_layer": [...]}}}.
/// Progress goes to `log`. Throws darknight::Error on unreadable captures or reference.
nlohmann::json run_audit(const AuditOptions& o, std::ostream& log);

/// The report as a table for the terminal.
std::string summary_table(const nlohmann::json& report);

}  // namespace darknight::audit
