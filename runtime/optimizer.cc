#include "runtime/optimizer.h"

#include <ATen/ATen.h>

#include <cmath>

namespace lethe {

AdamW::AdamW(std::vector<Param>& params, const TrainConfig& cfg)
    : params_(&params), beta1_(cfg.beta1), beta2_(cfg.beta2), eps_(cfg.eps), weight_decay_(cfg.weight_decay) {
  for (const Param& p : params) {
    m_.push_back(at::zeros_like(p.value, at::kFloat));
    v_.push_back(at::zeros_like(p.value, at::kFloat));
  }
}

void AdamW::step(double lr) {
  ++step_;
  const double bc1 = 1.0 - std::pow(beta1_, static_cast<double>(step_));
  const double bc2 = 1.0 - std::pow(beta2_, static_cast<double>(step_));
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < params_->size(); ++i) {
    Param& p = (*params_)[i];
    const at::Tensor& g = p.value.grad();
    if (!g.defined()) continue;
    if (p.decay && weight_decay_ > 0) p.value.mul_(1.0 - lr * weight_decay_);
    m_[i].mul_(beta1_).add_(g, 1.0 - beta1_);
    v_[i].mul_(beta2_).addcmul_(g, g, 1.0 - beta2_);
    at::Tensor denom = (v_[i].sqrt() / std::sqrt(bc2)).add_(eps_);
    p.value.addcdiv_(m_[i], denom, -lr / bc1);
  }
}

void AdamW::zero_grad() {
  for (Param& p : *params_) {
    if (p.value.grad().defined()) p.value.mutable_grad() = at::Tensor();
  }
}

double lr_at(const TrainConfig& cfg, int64_t step) {
  if (step < cfg.warmup_steps) return cfg.lr * static_cast<double>(step + 1) / static_cast<double>(cfg.warmup_steps);
  if (cfg.schedule == "constant") return cfg.lr;
  const double span = std::max<double>(1.0, static_cast<double>(cfg.steps - cfg.warmup_steps - 1));
  const double progress = std::min(1.0, static_cast<double>(step - cfg.warmup_steps) / span);
  const double min_lr = cfg.lr * cfg.min_lr_ratio;
  return min_lr + 0.5 * (cfg.lr - min_lr) * (1.0 + std::cos(M_PI * progress));
}

double clip_grad_norm(std::vector<Param>& params, double max_norm, const Mesh& mesh) {
  at::Tensor sharded = at::zeros({1}, at::kDouble), replicated = at::zeros({1}, at::kDouble);
  for (const Param& p : params) {
    const at::Tensor& g = p.value.grad();
    if (!g.defined()) continue;
    (p.split_dim >= 0 ? sharded : replicated).add_(g.to(at::kDouble).pow(2).sum());
  }
  mesh.tp().all_reduce(sharded, ReduceOp::kSum);
  const double norm = std::sqrt(sharded.item<double>() + replicated.item<double>());
  if (max_norm > 0 && norm > max_norm) {
    const double scale = max_norm / (norm + 1e-6);
    for (Param& p : params) {
      if (p.value.grad().defined()) p.value.mutable_grad().mul_(scale);
    }
  }
  return norm;
}

void sum_gradients_dp(std::vector<Param>& params, const Mesh& mesh) {
  if (mesh.dp_size() == 1) return;
  for (Param& p : params) {
    if (p.value.grad().defined()) mesh.dp().all_reduce(p.value.mutable_grad(), ReduceOp::kSum);
  }
}

}  // namespace lethe
