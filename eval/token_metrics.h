// Teacher-forced token metrics over a token dataset: mean NLL, perplexity and memorisation accuracy
// (MA, REFERENCE.md: the fraction of positions whose argmax prediction is the true next token).
#pragma once

#include <cmath>
#include <cstdint>

#include "io/token_dataset.h"
#include "runtime/model.h"

namespace lethe {

struct TokenMetrics {
  double mean_nll = 0;
  double accuracy = 0;  // MA
  int64_t tokens = 0;
  double perplexity() const { return std::exp(mean_nll); }
};

// Over every loss position of `ds`, in batches of `batch_rows` rows. Collective over the model's tp
// group (argmax is taken over the gathered vocabulary).
TokenMetrics token_metrics(const Llama& model, const TokenDataset& ds, int64_t batch_rows = 16);

}  // namespace lethe
