// The `train` and `retrain` commands: one training phase of an experiment.
//
// An experiment folder (run.dir) holds what its phases share — corpus/ (the corpus as JSONL) and
// tokenizer.model — and one folder per phase: target/ (trained on X) and retrain/ (the same recipe
// from the same initialisation on X \ Y). A phase folder holds config.toml (the effective config),
// metrics.jsonl, summary.json and checkpoints/.
#pragma once

#include <string>

#include "base/status.h"
#include "io/config.h"

namespace lethe {

struct PhaseOptions {
  bool include_forget = true;  // true: the target model; false: the retrained model
  bool resume = false;         // continue from the newest usable checkpoint of the phase
  int64_t stop_after = 0;      // > 0: checkpoint and stop after this many steps of this invocation
};

// Trains one phase. SIGINT/SIGTERM during training checkpoint and stop after the current step
// (`--resume` continues); the run then returns ok with the phase unfinished (no summary.json).
Status run_train_phase(const RunConfig& cfg, const PhaseOptions& opts);

// The target, then the retrained model, of the experiment folder cfg.run.dir. With `resume`, a
// phase with a summary.json is kept and one with a checkpoint continues; without, both train
// afresh. Returns whether both have finished (false: a phase was stopped; resume later).
Result<bool> train_models(const RunConfig& cfg, bool resume);

}  // namespace lethe
