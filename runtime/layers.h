// Tensor-parallel layers. Every layer of the model is one of these; tp = 1 is the degenerate case
// of the same code. Layers never call a communicator directly: they compose tp_ops.
//
// Weights follow Hugging Face's layout ([out, in] for linear layers, [V, D] for embeddings) and
// live in the run's dtype (fp32, or bf16 with fp32 master weights in the optimizer); `compute` is
// the dtype matmuls run in, so a bf16 weight is used as it is, with no cast.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "collectives/communicator.h"

namespace lethe {

// One named parameter and how it is sharded across tp.
struct Param {
  std::string name;                   // stable: "layers.3.attn.wq"
  at::Tensor value;                   // this rank's shard (fp32 or bf16); requires grad when trained
  std::vector<int64_t> global_shape;  // the full logical shape (checkpoints store this)
  int split_dim = -1;                 // dim split across tp; -1 = replicated
  bool decay = true;                  // AdamW weight decay applies (matrices yes, norms no)
};

// A stable 64-bit hash of a parameter name (FNV-1a): seeds its init and dropout streams.
uint64_t name_hash(const std::string& name);

// This rank's tp shard of a parameter's initial value, fp32 on the CPU: N(0, std) (ones when
// std == 0) from a generator seeded by (seed, name). Only the shard is held (Note [Shard-local
// init]): the values equal the same slice of the whole tensor drawn at once, at any tp.
at::Tensor init_shard(const std::string& name, const std::vector<int64_t>& global_shape, int split_dim, double std,
                      uint64_t seed, const Communicator& tp);


// A low-rank adapter of a tp linear layer: y += (dropout(x) Aᵀ) Bᵀ · scale (Note [LoRA under tp]).
// A and B are fp32 (PEFT's default) and cast to the compute dtype in forward.
struct Lora {
  at::Tensor a, b;     // column-parallel base: a [r, in], b [out / tp, r]; row-parallel: a [r, in / tp], b [out, r]
  double scale = 0.0;  // lora_alpha / lora_rank
  double dropout = 0.0;
  uint64_t key = 0;    // this layer's dropout stream (from its parameter name)
  bool on() const { return a.defined(); }
};

// y = x Wᵀ with W split over output features: x [.., in] → y [.., out / tp] (not gathered).
// `dropout_seed`: this forward's adapter dropout (0: none, as in evaluation).
struct ColumnParallelLinear {
  at::Tensor w;  // [out / tp, in]
  Lora lora;
  at::Tensor operator()(const at::Tensor& x, at::ScalarType compute, Communicator& tp, uint64_t dropout_seed = 0) const;
};

// Column-parallel layers applied to the same input, one output each: the base products run as one
// over the weights concatenated (one GEMM forward, one for the input's gradient and one for the
// weights' in backward, one tp all-reduce; the concatenation is not kept for backward: Note
// [Concatenated weights are not kept]), each layer's adapter added to its own output.
std::vector<at::Tensor> column_parallel(std::initializer_list<const ColumnParallelLinear*> layers, const at::Tensor& x,
                                        at::ScalarType compute, Communicator& tp, uint64_t dropout_seed = 0);

// y = x Wᵀ with W split over input features: x [.., in / tp] → y [.., out] (all-reduced).
struct RowParallelLinear {
  at::Tensor w;  // [out, in / tp]
  Lora lora;
  at::Tensor operator()(const at::Tensor& x_par, at::ScalarType compute, Communicator& tp, uint64_t dropout_seed = 0) const;
};

// Embedding with the vocabulary split over tp: ids outside this rank's range contribute zero.
struct VocabParallelEmbedding {
  at::Tensor w;  // [V / tp, D]
  int64_t vocab_start = 0;
  at::Tensor operator()(const at::Tensor& ids_BT, at::ScalarType compute, Communicator& tp) const;
};

}  // namespace lethe
