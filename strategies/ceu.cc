// CE-U, cross-entropy unlearning (open-unlearning's CE-U): cross-entropy of θ to its own
// distribution with the true token removed — softmax of θ's logits (detached) with the target's
// logit at −inf — on every forget token but each sample's first, no retain term and no
// reference: minimise w_f · mean_t CE(π_θ, q_t). Its gradient in the logits is p − q: the target's
// probability is pushed to 0 and the rest keep their proportions.
#include <ATen/ATen.h>

#include <limits>

#include "runtime/tp_ops.h"
#include "strategies/strategies.h"

namespace lethe {

namespace {

class CeU : public BasicStrategy {
 public:
  using BasicStrategy::BasicStrategy;
  std::string_view name() const override { return "ceu"; }
  LossTerms loss(const Llama& model, const UnlearnBatch& b) override {
    Batch f = b.forget;
    // Every sample's first target leaves the mask (a forget row is one sample with at least one).
    f.loss_mask_BT = f.loss_mask_BT * f.loss_mask_BT.cumsum(1).gt(1);
    f.loss_tokens -= f.rows_B.size(0);
    at::Tensor logits = model.logits(model.hidden(f));
    at::Tensor log_q;
    {
      at::NoGradGuard no_grad;
      at::Tensor removed = logits.detach().to(at::kFloat).masked_fill(
          target_in_shard(f.target_BT, model.vocab_start(), logits.size(-1)), -std::numeric_limits<float>::infinity());
      log_q = vocab_parallel_log_softmax(removed, model.tp());
    }
    LossTerms t;
    t.add("forget_ceu", cfg_.forget_weight * token_mean(model, f, soft_cross_entropy(logits, log_q, model.tp())));
    return t;
  }
};

}  // namespace

std::unique_ptr<Strategy> make_ceu(const UnlearnConfig& cfg) { return std::make_unique<CeU>(cfg); }

}  // namespace lethe
