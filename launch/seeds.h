// Experiments over several seeds (Note [Seeds], io/config.h): the per-seed runs, and the comparison
// that aggregates their comparison.json files.
#pragma once

#include <string>
#include <vector>

#include "base/status.h"
#include "io/config.h"

namespace lethe {

// The runs experiment.seeds asks for: `cfg` itself for one seed; otherwise one per seed s = run.seed
// + k, k < seeds, each with run.dir = <run.dir>/seed-<s>, run.seed = s and experiment.seeds = 1.
std::vector<RunConfig> seed_runs(const RunConfig& cfg);

// The seed folders of an experiment folder (seed-<s> holding target/summary.json), in seed order;
// empty for a single-seed experiment.
std::vector<std::string> seed_dirs(const std::string& dir);

// Mean and sample standard deviation (n − 1 in the denominator; 0 for a single value).
struct Spread {
  double mean = 0, std = 0;
  size_t n = 0;
};
Spread spread(const std::vector<double>& values);

// Note [Closest beyond the spread]: from each seed folder's comparison.json (written first), every
// model's mean ± std per metric and cost figure. A method is named closest to the retrained model
// only when it never collapsed in any seed and its mean gap plus one standard deviation stays below
// the runner-up's mean gap minus one standard deviation (the two one-sd intervals do not overlap);
// otherwise the table says which methods the spread does not separate. Writes comparison.txt and
// comparison.json in `dir` (and prints the table when `print`).
Status compare_seeds(const std::string& dir, const std::vector<std::string>& seeds, bool print = true);

}  // namespace lethe
