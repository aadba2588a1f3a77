// `lethe plan`: memory per GPU, the fewest GPUs, and unlearning against retraining in time and
// GPU-hours for a model given by preset name or config.json (docs/plan.md).
#pragma once

#include <string>

#include "base/status.h"
#include "launch/plan.h"

namespace lethe {

// The command line's words for what PlanInput holds as types.
struct PlanFlags {
  std::string grad_dtype = "fp32";  // fp32 | bf16
  std::string reference = "none";   // none | cached | resident
  std::string method;               // when given, sets the reference use (reference_use_of)
  bool zero1 = false;               // the retired --zero1: an error naming --optimizer
};

// `model` is a preset name (model_preset) or a Hugging Face config.json (or the folder holding
// one). `measured` (optional) is a summary.json of a Lethe run: its FLOP/s per device, carried to
// this model's FLOPs per token, replaces in.mfu × in.peak_tflops. Prints the plan; needs no ranks.
// A plan that does not fit is printed, then returned as an error naming the largest component and
// how far over the memory it is. in.forwards = 0: from the method (1 for GA, else 2).
Status run_plan(PlanInput in, const std::string& model, const std::string& measured, const PlanFlags& flags = {});

}  // namespace lethe
