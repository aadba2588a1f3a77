// What several strategies share and runtime/strategy.h cannot hold (it needs eval's dp split).
#include <ATen/ATen.h>

#include <algorithm>

#include "eval/dp_split.h"
#include "strategies/strategies.h"

namespace lethe {

double mean_nll_of_rows(const Llama& model, const TokenDataset& ds, int64_t rows, int64_t batch, Cost& cost) {
  at::NoGradGuard no_grad;
  const int64_t n = std::min<int64_t>(rows, ds.rows());
  const DpBlock mine = dp_block(model.mesh(), static_cast<size_t>(n));
  at::Tensor sums = at::zeros({2}, at::kDouble);  // NLL, tokens
  for (auto r = static_cast<int64_t>(mine.first); r < static_cast<int64_t>(mine.last); r += batch) {
    Batch b = make_batch(ds, row_range(r, std::min(r + batch, static_cast<int64_t>(mine.last))), model.device());
    sums[0] -= batch_logprobs(model, b).sum().to(at::kDouble).cpu();
    sums[1] += static_cast<double>(b.loss_tokens);
  }
  model.mesh().dp().all_reduce(sums, ReduceOp::kSum);
  cost.forward_tokens += n * ds.seq_len;
  return sums[0].item<double>() / std::max(1.0, sums[1].item<double>());
}

}  // namespace lethe
