// Which evaluated cycle an unlearning run keeps (unlearn.select), and the distance to the retrained
// model that `lethe compare` and the oracle rule share. Metric maps only: no files, no collectives.
#pragma once

#include <optional>
#include <vector>

#include "eval/muse.h"

namespace lethe {

// Note [Closest to retrain]: MUSE asks for all four metrics near the retrained model at once, so
// each model gets the largest of four normalised distances: VerbMem and KnowMem-forget as a
// fraction of the target–retrain gap, PrivLeak / 100 (the target sits near −100), and the
// KnowMem-retain difference as a fraction of the retrained value. 0 = indistinguishable from
// retraining on these metrics; 1 = as far as the target (or lost all utility). A KnowMem that was
// not measured (no QA probes) is left out; without retain QA the utility term is retain MA's
// difference as a fraction of the retrained model's instead, so a model that lost its utility is
// never near retraining on a corpus without QA.
struct GapPoint {
  double verbmem = 0, privleak = 0;
  std::optional<double> knowmem_f, knowmem_r, ma_retain;
};
// The point of an evaluation's metrics, PrivLeak taken against the retrained model's Min-K% AUC.
// REQUIRES: m has verbmem_forget and mink_auc.
GapPoint gap_point(const Metrics& m, double retrain_auc);
double retrain_gap(const GapPoint& model, const GapPoint& target, const GapPoint& retrain);
// The forget terms of retrain_gap alone (VerbMem, KnowMem-forget, PrivLeak): how far the model's
// forgetting is from the retrained model's, whatever its utility.
double forget_gap(const GapPoint& model, const GapPoint& target, const GapPoint& retrain);

// Note [Pareto front]: a sweep's point in the forgetting-vs-utility plane: forget_gap (lower is
// closer to the retrained model's forgetting) and retain utility (higher is better). A point is on
// the front when no other point is at least as good on both and better on one; equal points are
// both on it. Returns, per point, whether it is on the front.
struct FrontPoint {
  double forget = 0, utility = 0;
};
std::vector<bool> pareto_front(const std::vector<FrontPoint>& points);

// Note [Checkpoint selection]: unlearn.select chooses, per forget request, one of the cycles that
// were evaluated; lower scores win, the earliest on a tie, and a cycle without a score is never
// chosen. Both rules refuse a collapsed model (Note [Collapse guard]: holdout perplexity above
// kCollapseFactor × the starting model's).
// - "last": the request's last cycle (no score).
// - "holdout" (retrain-free): forget distance + utility loss, both against the starting model.
//   Forget distance: the mean, over MA, EL_10 and Min-K% AUC, of how far the forget set's statistic
//   stands from the holdout (never-trained) level — |ma_forget − ma_holdout|, |el_forget −
//   el_holdout|, |mink_auc − 0.5| — divided by the same distance for the starting model (1 = as
//   memorised as the start, 0 = at the holdout level; over-unlearning past it counts again). A
//   statistic on which the start already sits at the holdout level (distance < 1e-6) is left out.
//   Utility loss: the larger of the relative drops in retain MA and, where the corpus has QA,
//   retain KnowMem (max(0, 1 − value / start's)).
// - "oracle": retrain_gap to the retrained model: it peeks at the model Lethe exists to avoid
//   training, and is labelled so wherever it is reported.
std::optional<double> holdout_score(const Metrics& m, const Metrics& start);
std::optional<double> oracle_score(const Metrics& m, const Metrics& start, const Metrics& retrain);

// Note [Collapse guard]; false when either perplexity is missing.
bool collapsed(const Metrics& m, const Metrics& start);

}  // namespace lethe
