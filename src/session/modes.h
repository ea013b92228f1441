// The typed values of a run's options, each parsed once from its text (the command line's,
// or the Python module's): which engine runs the linear layers, the element type, the
// gradient decode, the overlap, sizes in bytes.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "protocol/tensor.h"
#include "trusted/darknight_engine.h"

namespace darknight::session {

/// Which engine runs a model's linear layers: DarKnight's blinding, or a baseline (plain:
/// unprotected on the accelerator; tee: all in the trusted runtime; slalom: the Slalom
/// baseline, inference only).
enum class Mode { darknight, plain, tee, slalom };

/// Every mode, in the order the command line lists them.
const std::vector<Mode>& all_modes();
std::string to_string(Mode m);
/// "darknight" | "plain" | "tee" | "slalom"; throws Error naming them otherwise.
Mode parse_mode(const std::string& s);

/// "f32" | "f64"; throws Error otherwise.
DType parse_precision(const std::string& s);

std::string to_string(trusted::GradDecode g);
/// "trusted" | "folded"; throws Error otherwise.
trusted::GradDecode parse_grad_decode(const std::string& s);

/// "auto" (nullopt: the engine decides) | "on" | "off"; throws Error otherwise.
std::optional<bool> parse_overlap(const std::string& s);

/// Parses "134217728", "128MiB", "1GiB", "512KiB" or "1.5GB" into bytes; throws Error.
int64_t parse_bytes(const std::string& s);

}  // namespace darknight::session
