// RMU, representation misdirection (WMDP, Li et al. 2024): on forget tokens the residual stream
// after block ℓ is pushed toward a fixed random direction scaled by c, and on retain tokens it is
// held at the reference model's:
//   minimise w_f · mean (h_ℓ(f) − c·u)² + w_r · mean (h_ℓ(r) − h_ℓ^ref(r))²,
// means over the loss positions and the hidden dimension (padding masked, which the official code
// does not do). u = rand(D) (uniform [0, 1), from rmu_seed) / its norm, fixed for the run. Only the
// MLP down-projections of blocks ℓ−2 … ℓ train (with LoRA: their adapters), and only blocks 0 … ℓ
// are computed. ℓ = unlearn.rmu_layer, or by default the published layer 7 of 32 scaled to the
// model's depth, round(7 · L / 32).
#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "strategies/strategies.h"

namespace lethe {

namespace {

class Rmu : public BasicStrategy {
 public:
  using BasicStrategy::BasicStrategy;
  std::string_view name() const override { return "rmu"; }
  bool needs_retain() const override { return true; }
  bool needs_reference() const override { return true; }

  Status begin(const StrategyContext& ctx) override {
    ctx_ = ctx;
    layer_ = rmu_layer(cfg_, ctx.model->config());
    at::Generator gen = at::detail::createCPUGenerator(static_cast<uint64_t>(cfg_.rmu_seed));
    at::Tensor u = at::rand({ctx.model->config().hidden_size}, gen, at::kFloat);
    direction_ = (cfg_.rmu_steering * u / u.norm()).to(ctx.model->device());
    const auto& trained = ctx.model->trained();
    if (std::none_of(trained.begin(), trained.end(), [&](const Param& p) { return trains(p); })) {
      return Status::error("unlearn.lora_targets: RMU trains the MLP down-projections of blocks " +
                           std::to_string(std::max<int64_t>(0, layer_ - 2)) + " … " + std::to_string(layer_) +
                           ", which have no adapters; add \"down\"");
    }
    return Status::ok();
  }

  LossTerms loss(const Llama& model, const UnlearnBatch& b) override {
    at::Tensor hf = model.residual_after(b.forget, layer_).to(at::kFloat);
    at::Tensor hr = model.residual_after(b.retain, layer_).to(at::kFloat);
    at::Tensor hr_ref;
    {
      at::NoGradGuard no_grad;
      hr_ref = ctx_.reference->residual_after(b.retain, layer_).to(at::kFloat);
    }
    ctx_.cost->forward_tokens += b.retain.input_BT.numel() * model.mesh().dp_size();  // counted as whole forwards
    LossTerms t;
    t.add("forget_rmu", cfg_.forget_weight * token_mean(model, b.forget, (hf - direction_).pow(2).mean(-1)));
    t.add("retain_rmu", cfg_.retain_weight * token_mean(model, b.retain, (hr - hr_ref).pow(2).mean(-1)));
    return t;
  }

  // The down-projections of blocks ℓ−2 … ℓ ("layers.<i>.mlp.w_down", and its adapters).
  bool trains(const Param& p) const override {
    for (int64_t i = std::max<int64_t>(0, layer_ - 2); i <= layer_; ++i) {
      const std::string name = "layers." + std::to_string(i) + ".mlp.w_down";
      if (p.name == name || p.name.rfind(name + ".", 0) == 0) return true;
    }
    return false;
  }

 private:
  int64_t layer_ = 0;
  at::Tensor direction_;  // c · u, [D] fp32
};

}  // namespace

int64_t rmu_layer(const UnlearnConfig& cfg, const ModelConfig& model) {
  if (cfg.rmu_layer >= 0) return cfg.rmu_layer;
  return std::lround(7.0 * static_cast<double>(model.num_hidden_layers) / 32.0);
}

std::unique_ptr<Strategy> make_rmu(const UnlearnConfig& cfg) { return std::make_unique<Rmu>(cfg); }

}  // namespace lethe
