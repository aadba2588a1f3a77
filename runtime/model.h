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

#include <memory>
#include <optional>
#include <vector>

#include "io/config.h"
#include "io/token_dataset.h"
#include "runtime/layers.h"
#include "runtime/mesh.h"
#include "runtime/param_buckets.h"

namespace lethe {

// Keys and values of earlier tokens, per layer, for incremental decoding. The buffers are
// allocated at the first forward for `capacity` positions (or as many as it brings, if more) and
// written in place; a forward beyond them grows them by doubling (one copy), so reserving the
// prompt length + new tokens up front means no step copies the cache.
struct KVCache {
  explicit KVCache(int64_t capacity = 0) : capacity(capacity) {}
  std::vector<at::Tensor> k, v;  // per layer [B, g, ≥ length, d]
  at::Tensor segments_BS;        // [B, ≥ length]: segment of every cached key
  int64_t length = 0;            // positions filled
  int64_t capacity = 0;          // positions to allocate at the first forward
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

// Low-rank adapters on some of every block's projections (Note [LoRA under tp]).
struct LoraOptions {
  int64_t rank = 16;
  double alpha = 32;
  std::vector<std::string> targets;  // of lora_target_names(): q, k, v, o, gate, up, down
  double dropout = 0.0;
};
LoraOptions lora_options(const UnlearnConfig& cfg);
// The adapters' names, full shapes and tp splits, in the order Llama::add_lora makes them (per
// layer and targeted projection, lora_a then lora_b): column-parallel base → A [r, in] replicated,
// B [out, r] split on dim 0; row-parallel base → A split on dim 1, B replicated.
std::vector<ParamSpec> lora_param_specs(const ModelConfig& cfg, const LoraOptions& opts);

class Llama {
 public:
  // REQUIRES: mesh.check_model(cfg) is ok. Collective over mesh.tp() in forward/backward.
  // Weights are drawn shard by shard (init_shard): the same values at any tp. A trainable bf16
  // model keeps its weights and gradients in buckets (Note [Parameter buckets]).
  Llama(const ModelConfig& cfg, const Mesh& mesh, uint64_t seed, const ModelOptions& opts = {});

  // Final-norm hidden states [B, T, D]. With `cache`, keys/values of these tokens are appended to it
  // and earlier cached tokens are attended to (the new tokens come after all cached ones).
  // Without a cache, whether any row needs the segment mask is read from the segments (one host
  // read); the Batch overloads take it from the batch, decided on the host when it was built.
  at::Tensor hidden(const at::Tensor& input_BT, const at::Tensor& positions_BT, const at::Tensor& segments_BT,
                    KVCache* cache = nullptr) const;
  at::Tensor hidden(const Batch& b) const;
  // The residual stream after block `layer` (0-based), [B, T, D] in the compute dtype, before any
  // final norm; the blocks after it are not run. REQUIRES: 0 ≤ layer < num_hidden_layers.
  at::Tensor residual_after(const Batch& b, int64_t layer) const;
  // This rank's vocabulary shard of the logits, [B, T, v], in the compute dtype.
  at::Tensor logits(const at::Tensor& hidden_BTD) const;
  // log p(target_t | inputs_≤t), fp32 [B, T]; vocab-parallel (never gathers the vocabulary).
  at::Tensor token_logprobs(const at::Tensor& input_BT, const at::Tensor& positions_BT,
                            const at::Tensor& segments_BT, const at::Tensor& target_BT) const;
  at::Tensor token_logprobs(const Batch& b) const;
  // Full-vocabulary logits [B, T, V] (gathered over tp): for generation and tests.
  at::Tensor full_logits(const at::Tensor& input_BT, const at::Tensor& positions_BT, const at::Tensor& segments_BT,
                         KVCache* cache = nullptr) const;

  // Full-vocabulary logits [B, T, V] fp32 of given hidden states (gathered over tp).
  at::Tensor full_logits_from_hidden(const at::Tensor& hidden_BTD) const;
  // log-softmax over the whole vocabulary, this rank's shard [B, T, v] fp32 (vocab-parallel).
  at::Tensor log_probs_shard(const at::Tensor& hidden_BTD) const;

  // The model's own weights (with adapters: the frozen base).
  std::vector<Param>& params() { return params_; }
  const std::vector<Param>& params() const { return params_; }
  // What the optimizer updates and checkpoints save: the adapters when there are, else params().
  std::vector<Param>& trained() { return adapters_.empty() ? params_ : adapters_; }
  const std::vector<Param>& trained() const { return adapters_.empty() ? params_ : adapters_; }

