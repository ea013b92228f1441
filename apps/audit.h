// `darknight audit`: the accelerator's attacks on captures (docs/SECURITY.md, "The audit").
#pragma once

#include <CLI/CLI.hpp>

#include "audit/audit.h"

namespace darknight::app {

struct AuditCommand {
  audit::AuditOptions options;
  std::string report;  ///< --report FILE.json
};

CLI::App* add_audit_command(CLI::App& app, AuditCommand& o);
int run_audit(const AuditCommand& o);

}  // namespace darknight::app
