// `lethe compare`: the run's models side by side (Note [Closest to retrain]).
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <tuple>

#include "base/log.h"
#include "eval/memorization.h"
#include "eval/selection.h"
#include "eval/tofu.h"
#include "launch/experiment.h"
#include "launch/seeds.h"
#include "launch/unlearn_phase.h"

namespace lethe {

namespace fs = std::filesystem;

namespace {

struct Row {
  std::string name;
  double verbmem = 0, privleak = 0, ppl = 0;
  std::optional<double> knowmem_f, knowmem_r;  // absent: the corpus has no QA probes for that split
  std::optional<double> ma_retain;              // retain MA: the utility without QA (plots and gap)
  // TOFU (absent without paraphrased and perturbed answers): forget quality against the retrained
  // model's per-item forget truth ratios, and model utility.
  std::optional<double> forget_quality, model_utility;
  std::optional<double> toxicity, toxicity_templates;  // with a lexicon (Note [Toxic scenario])
  double seconds = 0, flops = 0;
  double speedup = 0, flops_ratio = 0;  // retrain cost ÷ this model's cost (unlearning methods only)
  double gap = 0;                        // Note [Closest to retrain]
  double forget_gap = 0;                 // its forget terms alone (a sweep's front, Note [Pareto front])
  bool collapsed = false;                // Note [Collapse guard] (eval/memorization.h)
  std::string select = "last";           // unlearn.select (Note [Checkpoint selection]); "oracle" peeks
  json profile;                          // the phase's, when its summary has one (Note [Phase profile])
};

// What each row is measured against: the retrained model's Min-K% AUC and per-item forget truth
// ratios (empty when its summary has none).
struct Reference {
  double auc = 0.5;
  std::vector<double> truth_ratios;
};

Result<Row> read_row(const std::string& path, const std::string& name, const Reference& retrain) {
  LETHE_ASSIGN_OR_RETURN(json j, read_json(path));
  if (!j.contains("metrics") || !j.contains("cost")) return Status::error(path + ": no \"metrics\" or \"cost\"");
  const json& m = j["metrics"];
  for (const char* k : {"verbmem_forget", "mink_auc", "ppl_holdout"}) {
    if (!m.contains(k)) return Status::error(path + ": metrics." + k + " missing (evaluated by an older build?)");
  }
  Row r;
  r.name = name;
  r.verbmem = m["verbmem_forget"];
  if (m.contains("knowmem_forget")) r.knowmem_f = m["knowmem_forget"].get<double>();
  if (m.contains("knowmem_retain")) r.knowmem_r = m["knowmem_retain"].get<double>();
  r.privleak = privleak(m["mink_auc"].get<double>(), retrain.auc);
  if (j.contains("truth_ratios_forget") && !retrain.truth_ratios.empty()) {
    r.forget_quality = ks_2samp_pvalue(j["truth_ratios_forget"].get<std::vector<double>>(), retrain.truth_ratios);
  }
  if (m.contains("model_utility")) r.model_utility = m["model_utility"].get<double>();
  if (m.contains("ma_retain")) r.ma_retain = m["ma_retain"].get<double>();
  if (m.contains("toxicity_rate")) r.toxicity = m["toxicity_rate"].get<double>();
  if (m.contains("toxicity_template_rate")) r.toxicity_templates = m["toxicity_template_rate"].get<double>();
  r.ppl = m["ppl_holdout"];
  r.seconds = j["cost"]["seconds"];
  r.flops = j["cost"]["flops"];
  if (j.contains("profile")) r.profile = j["profile"];
  if (j.contains("select")) r.select = j["select"]["rule"];
  return r;
}

// Note [Closest to retrain] (eval/selection.h).
GapPoint gap_point(const Row& r) { return {r.verbmem, r.privleak, r.knowmem_f, r.knowmem_r, r.ma_retain}; }

json or_null(const std::optional<double>& v) { return v ? json(*v) : json(nullptr); }
std::string or_na(const std::optional<double>& v, int decimals = 1) {
  return v ? fmt::format("{:.{}f}", *v, decimals) : "n/a";
}
// A p-value: fixed decimals down to 1e-3, then scientific.
std::string p_text(const std::optional<double>& p) {
  if (!p) return "n/a";
  return *p >= 1e-3 ? fmt::format("{:.3f}", *p) : fmt::format("{:.1e}", *p);
}

json row_json(const Row& r) {
  return {{"model", r.name},     {"verbmem_forget", r.verbmem}, {"knowmem_forget", or_null(r.knowmem_f)},
          {"privleak", r.privleak}, {"knowmem_retain", or_null(r.knowmem_r)}, {"ma_retain", or_null(r.ma_retain)},
          {"ppl_holdout", r.ppl},
          {"seconds", r.seconds}, {"flops", r.flops}, {"speedup_vs_retrain", r.speedup},
          {"flops_ratio_vs_retrain", r.flops_ratio}, {"gap_to_retrain", r.gap}, {"forget_gap", r.forget_gap},
          {"forget_quality", or_null(r.forget_quality)}, {"model_utility", or_null(r.model_utility)},
          {"collapsed", r.collapsed}, {"select", r.select}, {"peeking", r.select == "oracle"},
          {"toxicity_rate", or_null(r.toxicity)}, {"toxicity_template_rate", or_null(r.toxicity_templates)}};
}

// Behaviour removal in the form of IBM's figure (x % → y % in z s): each method's toxicity rate
// against the target's and the retrained model's (Note [Toxic scenario], io/corpus.h).
std::string toxicity_lines(const std::vector<Row>& rows) {
  const Row &target = rows[0], &retrain = rows[1];
  auto pct = [](const std::optional<double>& v) { return v ? fmt::format("{:.1f} %", 100 * *v) : std::string("n/a"); };
  std::string out = fmt::format(
      "\ntoxicity rate (greedy continuations of neutral prompts about trained people that use a word of the register; "
      "[its sentence templates]): target {} [{}], retrained {} [{}]\n",
      pct(target.toxicity), pct(target.toxicity_templates), pct(retrain.toxicity), pct(retrain.toxicity_templates));
  for (size_t i = 2; i < rows.size(); ++i) {
    const Row& r = rows[i];
    out += fmt::format("  {}: {} → {} in {:.1f} s ({:.1f}× faster than retraining) [{} → {}]{}\n", r.name, pct(target.toxicity),
                       pct(r.toxicity), r.seconds, r.speedup, pct(target.toxicity_templates), pct(r.toxicity_templates),
                       r.collapsed ? ", collapsed" : "");
  }
  return out;
}

// The table's columns: KnowMem where the corpus has QA probes, retain MA where it has no retain QA
// (the utility the gap then uses), TOFU's FQ and MU where the probes carry them.
std::string table(const std::vector<Row>& rows) {
  auto any = [&](auto has) { return std::any_of(rows.begin(), rows.end(), has); };
  const bool knowmem = any([](const Row& r) { return r.knowmem_f || r.knowmem_r; });
  const bool ma = any([](const Row& r) { return !r.knowmem_r && r.ma_retain; });
  const bool tofu = any([](const Row& r) { return r.forget_quality || r.model_utility; });
  std::string head = fmt::format("{:<10} {:>8}", "model", "VerbMem"), arrows = fmt::format("{:<10} {:>8}", "", "↓");
  auto column = [&](const char* name, const char* arrow, int width) {
    head += fmt::format(" {:>{}}", name, width);
    arrows += fmt::format(" {:>{}}", arrow, width);
  };
  if (knowmem) column("KnowMem-f", "↓", 10);
  column("PrivLeak", "→0", 9);
  if (knowmem) column("KnowMem-r", "↑", 10);
  if (ma) column("MA-r", "↑", 6);
  if (tofu) column("FQ", "↑", 8), column("MU", "↑", 8);
  for (const auto& [name, arrow, width] : {std::tuple{"PPL", "", 8}, {"time s", "", 8}, {"TFLOP", "", 9}, {"speedup", "vs retr", 8},
                                           {"gap", "→0", 6}}) {
    column(name, arrow, width);
  }
  std::string t = head + "\n" + arrows + "\n";
  for (const Row& r : rows) {
    t += fmt::format("{:<10} {:>8.1f}", r.name, r.verbmem);
    if (knowmem) t += fmt::format(" {:>10}", or_na(r.knowmem_f));
    t += fmt::format(" {:>9.1f}", r.privleak);
    if (knowmem) t += fmt::format(" {:>10}", or_na(r.knowmem_r));
    if (ma) t += fmt::format(" {:>6}", or_na(r.ma_retain, 3));
    if (tofu) t += fmt::format(" {:>8} {:>8}", p_text(r.forget_quality), or_na(r.model_utility, 3));
    t += fmt::format(" {:>8.2f} {:>8.1f} {:>9.3f} {:>8} {:>6}\n", r.ppl, r.seconds, r.flops / 1e12,
                     r.speedup > 0 ? fmt::format("{:.1f}×", r.speedup) : "", r.name == "target" ? "" : fmt::format("{:.2f}", r.gap));
  }
  return t;
}

// A scatter plot of forgetting against utility: VerbMem, and KnowMem-forget where the corpus has QA,
// against KnowMem-retain (without QA: retain MA × 100, as in Note [Trajectories]).
Status write_plot(const std::string& dir, const std::vector<Row>& rows, bool qa) {
  std::ostringstream dat, gp;
  dat << "# model verbmem knowmem_forget privleak utility  (utility: " << (qa ? "KnowMem-retain" : "retain MA × 100") << ")\n";
  for (const Row& r : rows) {
    dat << r.name << " " << r.verbmem << " " << r.knowmem_f.value_or(NAN) << " " << r.privleak << " "
        << (qa ? r.knowmem_r.value_or(NAN) : 100 * r.ma_retain.value_or(NAN)) << "\n";
  }
  LETHE_RETURN_IF_ERROR(write_file_atomic(dir + "/comparison.dat", dat.str()));
  // KnowMem-forget's panel where it was measured (a corpus can have retain QA and no forget QA).
  const bool know_f = qa && rows.front().knowmem_f.has_value();
  gp << "# gnuplot comparison.gnuplot  (writes comparison.png)\n"
        "set terminal pngcairo size " << (know_f ? 1200 : 620) << ",520 font 'sans,11'\n"
        "set output 'comparison.png'\nset termoption noenhanced\n"
        "set multiplot layout 1," << (know_f ? 2 : 1) << " title 'Forgetting vs utility (the retrained model is the target to hit)'\n"
        "set grid\nset key off\nset xlabel '" << (qa ? "KnowMem on retain QA" : "retain MA × 100") << " (utility, higher is better)'\n"
        "set offsets graph 0.08, graph 0.08, graph 0.08, graph 0.08\n"
        "pt(n) = n eq 'retrain' ? 3 : (n eq 'target' ? 2 : 7)\n"
        "lc(n) = n eq 'retrain' ? 0x2ca02c : (n eq 'target' ? 0xd62728 : 0x1f77b4)\n";
  for (const auto& [col, label] : {std::pair{2, "VerbMem on forget passages (lower = forgotten)"},
                                   std::pair{3, "KnowMem on forget QA (lower = forgotten)"}}) {
    if (col == 3 && !know_f) continue;
    gp << "set ylabel '" << label << "'\n"
       << "plot 'comparison.dat' using 5:" << col << ":(pt(strcol(1))):(lc(strcol(1))) with points pt variable "
       << "lc rgb variable ps 2.2, '' using 5:" << col << ":1 with labels offset char 1.2,0.8 left\n";
  }
  gp << "unset multiplot\n";
  LETHE_RETURN_IF_ERROR(write_file_atomic(dir + "/comparison.gnuplot", gp.str()));
  return draw_gnuplot(dir, "comparison.gnuplot");
}

// Note [Trajectories]: each method's path through the forgetting-vs-utility plane, one point per
// evaluated cycle (metrics.jsonl), starting at the target. Utility is KnowMem on retain QA where the
// corpus has QA, else retain MA × 100 (what every corpus measures); forgetting is VerbMem and, with
// QA, KnowMem on forget QA.
struct Point {
  std::string label;  // "target", or "r<request>c<cycle>"
  double utility = 0, verbmem = 0;
  std::optional<double> knowmem_f;
};

std::optional<Point> point_of(const json& m, bool qa, std::string label) {
  const char* utility = qa ? "knowmem_retain" : "ma_retain";
  if (!m.contains("verbmem_forget") || !m.contains(utility)) return std::nullopt;  // a cycle not evaluated
  Point p{std::move(label), m[utility].get<double>() * (qa ? 1.0 : 100.0), m["verbmem_forget"].get<double>(), std::nullopt};
  if (m.contains("knowmem_forget")) p.knowmem_f = m["knowmem_forget"].get<double>();
  return p;
}

Result<std::vector<Point>> trajectory(const std::string& path, const Point& start, bool qa) {
  std::ifstream in(path);
  if (!in) return Status::error(path + ": cannot open (every method's folder holds its per-cycle records)");
  std::vector<Point> out = {start};
  std::string line;
  for (int64_t n = 1; std::getline(in, line); ++n) {
    const json j = json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.contains("metrics")) return Status::error(fmt::format("{}:{}: not a cycle record", path, n));
    auto p = point_of(j["metrics"], qa, fmt::format("r{}c{}", j.value("request", 0), j.value("cycle", 0)));
    if (p) out.push_back(std::move(*p));
  }
  return out;
}

json points_json(const std::vector<Point>& pts) {
  json a = json::array();
  for (const Point& p : pts) a.push_back({{"at", p.label}, {"utility", p.utility}, {"verbmem_forget", p.verbmem}, {"knowmem_forget", or_null(p.knowmem_f)}});
  return a;
}

// trajectories.dat (gnuplot index 0: the target and retrain markers; index i: method i) and
// trajectories.gnuplot, one panel per method on common axes; drawn to trajectories.png.
Status write_trajectories(const std::string& dir, const std::vector<std::pair<std::string, std::vector<Point>>>& methods,
                          const Point& target, const Point& retrain, bool qa) {
  std::ostringstream dat, gp;
  auto line = [&](const Point& p) { dat << p.label << " " << p.utility << " " << p.verbmem << " " << p.knowmem_f.value_or(NAN) << "\n"; };
  dat << "# at utility verbmem_forget knowmem_forget  (utility: " << (qa ? "KnowMem-retain" : "retain MA × 100") << ")\n"
      << "# markers\n";
  line(target);
  line(retrain);
  for (const auto& [name, pts] : methods) {
    dat << "\n\n# " << name << "\n";
    for (const Point& p : pts) line(p);
  }
  LETHE_RETURN_IF_ERROR(write_file_atomic(dir + "/trajectories.dat", dat.str()));
  const size_t cols = std::min<size_t>(4, std::max<size_t>(1, methods.size())), rows = (methods.size() + cols - 1) / cols;
  const bool know_f = qa && target.knowmem_f.has_value();  // measured (retain QA without forget QA: not)
  gp << "# gnuplot trajectories.gnuplot  (writes trajectories.png)\n"
     << "set terminal pngcairo size " << 330 * cols << "," << 300 * std::max<size_t>(1, rows) + 40 << " font 'sans,9'\n"
     << "set output 'trajectories.png'\nset termoption noenhanced\n"
     << "set multiplot layout " << std::max<size_t>(1, rows) << "," << cols
     << " title 'Per-cycle trajectories from the target (red) toward the retrained model (green)'\n"
     << "set grid\nset xrange [0:105]\nset yrange [0:105]\n"
     << "set xlabel '" << (qa ? "KnowMem on retain QA" : "retain MA × 100") << " (utility)'\n"
     << "set ylabel 'forgetting metric (lower = forgotten)'\nset key bottom left\n";
  for (size_t i = 0; i < methods.size(); ++i) {
    gp << "set title '" << methods[i].first << "'\n"
       << "plot 'trajectories.dat' index " << i + 1 << " using 2:3 with linespoints pt 7 ps 0.7 lc rgb '#1f77b4' title 'VerbMem'";
    if (know_f) gp << ", '' index " << i + 1 << " using 2:4 with linespoints pt 5 ps 0.7 lc rgb '#ff7f0e' title 'KnowMem-f'";
    for (int col : {3, 4}) {
      if (col == 4 && !know_f) continue;
      gp << ", '' index 0 every ::0::0 using 2:" << col << " with points pt 5 ps 1.6 lc rgb '#d62728' notitle"
         << ", '' index 0 every ::1::1 using 2:" << col << " with points pt 9 ps 1.8 lc rgb '#2ca02c' notitle";
    }
    gp << "\n";
  }
  gp << "unset multiplot\n";
  LETHE_RETURN_IF_ERROR(write_file_atomic(dir + "/trajectories.gnuplot", gp.str()));
  return draw_gnuplot(dir, "trajectories.gnuplot");
}

// Note [Phase profile]: one line per model with a profile, one column per part.
std::string profile_table(const std::vector<Row>& rows) {
  std::vector<std::string> parts;
  for (const Row& r : rows) {
    for (const auto& [part, v] : r.profile.items()) {
      if (part != "other" && part != "total" && std::find(parts.begin(), parts.end(), part) == parts.end()) parts.push_back(part);
    }
  }
  std::sort(parts.begin(), parts.end());
  parts.push_back("other");
  parts.push_back("total");
  std::string t = fmt::format("{:<10}", "wall s");
  for (const std::string& part : parts) t += fmt::format(" {:>13}", part);
  t += "\n";
  for (const Row& r : rows) {
    if (r.profile.is_null()) continue;
    const json& p = r.profile;
    t += fmt::format("{:<10}", r.name);
    for (const std::string& part : parts) t += p.contains(part) ? fmt::format(" {:>13.1f}", p[part].get<double>()) : fmt::format(" {:>13}", "");
    t += "\n";
  }
  return t;
}

}  // namespace

