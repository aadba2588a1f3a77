// NPO (Zhang et al. 2024): −(2/β) · mean log σ(−β · (log π_θ(y|x) − log π_ref(y|x))) on the forget
// set, with sequence-level log-ratios (MUSE's code uses per-logit differences: REFERENCE.md), plus
// an optional retain term: NLL(r) or KL(π_ref ‖ π_θ) on r (unlearn.npo_retain).
//
// log π_ref(y|x) of every forget sample is fixed data: it is computed once per request with the
// frozen reference and cached, so the reference model is run on the forget set only once.
#include <ATen/ATen.h>

#include "strategies/strategies.h"

namespace lethe {

namespace {

class Npo : public BasicStrategy {
 public:
  using BasicStrategy::BasicStrategy;
  std::string_view name() const override { return "npo"; }
  bool needs_retain() const override { return cfg_.npo_retain != "none"; }
  bool needs_reference() const override { return true; }

  Status begin(const StrategyContext& ctx) override {
    LETHE_RETURN_IF_ERROR(BasicStrategy::begin(ctx));
    at::NoGradGuard no_grad;
    const TokenDataset& f = *ctx.data.forget;
    std::vector<at::Tensor> parts;
    const std::vector<int64_t> rows = all_rows(f.rows());
    for (size_t i = 0; i < rows.size(); i += 32) {
      Batch b = make_batch(f, std::vector<int64_t>(rows.begin() + i, rows.begin() + std::min(rows.size(), i + 32)),
                           ctx.reference->device());
      parts.push_back(sequence_logprobs(batch_logprobs(*ctx.reference, b), b));
    }
    ref_logprobs_ = at::cat(parts);
    ctx.cost->forward_tokens += f.rows() * f.seq_len;
    return Status::ok();
  }

  LossTerms loss(const Llama& model, const UnlearnBatch& b) override {
    at::Tensor lp = sequence_logprobs(batch_logprobs(model, b.forget), b.forget);
    at::Tensor ratio = lp - ref_logprobs_.index_select(0, b.forget.rows_B.to(lp.device()));
    const double beta = cfg_.npo_beta;
    LossTerms t;
    t.add("forget_npo", cfg_.forget_weight * (-2.0 / beta) * at::log_sigmoid(-beta * ratio).mean());
    if (cfg_.npo_retain == "nll") t.add("retain_nll", cfg_.retain_weight * mean_nll(model, b.retain));
    if (cfg_.npo_retain == "kl") {
      t.add("retain_kl", cfg_.retain_weight * nll_and_kl(model, *ctx_.reference, b.retain, *ctx_.cost).kl);
    }
    return t;
  }

 private:
  at::Tensor ref_logprobs_;  // [forget rows]
};

}  // namespace

std::unique_ptr<Strategy> make_npo(const UnlearnConfig& cfg) { return std::make_unique<Npo>(cfg); }

}  // namespace lethe
