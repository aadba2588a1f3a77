// The cycle engine: learn-while-unlearn cycles over one or more forget requests.
//
//   for each request (its forget set; each request starts from the previous result):
//     repeat:  unlearn_steps × (strategy loss on forget [+ retain] → backward → dp sync → clip → AdamW)
//              learn_steps   × (NLL on retain → …)
//              strategy.end_cycle (refinement, the method's stop rule)
//              evaluate (a callback: launch wires it to eval/) → stop_metric check → score
//              checkpoint (a callback)
//     until the strategy stops, the forget set is empty, stop_metric is reached, max_cycles, or
//     the time budget is spent (which ends the whole run);
//     then the request's selected cycle (Note [Checkpoint selection], eval/selection.h) is the
//     model the next request starts from and the run ends with: when it is not the last cycle,
//     the restore hook loads its checkpoint.
//
// Checkpoints are taken at cycle boundaries only, so the state to resume is small: the request and
// cycle, the retain data cursor, the cost so far, the RNG and the strategy's state. A resumed run
// repeats exactly what an uninterrupted one does.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "base/profile.h"
#include "runtime/checkpoint.h"
#include "runtime/cost.h"
#include "runtime/strategy.h"

namespace lethe {

struct UnlearnRequest {
  std::string name;
  TokenDataset forget;     // one sample per row
  TokenDataset forget_qa;  // the request's QA probes, loss on the answer (no rows when the corpus has none)
};

// The data a strategy unlearns from a request: its QA when Strategy::forget_qa, else its passages.
const TokenDataset& forget_data(const Strategy& s, const UnlearnRequest& r);

// A request's selected cycle (Note [Checkpoint selection]).
struct Selection {
  int64_t request = 0, cycle = -1, step = 0;  // cycle -1: none yet; step: optimizer steps after it
  std::optional<double> score;                // unset: the request's last cycle, kept without a score
};

struct CycleReport {
  int64_t request = 0, cycle = 0, step = 0;  // cycle 0-based; step: optimizer steps so far
  int64_t forget_samples = 0;                // rows unlearned in this cycle
  std::map<std::string, double> losses;      // mean of each loss term over the cycle's steps
  std::map<std::string, double> metrics;     // from the evaluate hook
  Cost cost;                                 // cumulative
  std::string stop_reason;                   // non-empty when the request ends here
  std::optional<double> score;               // from UnlearnHooks::score; unset when not scored
  bool best = false;                         // the request's best-scored cycle so far
  std::optional<Selection> selected;         // when the request ends here: the cycle it keeps
};

struct UnlearnHooks {
  std::function<std::map<std::string, double>(const Llama&, int64_t request, int64_t cycle)> evaluate;
  // Called after every cycle's report, the engine's state advanced to the next cycle to run.
  // r.best: the model is that of the request's best cycle so far; keep this checkpoint (the
  // restore hook asks for it back).
  std::function<Status(const CycleReport& r)> checkpoint;
  std::function<void(const CycleReport&)> report;
  // unlearn.select: the score of an evaluated cycle's metrics, lower is better; nullopt when the
  // cycle may not be selected. Unset: every request keeps its last cycle.
  std::function<std::optional<double>(const std::map<std::string, double>&)> score;
  // Loads the model and optimizer of the checkpoint kept for `s` (taken after its cycle) into the
  // engine's, and forgets checkpoints taken after it. Collective over the mesh. Needed with `score`.
  std::function<Status(const Selection& s)> restore;
  std::function<bool()> interrupted;  // checked after each cycle: checkpoint and return
  int64_t stop_after_cycles = 0;      // > 0: return after this many cycles (resume later)
  // When set, the engine adds its parts' wall time: "begin_request", "unlearn_steps",
  // "learn_steps", "refinement" (Strategy::end_cycle). Hooks time their own work.
  Profile* profile = nullptr;
};

class Unlearner : public Checkpointable {
 public:
  // Everything passed must outlive the engine. `retain`, `holdout`, `reference` may be null when
  // the strategy does not need them (Unlearner::check says so first); `reference` is also null on
  // a resume when the strategy does not keep it (Strategy::keeps_reference).
  Unlearner(Llama& model, const Mesh& mesh, Strategy& strategy, const UnlearnConfig& cfg,
            const std::vector<UnlearnRequest>& requests, const TokenDataset* retain, const TokenDataset* holdout,
            const Llama* reference, uint64_t seed);
  // Errors for data the strategy needs but was not given, and empty forget requests.
  static Status check(const Strategy& strategy, const UnlearnConfig& cfg, const std::vector<UnlearnRequest>& requests,
                      const TokenDataset* retain, const TokenDataset* holdout, const Llama* reference);

