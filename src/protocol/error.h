// Failure handling, three kinds (see docs/architecture.md):
//  - a broken invariant aborts: DK_ASSERT (on in release builds too);
//  - untrusted input (files, ciphertexts, accelerator results, messages) is validated and
//    reported as a Status / Result<T> error value;
//  - misuse of the host API throws darknight::Error (DK_CHECK).
#pragma once

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <utility>
#include <variant>

#include <fmt/format.h>

namespace darknight {

/// Thrown on misuse of the host API (bad shapes, wrong dtypes, invalid options).
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Outcome of validating untrusted input: ok, or a message saying what is wrong.
class [[nodiscard]] Status {
 public:
  Status() = default;
  static Status error(std::string message) { return Status(std::move(message)); }
  bool ok() const { return !failed_; }
  const std::string& message() const { return message_; }
  /// Throws Error with the message when not ok (for callers that treat it as misuse).
  void throw_if_error() const {
    if (failed_) throw Error(message_);
  }

 private:
  explicit Status(std::string message) : failed_(true), message_(std::move(message)) {}
  bool failed_ = false;
  std::string message_;
};

/// A value, or the Status saying why there is none.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}        // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {  // NOLINT
    if (std::get<Status>(v_).ok()) std::abort();   // an ok Status carries no value
  }
  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(v_);
  }
  T& value() & {
    if (!ok()) throw Error(std::get<Status>(v_).message());
    return std::get<T>(v_);
  }
  T&& value() && {
    if (!ok()) throw Error(std::get<Status>(v_).message());
    return std::get<T>(std::move(v_));
  }

 private:
  std::variant<T, Status> v_;
};

[[noreturn]] inline void assert_fail(const char* cond, const char* file, int line,
                                     const std::string& msg) {
  std::fprintf(stderr, "darknight: invariant broken at %s:%d: %s %s\n", file, line, cond,
               msg.c_str());
  std::abort();
}

}  // namespace darknight

/// Aborts when an internal invariant is broken. On in every build type.
#define DK_ASSERT(cond, ...)                                                                       \
  do {                                                                                             \
    if (!(cond)) ::darknight::assert_fail(#cond, __FILE__, __LINE__, fmt::format("" __VA_ARGS__)); \
  } while (0)

/// Throws darknight::Error with a formatted message when a host-API precondition fails.
#define DK_CHECK(cond, ...)                                          \
  do {                                                               \
    if (!(cond)) throw ::darknight::Error(fmt::format(__VA_ARGS__)); \
  } while (0)
