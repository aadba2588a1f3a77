// The forgetting score of the NeurIPS 2023 machine-unlearning challenge (../shared/REFERENCE.md,
// "Forgetting score"; docs/metrics.md): how well threshold attackers tell N unlearned models from
// N retrained ones, per forget sample, turned into one number. Numbers only: no models, no files.
#pragma once

#include <span>
#include <vector>

namespace lethe {

inline constexpr double kChallengeDelta = 1e-5;
inline constexpr double kEpsilonCap = 50;  // perfectly separated, or one sample nearly constant
inline constexpr int kEpsilonBins = 13;    // width 0.5 over [0, 6.5), ε ≥ 6.5 in the last

// One attack's error rates; "positive" is "unlearned".
struct AttackRates {
  double fpr = 0, fnr = 0;
};

// Note [Threshold attacks]: every threshold t among the pooled scores, on either side: "unlearned
// when score > t" and its complement "unlearned when score ≤ t" (an attacker picks the direction).
std::vector<AttackRates> threshold_attacks(std::span<const double> unlearned, std::span<const double> retrained);

// ε of one forget sample from its scores under the unlearned and the retrained models: the largest
// max(log(1 − δ − FPR) − log FNR, log(1 − δ − FNR) − log FPR) over the threshold attacks, attacks
// with exactly one of FPR, FNR zero discarded, at least 0; kEpsilonCap when the samples separate
// perfectly or one's range is under 1 % of the other's.
// REQUIRES: both samples non-empty.
double challenge_epsilon(std::span<const double> unlearned, std::span<const double> retrained,
                         double delta = kChallengeDelta);

// The bin of ε (1 … kEpsilonBins) and its score 2 / 2ⁿ (1 for bin 1).
int epsilon_bin(double epsilon);
double bin_score(int bin);

// F: the mean bin score over the forget samples; scores[i] are sample i's scores under the models.
// REQUIRES: unlearned.size() == retrained.size() > 0.
double forgetting_f(const std::vector<std::vector<double>>& unlearned, const std::vector<std::vector<double>>& retrained,
                    double delta = kChallengeDelta);

// The challenge's final score: F × (utility of the unlearned models / utility of the retrained ones).
double challenge_score(double f, double utility_unlearned, double utility_retrained);

}  // namespace lethe
