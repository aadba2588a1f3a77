// What a phase cost: tokens through the model, model FLOPs (Megatron convention, REFERENCE.md),
// wall time. Training tokens count forward + backward; forward-only tokens (a frozen reference
// model, generation inside a method) count a third.
#pragma once

#include <cstdint>

namespace lethe {

struct Cost {
  int64_t train_tokens = 0;
  int64_t forward_tokens = 0;
  double seconds = 0;

  // `train_flops_per_token`: train_flops_per_token(model config, seq_len).
  double flops(double train_flops_per_token) const {
    return train_flops_per_token * (static_cast<double>(train_tokens) + static_cast<double>(forward_tokens) / 3.0);
  }
  double tokens_per_second() const {
    return seconds > 0 ? static_cast<double>(train_tokens + forward_tokens) / seconds : 0.0;
  }
};

}  // namespace lethe
