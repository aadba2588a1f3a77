// The train step and the training phase loop.
//
// One step: the next batch_size rows of the data (a seeded order), split into grad_accum
// micro-batches and each micro-batch over the dp ranks; the loss is the mean token NLL over the
// whole step (every micro-batch and rank divides by the step's global token count), so gradients
// do not depend on the accumulation or dp split; then dp gradient sum, clipping, AdamW.
#pragma once

#include <chrono>
#include <functional>
#include <string>

#include "io/token_dataset.h"
#include "runtime/checkpoint.h"
#include "runtime/model.h"
#include "runtime/optimizer.h"

namespace lethe {

// The loss and the gradient norm stay on the device (0-dim fp64) until read: a step makes no host
// read of its own, so a loop that reads them every log_every steps syncs only then. `seconds` is
// the host's time to issue the step (on a GPU, work may still be queued).
struct StepStats {
  int64_t step = 0;         // optimizer steps taken after this one
  at::Tensor loss_value;    // mean token NLL of the step
  double lr = 0;
  at::Tensor norm_value;    // gradient norm before clipping
  int64_t tokens = 0;       // loss tokens in the step (all ranks)
  double seconds = 0;
  double loss() const { return loss_value.item<double>(); }
  double grad_norm() const { return norm_value.item<double>(); }
};

class Trainer : public Checkpointable {
 public:
  // `model` and `data` must outlive the trainer. REQUIRES: batch_size / grad_accum divisible by
  // the dp size (validate_layout checks it before a run starts).
  Trainer(Llama& model, const Mesh& mesh, const TrainConfig& cfg, const TokenDataset& data, uint64_t seed);

  StepStats step();

  Llama& model() override { return model_; }
  AdamW& optimizer() override { return opt_; }
  const Mesh& mesh() const override { return mesh_; }
  StateTensors state() const override;  // the data cursor
  Status set_state(const StateTensors& state) override;
  DataLoader& loader() { return loader_; }
  // Wall time spent in step() so far, across resumes (saved in checkpoints).
  double seconds() const { return seconds_; }
  const TrainConfig& config() const { return cfg_; }
  int64_t steps_taken() const { return opt_.steps_taken(); }

 private:
  Llama& model_;
  const Mesh& mesh_;
  TrainConfig cfg_;
  const TokenDataset& data_;
  AdamW opt_;
  DataLoader loader_;
  double seconds_ = 0;
};

}  // namespace lethe
