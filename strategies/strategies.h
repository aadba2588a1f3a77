// The unlearning methods (docs/strategies.md; definitions in REFERENCE.md) and their registry.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "io/config.h"
#include "runtime/strategy.h"

namespace lethe {

// Names accepted by make_strategy, in the order the comparison lists them.
const std::vector<std::string>& strategy_names();

// `names` (unlearn.methods) in their order, "all" standing for every method not named before it
// (in strategy_names() order); repeats dropped.
std::vector<std::string> resolve_methods(const std::vector<std::string>& names);

// Whether `name` is a method that does not minimise a loss in cycles — task_vector (weight
// arithmetic) and whp_logits (logit arithmetic at evaluation): launch/unlearn_phase.cc runs them;
// make_strategy refuses them.
bool runs_outside_cycles(const std::string& name);

// The method called `name`, configured from `cfg`. An unknown name is an error that lists the
// valid ones.
Result<std::unique_ptr<Strategy>> make_strategy(const std::string& name, const UnlearnConfig& cfg);

// A method that unlearns every forget sample each cycle; keeps the request's context.
class BasicStrategy : public Strategy {
 public:
  explicit BasicStrategy(const UnlearnConfig& cfg) : cfg_(cfg) {}
  Status begin(const StrategyContext& ctx) override {
    ctx_ = ctx;
    return Status::ok();
  }
  std::vector<int64_t> forget_rows() const override { return all_rows(ctx_.data.forget->rows()); }

 protected:
  UnlearnConfig cfg_;
  StrategyContext ctx_;
};

// Mean token NLL of `model` over the first `rows` rows of `ds` (all of them when it has fewer),
// without gradients, `batch` rows per forward, each dp rank scoring its block of them; counts the
// forwards in `cost`. Collective over the model's mesh.
double mean_nll_of_rows(const Llama& model, const TokenDataset& ds, int64_t rows, int64_t batch, Cost& cost);

// Factories, one per file in strategies/ (strategies/experimental/: methods of Lethe's own, not yet
// shown to beat the published ones; docs/strategies.md).
std::unique_ptr<Strategy> make_ga(const UnlearnConfig& cfg);
std::unique_ptr<Strategy> make_graddiff(const UnlearnConfig& cfg);
std::unique_ptr<Strategy> make_kl(const UnlearnConfig& cfg);
std::unique_ptr<Strategy> make_npo(const UnlearnConfig& cfg);
std::unique_ptr<Strategy> make_simnpo(const UnlearnConfig& cfg);
std::unique_ptr<Strategy> make_icu(const UnlearnConfig& cfg);
std::unique_ptr<Strategy> make_wga(const UnlearnConfig& cfg);
std::unique_ptr<Strategy> make_satimp(const UnlearnConfig& cfg);
std::unique_ptr<Strategy> make_undial(const UnlearnConfig& cfg);
std::unique_ptr<Strategy> make_ceu(const UnlearnConfig& cfg);
std::unique_ptr<Strategy> make_pdu(const UnlearnConfig& cfg);
std::unique_ptr<Strategy> make_rmu(const UnlearnConfig& cfg);
std::unique_ptr<Strategy> make_idkdpo(const UnlearnConfig& cfg);
std::unique_ptr<Strategy> make_altpo(const UnlearnConfig& cfg);
std::unique_ptr<Strategy> make_whp(const UnlearnConfig& cfg);
std::unique_ptr<Strategy> make_holdout_match(const UnlearnConfig& cfg);

// WHP's translation of one forget row (docs/strategies.md, WHP): the sample's tokens `ids` with
// every anchored term replaced by the tokens of its generic translation, where the translated
// tokens decode to the original text with that term translated (else the occurrence is left as
// it is and counted in `skipped`). A space the tokenizer split off as a token of its own before a
// term joins the term's span.
struct TranslatedRow {
  std::vector<int64_t> ids;
  // Per original token: the translated token whose next-token prediction stands for its own (the
  // same token outside terms, the translation's last token for a term's last token), or −1 for a
  // term's earlier tokens (they predict the term's own continuation: no label).
  std::vector<int64_t> position;
  std::vector<int64_t> replaced, skipped;  // per anchor: occurrences translated, and left as they are
};
TranslatedRow translate_row(const std::vector<int64_t>& ids, const std::vector<Anchor>& anchors, const Tokenizer& tok);

// The block RMU steers after: unlearn.rmu_layer, or round(7 · L / 32) (the published 7 of 32).
int64_t rmu_layer(const UnlearnConfig& cfg, const ModelConfig& model);

}  // namespace lethe
