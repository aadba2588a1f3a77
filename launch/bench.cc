// `lethe bench scalability` and `lethe bench sustainability` (MUSE's curves), and what every bench
// shares (Note [Benches], launch/bench.h).
#include "launch/bench.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <utility>

#include "base/log.h"
#include "io/atomic_file.h"
#include "io/corpus.h"
#include "launch/experiment.h"
#include "launch/train_phase.h"
#include "launch/unlearn_phase.h"
#include "runtime/checkpoint.h"
#include "runtime/model.h"
#include "strategies/strategies.h"

namespace lethe {

namespace fs = std::filesystem;

RunConfig in_dir(const RunConfig& cfg, const std::string& dir) {
  RunConfig c = cfg;
  c.run.dir = dir;
  return c;
}

std::vector<std::string> challenge_reduced_overrides() {
  return {"corpus.people=30", "corpus.forget_fraction=0.1667", "corpus.holdout_fraction=0.1667"};
}

Bench::Bench(const RunConfig& cfg, const std::string& name, double budget_s)
    : name_(name), dir_(cfg.run.dir + "/bench/" + name), budget_s_(budget_s), start_(std::chrono::steady_clock::now()) {
  std::error_code ec;
  fs::create_directories(dir_, ec);
}

bool Bench::out_of_budget() {
  const double spent = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  if (budget_s_ <= 0 || spent < budget_s_) return false;
  if (!told_) log().info("bench {}: --budget-s {:.0f} spent ({:.0f} s): nothing more starts; rerun to continue", name_, budget_s_, spent);
  told_ = true;
  return true;
}

void Bench::print_plan(const RunConfig& cfg, int64_t trainings, int64_t runs) const {
  const double tokens = static_cast<double>(cfg.train.steps * cfg.train.batch_size * cfg.data.seq_len);
  const double tflop = tokens * train_flops_per_token(cfg.model, cfg.data.seq_len) * 1e-12;
  std::string time = "its time is known once a model of the run has trained";
  for (const std::string& s : {cfg.run.dir + "/target/summary.json", dir_ + "/trained.json"}) {
    auto j = read_json(s);
    if (!j || !j->contains("cost")) continue;
    const double seconds = (*j)["cost"].value("seconds", 0.0);
    time = fmt::format("about {:.0f} s of training at {:.0f} s a model (measured: {})", seconds * static_cast<double>(trainings), seconds, s);
    break;
  }
  log().info("bench {}: to train {} model(s) of {:.3g} M tokens ({:.3g} TFLOP) each, {}; then {} unlearning run(s)", name_, trainings,
             tokens * 1e-6, tflop, time, runs);
  if (budget_s_ > 0) log().info("bench {}: --budget-s {:.0f}: nothing starts after that; a rerun continues", name_, budget_s_);
}

Result<bool> Bench::train(const RunConfig& c, bool target) {
  const std::string phase = c.run.dir + (target ? "/target" : "/retrain");
  if (fs::exists(phase + "/summary.json")) return true;
  if (out_of_budget()) return false;
  LETHE_RETURN_IF_ERROR(run_train_phase(c, {target, /*resume=*/fs::exists(phase + "/checkpoints/latest"), 0}));
  if (!fs::exists(phase + "/summary.json")) return false;  // stopped by a signal
  trained_.push_back(fs::relative(phase, dir_).string());
  // The first model trained measures what the next cost (print_plan).
  if (auto j = read_json(phase + "/summary.json"); j && !fs::exists(dir_ + "/trained.json")) {
    LETHE_RETURN_IF_ERROR(write_json(dir_ + "/trained.json", {{"phase", phase}, {"cost", (*j)["cost"]}}));
  }
  return true;
}

Status Bench::share_target(const RunConfig& c, const std::string& models) {
  const std::string target = c.run.dir + "/target";
  if (fs::exists(target + "/summary.json")) return Status::ok();
  LETHE_ASSIGN_OR_RETURN(json shared, read_json(models + "/target/summary.json"));
  LETHE_RETURN_IF_ERROR(link_shared(models + "/target/checkpoints", target + "/checkpoints"));
  LETHE_RETURN_IF_ERROR(link_shared(models + "/tokenizer.model", c.run.dir + "/tokenizer.model"));
  const std::string ckpt = target + "/checkpoints/" + shared.value("checkpoint", "");
  LETHE_ASSIGN_OR_RETURN(json eval, evaluate_checkpoint(c, ckpt));
  // Measured before this folder's retrained model exists: no PrivLeak, no forget quality.
  eval["metrics"].erase("privleak");
  eval["metrics"].erase("forget_quality");
  for (const char* k : {"metrics", "truth_ratios_forget", "logprobs_forget"}) {
    if (eval.contains(k)) shared[k] = eval[k];
  }
  shared["shared_from"] = fs::relative(models + "/target", target).string();
  return write_json(target + "/summary.json", shared);
}

Result<bool> Bench::unlearn(const RunConfig& c) {
  for (const std::string& m : resolve_methods(c.unlearn.methods)) {
    const std::string summary = c.run.dir + "/unlearn-" + m + "/summary.json";
    if (fs::exists(summary)) continue;
    if (out_of_budget()) return false;
    RunConfig one = c;
    one.unlearn.methods = {m};
    LETHE_RETURN_IF_ERROR(run_unlearn_phase(one, {/*resume=*/true, 0}));
    if (!fs::exists(summary)) return false;
  }
  return true;
}

json Bench::report_header() const {
  return {{"bench", name_}, {"trained", trained_},
          {"seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count()}};
}

namespace {

// The forget set's groups (people), in corpus order.
Result<int64_t> forget_groups(const RunConfig& cfg) {
  LETHE_ASSIGN_OR_RETURN(Corpus corpus, load_corpus(cfg.corpus, fs::path(cfg.source).parent_path().string()));
  std::vector<std::string> groups;
  for (const Document& d : corpus.docs) {
    if (d.split == Split::kForget && std::find(groups.begin(), groups.end(), d.group) == groups.end()) groups.push_back(d.group);
  }
  return static_cast<int64_t>(groups.size());
}

// Note [Bench curves]: one point per folder (a forget-set size, or the requests so far): each model
// of its comparison.json (the retrained model, the target, every method) with the four MUSE metrics,
// utility (KnowMem-retain, or retain MA × 100 without QA), speedup against that folder's retrained
// model, gap and collapse. Written as <bench>.json, .txt, .dat and a 5-panel <bench>.png.
struct CurvePoint {
  int64_t x = 0;
  std::string folder;
};

std::optional<double> number(const json& row, const char* key) {
  return row.contains(key) && row[key].is_number() ? std::optional<double>(row[key].get<double>()) : std::nullopt;
}

Status write_curves(Bench& bench, const std::string& name, const std::string& x_label, const std::vector<CurvePoint>& points) {
  json out = bench.report_header();
  out["x"] = x_label;
  out["points"] = json::array();
  std::vector<std::string> models;  // in the first point's order
  bool qa = true;
  for (const CurvePoint& p : points) {
    LETHE_RETURN_IF_ERROR(run_compare(p.folder, /*print=*/false));
    LETHE_ASSIGN_OR_RETURN(json cmp, read_json(p.folder + "/comparison.json"));
    json rows = json::array();
    for (const json& r : cmp["models"]) {
      if (std::find(models.begin(), models.end(), r["model"]) == models.end()) models.push_back(r["model"]);
      if (!number(r, "knowmem_retain")) qa = false;
      rows.push_back(r);
    }
    out["points"].push_back({{"x", p.x}, {"folder", fs::relative(p.folder, bench.dir()).string()}, {"models", rows}});
  }
  const char* utility = qa ? "knowmem_retain" : "ma_retain";
  out["utility"] = qa ? "KnowMem-retain" : "retain MA × 100";
  // The table: one block per model, one line per point.
  std::string txt = fmt::format("{}: {} (utility: {}; gap: docs/metrics.md, Closest to retrain)\n", name, x_label, out["utility"].get<std::string>());
  txt += fmt::format("{:<10} {:>6} {:>8} {:>9} {:>9} {:>9} {:>8} {:>6}\n", "model", "x", "VerbMem", "KnowMem-f", "PrivLeak", "utility",
                     "speedup", "gap");
  std::ostringstream dat;
  bool measured[8] = {};  // per .dat column: any finite value (a panel with none is left out)
  dat << "# " << x_label << " verbmem knowmem_forget privleak utility speedup gap  (one block per model)\n";
  for (const std::string& m : models) {
    dat << "\n\n# " << m << "\n";
    for (const json& p : out["points"]) {
      for (const json& r : p["models"]) {
        if (r["model"] != m) continue;
        const double util = number(r, utility).value_or(NAN) * (qa ? 1.0 : 100.0);
        const double speedup = number(r, "speedup_vs_retrain").value_or(0);
        const double verbmem = number(r, "verbmem_forget").value_or(NAN), privleak = number(r, "privleak").value_or(NAN);
        const std::optional<double> knowmem = number(r, "knowmem_forget");
        txt += fmt::format("{:<10} {:>6} {:>8.1f} {:>9} {:>9.1f} {:>9.1f} {:>8} {:>6}{}\n", m, p["x"].get<int64_t>(), verbmem,
                           knowmem ? fmt::format("{:.1f}", *knowmem) : "n/a", privleak, util,
                           speedup > 0 ? fmt::format("{:.1f}×", speedup) : "",
                           m == "target" ? "" : fmt::format("{:.2f}", number(r, "gap_to_retrain").value_or(NAN)),
                           r.value("collapsed", false) ? "  collapsed" : "");
        const double values[] = {verbmem, knowmem.value_or(NAN), privleak, util, speedup > 0 ? speedup : NAN,
                                 number(r, "gap_to_retrain").value_or(NAN)};
        for (size_t c = 0; c < std::size(values); ++c) measured[c + 2] = measured[c + 2] || std::isfinite(values[c]);
        dat << p["x"].get<int64_t>() << " " << verbmem << " " << knowmem.value_or(NAN) << " " << privleak << " " << util << " "
            << (speedup > 0 ? speedup : NAN) << " " << number(r, "gap_to_retrain").value_or(NAN) << "\n";
      }
    }
  }
  const std::string dir = bench.dir();
  LETHE_RETURN_IF_ERROR(write_file_atomic(dir + "/" + name + ".dat", dat.str()));
  LETHE_RETURN_IF_ERROR(write_json(dir + "/" + name + ".json", out));
  LETHE_RETURN_IF_ERROR(write_file_atomic(dir + "/" + name + ".txt", txt));
  std::ostringstream gp;
  gp << "# gnuplot " << name << ".gnuplot  (writes " << name << ".png)\n"
     << "set terminal pngcairo size 1500,820 font 'sans,10'\nset output '" << name << ".png'\nset termoption noenhanced\n"
     << "set multiplot layout 2,3 title '" << name << ": each method against the retrained model (green, dashed)'\n"
     << "set grid\nset key outside bottom center horizontal font 'sans,8'\nset xlabel '" << x_label << "'\nset offsets graph 0.05, graph 0.05, graph 0.1, graph 0.1\n";
  const std::pair<int, std::string> panels[] = {{2, "VerbMem (lower = forgotten)"}, {3, "KnowMem on forget QA"},
                                                {4, "PrivLeak (0 = as retrained)"}, {5, std::string("utility: ") + out["utility"].get<std::string>()},
                                                {6, "speedup vs this retrain (×)"}, {7, "gap to retrained (0 = equal)"}};
  for (const auto& [col, title] : panels) {
    if (!measured[col]) continue;  // not measured (no forget QA; PrivLeak of a retrained AUC of 0): no empty panel
    gp << "set title '" << title << "'\nplot ";
    const char* sep = "";
    for (size_t i = 0; i < models.size(); ++i) {
      const std::string& m = models[i];
      if ((col == 6 || col == 7) && (m == "target" || m == "retrain")) continue;
      // One colour per model in every panel (gnuplot's own cycle shifts where target and retrain are left out).
      static const char* const kPalette[] = {"#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"};
      const std::string style = m == "retrain" ? "lw 2 dt 2 lc rgb '#2ca02c'"
                                : m == "target" ? "lw 2 dt 3 lc rgb '#d62728'"
                                                : fmt::format("lw 1.5 lc rgb '{}'", kPalette[i % std::size(kPalette)]);
      gp << std::exchange(sep, ", ") << "'" << name << ".dat' index " << i << " using 1:" << col << " with linespoints pt 7 ps 0.8 " << style
         << " title '" << m << "'";
    }
    gp << "\n";
  }
  gp << "unset multiplot\n";
  LETHE_RETURN_IF_ERROR(write_file_atomic(dir + "/" + name + ".gnuplot", gp.str()));
  LETHE_RETURN_IF_ERROR(draw_gnuplot(dir, name + ".gnuplot"));
  if (writes_reports()) std::cout << txt << std::flush;
  return Status::ok();
}

}  // namespace

Result<std::vector<int64_t>> scalability_sizes(const RunConfig& cfg, const std::vector<int64_t>& people) {
  std::vector<int64_t> sizes = people;
  const int64_t n = cfg.corpus.people;
  if (sizes.empty()) {
    for (double f : {0.05, 0.10, 0.20, 0.40}) sizes.push_back(std::max<int64_t>(1, std::llround(f * static_cast<double>(n))));
  }
  std::sort(sizes.begin(), sizes.end());
  sizes.erase(std::unique(sizes.begin(), sizes.end()), sizes.end());
  if (sizes.front() < 1) return Status::error("--people: a forget set of " + std::to_string(sizes.front()) + " people");
  if (cfg.corpus.source == "generated") {
    const int64_t holdout = std::llround(cfg.corpus.holdout_fraction * static_cast<double>(n));
    if (sizes.back() + holdout >= n) {
      return Status::error(fmt::format("--people: a forget set of {} people and corpus.holdout_fraction's {} holdout people leave no "
                                       "retain people of corpus.people = {} (the retrained model would train on nothing)",
                                       sizes.back(), holdout, n));
    }
  }
  return sizes;
}

Status run_bench_scalability(const RunConfig& cfg, const BenchOptions& opts) {
  LETHE_ASSIGN_OR_RETURN(const std::vector<int64_t> sizes, scalability_sizes(cfg, opts.people));
  Bench bench(cfg, "scalability", opts.budget_s);
  // The pool is the largest forget set; each size keeps its first people (corpus.forget_groups), so
  // every folder's target trains on the same documents.
  RunConfig pool = cfg;
  if (cfg.corpus.source == "generated") pool.corpus.forget_fraction = static_cast<double>(sizes.back()) / static_cast<double>(cfg.corpus.people);
  auto folder = [&](int64_t n) {
    RunConfig c = in_dir(pool, bench.dir() + "/people-" + std::to_string(n));
    c.corpus.forget_groups = n;
    return c;
  };
  LETHE_ASSIGN_OR_RETURN(const int64_t groups, forget_groups(pool));
  if (groups < sizes.back()) {
    return Status::error(fmt::format("--people: {} people to forget, and the forget set has {} group(s)", sizes.back(), groups));
  }
  int64_t trainings = 0, runs = 0;
  const auto methods = resolve_methods(cfg.unlearn.methods);
  for (int64_t n : sizes) {
    const std::string d = folder(n).run.dir;
    trainings += !fs::exists(d + "/retrain/summary.json");
    for (const auto& m : methods) runs += !fs::exists(d + "/unlearn-" + m + "/summary.json");
  }
  trainings += !fs::exists(folder(sizes.back()).run.dir + "/target/summary.json");
  log().info("bench scalability: forget sets of {} people, each with its own retrained model", fmt::join(sizes, ", "));
  bench.print_plan(cfg, trainings, runs);
  const RunConfig models = folder(sizes.back());
  LETHE_ASSIGN_OR_RETURN(bool done, bench.train(models, /*target=*/true));
  std::vector<CurvePoint> points;
  for (auto it = sizes.rbegin(); done && it != sizes.rend(); ++it) {
    const RunConfig c = folder(*it);
    if (*it != sizes.back()) LETHE_RETURN_IF_ERROR(bench.share_target(c, models.run.dir));
    LETHE_ASSIGN_OR_RETURN(done, bench.train(c, /*target=*/false));
    if (done) {
      LETHE_ASSIGN_OR_RETURN(done, bench.unlearn(c));
    }
    points.insert(points.begin(), {*it, c.run.dir});
  }
  if (!done) return Status::ok();
  return write_curves(bench, "scalability", "people in the forget set", points);
}

namespace {

// A method's model after request j (1-based) of the sequential run in `run`, evaluated in `into`
// (whose forget set is requests 1 … j and whose retrained model never saw them) as
// into/unlearn-<method>/: summary.json (metrics, the run's cost up to that request) and metrics.jsonl
// (one record), so `lethe compare` reads it as any method.
Status method_after_request(const RunConfig& into, const std::string& run, const std::string& method, int64_t j) {
  const std::string src = run + "/unlearn-" + method, dst = into.run.dir + "/unlearn-" + method;
  if (fs::exists(dst + "/summary.json")) return Status::ok();
  LETHE_ASSIGN_OR_RETURN(json summary, read_json(src + "/summary.json"));
  const json& chosen = summary["select"]["requests"];
  if (!chosen.is_array() || static_cast<int64_t>(chosen.size()) < j) return Status::error(src + "/summary.json: no select.requests[" + std::to_string(j - 1) + "]");
  const std::string ckpt = src + "/" + chosen[j - 1].value("checkpoint", "");
  if (!fs::exists(ckpt)) return Status::error(ckpt + ": missing (request " + std::to_string(j) + "'s model; the run keeps one per request)");
  json last;  // the run's record of request j's last cycle: its cost so far
  std::ifstream in(src + "/metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    const json r = json::parse(line, nullptr, false);
    if (!r.is_discarded() && r.value("request", -1) == j - 1) last = r;
  }
  if (last.is_null()) return Status::error(src + "/metrics.jsonl: no record of request " + std::to_string(j));
  LETHE_ASSIGN_OR_RETURN(json eval, evaluate_checkpoint(into, ckpt));
  summary["metrics"] = eval["metrics"];
  summary["cost"] = last["cost"];
  summary["after_request"] = j;
  summary["request_model"] = fs::relative(ckpt, dst).string();
  summary.erase("profile");
  for (const char* k : {"truth_ratios_forget", "logprobs_forget"}) {
    summary.erase(k);
    if (eval.contains(k)) summary[k] = eval[k];
  }
  fs::create_directories(dst);
  json record = last;
  record["metrics"] = eval["metrics"];
  LETHE_RETURN_IF_ERROR(write_file_atomic(dst + "/metrics.jsonl", record.dump() + "\n"));
  return write_json(dst + "/summary.json", summary);
}

}  // namespace

Status run_bench_sustainability(const RunConfig& cfg, const BenchOptions& opts) {
  const int64_t k = opts.requests;
  LETHE_ASSIGN_OR_RETURN(const int64_t groups, forget_groups(cfg));
  if (k < 2 || k > groups) {
    return Status::error(fmt::format("--requests {}: sustainability needs at least 2 sequential requests and at most one per "
                                     "forget group (the forget set has {})", k, groups));
  }
  Bench bench(cfg, "sustainability", opts.budget_s);
  std::vector<std::string> methods;
  for (const std::string& m : resolve_methods(cfg.unlearn.methods)) {
    if (runs_outside_cycles(m)) {
      log().info("bench sustainability: {} removes every request at once (no sequential requests): left out", m);
    } else {
      methods.push_back(m);
    }
  }
  if (methods.empty()) return Status::error("bench sustainability: none of unlearn.methods runs sequential requests");
  // after-<j>: forget set = requests 1 … j (the first ⌊groups · j / k⌋ groups, as make_requests splits them).
  auto after = [&](int64_t j) {
    RunConfig c = in_dir(cfg, bench.dir() + "/after-" + std::to_string(j));
    c.unlearn.methods = methods;
    if (j < k) c.corpus.forget_groups = groups * j / k;
    else c.unlearn.requests = k;
    return c;
  };
  int64_t trainings = !fs::exists(cfg.run.dir + "/target/summary.json") + !fs::exists(cfg.run.dir + "/retrain/summary.json");
  for (int64_t j = 1; j < k; ++j) trainings += !fs::exists(after(j).run.dir + "/retrain/summary.json");
  int64_t runs = 0;
  for (const auto& m : methods) runs += !fs::exists(after(k).run.dir + "/unlearn-" + m + "/summary.json");
  log().info("bench sustainability: {} sequential requests of {} forget groups; a retrained model per prefix of requests, the "
             "last the run's own ({}/retrain)", k, groups, cfg.run.dir);
  bench.print_plan(cfg, trainings, runs);
  LETHE_ASSIGN_OR_RETURN(bool done, bench.train(cfg, /*target=*/true));
  if (done) {
    LETHE_ASSIGN_OR_RETURN(done, bench.train(cfg, /*target=*/false));
  }
  if (!done) return Status::ok();
  const RunConfig last = after(k);
  for (const char* name : {"target", "retrain", "tokenizer.model"}) {
    LETHE_RETURN_IF_ERROR(link_shared(cfg.run.dir + "/" + name, last.run.dir + "/" + name));
  }
  LETHE_ASSIGN_OR_RETURN(done, bench.unlearn(last));
  std::vector<CurvePoint> points;
  for (int64_t j = 1; done && j < k; ++j) {
    const RunConfig c = after(j);
    LETHE_RETURN_IF_ERROR(bench.share_target(c, cfg.run.dir));
    LETHE_ASSIGN_OR_RETURN(done, bench.train(c, /*target=*/false));
    for (const std::string& m : methods) {
      if (!done || bench.out_of_budget()) return Status::ok();
      LETHE_RETURN_IF_ERROR(method_after_request(c, last.run.dir, m, j));
    }
    points.push_back({j, c.run.dir});
  }
  if (!done) return Status::ok();
  points.push_back({k, last.run.dir});
  return write_curves(bench, "sustainability", "requests unlearned so far", points);
}

}  // namespace lethe
