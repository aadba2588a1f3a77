// `lethe bench` (Note [Benches]): what MUSE and the 2023 unlearning challenge measure beyond one
// comparison — scalability (forget sets of growing size), sustainability (successive deletion
// requests) and the challenge's forgetting score over seeds.
//
// Note [Benches]: a bench is a set of ordinary, resumable experiment folders under
// <run.dir>/bench/<bench>/ that share every model they can: one target (a folder that trains on the
// same documents links it, and re-evaluates it on its own forget set), one retrained model per
// forget set. Before it starts, a bench prints what it will train and run (and, once a model of the
// run has trained, how long that takes); with --budget-s it starts no model or run once that many
// seconds have passed (a rerun continues where it stopped). Once everything has finished it writes
// <bench>.json, <bench>.txt (printed) and a gnuplot plot <bench>.png in its folder; the JSON lists
// the models this invocation trained, so a rerun that trained none shows that it reused them.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/status.h"
#include "io/config.h"

namespace lethe {

struct BenchOptions {
  double budget_s = 0;          // > 0: start nothing once this many seconds have passed
  std::vector<int64_t> people;  // scalability: forget-set sizes in people (empty: 5, 10, 20, 40 % of corpus.people)
  int64_t requests = 4;         // sustainability: sequential requests
  int64_t seeds = 8;            // challenge: N retrained and N unlearned models per method
};

// scalability: every size in `people`'s own folder people-<n>/ (the forget set the first n people of
// a pool of the largest size; corpus.forget_groups), its own retrained model, every method; then
// each method's four MUSE metrics and speedup against forget-set size beside the retrained model's.
Status run_bench_scalability(const RunConfig& cfg, const BenchOptions& opts);

// sustainability: the forget set in `requests` sequential requests, unlearned in one run per method
// (after-<k>/, unlearn.requests = k); the model after request j evaluated in after-<j>/, whose
// forget set is the union of requests 1 … j and whose retrained model never saw it (after-<k>/
// links the run's own target and retrained model). Utility and forgetting after each request.
Status run_bench_sustainability(const RunConfig& cfg, const BenchOptions& opts);

// challenge: N = `seeds` retrained models (run.seed, run.seed + 1, …: each its own initialisation
// and data order) and, per method, N unlearning runs of one target with those seeds, in seed-<s>/;
// then the challenge's forgetting score per method (eval/challenge.h) at N and at each halving of N
// down to 2, with its utility ratio and the whole bench's cost.
Status run_bench_challenge(const RunConfig& cfg, const BenchOptions& opts);

// The forget-set sizes scalability runs: opts.people, else 5, 10, 20 and 40 % of corpus.people
// (at least 1), ascending and distinct. A generated corpus must keep a retain person beside the
// largest size and the holdout people; errors name --people.
Result<std::vector<int64_t>> scalability_sizes(const RunConfig& cfg, const std::vector<int64_t>& people);

// The embedded default reduced for the challenge, which trains N + 1 models: 30 people, 5 of them
// forgotten and 5 held out (the smallest that stays a real experiment); as --set overrides.
std::vector<std::string> challenge_reduced_overrides();

// What the benches share (launch/bench*.cc).
class Bench {
 public:
  Bench(const RunConfig& cfg, const std::string& name, double budget_s);
  const std::string& dir() const { return dir_; }  // <run.dir>/bench/<name>
  // True once --budget-s has passed (logged once): start nothing more.
  bool out_of_budget();
  // Prints the plan: `trainings` models (each train.steps × batch × seq_len tokens) and `runs`
  // unlearning runs, with an expected time where a model of the run has trained (its seconds).
  void print_plan(const RunConfig& cfg, int64_t trainings, int64_t runs) const;
  // The phase (target or retrain) of `c` trained unless it has a summary.json; false when the budget
  // stopped it (or a signal did). Counts what it trained.
  Result<bool> train(const RunConfig& c, bool target);
  // `c`'s target/: a link to `models`' checkpoints, re-evaluated on `c`'s data (Note [Benches]).
  Status share_target(const RunConfig& c, const std::string& models);
  // Every method of `c` unlearned (resumed where interrupted); false when the budget stopped it.
  Result<bool> unlearn(const RunConfig& c);
  nlohmann::json report_header() const;  // {"bench", "trained", "seconds"}

 private:
  std::string name_, dir_;
  double budget_s_;
  std::chrono::steady_clock::time_point start_;
  bool told_ = false;
  nlohmann::json trained_ = nlohmann::json::array();
};

// `cfg` with run.dir = `dir` (everything else as it is).
RunConfig in_dir(const RunConfig& cfg, const std::string& dir);

}  // namespace lethe
