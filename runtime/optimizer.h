// AdamW (decoupled weight decay, as torch.optim.AdamW) with its data-parallel gradient
// synchronisation and gradient clipping, and the learning-rate schedule.
//
// Note [Data-parallel step]: every rank's loss is already scaled so that the *sum* of the ranks'
// gradients is the gradient of the global-batch mean (the trainer divides by the step's global
// token count). step() then
//  - plain: all-reduces the gradients in flat buckets of mesh.bucket_mb, clips, and updates every
//    parameter with full AdamW moments (identical on every dp rank). Buckets hold parameters in
//    reverse order, the order backward produces their gradients; after overlap_next_backward()
//    (mesh.overlap_grad_reduce) each bucket's all-reduce starts from gradient hooks as soon as its
//    last gradient is in, while backward goes on (Note [Overlapped gradient reduction]);
//  - ZeRO-1 (mesh.optimizer = "zero1" or "distributed"): reduce-scatters the gradients so each dp
//    rank holds the summed gradient of its chunk of every parameter — rows [row_start, row_start +
//    rows) along dim 0 of the tp shard — keeps AdamW moments for that chunk only, updates it, and
//    all-gathers the updated chunks. Parameters are fp32 and are themselves the master weights, so
//    the moments are what is sharded (1/dp of 8 bytes per parameter per rank).
// Both give the same parameters (to float rounding) as one process on the same global batch.
//
// bf16 models (Note [Parameter buckets]) take the mixed-precision path instead (Note [Distributed
// optimizer], distributed_optimizer.cc): fp32 master weights and moments per bucket element, the
// gradient buckets all-reduced (replicated) or reduce-scattered in place (zero1, distributed), and
// the updated weights written back in bf16.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <vector>

#include "io/config.h"
#include "runtime/layers.h"
#include "runtime/mesh.h"
#include "runtime/model.h"

namespace lethe {

struct AdamHyper {
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.0;
};

// One kind of optimizer state of one parameter, as this rank holds it (for checkpoints).
struct StateSlice {
  std::string name;        // "exp_avg", "exp_avg_sq", "master"
  bool dp_sharded = false;  // this rank holds owned_range(i, dp_rank) of it, else the whole tp shard
  at::Tensor data;         // 1-D fp32 view, writable: the held elements in row-major order
};

class AdamW {
 public:
  // Updates model.trained() (the adapters of a LoRA model: its frozen base has no state here).
  // Keeps pointers into the model's parameters and buckets, which must outlive the optimizer.
  AdamW(Llama& model, const AdamHyper& hyper, const Mesh& mesh);
  ~AdamW();
  AdamW(const AdamW&) = delete;  // its gradient hooks point at it
  AdamW& operator=(const AdamW&) = delete;

  // The next backward completes this step's gradients (the last micro-batch): with plain dp and
  // mesh.overlap_grad_reduce, buckets start reducing during it. Without this call step() reduces
  // everything itself; the result is the same.
  void overlap_next_backward();
  // Of the last step's gradient buckets: how many there were, and how many started during backward.
  size_t buckets() const { return buckets_.size(); }
  size_t buckets_started_in_backward() const { return started_in_backward_; }

  // Synchronises gradients over dp, clips their global norm to `max_norm` (0: no clipping) in
  // place, and updates with learning rate `lr`; returns the norm before clipping (a 0-dim fp64
  // tensor on the device: nothing is read back to the host) and clears the gradients. Parameters
  // without a gradient (on every rank alike) are left alone. Collective over the mesh.
  at::Tensor step(double lr, double max_norm);

  // Parameter i takes no update in this step: its gradient is dropped.
  void drop_grad(size_t i);

  int64_t steps_taken() const { return step_; }
  void set_steps_taken(int64_t s) { step_ = s; }
  // Parameter i's optimizer state on this rank, in the order of `params`.
  std::vector<StateSlice> state_of(size_t i);
  // The elements [start, start + count) of parameter i's tp shard (row-major) whose dp-sharded
  // state dp rank k holds.
  std::pair<int64_t, int64_t> owned_range(size_t i, int k) const;
  // Whether the weights are bf16 with fp32 master weights apart (the mixed-precision path).
  bool mixed_precision() const { return !buckets_mp_->empty(); }

