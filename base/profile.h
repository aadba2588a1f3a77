// Note [Phase profile]: wall seconds per part of a phase (steps, refinement, evaluation,
// checkpoints, …), so a run says where its time went. Each phase keeps its own Profile and writes
// it to its summary.json under "profile"; `lethe compare` tabulates them (profile.txt). The times
// are those of the process that finished the phase (a resumed phase counts what ran after the
// resume). On a GPU a part ends at its next host read, so work still queued counts in the part
// that waits for it.
#pragma once

#include <chrono>
#include <map>
#include <string>
#include <utility>

namespace lethe {

class Profile {
 public:
  class Scope {
   public:
    Scope(Profile& p, std::string part) : p_(p), part_(std::move(part)), start_(std::chrono::steady_clock::now()) {}
    ~Scope() { p_.add(part_, std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count()); }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    Profile& p_;
    std::string part_;
    std::chrono::steady_clock::time_point start_;
  };

  // Times the enclosing block: `auto t = profile.time("evaluation");`
  [[nodiscard]] Scope time(std::string part) { return Scope(*this, std::move(part)); }
  void add(const std::string& part, double seconds) { seconds_[part] += seconds; }
  const std::map<std::string, double>& seconds() const { return seconds_; }

 private:
  std::map<std::string, double> seconds_;
};

}  // namespace lethe
