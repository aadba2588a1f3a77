// `lethe sweep` (Note [Sweeps]): every unlearning method at every point of a hyper-parameter grid
// (and every seed) as its own resumable sub-run, all sharing one target and one retrained model;
// then one report of every point, each method's Pareto front of forgetting against utility, and
// what the sweep cost.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "base/status.h"
#include "io/config.h"

namespace lethe {

// Note [Sweeps]: `--grid unlearn.lr=[1e-4,3e-4]` varies an [unlearn] key for every method;
// `--grid unlearn.npo.lr=[…]` varies it for one method only. A key a method section may hold is
// set as that method's section key (above its shipped defaults, so the grid is what runs); other
// [unlearn] keys (max_cycles is one) are set run-wide. Keys outside [unlearn] change the target or
// the retrained model, which every point shares, and are refused, as is unlearn.methods (the other
// axis of the sweep). Each method runs the product of the axes that apply to it, in the order the
// axes were given (the last varying fastest); a method no axis applies to runs once, as "default".
// A point's folder is <run.dir>/sweep/<method>/<key=value,…> (named by its settings, so a widened
// grid keeps the points already run), holding, per seed (seed-<s>/ with experiment.seeds > 1), an
// experiment folder whose target/, retrain/ and tokenizer.model are links to the shared ones.
struct GridAxis {
  std::string key;                  // as given after --grid: unlearn.<key> or unlearn.<method>.<key>
  std::vector<std::string> values;  // each value as TOML text
};
// "key=[v, …]" (a TOML array of at least one value); errors name "--grid key".
Result<GridAxis> parse_grid(const std::string& arg);

// One sub-run: one method at one grid point and one seed.
struct SweepUnit {
  std::string method;
  std::string point;  // "<method>/<key=value,…>" (or "<method>/default"): its folder under <run.dir>/sweep
  std::vector<std::pair<std::string, std::string>> settings;  // {[unlearn] key, TOML value}
  RunConfig cfg;       // run.dir = the sub-run's folder; unlearn.methods = {method}; one seed
  std::string models;  // the experiment folder whose target/, retrain/ and tokenizer.model it shares
};

// Every unit of the sweep of `cfg` (loaded from `config_path` with `overrides`), in a fixed order:
// methods as unlearn.methods lists them, then grid points, then seeds. Each value is checked by
// loading the config with it; a key that does not exist, a value of the wrong type or out of range,
// or a key the sweep cannot vary is an error naming "--grid key".
Result<std::vector<SweepUnit>> sweep_units(const RunConfig& cfg, const std::string& config_path,
                                           const std::vector<std::string>& overrides, const std::vector<GridAxis>& grid);

// `--shard i/n`: this process runs units i, i + n, i + 2n, … of the sweep's fixed order.
struct Shard {
  int64_t index = 0, count = 1;
};
// "i/n" with 0 ≤ i < n; errors name "--shard".
Result<Shard> parse_shard(const std::string& text);
// The indices of `units` units that shard `shard` runs.
std::vector<size_t> shard_units(size_t units, const Shard& shard);

// Runs the shard's unfinished units (a unit with a summary is skipped; an interrupted one resumes
// from its checkpoints). The shared models are trained first where missing, unless the sweep is
// sharded (n > 1): shards may run at once, so the models must exist before (`lethe sweep
// --prepare`, as launch/lethe-sweep.sbatch does). Once every unit of the sweep has finished,
// writes the report (sweep_report). With `prepare`, trains the shared models and stops (the step
// before the shards).
Status run_sweep(const RunConfig& cfg, const std::vector<SweepUnit>& units, const Shard& shard, bool prepare = false);

// The report of a finished sweep, in <run.dir>/sweep/: sweep.txt (printed), sweep.json, and the
// fronts' plot sweep.dat/.gnuplot/.png (Note [Pareto front]).
Status sweep_report(const RunConfig& cfg, const std::vector<SweepUnit>& units);

}  // namespace lethe
