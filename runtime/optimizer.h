// AdamW (decoupled weight decay, as torch.optim.AdamW), the learning-rate schedule, gradient
// clipping and data-parallel gradient averaging.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "io/config.h"
#include "runtime/layers.h"
#include "runtime/mesh.h"

namespace lethe {

class AdamW {
 public:
  // Keeps pointers into `params`, which must outlive the optimizer and not be resized.
  AdamW(std::vector<Param>& params, const TrainConfig& cfg);

  // One update with learning rate `lr` from the parameters' .grad() (fp32). Parameters without a
  // gradient are left alone.
  void step(double lr);
  void zero_grad();

  int64_t steps_taken() const { return step_; }
  void set_steps_taken(int64_t s) { step_ = s; }
  // Per parameter, in the order of `params`: first and second moments (this rank's shard).
  std::vector<at::Tensor>& exp_avg() { return m_; }
  std::vector<at::Tensor>& exp_avg_sq() { return v_; }

 private:
  std::vector<Param>* params_;
  double beta1_, beta2_, eps_, weight_decay_;
  std::vector<at::Tensor> m_, v_;
  int64_t step_ = 0;
};

// Learning rate at optimizer step `step` (0-based): linear warm-up, then cosine decay to
// lr · min_lr_ratio at the last step, or constant.
double lr_at(const TrainConfig& cfg, int64_t step);

// Scales gradients so their global L2 norm is at most `max_norm` (0: no clipping) and returns the
// norm before clipping. Sharded parameters' squares are summed over tp, replicated ones counted
// once. Collective over mesh.tp().
double clip_grad_norm(std::vector<Param>& params, double max_norm, const Mesh& mesh);

// Sums every gradient over the data-parallel group: each rank's loss is already divided by the
// step's global token count, so the sum is the gradient of the global mean. Collective over mesh.dp().
void sum_gradients_dp(std::vector<Param>& params, const Mesh& mesh);

}  // namespace lethe
