#include "runtime/strategy.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <numeric>

#include "runtime/tp_ops.h"

namespace lethe {

at::Tensor LossTerms::total() const {
  at::Tensor sum;
  for (const auto& [name, t] : terms) sum = sum.defined() ? sum + t : t;
  return sum;
}

at::Tensor batch_logprobs(const Llama& model, const Batch& b) { return model.token_logprobs(b) * b.loss_mask_BT; }

double dp_mean_tokens(const Llama& model, const Batch& b) {
  at::Tensor c = at::full({1}, static_cast<double>(b.loss_tokens), at::kDouble);  // counted on the host
  model.mesh().dp().all_reduce(c, ReduceOp::kAvg);
  return std::max(1.0, c.item<double>());
}

at::Tensor mean_nll(const Llama& model, const Batch& b) {
  return -batch_logprobs(model, b).sum() / dp_mean_tokens(model, b);
}

at::Tensor token_mean(const Llama& model, const Batch& b, const at::Tensor& per_token_BT) {
  return (per_token_BT * b.loss_mask_BT).sum() / dp_mean_tokens(model, b);
}

at::Tensor target_in_shard(const at::Tensor& target_BT, int64_t vocab_start, int64_t v) {
  at::Tensor local = target_BT - vocab_start;
  at::Tensor mine = local.ge(0).logical_and(local.lt(v));
  return at::one_hot(local.clamp(0, v - 1), v).to(at::kBool).logical_and(mine.unsqueeze(-1));
}

at::Tensor soft_cross_entropy(const at::Tensor& logits_BTv, const at::Tensor& log_q_BTv, Communicator& tp) {
  at::Tensor log_p_BTv = vocab_parallel_log_softmax(logits_BTv, tp);
  // q = 0 where log q = −inf: those entries add nothing (log π_θ is finite).
  at::Tensor q_BTv = log_q_BTv.exp();
  return -reduce_from_tp((q_BTv * log_p_BTv).sum(-1), tp);
}

at::Tensor sequence_logprobs(const at::Tensor& token_logprobs_BT, const Batch& b) {
  return (token_logprobs_BT * b.loss_mask_BT).sum(1);
}

NllKl nll_and_kl(const Llama& model, const Llama& reference, const Batch& b, Cost& cost) {
  at::Tensor logits_BTv = model.logits(model.hidden(b));
  at::Tensor ref_BTv;
  {
    at::NoGradGuard no_grad;
    ref_BTv = reference.log_probs_shard(reference.hidden(b));
  }
  cost.forward_tokens += b.input_BT.numel() * model.mesh().dp_size();  // every dp rank's rows
  const at::Tensor& mask = b.loss_mask_BT;
  const double count = dp_mean_tokens(model, b);
  at::Tensor lp_BT = vocab_parallel_logprobs(logits_BTv, b.target_BT, model.vocab_start(), model.tp());
  at::Tensor lp_BTv = vocab_parallel_log_softmax(logits_BTv, model.tp());
  // Σ_v p_ref (log p_ref − log p_θ): each rank sums its vocabulary shard, then the shards are added.
  at::Tensor kl_BT = reduce_from_tp((ref_BTv.exp() * (ref_BTv - lp_BTv)).sum(-1), model.tp());
  return {-(lp_BT * mask).sum() / count, (kl_BT * mask).sum() / count};
}

std::vector<int64_t> all_rows(int64_t n) { return row_range(0, n); }

std::vector<int64_t> row_range(int64_t first, int64_t last) {
  std::vector<int64_t> rows(static_cast<size_t>(std::max<int64_t>(0, last - first)));
  std::iota(rows.begin(), rows.end(), first);
  return rows;
}

}  // namespace lethe
