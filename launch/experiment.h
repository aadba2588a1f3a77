// What every phase of a run shares: the world and mesh, the corpus, the tokenizer, token datasets,
// the evaluation set, JSON reports and the stop signal.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "base/profile.h"
#include "base/status.h"
#include "collectives/world.h"
#include "eval/muse.h"
#include "io/atomic_file.h"
#include "io/config.h"
#include "io/corpus.h"
#include "io/token_dataset.h"
#include "io/tokenizer.h"
#include "runtime/cost.h"
#include "runtime/mesh.h"
#include "runtime/model.h"

namespace lethe {

using json = nlohmann::json;

// `path` as given, or, when relative, relative to the directory of the config file.
std::string config_relative(const RunConfig& cfg, const std::string& path);

struct Experiment {
  RunConfig cfg;
  World world;
  std::optional<Mesh> mesh;  // refers to world.comm: an Experiment is never moved (held by unique_ptr)
  Corpus corpus;
  Tokenizer tok;
  int threads = 1;

  // Packs documents for this run's seq_len, checking the tokenizer against the model vocabulary.
  Result<TokenDataset> dataset(const std::string& name, const std::vector<Document>& docs,
                               Packing packing = Packing::kPacked) const;
  // What a model is made for: training from its random init, training from weights loaded right
  // after (nothing is drawn), or a frozen reference (loaded after; no gradients, no master copy).
  enum class Use { kTrainFromInit, kTrainLoaded, kReference };
  // A model of the configured architecture and dtype.
  std::unique_ptr<Llama> new_model(Use use = Use::kTrainFromInit) const;
  // The evaluation every model of the run gets (eval.max_samples per list).
  Metrics evaluate(const Llama& model, SampleScores* samples = nullptr);

 private:
  std::optional<EvalSet> eval_set_;
};

// Everything about a run that depends on the number of ranks, tp, dp and the model, checked before
// MPI starts: tp × dp = `world_size`, the model's sizes divisible by tp, every batch divisible by dp,
// the unlearning methods and stop metric known. Each error names its key.
Status validate_layout(const RunConfig& cfg, int world_size);

// validate_layout (the world size from the launcher's environment), then starts the world, threads
// and mesh; no data.
Result<std::unique_ptr<Experiment>> open_mesh(const RunConfig& cfg);
// open_mesh, then loads (and writes to <run.dir>/corpus) the corpus; finds or
// trains the tokenizer (the configured one, else <run.dir>/tokenizer.model, else a new one).
Result<std::unique_ptr<Experiment>> open_experiment(const RunConfig& cfg);

// Cost as JSON: tokens, FLOPs (train_flops_per_token of the run's model and seq_len), seconds,
// tokens/s, FLOP/s, this process's peak host memory and (on a GPU) peak device memory, the device
// kind and the devices (ranks) that did the work: `lethe plan --measured` reads them.
json cost_json(const Cost& cost, double flops_per_token, const Mesh& mesh);
json metrics_json(const Metrics& m);
// Writes the per-sample scores a phase's summary keeps: truth_ratios_forget (when measured) and
// logprobs_forget.
void add_sample_scores(json& summary, const SampleScores& s);
// A phase's Profile as JSON: seconds per part, "other" (the rest of `total_s`: setup, data,
// logging) and "total" (Note [Phase profile]).
json profile_json(const Profile& p, double total_s);
// Writes JSON (pretty) to `path` via a temporary file and rename.
Status write_json(const std::string& path, const json& j);
Result<json> read_json(const std::string& path);
// `link` made a relative symbolic link to `shared` (an existing link is kept; anything else at
// `link` is an error naming it). Experiments that share a model folder link it (sweeps, benches).
Status link_shared(const std::string& shared, const std::string& link);
// Runs gnuplot on `dir`/`script` where it is installed (a warning where it is not).
Status draw_gnuplot(const std::string& dir, const std::string& script);

// SIGINT/SIGTERM (Ctrl-C, or Slurm ahead of a preemption) set a flag while a StopSignal is alive;
// loops checkpoint and stop when it is set.
class StopSignal {
 public:
  StopSignal();
  ~StopSignal();
  StopSignal(const StopSignal&) = delete;
  StopSignal& operator=(const StopSignal&) = delete;
  // Whether a stop was asked for on any rank (collective over `world`, so every rank stops at the
  // same step: mpirun delivers the signal to the ranks at different moments).
  bool requested(Communicator& world) const;
};

// Only world rank 0 writes reports, logs of metrics and shared files (corpus, tokenizer); the other
// ranks' writes go to /dev/null. Decided from the launcher's environment.
bool writes_reports();
// `path` on the reporting rank, /dev/null elsewhere.
std::string report_path(const std::string& path);
// On the reporting rank, rewrites the JSON-lines file `path` with the records keep(record, index) accepts.
Status keep_records(const std::string& path, const std::function<bool(const json&, int64_t)>& keep);

}  // namespace lethe
