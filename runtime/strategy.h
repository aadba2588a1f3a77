// The Strategy interface: what the cycle engine (runtime/unlearner.h) needs from an unlearning
// method. Implementations live in strategies/, one file each, and compute their losses only from
// the model's vocab-parallel log-probabilities, so they run unchanged under tensor parallelism.
//
// Data: every forget/retain/holdout dataset here holds one sample per row (Packing::kOnePerRow),
// so a row's masked log-prob sum is the sample's log π(y|x).
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/status.h"
#include "io/config.h"
#include "io/token_dataset.h"
#include "runtime/checkpoint.h"
#include "runtime/cost.h"
#include "runtime/model.h"

namespace lethe {

// One unlearning step's data, this rank's rows.
struct UnlearnBatch {
  Batch forget;  // rows of the request's forget set
  Batch retain;  // rows of the retain set (tensors undefined when the method has no retain term)
};

// Named scalar loss terms; their sum is minimised. Terms are logged per step.
struct LossTerms {
  std::vector<std::pair<std::string, at::Tensor>> terms;
  void add(std::string name, at::Tensor value) { terms.emplace_back(std::move(name), std::move(value)); }
  at::Tensor total() const;
};

struct UnlearnData {
  const TokenDataset* forget = nullptr;   // this request's forget samples
  const TokenDataset* retain = nullptr;   // retain samples (may be null)
  const TokenDataset* holdout = nullptr;  // never-trained samples (may be null)
};

// Given at the start of each request.
struct StrategyContext {
  UnlearnData data;
  const Llama* reference = nullptr;  // the frozen original model, when keeps_reference()
  Cost* cost = nullptr;              // add reference forwards and generation here
  const Llama* model = nullptr;      // the model being unlearned, as it stands at the request's start
  const UnlearnConfig* cfg = nullptr;
  const EvalConfig* eval = nullptr;  // the run's [eval] options, for methods that generate
  int64_t eos_id = -1;               // the tokenizer's end of sequence
  const Tokenizer* tokenizer = nullptr;  // the run's, for methods that write text (IdkDPO's refusals)
};

// Given to prepare(), once per run before the trained model exists (launch/unlearn_phase.cc).
struct PrepareContext {
  std::vector<const TokenDataset*> forget_sets;  // every request's forget data, in order
  const Llama* reference = nullptr;              // the frozen original model
  const Llama* reinforced = nullptr;             // the reinforced model, when needs_reinforced() (WHP)
  const Tokenizer* tokenizer = nullptr;
  const std::vector<Anchor>* anchors = nullptr;  // WHP's anchor dictionary; null or empty: none
  Cost* cost = nullptr;                          // add the forwards run here
};

struct CycleContext {
  int64_t request = 0, cycle = 0;  // 0-based
  const Llama* model = nullptr;
};

struct Verdict {
  bool stop = false;
  std::string reason;
};

class Strategy {
 public:
  virtual ~Strategy() = default;
  virtual std::string_view name() const = 0;
  virtual bool needs_retain() const { return false; }
  // Whether each step's batch carries retain rows (default: when retain data is needed).
  virtual bool retain_batch() const { return needs_retain(); }
  virtual bool needs_reference() const { return false; }
  // Whether the reference is used after prepare(): when not, it is freed once prepare() ran, and
  // a resumed run never loads it (what prepare() cached is in the checkpoint's state).
  virtual bool keeps_reference() const { return needs_reference(); }
  virtual bool needs_holdout() const { return false; }
  // Whether the method unlearns the request's forget QA (question → answer, loss on the answer:
  // UnlearnRequest::forget_qa) instead of its passages; then data.forget is the QA.
  virtual bool forget_qa() const { return false; }
  // Whether prepare() needs the reinforced model (Note [Reinforced model], launch/unlearn_phase.cc).
  virtual bool needs_reinforced() const { return false; }

  // Caches, before the first request, what the method needs of the frozen reference for every
  // request's forget set (NPO: log π_ref(y|x)); counts the forwards in ctx.cost. Runs once per
  // run, not on resume. Collective over the reference's mesh.
  virtual Status prepare(const PrepareContext& ctx) {
    (void)ctx;
    return Status::ok();
  }
  // Prepares a request (pairings, per-request state). Called again after a resume, before
  // set_state. Collective over the model's mesh.
  virtual Status begin(const StrategyContext& ctx) = 0;
  // The loss of one step; differentiable in `model`'s parameters. Collective over the model's tp.
  virtual LossTerms loss(const Llama& model, const UnlearnBatch& batch) = 0;
  // Which parameters train (default all); the others keep their values.
  virtual bool trains(const Param&) const { return true; }
  // Rows of the request's forget set that the next cycle unlearns (default: all of them).
  virtual std::vector<int64_t> forget_rows() const = 0;
  // After a cycle's steps: refinement and the method's own stop rule. Default: go on. Collective
  // over the model's mesh.
  virtual Verdict end_cycle(const CycleContext&) { return {}; }
  // State that must survive a checkpoint (e.g. which samples remain). All or nothing on load.
  virtual StateTensors state() const { return {}; }
  virtual Status set_state(const StateTensors&) { return Status::ok(); }
};

// Helpers shared by strategies (runtime/strategy.cc).

// Per-token log-probs [B, T] of the batch's targets (0 where masked out).
at::Tensor batch_logprobs(const Llama& model, const Batch& b);
// Note [Token means under dp]: a rank's token sum is divided by the batch's token count averaged
// over dp ranks (not its own count), so that the engine's sum of (loss / dp) over ranks is the
// mean over the global batch's tokens whatever the dp size. Collective over the model's dp group.
double dp_mean_tokens(const Llama& model, const Batch& b);
// Mean token NLL over the batch's loss mask (Note [Token means under dp]).
at::Tensor mean_nll(const Llama& model, const Batch& b);
// Mean of a per-token quantity [B, T] over the batch's loss mask (Note [Token means under dp]).
at::Tensor token_mean(const Llama& model, const Batch& b, const at::Tensor& per_token_BT);
// True where this rank's vocabulary shard (`v` ids from `vocab_start`) holds the target, [B, T, v].
at::Tensor target_in_shard(const at::Tensor& target_BT, int64_t vocab_start, int64_t v);
// Cross-entropy −Σ_v q(v) log π_θ(v) per position, fp32 [B, T], of θ's logits against a fixed
// distribution q given as log q; both are this rank's vocabulary shard, and the shards' sums are
// added over tp (differentiable in the logits only).
at::Tensor soft_cross_entropy(const at::Tensor& logits_BTv, const at::Tensor& log_q_BTv, Communicator& tp);
// Per-row sums of masked log-probs: log π(y|x) per sample, [B].
at::Tensor sequence_logprobs(const at::Tensor& token_logprobs_BT, const Batch& b);
// Mean token NLL and mean KL(π_ref ‖ π_θ) per token over the whole vocabulary on the batch's
// loss mask (Note [Token means under dp]), from one forward of `model`; vocab-parallel. Counts the reference forward in `cost`.
struct NllKl {
  at::Tensor nll, kl;
};
NllKl nll_and_kl(const Llama& model, const Llama& reference, const Batch& b, Cost& cost);
// Rows 0 … n−1.
std::vector<int64_t> all_rows(int64_t n);
// Rows first … last−1.
std::vector<int64_t> row_range(int64_t first, int64_t last);

}  // namespace lethe
