// `lethe bench challenge`: the NeurIPS 2023 unlearning challenge's forgetting score (Note [Benches],
// launch/bench.h; the score's math in eval/challenge.h; docs/metrics.md, Forgetting score).
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <sstream>

#include "base/log.h"
#include "eval/challenge.h"
#include "io/atomic_file.h"
#include "launch/bench.h"
#include "launch/experiment.h"
#include "strategies/strategies.h"

namespace lethe {

namespace fs = std::filesystem;

namespace {

// One model's per-forget-sample scores (mean token log-probs) and its utility (KnowMem-retain, or
// retain MA × 100 without QA: what the gap uses), from its summary.json.
struct Scored {
  std::vector<double> logprobs;
  double utility = 0;
  double seconds = 0;
};

Result<Scored> scored(const std::string& summary) {
  LETHE_ASSIGN_OR_RETURN(json j, read_json(summary));
  if (!j.contains("logprobs_forget")) {
    return Status::error(summary + ": no logprobs_forget (written by an older build: remove the folder to run it again)");
  }
  const json& m = j["metrics"];
  Scored s{j["logprobs_forget"].get<std::vector<double>>(), 0, j["cost"].value("seconds", 0.0)};
  s.utility = m.contains("knowmem_retain") ? m["knowmem_retain"].get<double>() : 100 * m.value("ma_retain", 0.0);
  return s;
}

// Per method (and "retrain"): the N models' scores, in seed order.
using Models = std::vector<Scored>;

struct Score {
  int64_t n = 0;
  double f = 0, utility_ratio = 0, final_score = 0;
  std::vector<int64_t> bins;  // samples per ε bin (1 … kEpsilonBins)
};

// The score over the first `n` seeds.
Score score_of(const Models& unlearned, const Models& retrained, int64_t n) {
  const size_t samples = retrained.front().logprobs.size();
  std::vector<std::vector<double>> u(samples), r(samples);
  double uu = 0, ur = 0;
  for (int64_t s = 0; s < n; ++s) {
    for (size_t i = 0; i < samples; ++i) {
      u[i].push_back(unlearned[s].logprobs[i]);
      r[i].push_back(retrained[s].logprobs[i]);
    }
    uu += unlearned[s].utility / static_cast<double>(n);
    ur += retrained[s].utility / static_cast<double>(n);
  }
  Score sc;
  sc.n = n;
  sc.f = forgetting_f(u, r);
  sc.bins.assign(kEpsilonBins, 0);
  for (size_t i = 0; i < samples; ++i) ++sc.bins[epsilon_bin(challenge_epsilon(u[i], r[i])) - 1];
  sc.utility_ratio = ur > 0 ? uu / ur : 0;
  sc.final_score = challenge_score(sc.f, uu, ur);
  return sc;
}

// The sample sizes reported: N, N/2, N/4, … down to 2 (the score moves with N; Note [Benches]).
std::vector<int64_t> halvings(int64_t n) {
  std::vector<int64_t> out;
  for (int64_t k = n; k >= 2; k /= 2) out.insert(out.begin(), k);
  return out;
}

Status write_report(Bench& bench, const std::vector<std::string>& methods, const std::vector<Models>& unlearned,
                    const Models& retrained, int64_t seeds, double target_s) {
  json out = bench.report_header();
  const double delta = kChallengeDelta;
  // With n models a side FPR and FNR are multiples of 1/n: the largest finite ε is that of one error each.
  const double max_finite = std::max(0.0, std::log(static_cast<double>(seeds) * (1 - delta) - 1));
  out["seeds"] = seeds;
  out["samples"] = retrained.front().logprobs.size();
  out["largest_finite_epsilon"] = max_finite;
  double retrain_s = 0;
  for (const Scored& r : retrained) retrain_s += r.seconds;
  out["retrain_seconds"] = retrain_s;
  out["target_seconds"] = target_s;
  double unlearn_s = 0;
  std::string txt = fmt::format("challenge: the 2023 unlearning challenge's forgetting score over N = {} retrained and N unlearned "
                                "models per method, {} forget samples (mean token log-prob)\n",
                                seeds, retrained.front().logprobs.size());
  txt += fmt::format("{:<10} {:>4} {:>7} {:>9} {:>7} {:>10}  {}\n", "method", "N", "F", "utility", "score", "time s", "samples per ε bin 1…13");
  std::ostringstream dat;
  dat << "# method n F utility_ratio score\n";
  out["methods"] = json::array();
  for (size_t m = 0; m < methods.size(); ++m) {
    double seconds = 0;
    for (int64_t s = 0; s < seeds; ++s) seconds += unlearned[m][s].seconds;
    json rows = json::array();
    for (int64_t n : halvings(seeds)) {
      const Score sc = score_of(unlearned[m], retrained, n);
      rows.push_back({{"n", n}, {"f", sc.f}, {"utility_ratio", sc.utility_ratio}, {"score", sc.final_score}, {"epsilon_bins", sc.bins}});
      txt += fmt::format("{:<10} {:>4} {:>7.4f} {:>9.3f} {:>7.4f} {:>10}  {}\n", methods[m], n, sc.f, sc.utility_ratio, sc.final_score,
                         n == seeds ? fmt::format("{:.1f}", seconds) : "", fmt::join(sc.bins, " "));
      dat << methods[m] << " " << n << " " << sc.f << " " << sc.utility_ratio << " " << sc.final_score << "\n";
    }
    out["methods"].push_back({{"method", methods[m]}, {"unlearn_seconds", seconds}, {"by_n", rows}});
    unlearn_s += seconds;
  }
  out["total_seconds"] = target_s + retrain_s + unlearn_s;
  txt += fmt::format("the whole bench: the target {:.1f} s + {} retrained models {:.1f} s + {} unlearning runs {:.1f} s = {:.1f} s\n",
                     target_s, seeds, retrain_s, seeds * static_cast<int64_t>(methods.size()), unlearn_s, target_s + retrain_s + unlearn_s);
  txt += fmt::format("With N models a side, FPR and FNR are multiples of 1/N: a finite ε is at most log(N(1 − δ) − 1) = {:.2f} "
                     "at N = {}, so the bins past it are reached only by the cap (ε = 50, bin 13: a sample whose two sets of "
                     "scores separate). The challenge used N = 512.\n",
                     max_finite, seeds);
  txt += "A method whose result does not depend on the seed gives N identical models: their scores have no spread, ε is capped, "
         "and F is near 0 by construction (docs/metrics.md).\n";
  const std::string dir = bench.dir();
  LETHE_RETURN_IF_ERROR(write_json(dir + "/challenge.json", out));
  LETHE_RETURN_IF_ERROR(write_file_atomic(dir + "/challenge.txt", txt));
  LETHE_RETURN_IF_ERROR(write_file_atomic(dir + "/challenge.dat", dat.str()));
  const std::string gp = fmt::format(
      "# gnuplot challenge.gnuplot  (writes challenge.png)\n"
      "set terminal pngcairo size 900,480 font 'sans,10'\nset output 'challenge.png'\nset termoption noenhanced\n"
      "set title 'Forgetting score F × utility ratio per method, by the number N of models a side'\n"
      "set style data histograms\nset style histogram clustered gap 1\nset style fill solid 0.8\nset grid ytics\n"
      "set yrange [0:*]\nset ylabel 'score (1 = indistinguishable from retraining)'\nset key top right\n"
      "plot for [n in '{}'] 'challenge.dat' using ($2 == n ? $5 : NaN):xtic(1) title 'N = '.n\n",
      fmt::join(halvings(seeds), " "));
  LETHE_RETURN_IF_ERROR(write_file_atomic(dir + "/challenge.gnuplot", gp));
  LETHE_RETURN_IF_ERROR(draw_gnuplot(dir, "challenge.gnuplot"));
  if (writes_reports()) std::cout << txt << std::flush;
  return Status::ok();
}

}  // namespace

Status run_bench_challenge(const RunConfig& cfg, const BenchOptions& opts) {
  const int64_t seeds = opts.seeds;
  if (seeds < 2) {
    return Status::error(fmt::format("--seeds {}: the forgetting score asks whether N unlearned models can be told from N retrained "
                                     "ones by the spread of their scores on each forget sample; it needs at least 2 models a side "
                                     "(8 by default; the challenge used 512)", seeds));
  }
  Bench bench(cfg, "challenge", opts.budget_s);
  auto seed_dir = [&](int64_t k) {
    RunConfig c = in_dir(cfg, bench.dir() + "/seed-" + std::to_string(cfg.run.seed + k));
    c.run.seed = cfg.run.seed + k;
    c.experiment.seeds = 1;
    return c;
  };
  const std::vector<std::string> methods = resolve_methods(cfg.unlearn.methods);
  int64_t trainings = !fs::exists(seed_dir(0).run.dir + "/target/summary.json"), runs = 0;
  for (int64_t k = 0; k < seeds; ++k) {
    trainings += !fs::exists(seed_dir(k).run.dir + "/retrain/summary.json");
    for (const auto& m : methods) runs += !fs::exists(seed_dir(k).run.dir + "/unlearn-" + m + "/summary.json");
  }
  log().info("bench challenge: one target (seed {}), {} retrained models and {} unlearning runs per method (seeds {} … {})",
             cfg.run.seed, seeds, seeds, cfg.run.seed, cfg.run.seed + seeds - 1);
  bench.print_plan(cfg, trainings, runs);
  const RunConfig first = seed_dir(0);
  LETHE_ASSIGN_OR_RETURN(bool done, bench.train(first, /*target=*/true));
  for (int64_t k = 0; done && k < seeds; ++k) {
    const RunConfig c = seed_dir(k);
    if (k > 0) {
      for (const char* name : {"target", "tokenizer.model"}) LETHE_RETURN_IF_ERROR(link_shared(first.run.dir + "/" + name, c.run.dir + "/" + name));
    }
    LETHE_ASSIGN_OR_RETURN(done, bench.train(c, /*target=*/false));
    if (done) {
      LETHE_ASSIGN_OR_RETURN(done, bench.unlearn(c));
    }
  }
  if (!done || !writes_reports()) return Status::ok();
  Models retrained;
  std::vector<Models> unlearned(methods.size());
  for (int64_t k = 0; k < seeds; ++k) {
    const std::string d = seed_dir(k).run.dir;
    LETHE_ASSIGN_OR_RETURN(Scored r, scored(d + "/retrain/summary.json"));
    if (!retrained.empty() && r.logprobs.size() != retrained.front().logprobs.size()) {
      return Status::error(d + "/retrain/summary.json: " + std::to_string(r.logprobs.size()) + " forget samples, the first seed's " +
                           std::to_string(retrained.front().logprobs.size()) + " (another corpus?)");
    }
    retrained.push_back(std::move(r));
    for (size_t m = 0; m < methods.size(); ++m) {
      LETHE_ASSIGN_OR_RETURN(Scored u, scored(d + "/unlearn-" + methods[m] + "/summary.json"));
      if (u.logprobs.size() != retrained.front().logprobs.size()) {
        return Status::error(d + "/unlearn-" + methods[m] + "/summary.json: not the retrained model's forget samples");
      }
      unlearned[m].push_back(std::move(u));
    }
  }
  LETHE_ASSIGN_OR_RETURN(json target, read_json(seed_dir(0).run.dir + "/target/summary.json"));
  return write_report(bench, methods, unlearned, retrained, seeds, target["cost"].value("seconds", 0.0));
}

}  // namespace lethe
