#include "audit.h"

#include <cstdio>
#include <fstream>
#include <iostream>

#include "protocol/error.h"

namespace darknight::app {

CLI::App* add_audit_command(CLI::App& app, AuditCommand& o) {
  auto* c = app.add_subcommand(
      "audit",
      "Play the accelerator: run the attacks on what workers captured (worker --capture) and "
      "score them against a reference the attacks never see");
  c->add_option("capture", o.options.captures,
                "Capture directories (several: the workers' views pooled, as colluders would)")
      ->required()
      ->check(CLI::ExistingDirectory);
  c->add_option("--reference", o.options.reference,
                "The data the run used, to score the attacks: a dataset (fashion-mnist, "
                "cifar10:DIR, ...; both splits) or a capture of the same run in plain mode");
  c->add_option("--report", o.report, "Write the report as JSON");
  c->add_option("--images", o.options.images_dir,
                "Write PNG grids of recovered inputs next to the originals here");
  c->add_option("--field-prime", o.options.field_prime,
                "The prime of field-masked captures (Slalom's 2^31 - 1)")
      ->check(CLI::Range(int64_t{3}, int64_t{1} << 61))
      ->capture_default_str();
  c->add_option("--seed", o.options.seed, "Seed of the control's noise and of FastICA's start")
      ->capture_default_str();
  return c;
}

int run_audit(const AuditCommand& o) {
  const nlohmann::json report = audit::run_audit(o.options, std::cerr);
  std::printf("%s", audit::summary_table(report).c_str());
  if (report["reference"].is_null())
    std::printf("(no --reference: the attacks ran, but nothing scores them)\n");
  if (!o.report.empty()) {
    std::ofstream f(o.report);
    f << report.dump(2) << '\n';
    if (!f) throw Error("cannot write " + o.report);
  }
  return 0;
}

}  // namespace darknight::app
