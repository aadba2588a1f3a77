// TOFU's metrics (REFERENCE.md, as open-unlearning codes them): per-item answer probability and
// truth ratio, their summaries, forget quality (the two-sample Kolmogorov–Smirnov p-value against
// the retrained model's per-item forget truth ratios) and model utility (a harmonic mean).
#pragma once

#include <string>
#include <vector>

#include "eval/muse.h"
#include "io/tokenizer.h"
#include "runtime/model.h"

namespace lethe {

struct TofuScores {
  std::vector<double> prob;         // per item: p(answer | question)
  std::vector<double> truth_ratio;  // per item with a paraphrase and perturbed answers, in order
};

// p(a | q) = exp(−mean token NLL of a after the zero-shot prompt "Question: q\nAnswer:"), for the
// gold answer of every item, and per item with both, tr = mean_k p(perturbed_k) / (p(paraphrased)
// + 1e-10). One teacher-forced forward per prompt and per answer (collective over the mesh).
TofuScores tofu_scores(const Llama& model, const Tokenizer& tok, const std::vector<QaItem>& items, int64_t batch_size);

// Summaries: forget mean(min(tr, 1/tr)) (1 = the model cannot tell right from wrong), retain
// mean(max(0, 1 − tr)) (1 = it prefers the right answer).
double truth_ratio_forget(const std::vector<double>& tr);
double truth_ratio_retain(const std::vector<double>& tr);

// The two-sided two-sample KS test's p-value, exact (scipy.stats.ks_2samp, method "exact"): the
// probability that a uniformly random interleaving of the two samples' ranks reaches a statistic
// at least as large as the observed one. REQUIRES: both samples non-empty.
double ks_2samp_pvalue(std::vector<double> a, std::vector<double> b);

// n / Σ 1/x_i; 0 when any x_i is 0.
double harmonic_mean(const std::vector<double>& xs);

}  // namespace lethe
