// PDU, primal-dual unlearning (open-unlearning's PDU with primal_dual on): the forget loss is the
// squared gap between each forget token's largest logit and its mean logit, (max_v z − mean_v z)²
// (a flat distribution), and the retain NLL is held under a bound ε by a dual variable λ:
//   minimise w_f · mean_t gap_t² + λ · (NLL(r) − ε),   λ ← max(0, λ + η · (NLL(r) − ε)) per step.
// λ starts at w_r and is updated once pdu_warmup_cycles cycles have run (the reference's warm-up
// epochs); ε = pdu_eps_ratio × the starting model's mean NLL on the first retain rows (the
// reference leaves ε to the user; a ratio carries across models). λ, ε and the cycle count are the
// strategy's state, saved in checkpoints (λ in fp64, so a resume continues bit-exactly).
#include <ATen/ATen.h>

#include "runtime/tp_ops.h"
#include "strategies/strategies.h"

namespace lethe {

namespace {

constexpr int64_t kEpsRows = 64;  // retain rows that measure the starting model's NLL

class Pdu : public BasicStrategy {
 public:
  using BasicStrategy::BasicStrategy;
  std::string_view name() const override { return "pdu"; }
  bool needs_retain() const override { return true; }

  Status begin(const StrategyContext& ctx) override {
    ctx_ = ctx;
    if (!lambda_.defined()) {
      lambda_ = at::full({}, cfg_.retain_weight, at::TensorOptions(ctx.model->device()).dtype(at::kDouble));
      eps_ = cfg_.pdu_eps_ratio * mean_nll_of_rows(*ctx.model, *ctx.data.retain, kEpsRows, cfg_.retain_batch, *ctx.cost);
    }
    return Status::ok();
  }

  LossTerms loss(const Llama& model, const UnlearnBatch& b) override {
    Communicator& tp = model.tp();
    at::Tensor z = model.logits(model.hidden(b.forget)).to(at::kFloat);
    at::Tensor local_max = std::get<0>(z.max(-1, /*keepdim=*/true));
    at::Tensor gap = gather_from_tp(local_max, tp).amax(-1) -
                     reduce_from_tp(z.sum(-1), tp) / static_cast<double>(model.config().vocab_size);
    at::Tensor retain = mean_nll(model, b.retain);
    LossTerms t;
    t.add("forget_pdu", cfg_.forget_weight * token_mean(model, b.forget, gap.pow(2)));
    t.add("retain_nll", lambda_.to(at::kFloat) * (retain - eps_));
    if (cycles_ >= cfg_.pdu_warmup_cycles) {
      // The global batch's retain NLL (each rank's term is its share: Note [Token means under dp]).
      at::Tensor g = retain.detach().to(at::kDouble).reshape({1});
      model.mesh().dp().all_reduce(g, ReduceOp::kAvg);
      lambda_ = (lambda_ + cfg_.pdu_dual_lr * (g[0] - eps_)).clamp_min(0);
    }
    return t;
  }

  Verdict end_cycle(const CycleContext&) override {
    ++cycles_;
    return {};
  }

  StateTensors state() const override {
    return {{"pdu_lambda", lambda_.cpu().reshape({1})},
            {"pdu_eps", at::full({1}, eps_, at::kDouble)},
            {"pdu_cycles", at::full({1}, cycles_, at::kLong)}};
  }
  Status set_state(const StateTensors& s) override {
    for (const char* key : {"pdu_lambda", "pdu_eps", "pdu_cycles"}) {
      auto it = s.find(key);
      if (it == s.end() || it->second.numel() != 1) return Status::error(std::string("state/strategy/") + key + ": missing, or not one value");
    }
    lambda_ = s.at("pdu_lambda").to(at::kDouble).reshape({}).to(lambda_.device());
    eps_ = s.at("pdu_eps").to(at::kDouble).item<double>();
    cycles_ = s.at("pdu_cycles").to(at::kLong).item<int64_t>();
    return Status::ok();
  }

 private:
  at::Tensor lambda_;  // 0-dim fp64 on the model's device
  double eps_ = 0;
  int64_t cycles_ = 0;  // cycles run so far, over all requests
};

}  // namespace

std::unique_ptr<Strategy> make_pdu(const UnlearnConfig& cfg) { return std::make_unique<Pdu>(cfg); }

}  // namespace lethe
