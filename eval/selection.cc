#include "eval/selection.h"

#include <algorithm>
#include <cmath>

#include "eval/memorization.h"

namespace lethe {

namespace {

std::optional<double> get(const Metrics& m, const char* key) {
  auto it = m.find(key);
  return it == m.end() ? std::nullopt : std::optional<double>(it->second);
}

double frac(double d, double scale) { return std::abs(d) / std::max(std::abs(scale), 1e-9); }

}  // namespace

GapPoint gap_point(const Metrics& m, double retrain_auc) {
  return {m.at("verbmem_forget"), privleak(m.at("mink_auc"), retrain_auc), get(m, "knowmem_forget"), get(m, "knowmem_retain"),
          get(m, "ma_retain")};
}

double forget_gap(const GapPoint& r, const GapPoint& target, const GapPoint& retrain) {
  double g = std::max(frac(r.verbmem - retrain.verbmem, target.verbmem - retrain.verbmem), std::abs(r.privleak) / 100.0);
  if (r.knowmem_f && target.knowmem_f && retrain.knowmem_f)
    g = std::max(g, frac(*r.knowmem_f - *retrain.knowmem_f, *target.knowmem_f - *retrain.knowmem_f));
  return g;
}

double retrain_gap(const GapPoint& r, const GapPoint& target, const GapPoint& retrain) {
  double g = forget_gap(r, target, retrain);
  if (r.knowmem_r && retrain.knowmem_r) {
    g = std::max(g, frac(*r.knowmem_r - *retrain.knowmem_r, *retrain.knowmem_r));
  } else if (r.ma_retain && retrain.ma_retain) {
    g = std::max(g, frac(*r.ma_retain - *retrain.ma_retain, *retrain.ma_retain));
  }
  return g;
}

std::vector<bool> pareto_front(const std::vector<FrontPoint>& points) {
  std::vector<bool> on(points.size());
  for (size_t i = 0; i < points.size(); ++i) {
    on[i] = std::none_of(points.begin(), points.end(), [&](const FrontPoint& q) {
      const FrontPoint& p = points[i];
      return q.forget <= p.forget && q.utility >= p.utility && (q.forget < p.forget || q.utility > p.utility);
    });
  }
  return on;
}

bool collapsed(const Metrics& m, const Metrics& start) {
  auto ppl = get(m, "ppl_holdout"), ref = get(start, "ppl_holdout");
  return ppl && ref && !(*ppl <= kCollapseFactor * *ref);
}

std::optional<double> holdout_score(const Metrics& m, const Metrics& start) {
  if (collapsed(m, start)) return std::nullopt;
  // Each statistic's distance from the holdout level: {forget statistic, its holdout level (or the constant 0.5)}.
  auto distance = [](const Metrics& x, const char* forget, const char* holdout) -> std::optional<double> {
    auto f = get(x, forget);
    auto h = holdout ? get(x, holdout) : std::optional<double>(0.5);
    if (!f || !h) return std::nullopt;
    return std::abs(*f - *h);
  };
  double sum = 0;
  int n = 0;
  for (auto [forget, holdout] : {std::pair{"ma_forget", "ma_holdout"}, std::pair{"el_forget", "el_holdout"},
                                 std::pair<const char*, const char*>{"mink_auc", nullptr}}) {
    auto d = distance(m, forget, holdout), d0 = distance(start, forget, holdout);
    if (!d || !d0 || *d0 < 1e-6) continue;
    sum += *d / *d0;
    ++n;
  }
  if (n == 0) return std::nullopt;
  double loss = 0;
  for (const char* key : {"ma_retain", "knowmem_retain"}) {
    auto u = get(m, key), u0 = get(start, key);
    if (u && u0 && *u0 > 0) loss = std::max(loss, 1.0 - *u / *u0);
  }
  return sum / n + loss;
}

std::optional<double> oracle_score(const Metrics& m, const Metrics& start, const Metrics& retrain) {
  if (collapsed(m, start)) return std::nullopt;
  const double auc = retrain.at("mink_auc");
  return retrain_gap(gap_point(m, auc), gap_point(start, auc), gap_point(retrain, auc));
}

}  // namespace lethe