 private:
  struct Bucket {
    std::vector<size_t> params;  // indices into params_, in reverse parameter order
    at::Tensor flat;             // their gradients, one after another
    size_t ready = 0;            // gradients copied in during this backward
    std::unique_ptr<PendingCollective> pending;
  };
  void make_buckets();
  void on_grad(size_t i, const at::Tensor& g);
  void launch_ready_buckets();
  void all_reduce_buckets();
  at::Tensor zero1_step(double lr, double max_norm);
  // The mixed-precision path (distributed_optimizer.cc).
  struct BucketState {
    at::Tensor master, m, v;  // fp32: the owned shard, or the whole bucket where not sharded
  };
  void init_mixed();
  at::Tensor mixed_step(double lr, double max_norm);
  std::vector<StateSlice> mixed_state_of(size_t i);
  std::pair<int64_t, int64_t> mixed_owned_range(size_t i, int k) const;
  at::Tensor reduce_bucket(size_t b);  // the summed gradient of the owned range (gradient dtype)

  std::vector<Param>* params_;
  std::vector<ParamBucket>* buckets_mp_;  // the model's (empty for fp32 models)
  std::vector<BucketState> state_mp_;
  std::vector<BucketSlot> slot_mp_;
  std::vector<bool> dropped_;
  AdamHyper hyper_;
  const Mesh* mesh_;
  bool zero1_;
  int64_t bucket_elements_;
  std::vector<at::Tensor> m_, v_;
  std::vector<std::pair<int64_t, int64_t>> rows_;  // per parameter: this rank's [start, count)
  std::vector<Bucket> buckets_;                     // plain dp only
  std::vector<size_t> bucket_of_;
  std::vector<int64_t> offset_of_;                  // per parameter: where in its bucket's flat
  std::vector<bool> filled_;                        // per parameter: copied in by a hook
  std::vector<std::pair<at::Tensor, unsigned>> hooks_;  // (tensor, hook id) to remove when done
  size_t next_launch_ = 0, started_in_backward_ = 0;
  bool armed_ = false;
  int64_t step_ = 0;
};

// Rows [start, count) of `rows` that dp rank `k` of `dp` owns under ZeRO-1 (ceil-sized chunks;
// the last ranks may own fewer, or none).
std::pair<int64_t, int64_t> zero1_rows(int64_t rows, int k, int dp);

// Tensors updated together: each w[i] with moments m[i], v[i] and gradient g[i] (one shape per i);
// `decayed` are the w that take weight decay.
struct AdamLists {
  std::vector<at::Tensor> w, m, v, g, decayed;
  std::vector<bool> decays;  // per i: whether w[i] takes weight decay
  void add(const at::Tensor& weight, const at::Tensor& exp_avg, const at::Tensor& exp_avg_sq, const at::Tensor& grad,
           bool decay);
};
// One decoupled-weight-decay AdamW update of every listed tensor in place, at 1-based step `step`,
// each gradient first multiplied in place by `clip` (clip_coefficient; undefined: no clipping).
// fp32 contiguous CPU tensors take one pass over every value (Note [One-pass AdamW]); others
// torch.optim.AdamW's foreach form with _foreach_ ops.
void adamw_update(AdamLists& l, double lr, const AdamHyper& hyper, int64_t step, const at::Tensor& clip);

// Note [Clipping without a host read]: the clip coefficient max_norm / (norm + 1e-6) where norm >
// max_norm, else 1, as a 0-dim tensor beside `norm`; multiplying a gradient by it in place equals
// multiplying by the host scalar (1 exactly leaves it unchanged). Undefined when max_norm ≤ 0.
at::Tensor clip_coefficient(const at::Tensor& norm, double max_norm);

// Learning rate at optimizer step `step` (0-based): linear warm-up, then cosine decay to
// lr · min_lr_ratio at the last step, or constant.
double lr_at(const TrainConfig& cfg, int64_t step);

// Global L2 norm of the given gradient pieces, a 0-dim fp64 tensor on the device: tp-sharded
// pieces' squares are summed over tp, replicated ones counted once; with `dp_sharded` the pieces
// are disjoint dp chunks (summed over dp). Squares are summed in fp64 (each piece converted), which
// keeps results bit-identical to the per-tensor sums this replaced.
at::Tensor grad_norm(const std::vector<Param>& params, const std::vector<at::Tensor>& grads, const Mesh& mesh,
                     bool dp_sharded);
// The same from the squared sums of the tp-sharded and of the replicated pieces (fp64 [1] each).
at::Tensor global_norm(at::Tensor sharded_sq, at::Tensor replicated_sq, const Mesh& mesh, bool dp_sharded);

}  // namespace lethe
