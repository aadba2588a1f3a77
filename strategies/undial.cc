// UNDIAL (open-unlearning's UNDIAL): self-distillation toward the reference model with the true
// token's logit lowered by β: minimise w_f · mean_t CE(π_θ, softmax(v_ref − β · onehot(y_t))) on
// the forget tokens, no retain term. The reference runs on every step (its forward is counted).
// Vocab-parallel: each rank lowers the target on the shard that holds it.
#include <ATen/ATen.h>

#include "runtime/tp_ops.h"
#include "strategies/strategies.h"

namespace lethe {

namespace {

class Undial : public BasicStrategy {
 public:
  using BasicStrategy::BasicStrategy;
  std::string_view name() const override { return "undial"; }
  bool needs_reference() const override { return true; }
  LossTerms loss(const Llama& model, const UnlearnBatch& b) override {
    const Batch& f = b.forget;
    at::Tensor log_q;
    {
      at::NoGradGuard no_grad;
      const Llama& ref = *ctx_.reference;
      at::Tensor v_ref = ref.logits(ref.hidden(f)).to(at::kFloat);
      at::Tensor lowered = v_ref - cfg_.undial_beta * target_in_shard(f.target_BT, ref.vocab_start(), v_ref.size(-1));
      log_q = vocab_parallel_log_softmax(lowered, ref.tp());
    }
    ctx_.cost->forward_tokens += f.input_BT.numel() * model.mesh().dp_size();
    at::Tensor ce = soft_cross_entropy(model.logits(model.hidden(f)), log_q, model.tp());
    LossTerms t;
    t.add("forget_undial", cfg_.forget_weight * token_mean(model, f, ce));
    return t;
  }
};

}  // namespace

std::unique_ptr<Strategy> make_undial(const UnlearnConfig& cfg) { return std::make_unique<Undial>(cfg); }

}  // namespace lethe
