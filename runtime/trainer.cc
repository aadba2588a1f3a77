#include "runtime/trainer.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>

namespace lethe {

Trainer::Trainer(Llama& model, const Mesh& mesh, const TrainConfig& cfg, const TokenDataset& data, uint64_t seed)
    : model_(model), mesh_(mesh), cfg_(cfg), data_(data), opt_(model, AdamHyper{cfg.beta1, cfg.beta2, cfg.eps, cfg.weight_decay}, mesh), loader_(data.rows(), seed) {}

StateTensors Trainer::state() const {
  StateTensors s;
  put_cursor(s, "data", loader_.cursor());
  s["seconds"] = at::scalar_tensor(seconds_, at::kDouble);
  return s;
}

Status Trainer::set_state(const StateTensors& state) {
  LETHE_ASSIGN_OR_RETURN(DataCursor c, read_cursor(state, "data"));
  auto secs = state.find("seconds");
  if (secs == state.end()) return Status::error("state/seconds: missing");
  loader_.set_cursor(c);
  seconds_ = secs->second.item<double>();
  return Status::ok();
}

StepStats Trainer::step() {
  const auto start = std::chrono::steady_clock::now();
  const std::vector<int64_t> rows = loader_.next_rows(cfg_.batch_size);
  const int64_t micro = cfg_.batch_size / cfg_.grad_accum;
  const int64_t per_rank = micro / mesh_.dp_size();
  // Each micro-batch is gathered once; the step's token count (over all micro-batches and dp ranks)
  // is needed before the first backward.
  // the step's global token count comes from the host-side dataset: every rank knows every row.
  std::vector<Batch> micro_batches;
  for (int64_t m = 0; m < cfg_.grad_accum; ++m) {
    auto first = rows.begin() + m * micro + mesh_.dp_rank() * per_rank;
    micro_batches.push_back(make_batch(data_, std::vector<int64_t>(first, first + per_rank), model_.device()));
  }
  const auto tokens = static_cast<double>(count_loss_tokens(data_, rows));

  at::Tensor loss_sum = at::zeros({1}, at::TensorOptions(model_.device()).dtype(at::kDouble));
  for (const Batch& b : micro_batches) {
    if (&b == &micro_batches.back()) opt_.overlap_next_backward();
    at::Tensor lp = model_.token_logprobs(b);
    at::Tensor loss = -(lp * b.loss_mask_BT).sum() / std::max(tokens, 1.0);
    torch::autograd::backward({loss});
    loss_sum += loss.detach().to(at::kDouble);
  }
  mesh_.dp().all_reduce(loss_sum, ReduceOp::kSum);

  StepStats s;
  s.lr = lr_at(cfg_, opt_.steps_taken());
  s.norm_value = opt_.step(s.lr, cfg_.grad_clip);
  s.step = opt_.steps_taken();
  s.loss_value = loss_sum.squeeze(0);
  s.tokens = static_cast<int64_t>(tokens);
  s.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  seconds_ += s.seconds;
  return s;
}

}  // namespace lethe