  // Before a fresh run, and before the trained model exists: Strategy::prepare on every request's
  // forget set with the reference and what else `ctx` gives (the reference may then be freed
  // unless the strategy keeps it), timed and counted in ctx.cost; ctx.forget_sets is filled here.
  // Nothing for a method without a reference. Collective over the mesh.
  static Status prepare(Strategy& strategy, const std::vector<UnlearnRequest>& requests, PrepareContext ctx);
  // Adds work done before the engine existed (prepare) to its cost.
  void add_cost(const Cost& c);
  // The run's [eval] options and tokenizer, handed to the strategy (StrategyContext).
  void set_eval(const EvalConfig& eval, const Tokenizer& tok) {
    eval_ = eval;
    eos_id_ = tok.eos();
    tokenizer_ = &tok;
  }
  // Runs the remaining cycles. Returns when every request is done, or a hook asked to stop.
  Status run(const UnlearnHooks& hooks);
  bool finished() const { return request_ >= static_cast<int64_t>(requests_.size()); }
  // Cycle reports handed to UnlearnHooks::report so far, over every resume (saved in checkpoints):
  // a resumed run keeps that many records and rewrites the rest.
  int64_t reports() const { return reports_; }
  const Cost& cost() const { return cost_; }
  // The selected cycle of each finished request, and the current request's best so far.
  const std::vector<Selection>& selections() const { return selected_; }
  const Selection& best() const { return best_; }

  Llama& model() override { return model_; }
  AdamW& optimizer() override { return opt_; }
  const Mesh& mesh() const override { return mesh_; }
  StateTensors state() const override;
  Status set_state(const StateTensors& state) override;

 private:
  Status begin_request();
  // At a request's end: its selection, restored (hooks.restore) when it is not this last cycle.
  Status select(const UnlearnHooks& hooks, CycleReport& rep);
  // The step's loss terms (0-dim fp64 on the device, dp-averaged) and the learn step's NLL ([1]).
  std::map<std::string, at::Tensor> unlearn_step(DataLoader& forget_order, const std::vector<int64_t>& active);
  at::Tensor learn_step();
  void optimizer_step(const at::Tensor& loss);
  std::vector<int64_t> my_rows(const std::vector<int64_t>& global) const;

  Llama& model_;
  const Mesh& mesh_;
  Strategy& strategy_;
  UnlearnConfig cfg_;
  const std::vector<UnlearnRequest>& requests_;
  const TokenDataset* retain_;
  const TokenDataset* holdout_;
  const Llama* reference_;
  uint64_t seed_;
  AdamW opt_;
  DataLoader retain_loader_;
  Cost cost_;
  int64_t request_ = 0, cycle_ = 0;  // the next cycle to run
  int64_t reports_ = 0;
  int64_t begun_ = -1;               // request whose strategy.begin ran
  Selection best_;                   // the current request's best-scored cycle so far
  std::vector<Selection> selected_;  // one per finished request
  EvalConfig eval_;
  int64_t eos_id_ = -1;
  const Tokenizer* tokenizer_ = nullptr;
};

}  // namespace lethe
