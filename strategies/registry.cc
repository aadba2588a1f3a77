#include <functional>
#include <utility>

#include "strategies/strategies.h"

namespace lethe {

namespace {

using Factory = std::unique_ptr<Strategy> (*)(const UnlearnConfig&);

const std::vector<std::pair<std::string, Factory>>& registry() {
  static const std::vector<std::pair<std::string, Factory>> r = {
      {"ga", make_ga},   {"graddiff", make_graddiff}, {"kl", make_kl},
      {"npo", make_npo}, {"simnpo", make_simnpo},     {"icu", make_icu}};
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

Result<std::unique_ptr<Strategy>> make_strategy(const std::string& name, const UnlearnConfig& cfg) {
  for (const auto& [n, factory] : registry()) {
    if (n == name) return factory(cfg);
  }
  std::string valid;
  for (const auto& n : strategy_names()) valid += (valid.empty() ? "" : ", ") + n;
  return Status::error("unlearn.methods: \"" + name + "\" is not an unlearning method; valid: " + valid);
}

}  // namespace lethe
