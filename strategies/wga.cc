// WGA, weighted gradient ascent (open-unlearning's WGA): ascent on each forget token weighted by
// the model's own probability of it, w_t = π_θ(y_t)^β (detached), so tokens the model still
// predicts well are pushed hardest: minimise w_f · mean_t w_t · log π_θ(y_t) (the mean of
// −w_t · NLL_t, as its code computes it), no retain term.
#include <ATen/ATen.h>

#include "strategies/strategies.h"

namespace lethe {

namespace {

class Wga : public BasicStrategy {
 public:
  using BasicStrategy::BasicStrategy;
  std::string_view name() const override { return "wga"; }
  LossTerms loss(const Llama& model, const UnlearnBatch& b) override {
    at::Tensor lp = model.token_logprobs(b.forget);
    at::Tensor w = lp.detach().exp().pow(cfg_.wga_beta);
    LossTerms t;
    t.add("forget_wga", cfg_.forget_weight * token_mean(model, b.forget, w * lp));
    return t;
  }
};

}  // namespace

std::unique_ptr<Strategy> make_wga(const UnlearnConfig& cfg) { return std::make_unique<Wga>(cfg); }

}  // namespace lethe
