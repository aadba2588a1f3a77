// The Llama family (Llama-2/3, Mistral-style): RMSNorm, RoPE (Hugging Face's rotate-half layout),
// SwiGLU, grouped-query attention, optional tied embeddings; configured by the fields of a Hugging
// Face config.json and built only from tensor-parallel layers.
//
// Legend: B batch, T new tokens, S keys (cache + new), D hidden, h/g this rank's query/KV heads,
// d head dim, v = V / tp. Inputs carry positions (RoPE) and segments (sample ids): a token attends
// to earlier tokens of its own segment only, so packed samples do not see each other.
//
// Parameter names: embed, layers.{i}.attn_norm, layers.{i}.attn.{wq,wk,wv,wo}, layers.{i}.mlp_norm,
// layers.{i}.mlp.{w_gate,w_up,w_down}, norm, lm_head (absent when tied).
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "io/config.h"
#include "runtime/layers.h"
#include "runtime/mesh.h"
#include "runtime/param_buckets.h"

namespace lethe {

// Keys and values of earlier tokens, per layer, for incremental decoding.
struct KVCache {
  std::vector<at::Tensor> k, v;  // per layer [B, g, S, d]
  at::Tensor segments_BS;        // segment of every cached key
  int64_t length() const { return segments_BS.defined() ? segments_BS.size(1) : 0; }
};

struct Block {
  at::Tensor attn_norm, mlp_norm;
  ColumnParallelLinear wq, wk, wv, w_gate, w_up;
  RowParallelLinear wo, w_down;
};

// A parameter's stable name, full shape and tp split, from the config alone (nothing allocated):
// what the model holds, in its order, what checkpoints store and what Hugging Face names map to.
struct ParamSpec {
  std::string name;
  std::vector<int64_t> global_shape;
  int split_dim = -1;  // -1: replicated
};
std::vector<ParamSpec> llama_param_specs(const ModelConfig& cfg);

// How a model's parameters are made.
struct ModelOptions {
  at::ScalarType dtype = at::kFloat;  // weights and compute: fp32, or bf16 (Note [Parameter buckets])
  bool random_init = true;            // false: zeros, for weights loaded right after (nothing is drawn)
  bool trainable = true;              // false: a frozen model (a reference): no gradients, no buffers
};

class Llama {
 public:
  // REQUIRES: mesh.check_model(cfg) is ok. Collective over mesh.tp() in forward/backward.
  // Weights are drawn shard by shard (init_shard): the same values at any tp. A trainable bf16
  // model keeps its weights and gradients in buckets (Note [Parameter buckets]).
  Llama(const ModelConfig& cfg, const Mesh& mesh, uint64_t seed, const ModelOptions& opts = {});

  // Final-norm hidden states [B, T, D]. With `cache`, keys/values of these tokens are appended to it
  // and earlier cached tokens are attended to (the new tokens come after all cached ones).
  at::Tensor hidden(const at::Tensor& input_BT, const at::Tensor& positions_BT, const at::Tensor& segments_BT,
                    KVCache* cache = nullptr) const;
  // This rank's vocabulary shard of the logits, [B, T, v], in the compute dtype.
  at::Tensor logits(const at::Tensor& hidden_BTD) const;
  // log p(target_t | inputs_≤t), fp32 [B, T]; vocab-parallel (never gathers the vocabulary).
  at::Tensor token_logprobs(const at::Tensor& input_BT, const at::Tensor& positions_BT,
                            const at::Tensor& segments_BT, const at::Tensor& target_BT) const;
  // Full-vocabulary logits [B, T, V] (gathered over tp): for generation and tests.
  at::Tensor full_logits(const at::Tensor& input_BT, const at::Tensor& positions_BT, const at::Tensor& segments_BT,
                         KVCache* cache = nullptr) const;

  // Full-vocabulary logits [B, T, V] fp32 of given hidden states (gathered over tp).
  at::Tensor full_logits_from_hidden(const at::Tensor& hidden_BTD) const;
  // log-softmax over the whole vocabulary, this rank's shard [B, T, v] fp32 (vocab-parallel).
  at::Tensor log_probs_shard(const at::Tensor& hidden_BTD) const;

  std::vector<Param>& params() { return params_; }
  const std::vector<Param>& params() const { return params_; }
  const ModelConfig& config() const { return cfg_; }
  Communicator& tp() const { return mesh_->tp(); }
  const Mesh& mesh() const { return *mesh_; }
  at::Device device() const { return mesh_->device(); }
  int64_t vocab_start() const { return embed_.vocab_start; }
  at::ScalarType compute_dtype() const { return compute_; }
  // Matmuls in `t` with weights of another dtype: each weight is cast in every forward (tests).
  void set_compute_dtype(at::ScalarType t) { compute_ = t; }
  // The weight and gradient buckets of a trainable bf16 model; empty otherwise.
  std::vector<ParamBucket>& buckets() { return buckets_; }
  // Activation checkpointing per block (Note [Activation checkpointing]): when gradients are
  // recorded, each block keeps only its input and is recomputed in backward.
  void set_activation_checkpointing(bool on) { checkpointing_ = on; }
  bool activation_checkpointing() const { return checkpointing_; }
  // Block `i` of the forward pass: x + attention, then + MLP.
  at::Tensor block(size_t i, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, const at::Tensor& mask,
                   KVCache* cache) const;
  // The tensors of block `i`, in the order of params().
  std::vector<at::Tensor> block_params(size_t i) const;
  int64_t num_params_global() const;

 private:
  void bind();  // the layers' tensors from params_
  at::Tensor attention(const Block& b, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                       const at::Tensor& mask, KVCache* cache, size_t layer) const;

  ModelConfig cfg_;
  const Mesh* mesh_;
  at::ScalarType compute_;
  std::vector<Param> params_;
  std::vector<ParamBucket> buckets_;
  VocabParallelEmbedding embed_;
  std::vector<Block> blocks_;
  at::Tensor norm_, lm_head_;  // lm_head_ aliases embed_.w when tied
  at::Tensor inv_freq_;        // [d / 2]
  uint64_t seed_;
  bool checkpointing_ = false;
};

// RoPE as Hugging Face applies it (rotate-half layout): x [B, heads, T, d], positions [B, T].
at::Tensor apply_rotary(const at::Tensor& x, const at::Tensor& positions_BT, double theta);

// Model FLOPs per trained token (forward + backward), Megatron convention (REFERENCE.md):
// 6 × GEMM weights (LM head included, embedding lookup excluded) + 6 · L · D · seq_len for
// causal attention. A forward-only pass is a third of it.
double train_flops_per_token(const ModelConfig& cfg, int64_t seq_len);

}  // namespace lethe
