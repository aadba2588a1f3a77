// Per-sample memorisation metrics (REFERENCE.md): teacher-forced memorisation accuracy,
// extraction strength and Min-K% Prob; extraction likelihood EL_n from greedy continuations; the
// AUC of a membership-inference score and MUSE's PrivLeak.
//
// A sample is one token sequence x_0 … x_{L−1} with x_0 = BOS (L ≥ 2); its targets are x_1 … x_{L−1}.
#pragma once

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "eval/generate.h"
#include "io/token_dataset.h"
#include "runtime/model.h"

namespace lethe {

// The samples of a one-sample-per-row dataset (Packing::kOnePerRow): each row's non-padding tokens.
std::vector<Tokens> row_samples(const TokenDataset& ds);

struct TeacherForced {
  std::vector<double> ma;    // per sample: mean over targets of 1[argmax = x_t]
  std::vector<double> es;    // per sample: extraction strength 1 − k*/n (n targets)
  std::vector<double> mink;  // per sample: −mean of the lowest ⌈k·n⌉ target log-probs (high = looks unseen)
  std::vector<double> nll;   // per sample: the sum of its targets' NLL
  double nll_sum = 0;        // over all targets of all samples
  int64_t tokens = 0;        // targets of all samples
  double perplexity() const;
};

// One forward per batch of samples (right-padded). Collective over the model's whole mesh: each dp
// rank scores its block of the samples and every rank returns the results of all.
TeacherForced teacher_forced(const Llama& model, const std::vector<Tokens>& samples, double mink_k,
                             int64_t batch_size = 32);

struct ExtractionOptions {
  int64_t n = 10;        // n-gram length
  int64_t stride = 1;    // starts t = stride, 2·stride, … (the definition averages over every t)
  int64_t max_new = 0;   // cap on the continuation length (0: the whole rest of the sample)
  int64_t batch_size = 32;
};

// EL_n per sample (collective over the mesh, as greedy_generate): for each start t, the greedy
// continuation of x_<t (as long as the sample's rest, up to max_new) is compared with x_≥t; the
// fraction of its n-grams found among x_≥t's n-grams, averaged over t. Samples too short for any
// start score 0. `forward_tokens`, when given, is increased by the tokens the model processed.
std::vector<double> extraction_likelihood(const Llama& model, const std::vector<Tokens>& samples,
                                          const ExtractionOptions& opts, int64_t* forward_tokens = nullptr);

// extraction_likelihood in two halves, so its continuations can join a larger generation pool
// (Note [One generation pool]): the jobs, one per (sample, start) continuing a prefix of the
// sample (`text` indexes `samples`), then EL_n per sample from their continuations (`gens`, one
// per job, in the same order).
std::vector<PrefixGeneration> extraction_jobs(const std::vector<Tokens>& samples, const ExtractionOptions& opts);
std::vector<double> extraction_scores(const std::vector<Tokens>& samples, const ExtractionOptions& opts,
                                      std::span<const PrefixGeneration> jobs, std::span<const Tokens> gens);
// The fraction of gen's n-grams (with repeats) that occur among truth's n-grams; 0 when gen has none.
double ngram_overlap(const Tokens& gen, const Tokens& truth, int64_t n);

double mean(const std::vector<double>& v);

// Note [Collapse guard]: a model whose perplexity on holdout text (never trained on) exceeds
// kCollapseFactor times its starting model's has lost the language, not just the forget set (GA's
// runs reach 10⁸). `lethe compare` never names such a model closest to the retrained one, and
// ICU's stop rule never declares it forgotten. The retrained model sits at 3.3× the target's on the
// test corpus and 1.1× on the quickstart's, so 10 leaves room for honest forgetting.
inline constexpr double kCollapseFactor = 10;

// P(a > b) + ½ P(a = b) over all pairs: the ROC AUC of the score separating set a from set b.
double auc(const std::vector<double>& a, const std::vector<double>& b);

// MUSE's PrivLeak in percent: (AUC − AUC_retrained) / AUC_retrained × 100, with the AUC of
// Min-K% scores oriented forget-over-holdout (auc(mink_forget, mink_holdout)): the target is near
// −100, the retrained model 0, an over-unlearned model positive.
double privleak(double auc_model, double auc_retrained);

}  // namespace lethe
