// The planner behind `lethe plan`: per-GPU memory of an unlearning (or training) layout as the
// runtime allocates it, the fewest GPUs that hold it, and the time and GPU-hours of unlearning
// against retraining (docs/plan.md). Nothing is allocated: shapes come from llama_param_specs.
// benchmarks/memory_vs_plan measures the same components on real runs.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"
#include "io/config.h"

namespace lethe {

// Llama-2-7B/13B/70B and Llama-3-8B/70B as their Hugging Face config.json files give them.
Result<ModelConfig> model_preset(const std::string& name);

// How a method uses the frozen reference model (docs/strategies.md): not at all (GA, GradDiff,
// SimNPO), only to cache per-sample values before the first step and then freed (NPO with retain
// "none" or "nll"), or on every step (KL, ICU, NPO with retain "kl").
enum class ReferenceUse { kNone, kCached, kResident };

// The reference use of unlearning method `method` ("npo" with its default retain term).
Result<ReferenceUse> reference_use_of(const std::string& method);

struct PlanInput {
  ModelConfig model;
  int64_t tp = 1, dp = 1;
  bool bf16 = true;                        // train.dtype = "bf16"; false: fp32 weights and compute
  std::string optimizer = "distributed";   // mesh.optimizer: replicated | zero1 | distributed
  bool bf16_grads = false;                 // mesh.grad_dtype = "bf16" (bf16 runs only)
  ReferenceUse reference = ReferenceUse::kNone;
  bool checkpointing = true;               // train.activation_checkpointing
  bool fused_attention = true;             // SDPA (LibTorch 2.x, Flash on a GPU); false: the explicit softmax of 1.13
  int64_t seq_len = 4096;
  int64_t micro_batch = 1;                 // rows per dp rank in each forward
  int64_t forwards = 2;                    // forwards before one backward: forget + retain (1: a training step)
  double bucket_mb = 25;                   // mesh.bucket_mb
  // LoRA (unlearn.adapter = "lora"): rank > 0 freezes the base and trains fp32 adapters on the
  // targets; the reference is the base itself (no memory).
  int64_t lora_rank = 0;
  std::vector<std::string> lora_targets = lora_target_names();
  double lora_dropout = 0.05;
  double gpu_gb = 80;                      // memory per GPU (GB = 1e9 bytes)
  double usable = 0.9;                     // fraction of it a run may use (CUDA context, fragmentation)
  // Cost: tokens processed by unlearning (all cycles, forget + retain) and by a retrain.
  double unlearn_tokens = 0, retrain_tokens = 0;
  double tokens_per_s_per_gpu = 0;         // measured; when 0, from mfu × peak_tflops
  double mfu = 0.4, peak_tflops = 989;     // H100 SXM bf16 dense
};

// Bytes per GPU of each thing the runtime allocates (docs/plan.md, "Allocation rules").
struct MemoryPlan {
  double weights = 0;       // the model's weights (bf16 buckets, or fp32 tensors)
  double grads = 0;         // gradients: the bucket buffers (bf16 runs) or per-tensor .grad (fp32)
  double grad_buckets = 0;  // fp32, replicated, dp > 1: the all-reduce buckets, a second copy
  double master = 0;        // fp32 master weights (bf16 runs; ÷ dp with "distributed")
  double moments = 0;       // AdamW's two moments, fp32 (÷ dp with "zero1" or "distributed")
  double reference = 0;     // the frozen reference's weights, in the run's dtype
  double activations = 0;   // saved for backward, with the chosen checkpointing setting
  double activations_no_ckpt = 0;
  double logits = 0;        // vocab-parallel log-prob buffers of every forward, and their gradients
  double held_grads = 0;    // bf16 runs: weight gradients of a step's later forwards, held in backward
  double first_forward = 0; // the activations still alive while they are held (the first forward's)
  double step_buffers = 0;  // alive only inside the optimizer step (reduce-scatter targets, packing)
  double caching = 0;       // kCached: the reference and its forward while NPO caches (before the model exists)
  double states() const { return weights + grads + grad_buckets + master + moments; }
  // The largest of the backward's peak (all activations, or the first forward's beside the held
  // gradients), the optimizer step's, and (kCached) the caching forward's.
  double total() const;
};

struct Plan {
  int64_t params = 0, params_per_gpu = 0;
  int64_t adapter_params = 0;  // LoRA: trained parameters in all (0: full-parameter)
  MemoryPlan memory;
  bool fits = false;
  std::optional<std::pair<int64_t, int64_t>> min_layout;  // (tp, dp) with the fewest GPUs that fits
  double flops_per_token = 0, tokens_per_s_per_gpu = 0;
  double unlearn_hours = 0, unlearn_gpu_hours = 0, retrain_hours = 0, retrain_gpu_hours = 0;
};

Result<Plan> make_plan(const PlanInput& in);

// A readable table of the plan (the `lethe plan` output).
std::string format_plan(const PlanInput& in, const Plan& p);

// When the plan does not fit: which component is largest and by how much the total is over.
std::string over_budget(const PlanInput& in, const Plan& p);

}  // namespace lethe
