// Holdout matching (Lethe's own; experimental, docs/strategies.md): the retrained model never saw
// the forget set, so its loss on a forget sample is about its loss on text it never saw — the
// holdout level. Instead of ascending without bound (GA, GradDiff), each forget sample's mean token
// NLL ℓ_i is pulled toward that level L and held there:
//   minimise w_f · mean_i (ℓ_i − L)² + w_r · NLL(retain),
// L = the mean token NLL of the holdout set under the model at the request's start. The gradient
// 2 (ℓ_i − L) ∇ℓ_i ascends while a sample is still memorised, fades as it nears L, and descends
// on a sample pushed past it, so PrivLeak is drawn toward 0 from both sides. L is the strategy's
// state (a resumed request keeps the level it started with).
#include <ATen/ATen.h>

#include "strategies/strategies.h"

namespace lethe {

namespace {

constexpr int64_t kLevelRows = 256;  // holdout rows that measure L

class HoldoutMatch : public BasicStrategy {
 public:
  using BasicStrategy::BasicStrategy;
  std::string_view name() const override { return "holdout_match"; }
  bool needs_retain() const override { return true; }
  bool needs_holdout() const override { return true; }

  Status begin(const StrategyContext& ctx) override {
    ctx_ = ctx;
    if (!ctx.data.holdout || ctx.data.holdout->rows() == 0) {
      return Status::error("holdout_match: pulls the forget loss toward the holdout level, and the corpus has no holdout samples");
    }
    level_ = mean_nll_of_rows(*ctx.model, *ctx.data.holdout, kLevelRows, cfg_.retain_batch, *ctx.cost);
    return Status::ok();
  }

  LossTerms loss(const Llama& model, const UnlearnBatch& b) override {
    // Per-sample mean token NLL; every rank holds the same number of rows (the batch divides by
    // dp), so a rank's mean over its rows is its share of the global mean.
    at::Tensor tokens = b.forget.loss_mask_BT.sum(1).clamp_min(1);
    at::Tensor nll_i = -sequence_logprobs(batch_logprobs(model, b.forget), b.forget) / tokens;
    LossTerms t;
    t.add("forget_match", cfg_.forget_weight * (nll_i - level_).pow(2).mean());
    t.add("retain_nll", cfg_.retain_weight * mean_nll(model, b.retain));
    return t;
  }

  StateTensors state() const override { return {{"holdout_match_level", at::full({1}, level_, at::kDouble)}}; }
  Status set_state(const StateTensors& s) override {
    auto it = s.find("holdout_match_level");
    if (it == s.end() || it->second.numel() != 1) return Status::error("state/strategy/holdout_match_level: missing, or not one value");
    level_ = it->second.to(at::kDouble).item<double>();
    return Status::ok();
  }

 private:
  double level_ = 0;
};

}  // namespace

std::unique_ptr<Strategy> make_holdout_match(const UnlearnConfig& cfg) { return std::make_unique<HoldoutMatch>(cfg); }

}  // namespace lethe
