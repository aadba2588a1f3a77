#include "eval/token_metrics.h"

#include <ATen/ATen.h>

#include <numeric>

namespace lethe {

TokenMetrics token_metrics(const Llama& model, const TokenDataset& ds, int64_t batch_rows) {
  at::NoGradGuard no_grad;
  double nll = 0, correct = 0, count = 0;
  for (int64_t start = 0; start < ds.rows(); start += batch_rows) {
    std::vector<int64_t> rows(std::min(batch_rows, ds.rows() - start));
    std::iota(rows.begin(), rows.end(), start);
    Batch b = make_batch(ds, rows);
    at::Tensor logits = model.full_logits(b.input_BT, b.positions_BT, b.segments_BT);
    at::Tensor logp = at::log_softmax(logits, -1).gather(-1, b.target_BT.unsqueeze(-1)).squeeze(-1);
    at::Tensor hit = logits.argmax(-1).eq(b.target_BT).to(at::kFloat);
    nll -= (logp * b.loss_mask_BT).sum().item<double>();
    correct += (hit * b.loss_mask_BT).sum().item<double>();
    count += b.loss_mask_BT.sum().item<double>();
  }
  TokenMetrics m;
  m.tokens = static_cast<int64_t>(count);
  if (count > 0) {
    m.mean_nll = nll / count;
    m.accuracy = correct / count;
  }
  return m;
}

}  // namespace lethe
