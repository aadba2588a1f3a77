// The unlearning methods (docs/strategies.md; definitions in REFERENCE.md) and their registry.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "io/config.h"
#include "runtime/strategy.h"

namespace lethe {

// Names accepted by make_strategy, in the order the comparison lists them.
const std::vector<std::string>& strategy_names();

// `names` (unlearn.methods) in their order, "all" standing for every method not named before it
// (in strategy_names() order); repeats dropped.
std::vector<std::string> resolve_methods(const std::vector<std::string>& names);

// Whether `name` is a method that edits weights directly instead of minimising a loss in cycles
// (task_vector: launch/unlearn_phase.cc runs it); make_strategy refuses it.
bool is_weight_arithmetic(const std::string& name);

// The method called `name`, configured from `cfg`. An unknown name is an error that lists the
// valid ones.
Result<std::unique_ptr<Strategy>> make_strategy(const std::string& name, const UnlearnConfig& cfg);

// A method that unlearns every forget sample each cycle; keeps the request's context.
class BasicStrategy : public Strategy {
 public:
  explicit BasicStrategy(const UnlearnConfig& cfg) : cfg_(cfg) {}
  Status begin(const StrategyContext& ctx) override {
    ctx_ = ctx;
    return Status::ok();
  }
  std::vector<int64_t> forget_rows() const override { return all_rows(ctx_.data.forget->rows()); }

 protected:
  UnlearnConfig cfg_;
  StrategyContext ctx_;
};

// Factories, one per file in strategies/.
std::unique_ptr<Strategy> make_ga(const UnlearnConfig& cfg);
std::unique_ptr<Strategy> make_graddiff(const UnlearnConfig& cfg);
std::unique_ptr<Strategy> make_kl(const UnlearnConfig& cfg);
std::unique_ptr<Strategy> make_npo(const UnlearnConfig& cfg);
std::unique_ptr<Strategy> make_simnpo(const UnlearnConfig& cfg);
std::unique_ptr<Strategy> make_icu(const UnlearnConfig& cfg);
std::unique_ptr<Strategy> make_wga(const UnlearnConfig& cfg);
std::unique_ptr<Strategy> make_satimp(const UnlearnConfig& cfg);
std::unique_ptr<Strategy> make_undial(const UnlearnConfig& cfg);
std::unique_ptr<Strategy> make_ceu(const UnlearnConfig& cfg);
std::unique_ptr<Strategy> make_pdu(const UnlearnConfig& cfg);
std::unique_ptr<Strategy> make_rmu(const UnlearnConfig& cfg);
std::unique_ptr<Strategy> make_idkdpo(const UnlearnConfig& cfg);
std::unique_ptr<Strategy> make_altpo(const UnlearnConfig& cfg);

// The block RMU steers after: unlearn.rmu_layer, or round(7 · L / 32) (the published 7 of 32).
int64_t rmu_layer(const UnlearnConfig& cfg, const ModelConfig& model);

}  // namespace lethe
