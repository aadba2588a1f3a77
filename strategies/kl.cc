// KL: gradient ascent on the forget set plus KL(π_ref ‖ π_θ) on the retain set, per token over the
// whole vocabulary, computed from log-probabilities (MUSE's code feeds raw logits: REFERENCE.md).
#include <ATen/ATen.h>

#include "strategies/strategies.h"

namespace lethe {

namespace {

class KlRetain : public BasicStrategy {
 public:
  using BasicStrategy::BasicStrategy;
  std::string_view name() const override { return "kl"; }
  bool needs_retain() const override { return true; }
  bool needs_reference() const override { return true; }
  LossTerms loss(const Llama& model, const UnlearnBatch& b) override {
    LossTerms t;
    t.add("forget_neg_nll", -cfg_.forget_weight * mean_nll(model, b.forget));
    t.add("retain_kl", cfg_.retain_weight * nll_and_kl(model, *ctx_.reference, b.retain, *ctx_.cost).kl);
    return t;
  }
};

}  // namespace

std::unique_ptr<Strategy> make_kl(const UnlearnConfig& cfg) { return std::make_unique<KlRetain>(cfg); }

}  // namespace lethe
