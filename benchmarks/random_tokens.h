// Rows of uniformly random tokens, one sample per row: the benchmarks' data.
#pragma once

#include <ATen/ATen.h>

#include "io/token_dataset.h"

namespace lethe {

inline TokenDataset random_tokens(int64_t rows, int64_t seq_len, int64_t vocab) {
  TokenDataset ds;
  ds.name = "random";
  ds.seq_len = seq_len;
  ds.tokens = at::randint(4, vocab, {rows, seq_len + 1}, at::kLong);
  ds.segments = at::zeros({rows, seq_len + 1}, at::kLong);
  ds.positions = at::arange(seq_len + 1, at::kLong).unsqueeze(0).expand({rows, seq_len + 1}).contiguous();
  ds.sample_ids.assign(static_cast<size_t>(rows), "s");
  return ds;
}

}  // namespace lethe
