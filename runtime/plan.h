// The planner behind `lethe plan`: per-GPU memory of an unlearning (or training) layout, the fewest
// GPUs that hold it, and the time and GPU-hours of unlearning against retraining, from the formulas
// of REFERENCE.md (docs/plan.md). Nothing is allocated: shapes come from llama_param_specs.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "base/status.h"
#include "io/config.h"

namespace lethe {

// Llama-2-7B/13B/70B and Llama-3-8B/70B as their Hugging Face config.json files give them.
Result<ModelConfig> model_preset(const std::string& name);

struct PlanInput {
  ModelConfig model;
  int64_t tp = 1, dp = 1;
  bool zero1 = false;
  bool reference = false;       // a frozen reference model (NPO, KL, ICU)
  bool checkpointing = true;    // activation checkpointing per block
  bool bf16 = true;             // bf16 compute with fp32 master weights; false: fp32 throughout
  int64_t seq_len = 4096, micro_batch = 1;
  double gpu_gb = 80;           // memory per GPU (GB = 1e9 bytes)
  double usable = 0.9;          // fraction of it a run may use (CUDA context, fragmentation)
  // Cost: tokens processed by unlearning (all cycles, forget + retain) and by a retrain.
  double unlearn_tokens = 0, retrain_tokens = 0;
  double tokens_per_s_per_gpu = 0;  // measured; when 0, from mfu × peak_tflops
  double mfu = 0.4, peak_tflops = 989;  // H100 SXM bf16 dense
};

struct MemoryPlan {  // bytes per GPU
  double weights = 0, grads = 0, optimizer = 0, reference = 0, activations = 0, activations_no_ckpt = 0, logits = 0;
  double total() const;  // with the activations of the chosen checkpointing setting
};

struct Plan {
  int64_t params = 0;
  MemoryPlan memory;
  bool fits = false;
  std::optional<std::pair<int64_t, int64_t>> min_layout;  // (tp, dp) with the fewest GPUs that fits
  double flops_per_token = 0, tokens_per_s_per_gpu = 0;
  double unlearn_hours = 0, unlearn_gpu_hours = 0, retrain_hours = 0, retrain_gpu_hours = 0;
};

// Mixed-precision AdamW (REFERENCE.md): bf16 weights 2Ψ/tp, bf16 grads 2Ψ/tp, fp32 master and
// moments 12Ψ/tp (÷ dp under ZeRO-1), reference 2Ψ/tp; in fp32 4Ψ + 4Ψ + 8Ψ (moments), reference
// 4Ψ, activations twice the bytes. Activations per Megatron (Korthikanti et
// al. 2022) per layer: s·b·h·(10 + 24/tp + 5·a·s/(h·tp)) bytes; with checkpointing each layer keeps
// its bf16 input (2·s·b·h) and one layer is recomputed at a time. Logits: fp32 s·b·V/tp.
Result<Plan> make_plan(const PlanInput& in);

// A readable table of the plan (the `lethe plan` output).
std::string format_plan(const PlanInput& in, const Plan& p);

}  // namespace lethe