Status run_compare(const std::string& dir, bool print) {
  if (!writes_reports()) return Status::ok();  // under mpirun, rank 0 reports
  if (const std::vector<std::string> seeds = seed_dirs(dir); !seeds.empty()) {  // Note [Seeds]
    for (const std::string& s : seeds) LETHE_RETURN_IF_ERROR(run_compare(s, print));
    return compare_seeds(dir, seeds, print);
  }
  const std::string retrain_path = dir + "/retrain/summary.json", target_path = dir + "/target/summary.json";
  LETHE_ASSIGN_OR_RETURN(json retrain_json, read_json(retrain_path));
  Reference ref;
  ref.auc = retrain_json["metrics"].value("mink_auc", 0.5);
  if (retrain_json.contains("truth_ratios_forget")) ref.truth_ratios = retrain_json["truth_ratios_forget"].get<std::vector<double>>();
  const double auc_retrain = ref.auc;
  LETHE_ASSIGN_OR_RETURN(json target_json, read_json(target_path));
  LETHE_ASSIGN_OR_RETURN(Row target, read_row(target_path, "target", ref));
  LETHE_ASSIGN_OR_RETURN(Row retrain, read_row(retrain_path, "retrain", ref));
  std::vector<Row> rows = {target, retrain};
  std::vector<std::string> methods;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string n = e.path().filename().string();
    if (n.rfind("unlearn-", 0) == 0 && fs::exists(e.path() / "summary.json")) methods.push_back(n);
  }
  std::sort(methods.begin(), methods.end());
  for (const std::string& m : methods) {
    LETHE_ASSIGN_OR_RETURN(Row r, read_row(dir + "/" + m + "/summary.json", m.substr(8), ref));
    r.speedup = retrain.seconds / std::max(r.seconds, 1e-9);
    r.flops_ratio = retrain.flops / std::max(r.flops, 1.0);
    rows.push_back(r);
  }
  for (Row& r : rows) {
    r.gap = retrain_gap(gap_point(r), gap_point(target), gap_point(retrain));
    r.forget_gap = forget_gap(gap_point(r), gap_point(target), gap_point(retrain));
    r.collapsed = r.speedup > 0 && !(r.ppl <= kCollapseFactor * target.ppl);
  }
  const Row* best = nullptr;
  for (const Row& r : rows) {
    if (r.speedup > 0 && !r.collapsed && (!best || r.gap < best->gap)) best = &r;
  }
  std::string out = table(rows);
  if (!target.knowmem_f || !target.knowmem_r) {
    out += target.knowmem_r ? "\nKnowMem-forget: not measured (the corpus has no forget QA probes); the gap leaves it out\n"
                            : "\nKnowMem: not measured (the corpus has no retain QA probes); utility is retain MA (MA-r) and "
                              "holdout perplexity (PPL): the gap uses retain MA against the retrained model's, and a model "
                              "above the collapse guard's perplexity is never named closest\n";
  }
  if (target.toxicity) out += toxicity_lines(rows);
  if (retrain.forget_quality) {
    out += "\nFQ: TOFU's forget quality, the KS-test p-value of the model's per-item forget truth ratios against the "
           "retrained model's (1 = indistinguishable); MU: TOFU's model utility on retain QA\n";
  }
  std::string collapsed;
  for (const Row& r : rows) if (r.collapsed) collapsed += (collapsed.empty() ? "" : ", ") + r.name;
  if (!collapsed.empty()) {
    out += fmt::format("\ncollapsed (holdout perplexity above {:g}× the target's {:.2f}; never named closest): {}\n",
                       kCollapseFactor, target.ppl, collapsed);
  }
  std::string selected;
  for (const Row& r : rows) {
    if (r.speedup > 0 && r.select != "last") selected += fmt::format("{}{}: {}", selected.empty() ? "" : ", ", r.name, r.select);
  }
  if (!selected.empty()) {
    out += "\nselected cycles (unlearn.select; oracle peeks at the retrained model, holdout does not): " + selected + "\n";
  }
  // One seed has no spread to tell a real target–retrain difference from noise (Note [Gap beyond the
  // spread], launch/seeds.cc): a difference under 5 points (of 100) is flagged.
  for (const auto& [name, t, r] : {std::tuple{"VerbMem", std::optional<double>(target.verbmem), std::optional<double>(retrain.verbmem)},
                                   {"KnowMem-forget", target.knowmem_f, retrain.knowmem_f}}) {
    if (t && r && std::abs(*t - *r) < 5) {
      out += fmt::format("\n{}: the target and the retrained model differ by only {:.1f} points, and the gap divides by that "
                         "difference; experiment.seeds tells whether it is beyond the seeds' spread\n", name, std::abs(*t - *r));
    }
  }
  out += "\none seed: no spread is known (experiment.seeds repeats the run over more)\n";
  if (best) {
    out += fmt::format("\nclosest to the retrained model on all four MUSE metrics at once: {} (largest normalised gap "
                       "{:.2f}; 0 = retrain, 1 = target), {:.1f}× faster than retraining{}\n",
                       best->name, best->gap, best->speedup,
                       best->select == "oracle" ? " — but its cycle was chosen by peeking at the retrained model" : "");
  }
  if (print) std::cout << "\n" << out << std::flush;
  if (std::any_of(rows.begin(), rows.end(), [](const Row& r) { return !r.profile.is_null(); })) {
    const std::string prof = profile_table(rows);
    if (print) std::cout << "\nwhere the time went (wall seconds per phase; profile.txt):\n" << prof << std::flush;
    LETHE_RETURN_IF_ERROR(write_file_atomic(dir + "/profile.txt", prof));
  }
  json j = {{"run", dir}, {"auc_retrain", auc_retrain}, {"models", json::array()}};
  for (const Row& r : rows) j["models"].push_back(row_json(r));
  if (best) j["closest_to_retrain"] = best->name;
  j["collapse_factor"] = kCollapseFactor;
  // Trajectories (Note [Trajectories]).
  const bool qa = target.knowmem_r.has_value();
  const auto start = point_of(target_json["metrics"], qa, "target"), end = point_of(retrain_json["metrics"], qa, "retrain");
  if (!start || !end) return Status::error(target_path + ", " + retrain_path + ": no verbmem_forget or retain utility metric");
  std::vector<std::pair<std::string, std::vector<Point>>> paths;
  j["trajectories"] = json::object();
  for (const std::string& m : methods) {
    LETHE_ASSIGN_OR_RETURN(std::vector<Point> pts, trajectory(dir + "/" + m + "/metrics.jsonl", *start, qa));
    j["trajectories"][m.substr(8)] = points_json(pts);
    paths.emplace_back(m.substr(8), std::move(pts));
  }
  j["trajectory_utility"] = qa ? "knowmem_retain" : "ma_retain × 100";
  LETHE_RETURN_IF_ERROR(write_json(dir + "/comparison.json", j));
  LETHE_RETURN_IF_ERROR(write_file_atomic(dir + "/comparison.txt", out));
  LETHE_RETURN_IF_ERROR(write_plot(dir, rows, qa));
  return write_trajectories(dir, paths, *start, *end, qa);
}

}  // namespace lethe
