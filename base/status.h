// Status and Result<T>: how errors travel at the edges (config, files, formats).
//
// A Status is ok or carries one human-readable message that names the file, line, key or tensor
// involved and what was expected. A Result<T> is a T or a failed Status. Both are cheap to move.
// Broken invariants inside the code use LETHE_CHECK (check.h) instead.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace lethe {

class [[nodiscard]] Status {
 public:
  Status() = default;  // ok
  static Status ok() { return Status(); }
  static Status error(std::string message) { return Status(std::move(message)); }

  bool is_ok() const { return !message_.has_value(); }
  explicit operator bool() const { return is_ok(); }
  // REQUIRES: !is_ok().
  const std::string& message() const { return *message_; }

  // Prepends context ("while loading ckpt.h5: ...") to a failed status; ok stays ok.
  Status with_context(const std::string& context) const {
    return is_ok() ? *this : Status(context + ": " + *message_);
  }

 private:
  explicit Status(std::string message) : message_(std::move(message)) {}
  std::optional<std::string> message_;
};

template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {}  // NOLINT; REQUIRES: !status.is_ok()

  bool is_ok() const { return v_.index() == 0; }
  explicit operator bool() const { return is_ok(); }
  Status status() const { return is_ok() ? Status::ok() : std::get<1>(v_); }

  // REQUIRES: is_ok().
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace lethe

// Returns the failed Status of an expression that yields a Status.
#define LETHE_RETURN_IF_ERROR(expr)                   \
  do {                                                \
    ::lethe::Status lethe_status_ = (expr);           \
    if (!lethe_status_.is_ok()) return lethe_status_; \
  } while (0)

#define LETHE_CONCAT_INNER(a, b) a##b
#define LETHE_CONCAT(a, b) LETHE_CONCAT_INNER(a, b)
// `LETHE_ASSIGN_OR_RETURN(auto x, make_x());` binds the value or returns the failed Status.
#define LETHE_ASSIGN_OR_RETURN(decl, expr) \
  LETHE_ASSIGN_OR_RETURN_IMPL(LETHE_CONCAT(lethe_result_, __LINE__), decl, expr)
#define LETHE_ASSIGN_OR_RETURN_IMPL(tmp, decl, expr) \
  auto tmp = (expr);                                 \
  if (!tmp.is_ok()) return tmp.status();             \
  decl = std::move(tmp).value()
