// SimNPO: −(2/β) · mean log σ(−(β/|y|) · log π_θ(y|x) − γ) on the forget set, + w · NLL(r); no
// reference model (the length-normalised log-likelihood replaces NPO's log-ratio).
#include <ATen/ATen.h>

#include "strategies/strategies.h"

namespace lethe {

namespace {

class SimNpo : public BasicStrategy {
 public:
  using BasicStrategy::BasicStrategy;
  std::string_view name() const override { return "simnpo"; }
  bool needs_retain() const override { return cfg_.retain_weight > 0; }

  LossTerms loss(const Llama& model, const UnlearnBatch& b) override {
    at::Tensor lp = sequence_logprobs(batch_logprobs(model, b.forget), b.forget);
    at::Tensor length = b.forget.loss_mask_BT.sum(1).clamp_min(1);
    const double beta = cfg_.simnpo_beta;
    LossTerms t;
    t.add("forget_simnpo",
          cfg_.forget_weight * (-2.0 / beta) * at::log_sigmoid(-(beta / length) * lp - cfg_.simnpo_gamma).mean());
    if (needs_retain()) t.add("retain_nll", cfg_.retain_weight * mean_nll(model, b.retain));
    return t;
  }
};

}  // namespace

std::unique_ptr<Strategy> make_simnpo(const UnlearnConfig& cfg) { return std::make_unique<SimNpo>(cfg); }

}  // namespace lethe
