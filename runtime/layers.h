// Tensor-parallel layers. Every layer of the model is one of these; tp = 1 is the degenerate case
// of the same code. Layers never call a communicator directly: they compose tp_ops.
//
// Weights follow Hugging Face's layout ([out, in] for linear layers, [V, D] for embeddings) and
// live in fp32 (the master copy); `compute` is the dtype matmuls run in (fp32 or bf16), gradients
// arrive in fp32 through the cast.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "collectives/communicator.h"

namespace lethe {

// One named parameter and how it is sharded across tp.
struct Param {
  std::string name;                   // stable: "layers.3.attn.wq"
  at::Tensor value;                   // this rank's shard, fp32, requires grad
  std::vector<int64_t> global_shape;  // the full logical shape (checkpoints store this)
  int split_dim = -1;                 // dim split across tp; -1 = replicated
  bool decay = true;                  // AdamW weight decay applies (matrices yes, norms no)
};

// Creates a parameter: the full tensor drawn from N(0, std) (or ones when std == 0) with a
// generator seeded from (seed, name), then this rank's slice, moved to `device`. Same seed → same
// global values at any tp and on any device (drawn on the CPU).
Param make_param(const std::string& name, std::vector<int64_t> global_shape, int split_dim, double std,
                 uint64_t seed, Communicator& tp, at::Device device = at::kCPU);

// y = x Wᵀ with W split over output features: x [.., in] → y [.., out / tp] (not gathered).
struct ColumnParallelLinear {
  at::Tensor w;  // [out / tp, in]
  at::Tensor operator()(const at::Tensor& x, at::ScalarType compute, Communicator& tp) const;
};

// y = x Wᵀ with W split over input features: x [.., in / tp] → y [.., out] (all-reduced).
struct RowParallelLinear {
  at::Tensor w;  // [out, in / tp]
  at::Tensor operator()(const at::Tensor& x_par, at::ScalarType compute, Communicator& tp) const;
};

// Embedding with the vocabulary split over tp: ids outside this rank's range contribute zero.
struct VocabParallelEmbedding {
  at::Tensor w;  // [V / tp, D]
  int64_t vocab_start = 0;
  at::Tensor operator()(const at::Tensor& ids_BT, at::ScalarType compute, Communicator& tp) const;
};

// RMSNorm in fp32: x · rsqrt(mean(x²) + eps) · w, returned in x's dtype.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& w, double eps);

}  // namespace lethe
