// Mesh: the only place that knows rank arithmetic. world = dp × tp with tp innermost, so the ranks
// of one tensor-parallel group are neighbours (one node). Pipeline parallelism would be a third
// axis owned here too.
#pragma once

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <memory>

#include "base/status.h"
#include "collectives/communicator.h"
#include "io/config.h"

namespace lethe {

class Mesh {
 public:
  // Collective over `world`. Fails when tp × dp != world.size(). `world` must outlive the Mesh.
  // `device`: where this rank's parameters and batches live (resolve_device).
  static Result<Mesh> create(Communicator& world, const MeshConfig& cfg, at::Device device = at::kCPU);

  Communicator& world() const { return *world_; }
  Communicator& tp() const { return *tp_; }
  Communicator& dp() const { return *dp_; }
  int tp_rank() const { return tp_->rank(); }
  int tp_size() const { return tp_->size(); }
  int dp_rank() const { return dp_->rank(); }
  int dp_size() const { return dp_->size(); }
  // mesh.optimizer: AdamW moments sharded over dp ("zero1" or "distributed"), and the fp32 master
  // weights too ("distributed"; they exist apart from the weights only in bf16 runs).
  bool shard_moments() const { return cfg_.optimizer != "replicated" && dp_size() > 1; }
  bool shard_master() const { return cfg_.optimizer == "distributed" && dp_size() > 1; }
  at::ScalarType grad_dtype() const { return cfg_.grad_dtype == "bf16" ? at::kBFloat16 : at::kFloat; }
  double bucket_mb() const { return cfg_.bucket_mb; }
  bool overlap_grad_reduce() const { return cfg_.overlap_grad_reduce; }
  at::Device device() const { return device_; }

  // Heads, KV heads, vocabulary and FFN sizes must divide by tp; the error names the field.
  Status check_model(const ModelConfig& m) const;

 private:
  Mesh() = default;
  Communicator* world_ = nullptr;
  MeshConfig cfg_;
  at::Device device_ = at::kCPU;
  std::unique_ptr<Communicator> tp_, dp_;
};

// Mesh::check_model for a tp size alone (planning layouts without ranks).
Status check_model_for_tp(const ModelConfig& m, int64_t tp);

}  // namespace lethe
