// GA: gradient ascent on the forget set (Jang et al. 2022): minimise −NLL(f).
#include <ATen/ATen.h>

#include "strategies/strategies.h"

namespace lethe {

namespace {

class GradientAscent : public BasicStrategy {
 public:
  using BasicStrategy::BasicStrategy;
  std::string_view name() const override { return "ga"; }
  LossTerms loss(const Llama& model, const UnlearnBatch& b) override {
    LossTerms t;
    t.add("forget_neg_nll", -cfg_.forget_weight * mean_nll(model, b.forget));
    return t;
  }
};

}  // namespace

std::unique_ptr<Strategy> make_ga(const UnlearnConfig& cfg) { return std::make_unique<GradientAscent>(cfg); }

}  // namespace lethe
