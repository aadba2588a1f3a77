// The unlearning phase (`lethe unlearn`), evaluation of any checkpoint (`lethe eval`) and the
// comparison of a run's models (`lethe compare`).
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/status.h"
#include "io/config.h"

namespace lethe {

struct UnlearnOptions {
  bool resume = false;              // continue each method from its newest checkpoint; skip finished ones
  int64_t stop_after_cycles = 0;    // > 0: checkpoint and stop after this many cycles (per method)
};

// Unlearns the target with every method of cfg.unlearn.methods, each from the same starting
// checkpoint, into <run.dir>/unlearn-<method>/ (config.toml, metrics.jsonl per cycle, checkpoints/,
// summary.json with the final metrics and the cost).
Status run_unlearn_phase(const RunConfig& cfg, const UnlearnOptions& opts);

// Evaluates the model weights of `checkpoint` on the run's data; writes the metrics as JSON to
// `out` ("" or "-": standard output). PrivLeak is included when <run.dir>/retrain/summary.json exists.
// With `companion`, the model evaluated is the checkpoint's logits combined with the companion's,
// v − α · ReLU(v_c − v) (whp_logits; Note [Logit combination] in runtime/model.h).
Status run_eval(const RunConfig& cfg, const std::string& checkpoint, const std::string& out, const std::string& companion = "",
                double alpha = 4);
// What run_eval writes, returned: {"checkpoint", "metrics", "logprobs_forget", "truth_ratios_forget"
// (when measured), "companion" (with one)}. Collective over the run's world.
Result<nlohmann::json> evaluate_checkpoint(const RunConfig& cfg, const std::string& checkpoint,
                                           const std::string& companion = "", double alpha = 4);

// Side by side: target, retrain and every unlearn-* model of `run_dir`. Prints the table, writes
// comparison.json, comparison.dat/.gnuplot and (with gnuplot installed) comparison.png; `print`
// false writes the same files without printing.
Status run_compare(const std::string& run_dir, bool print = true);

}  // namespace lethe