  // Adds fp32 LoRA adapters, trainable, to the target projections of every block: A drawn from
  // N(0, 1/(3 · in)) (the variance of PEFT's kaiming-uniform, a = √5) seeded by its name, the same
  // at any tp; B zero, so the model still equals its base. Named "<projection>.lora_a|b", e.g.
  // "layers.0.attn.wq.lora_a". REQUIRES: no adapters yet; the base was made with trainable = false.
  void add_lora(const LoraOptions& opts);
  const std::vector<Param>& adapters() const { return adapters_; }
  const LoraOptions& lora() const { return lora_; }
  // The same weights with the adapters switched off (the reference of a LoRA run): shares every
  // tensor, allocates nothing.
  std::unique_ptr<Llama> base_view() const;
  // W += scale · B A on every adapted projection, then drops the adapters (per tp shard; no
  // communication). The model is then the adapted model as plain weights.
  void merge_adapters();
  // Adapter dropout draws a new mask in every forward that records gradients; masks depend on the
  // step set here and the forward's index within it (resumed runs draw the same masks).
  void set_dropout_step(int64_t step) const;
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
  // `dropout_seed`: adapter dropout for this forward (0: none).
  // `cache_layer`: where its keys and values go in `cache` (default i).
  at::Tensor block(size_t i, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, const at::Tensor& mask,
                   KVCache* cache, uint64_t dropout_seed = 0, std::optional<size_t> cache_layer = std::nullopt) const;
  // Note [Logit combination]: with a companion (a model of the same shape on the same mesh, e.g.
  // the reinforced model), this model's logits are generic_logits(v, v_c, α): v its own and v_c
  // the companion's on the same tokens (WHP as MUSE evaluates it: whp_logits). hidden() then
  // returns both final states side by side, [B, T, 2D] (logits() splits them), and a KV cache
  // holds the companion's layers after this model's own, so generation and every metric run on
  // the combination unchanged, at any tp × dp. For evaluation: not with residual_after or
  // gradients through the companion. `companion` null: back to the model alone.
  void set_logit_companion(const Llama* companion, double alpha);
  // The tensors of block `i`, in the order of params().
  std::vector<at::Tensor> block_params(size_t i) const;
  int64_t num_params_global() const;

 private:
  void bind();  // the layers' tensors from params_
  // hidden() of this model alone; `one_sample_per_row` when the caller knows it (no host read).
  // With `blocks` ≥ 0, only the first `blocks` blocks run and their residual stream is returned
  // (no final norm). Cached keys and values go to layers cache_layer0 + i.
  at::Tensor forward_hidden(const at::Tensor& input_BT, const at::Tensor& positions_BT, const at::Tensor& segments_BT,
                            KVCache* cache, std::optional<bool> one_sample_per_row, int64_t blocks = -1,
                            size_t cache_layer0 = 0) const;
  // hidden(): this model's states, and the companion's beside them when there is one.
  at::Tensor combined_hidden(const at::Tensor& input_BT, const at::Tensor& positions_BT, const at::Tensor& segments_BT,
                             KVCache* cache, std::optional<bool> one_sample_per_row) const;
  at::Tensor attention(const Block& b, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                       const at::Tensor& mask, KVCache* cache, size_t layer, uint64_t dropout_seed) const;
  uint64_t next_dropout_seed() const;

  ModelConfig cfg_;
  const Mesh* mesh_;
  at::ScalarType compute_;
  std::vector<Param> params_;
  std::vector<ParamBucket> buckets_;
  std::vector<Param> adapters_;  // lora_a, lora_b per adapted projection, in block order
  LoraOptions lora_;
  VocabParallelEmbedding embed_;
  std::vector<Block> blocks_;
  at::Tensor norm_, lm_head_;  // lm_head_ aliases embed_.w when tied
  at::Tensor inv_freq_;        // [d / 2]
  uint64_t seed_;
  const Llama* companion_ = nullptr;  // Note [Logit combination]
  double companion_alpha_ = 0;
  bool checkpointing_ = false;
  mutable int64_t dropout_step_ = 0, dropout_calls_ = 0;
};

// WHP's generic logits (Eldan & Russinovich, eq. 1): v_ref − α · ReLU(v_reinf − v_ref), in fp32,
// elementwise (so per vocabulary shard under tp).
at::Tensor generic_logits(const at::Tensor& v_ref, const at::Tensor& v_reinf, double alpha);

// RoPE as Hugging Face applies it (rotate-half layout): x [B, heads, T, d], positions [B, T].
at::Tensor apply_rotary(const at::Tensor& x, const at::Tensor& positions_BT, double theta);

// Model FLOPs per trained token (forward + backward), Megatron convention (REFERENCE.md):
// 6 × GEMM weights (LM head included, embedding lookup excluded) + 6 · L · D · seq_len for
// causal attention. A forward-only pass is a third of it.
double train_flops_per_token(const ModelConfig& cfg, int64_t seq_len);

}  // namespace lethe
