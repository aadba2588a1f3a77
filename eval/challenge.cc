#include "eval/challenge.h"

#include <algorithm>
#include <cmath>

#include "base/check.h"

namespace lethe {

namespace {

double fraction_above(std::span<const double> x, double t) {
  return static_cast<double>(std::count_if(x.begin(), x.end(), [t](double v) { return v > t; })) /
         static_cast<double>(x.size());
}

}  // namespace

std::vector<AttackRates> threshold_attacks(std::span<const double> unlearned, std::span<const double> retrained) {
  std::vector<double> thresholds(unlearned.begin(), unlearned.end());
  thresholds.insert(thresholds.end(), retrained.begin(), retrained.end());
  std::sort(thresholds.begin(), thresholds.end());
  thresholds.erase(std::unique(thresholds.begin(), thresholds.end()), thresholds.end());
  std::vector<AttackRates> attacks;
  for (double t : thresholds) {
    const double fpr = fraction_above(retrained, t), fnr = 1.0 - fraction_above(unlearned, t);
    attacks.push_back({fpr, fnr});
    attacks.push_back({1.0 - fpr, 1.0 - fnr});
  }
  return attacks;
}

double challenge_epsilon(std::span<const double> unlearned, std::span<const double> retrained, double delta) {
  LETHE_CHECK(!unlearned.empty() && !retrained.empty());
  const auto [u_lo, u_hi] = std::minmax_element(unlearned.begin(), unlearned.end());
  const auto [r_lo, r_hi] = std::minmax_element(retrained.begin(), retrained.end());
  const double u_range = *u_hi - *u_lo, r_range = *r_hi - *r_lo;
  if (*u_hi < *r_lo || *r_hi < *u_lo || u_range < 0.01 * r_range || r_range < 0.01 * u_range) return kEpsilonCap;
  double best = 0;
  for (const AttackRates& a : threshold_attacks(unlearned, retrained)) {
    // Exactly one zero: discarded. Both zero cannot happen here: that attack separates the samples.
    if (a.fpr == 0 || a.fnr == 0) continue;
    const double e1 = std::log(std::max(0.0, 1.0 - delta - a.fpr)) - std::log(a.fnr);
    const double e2 = std::log(std::max(0.0, 1.0 - delta - a.fnr)) - std::log(a.fpr);
    best = std::max({best, e1, e2});
  }
  return std::min(best, kEpsilonCap);
}

int epsilon_bin(double epsilon) {
  if (!(epsilon >= 0.5)) return 1;
  return std::min(kEpsilonBins, static_cast<int>(std::floor(epsilon / 0.5)) + 1);
}

double bin_score(int bin) { return 2.0 / std::ldexp(1.0, bin); }

double forgetting_f(const std::vector<std::vector<double>>& unlearned, const std::vector<std::vector<double>>& retrained,
                    double delta) {
  LETHE_CHECK(!unlearned.empty() && unlearned.size() == retrained.size());
  double sum = 0;
  for (size_t i = 0; i < unlearned.size(); ++i) sum += bin_score(epsilon_bin(challenge_epsilon(unlearned[i], retrained[i], delta)));
  return sum / static_cast<double>(unlearned.size());
}

double challenge_score(double f, double utility_unlearned, double utility_retrained) {
  return f * utility_unlearned / utility_retrained;
}

}  // namespace lethe
