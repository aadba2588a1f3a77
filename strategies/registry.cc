#include <algorithm>
#include <functional>
#include <utility>

#include "strategies/strategies.h"

namespace lethe {

namespace {

using Factory = std::unique_ptr<Strategy> (*)(const UnlearnConfig&);

const std::vector<std::pair<std::string, Factory>>& registry() {
  static const std::vector<std::pair<std::string, Factory>> r = {
      {"ga", make_ga},   {"graddiff", make_graddiff}, {"kl", make_kl},
      {"npo", make_npo}, {"simnpo", make_simnpo},     {"icu", make_icu},
      {"wga", make_wga}, {"satimp", make_satimp},     {"undial", make_undial},
      {"ceu", make_ceu}, {"pdu", make_pdu},           {"rmu", make_rmu},
      {"idkdpo", make_idkdpo}, {"altpo", make_altpo}, {"task_vector", nullptr},
      {"whp", make_whp},       {"whp_logits", nullptr},  // nullptr: runs outside the cycle engine
      {"holdout_match", make_holdout_match}};                 // experimental (strategies/experimental/)
  return r;
}

}  // namespace

const std::vector<std::string>& strategy_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> n;
    for (const auto& [name, f] : registry()) n.push_back(name);
    return n;
  }();
  return names;
}

std::vector<std::string> resolve_methods(const std::vector<std::string>& names) {
  std::vector<std::string> out;
  auto add = [&](const std::string& n) {
    if (std::find(out.begin(), out.end(), n) == out.end()) out.push_back(n);
  };
  for (const std::string& n : names) {
    if (n != "all") add(n);
    else
      for (const std::string& m : strategy_names()) add(m);
  }
  return out;
}

bool runs_outside_cycles(const std::string& name) {
  for (const auto& [n, factory] : registry()) {
    if (n == name) return !factory;
  }
  return false;
}

Result<std::unique_ptr<Strategy>> make_strategy(const std::string& name, const UnlearnConfig& cfg) {
  for (const auto& [n, factory] : registry()) {
    if (n == name && !factory) {
      return Status::error("unlearn method \"" + name + "\" is weight or logit arithmetic, not a loss the cycle engine minimises");
    }
    if (n == name) return factory(cfg);
  }
  std::string valid;
  for (const auto& n : strategy_names()) valid += (valid.empty() ? "" : ", ") + n;
  return Status::error("unlearn.methods: \"" + name + "\" is not an unlearning method; valid: " + valid + " (or \"all\")");
}

}  // namespace lethe
