// Skipping tests of backends this machine cannot run.
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "accel/backend.h"
#include "registry/registry.h"

/// Skips the current test when backend `name` cannot run on this machine (a CUDA build on a
/// machine without a GPU), saying why.
#define DK_SKIP_IF_UNAVAILABLE(name)                                              \
  do {                                                                            \
    const std::string dk_why_ = ::darknight::accel::unavailable_reason(name);     \
    if (!dk_why_.empty()) GTEST_SKIP() << "backend " << (name) << ": " << dk_why_; \
  } while (0)
