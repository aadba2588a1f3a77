// GradDiff: ascent on the forget set, descent on the retain set: −NLL(f) + NLL(r).
#include <ATen/ATen.h>

#include "strategies/strategies.h"

namespace lethe {

namespace {

class GradDiff : public BasicStrategy {
 public:
  using BasicStrategy::BasicStrategy;
  std::string_view name() const override { return "graddiff"; }
  bool needs_retain() const override { return true; }
  LossTerms loss(const Llama& model, const UnlearnBatch& b) override {
    LossTerms t;
    t.add("forget_neg_nll", -cfg_.forget_weight * mean_nll(model, b.forget));
    t.add("retain_nll", cfg_.retain_weight * mean_nll(model, b.retain));
    return t;
  }
};

}  // namespace

std::unique_ptr<Strategy> make_graddiff(const UnlearnConfig& cfg) { return std::make_unique<GradDiff>(cfg); }

}  // namespace lethe
