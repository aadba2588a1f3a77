// `lethe plan`: memory per GPU, the fewest GPUs, and unlearning against retraining in time and
// GPU-hours for a model given by preset name or config.json (docs/plan.md).
#pragma once

#include <string>

#include "base/status.h"
#include "runtime/plan.h"

namespace lethe {

// `model` is a preset name (model_preset) or a Hugging Face config.json (or the folder holding
// one). `measured` (optional) is a summary.json of a Lethe run: its FLOP/s per device, carried to
// this model's FLOPs per token, replaces in.mfu × in.peak_tflops. Prints the plan; needs no ranks.
Status run_plan(PlanInput in, const std::string& model, const std::string& measured);

}  // namespace lethe
