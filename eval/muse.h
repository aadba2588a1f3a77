// The evaluation every model of a run gets (docs/metrics.md): MUSE's VerbMem, KnowMem on forget and
// retain QA, Min-K% membership-inference AUC (PrivLeak needs the retrained model's AUC, so it is
// computed where both are known), extraction likelihood, memorisation accuracy, extraction
// strength and perplexity.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "io/config.h"
#include "io/corpus.h"
#include "io/tokenizer.h"
#include "eval/generate.h"
#include "runtime/model.h"

namespace lethe {

struct QaItem {
  std::string question, answer;
  std::string paraphrased;             // the same fact in other words ("" when unknown)
  std::vector<std::string> perturbed;  // plausible wrong answers
  bool has_truth_ratio() const { return !paraphrased.empty() && !perturbed.empty(); }
};

// The fixed data of an evaluation, built once per run. Passages are BOS … EOS, cut to seq_len + 1
// tokens (the longest row a model of the run was trained on).
struct EvalSet {
  std::vector<Tokens> forget, retain, holdout;
  std::vector<QaItem> forget_qa, retain_qa;
  std::vector<QaItem> shots;  // few-shot examples: the first knowmem_shots retain probes (not scored)
  // With a lexicon (Note [Toxic scenario]): BOS + each neutral prompt, whose continuations toxicity_rate scores.
  std::vector<Tokens> neutral;
  Lexicon lexicon;
};

// REQUIRES: the tokenizer's ids fit the model. `max_samples` caps each list (0: all).
EvalSet make_eval_set(const Corpus& corpus, const Tokenizer& tok, const EvalConfig& cfg, int64_t seq_len,
                      int64_t max_samples = 0);

// Metric name → value. Percentages (× 100) for verbmem_forget, knowmem_forget, knowmem_retain;
// fractions for mink_auc, el_forget, el_holdout, ma_*, es_forget, toxicity_*; perplexity for ppl_*.
using Metrics = std::map<std::string, double>;

// The names evaluate() fills in (for config checks such as unlearn.stop_metric). knowmem_forget and
// knowmem_retain are absent when the corpus has no QA probes for that split, toxicity_rate and
// toxicity_template_rate when it has no lexicon, and TOFU's
// (truth_ratio_*, answer_prob_retain, rouge_recall_retain, model_utility) when its probes carry no
// paraphrased and perturbed answers: not measured, not 0.
const std::vector<std::string>& metric_names();

// m[key] with `decimals` decimals, or "n/a" when it was not measured (for logs).
std::string metric_text(const Metrics& m, const std::string& key, int decimals = 1);

// Per-sample results of an evaluation, beside its metrics (a phase's summary.json keeps them).
struct SampleScores {
  // TOFU's per-item forget truth ratios (empty without paraphrased and perturbed answers): forget
  // quality compares them with the retrained model's.
  std::vector<double> forget_truth_ratios;
  // Each forget passage's mean token log-prob: the 2023 challenge's per-sample score (eval/challenge.h).
  std::vector<double> forget_logprobs;
};

// `samples`, when given, receives the per-sample scores.
Metrics evaluate(const Llama& model, const Tokenizer& tok, const EvalSet& set, const EvalConfig& cfg,
                 SampleScores* samples = nullptr);

// VerbMem: ROUGE-L F1 × 100 of the greedy continuation of each passage's first `prefix` tokens
// (after BOS) against its next `new_tokens` tokens, averaged.
double verbmem(const Llama& model, const Tokenizer& tok, const std::vector<Tokens>& passages, int64_t prefix,
               int64_t new_tokens, int64_t batch_size);

// KnowMem: ROUGE-L F1 × 100 of the greedy answer to a few-shot "Question: …\nAnswer:" prompt,
// cut at a blank line or "Question", against the gold answer, averaged.
double knowmem(const Llama& model, const Tokenizer& tok, const std::vector<QaItem>& probes,
               const std::vector<QaItem>& shots, int64_t new_tokens, int64_t batch_size);

// The prompt KnowMem sends for `q` (shots rendered as render_qa, blank-line separated).
std::string knowmem_prompt(const std::vector<QaItem>& shots, const std::string& question);

}  // namespace lethe
