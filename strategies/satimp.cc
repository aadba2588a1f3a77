// SatImp (open-unlearning's SatImp): gradient ascent with token weights p^β1 · (1 − p)^β2, p =
// π_θ(y_t) detached — large for tokens that are likely but not yet saturated — plus NLL on
// retain: minimise w_f · mean_t w_t · log π_θ(y_t) + w_r · NLL(r) (its γ is w_f, its α is w_r).
#include <ATen/ATen.h>

#include "strategies/strategies.h"

namespace lethe {

namespace {

class SatImp : public BasicStrategy {
 public:
  using BasicStrategy::BasicStrategy;
  std::string_view name() const override { return "satimp"; }
  bool needs_retain() const override { return cfg_.retain_weight > 0; }
  LossTerms loss(const Llama& model, const UnlearnBatch& b) override {
    at::Tensor lp = model.token_logprobs(b.forget);
    at::Tensor p = lp.detach().exp();
    at::Tensor w = p.pow(cfg_.satimp_beta1) * (1 - p).pow(cfg_.satimp_beta2);
    LossTerms t;
    t.add("forget_satimp", cfg_.forget_weight * token_mean(model, b.forget, w * lp));
    if (needs_retain()) t.add("retain_nll", cfg_.retain_weight * mean_nll(model, b.retain));
    return t;
  }
};

}  // namespace

std::unique_ptr<Strategy> make_satimp(const UnlearnConfig& cfg) { return std::make_unique<SatImp>(cfg); }

}  // namespace lethe
