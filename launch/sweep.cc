#include "launch/sweep.h"

#include <fmt/format.h>
#include <toml++/toml.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <iostream>
#include <optional>
#include <sstream>

#include "base/log.h"
#include "eval/memorization.h"
#include "eval/selection.h"
#include "launch/experiment.h"
#include "launch/seeds.h"
#include "launch/train_phase.h"
#include "launch/unlearn_phase.h"
#include "strategies/strategies.h"

namespace lethe {

namespace fs = std::filesystem;

Result<GridAxis> parse_grid(const std::string& arg) {
  const size_t eq = arg.find('=');
  GridAxis axis;
  axis.key = arg.substr(0, eq);
  const std::string name = "--grid " + axis.key;
  if (eq == std::string::npos || axis.key.empty()) return Status::error(name + ": expected key=[value, …]");
  toml::table parsed;
  try {
    parsed = toml::parse("v = " + arg.substr(eq + 1), name);
  } catch (const toml::parse_error& e) {
    return Status::error(name + ": expected a TOML array such as [1e-4, 3e-4] or [\"nll\", \"kl\"]: " +
                         std::string(e.description()));
  }
  const toml::array* values = parsed["v"].as_array();
  if (!values || values->empty()) return Status::error(name + ": expected a non-empty array of values, as [1e-4, 3e-4]");
  // Each value as written (3e-4 stays 3e-4), from its place in the text.
  const std::string text = "v = " + arg.substr(eq + 1);
  for (const toml::node& v : *values) {
    const toml::source_region& at = v.source();
    if (at.begin.line != 1 || at.end.line != 1) return Status::error(name + ": expected the array on one line");
    axis.values.push_back(text.substr(at.begin.column - 1, at.end.column - at.begin.column));
  }
  return axis;
}

Result<Shard> parse_shard(const std::string& text) {
  Shard s;
  char slash = 0, rest = 0;
  std::istringstream in(text);
  if (!(in >> s.index >> slash >> s.count) || slash != '/' || (in >> rest)) {
    return Status::error("--shard " + text + ": expected i/n, as 0/4");
  }
  if (s.count < 1 || s.index < 0 || s.index >= s.count) {
    return Status::error("--shard " + text + ": i must be in 0 … n − 1 and n at least 1 (shards 0/" +
                         std::to_string(std::max<int64_t>(s.count, 1)) + " … " + std::to_string(std::max<int64_t>(s.count, 1) - 1) +
                         "/" + std::to_string(std::max<int64_t>(s.count, 1)) + ")");
  }
  return s;
}

std::vector<size_t> shard_units(size_t units, const Shard& shard) {
  std::vector<size_t> mine;
  for (size_t i = static_cast<size_t>(shard.index); i < units; i += static_cast<size_t>(shard.count)) mine.push_back(i);
  return mine;
}

namespace {

// An axis as it applies to `method`: the [unlearn] key it sets, or "" when it is another method's.
std::string axis_key_for(const std::string& axis, const std::string& method) {
  const std::string rest = axis.substr(std::string("unlearn.").size());
  const size_t dot = rest.find('.');
  if (dot == std::string::npos) return rest;
  return rest.substr(0, dot) == method ? rest.substr(dot + 1) : "";
}

// The override that gives `method` the value: its section's key where a section may hold it.
std::string override_for(const std::string& method, const std::string& key, const std::string& value) {
  return (method_section_key(key) ? "unlearn." + method + "." : "unlearn.") + key + "=" + value;
}

// A folder name of settings: key=value joined by commas, quotes dropped, anything else unsafe
// replaced by '_'.
std::string point_name(const std::vector<std::pair<std::string, std::string>>& settings) {
  if (settings.empty()) return "default";
  std::string name;
  for (const auto& [key, value] : settings) {
    if (!name.empty()) name += ",";
    name += key + "=";
    for (char c : value) {
      if (c == '"' || c == '\'') continue;
      name += std::isalnum(static_cast<unsigned char>(c)) || std::string("._+-").find(c) != std::string::npos ? c : '_';
    }
  }
  return name;
}

Status check_axis(const GridAxis& axis, const std::vector<std::string>& methods) {
  const std::string name = "--grid " + axis.key;
  if (axis.key.rfind("unlearn.", 0) != 0) {
    return Status::error(name + ": a sweep varies [unlearn] keys only; every point shares one target and one retrained "
                                "model, which this key would change");
  }
  if (axis.key == "unlearn.methods") return Status::error(name + ": the methods are the sweep's other axis; list them in unlearn.methods");
  const std::string rest = axis.key.substr(8);
  if (const size_t dot = rest.find('.'); dot != std::string::npos) {
    const std::string method = rest.substr(0, dot);
    if (std::find(methods.begin(), methods.end(), method) == methods.end()) {
      std::string listed;
      for (const auto& m : methods) listed += " " + m;
      return Status::error(name + ": " + method + " is not among the sweep's methods (unlearn.methods:" + listed + ")");
    }
    if (!method_section_key(rest.substr(dot + 1))) {
      return Status::error(name + ": [unlearn." + method + "] cannot set " + rest.substr(dot + 1) +
                           " (a run-wide key: vary it as unlearn." + rest.substr(dot + 1) + ")");
    }
  }
  return Status::ok();
}

}  // namespace

Result<std::vector<SweepUnit>> sweep_units(const RunConfig& cfg, const std::string& config_path,
                                           const std::vector<std::string>& overrides, const std::vector<GridAxis>& grid) {
  const std::vector<std::string> methods = resolve_methods(cfg.unlearn.methods);
  for (size_t a = 0; a < grid.size(); ++a) {
    LETHE_RETURN_IF_ERROR(check_axis(grid[a], methods));
    for (size_t b = 0; b < a; ++b) {
      for (const std::string& m : methods) {
        const std::string k = axis_key_for(grid[a].key, m);
        if (!k.empty() && k == axis_key_for(grid[b].key, m)) {
          return Status::error("--grid " + grid[a].key + ": --grid " + grid[b].key + " already varies " + m + "'s " + k);
        }
      }
    }
  }
  const std::vector<RunConfig> shared = seed_runs(cfg);
  std::vector<SweepUnit> units;
  for (const std::string& method : methods) {
    std::vector<std::pair<std::string, const GridAxis*>> axes;  // {key for this method, axis}
    for (const GridAxis& a : grid) {
      if (std::string k = axis_key_for(a.key, method); !k.empty()) axes.emplace_back(std::move(k), &a);
    }
    // Each value checked with this method's settings, the error named by its axis.
    for (const auto& [key, axis] : axes) {
      for (const std::string& v : axis->values) {
        std::vector<std::string> o = overrides;
        o.push_back(override_for(method, key, v));
        if (auto c = load_config(config_path, o); !c) return Status::error("--grid " + axis->key + ": value " + v + ": " + c.status().message());
      }
    }
    std::vector<size_t> at(axes.size(), 0);  // the point's value index per axis, last fastest
    for (bool more = true; more;) {
      SweepUnit u;
      u.method = method;
      std::vector<std::string> o = overrides;
      for (size_t a = 0; a < axes.size(); ++a) {
        u.settings.emplace_back(axes[a].first, axes[a].second->values[at[a]]);
        o.push_back(override_for(method, axes[a].first, axes[a].second->values[at[a]]));
      }
      o.push_back("unlearn.methods=[\"" + method + "\"]");
      u.point = method + "/" + point_name(u.settings);
      LETHE_ASSIGN_OR_RETURN(RunConfig point_cfg, load_config(config_path, o));
      point_cfg.run.dir = cfg.run.dir + "/sweep/" + u.point;
      const std::vector<RunConfig> seeds = seed_runs(point_cfg);
      for (size_t s = 0; s < seeds.size(); ++s) {
        u.cfg = seeds[s];
        u.models = shared[s].run.dir;
        units.push_back(u);
      }
      more = false;
      for (size_t a = axes.size(); a-- > 0;) {
        if (++at[a] < axes[a].second->values.size()) {
          more = true;
          break;
        }
        at[a] = 0;
      }
    }
  }
  return units;
}

namespace {

std::string summary_of(const SweepUnit& u) { return u.cfg.run.dir + "/unlearn-" + u.method + "/summary.json"; }
bool finished(const SweepUnit& u) { return fs::exists(summary_of(u)); }

// The unit's links to the shared models: target/, retrain/ and (when there is one) tokenizer.model.
Status link_models(const SweepUnit& u) {
  fs::create_directories(u.cfg.run.dir);
  for (const char* name : {"target", "retrain", "tokenizer.model"}) {
    const fs::path shared = fs::path(u.models) / name;
    if (fs::exists(shared)) LETHE_RETURN_IF_ERROR(link_shared(shared.string(), u.cfg.run.dir + "/" + name));
  }
  return Status::ok();
}

}  // namespace

Status run_sweep(const RunConfig& cfg, const std::vector<SweepUnit>& units, const Shard& shard, bool prepare) {
  if (prepare && shard.count > 1) return Status::error("--prepare trains the models every shard shares: run it once, without --shard");
  const std::vector<size_t> mine = shard_units(units.size(), shard);
  const std::string which = shard.count > 1 ? fmt::format("shard {}/{}", shard.index, shard.count) : "sweep";
  log().info("{}: {} of the sweep's {} sub-runs (methods × grid points × seeds; as a Slurm array: --array=0-{})", which,
             mine.size(), units.size(), units.size() - 1);
  for (const RunConfig& run : seed_runs(cfg)) {
    const bool have = fs::exists(run.run.dir + "/target/summary.json") && fs::exists(run.run.dir + "/retrain/summary.json");
    if (have) continue;
    if (shard.count > 1) {
      return Status::error(fmt::format("--shard {}/{}: {}/target and {}/retrain must have finished before the shards run "
                                       "(shards may run at once, and share them): run `lethe sweep` with the same arguments and "
                                       "--prepare first, as launch/lethe-sweep.sbatch does",
                                       shard.index, shard.count, run.run.dir, run.run.dir));
    }
    LETHE_ASSIGN_OR_RETURN(const bool trained, train_models(run, /*resume=*/true));
    if (!trained) return Status::ok();  // stopped: rerun to continue
  }
  if (prepare) {
    log().info("sweep: the shared models are ready; run the {} sub-runs (--shard i/n)", units.size());
    return Status::ok();
  }
  for (size_t i : mine) {
    const SweepUnit& u = units[i];
    const std::string name = u.cfg.run.dir.substr(cfg.run.dir.size() + 1);  // sweep/<method>/<point>[/seed-<s>]
    if (finished(u)) {
      log().info("{}: {} has finished: skipped", which, name);
      continue;
    }
    log().info("{}: running {} ({} of {})", which, name, i + 1, units.size());
    LETHE_RETURN_IF_ERROR(link_models(u));
    LETHE_RETURN_IF_ERROR(run_unlearn_phase(u.cfg, {/*resume=*/true, 0}));
    if (!finished(u)) return Status::ok();  // stopped by a signal: rerun to continue
  }
  const auto done = std::count_if(units.begin(), units.end(), finished);
  if (done < static_cast<std::ptrdiff_t>(units.size())) {
    log().info("{}: {} of {} sub-runs have finished; the report is written once all have (rerun without --shard to write "
               "it)", which, done, units.size());
    return Status::ok();
  }
  return sweep_report(cfg, units);
}

namespace {

// A comparison.json cell: a number (one seed) or {mean, std, values} (seeds); nullopt when absent.
std::optional<double> mean_of(const json& row, const char* key) {
  if (!row.contains(key)) return std::nullopt;
  const json& v = row[key];
  if (v.is_number()) return v.get<double>();
  if (v.is_object() && v.contains("mean")) return v["mean"].get<double>();
  return std::nullopt;
}
double std_of(const json& row, const char* key) {
  return row.contains(key) && row[key].is_object() ? row[key].value("std", 0.0) : 0.0;
}

// The utility axis of the front: retain KnowMem where the corpus has QA, else retain MA × 100.
double utility_of(const json& row, bool qa) {
  return qa ? mean_of(row, "knowmem_retain").value_or(0) : 100 * mean_of(row, "ma_retain").value_or(0);
}

const json* model_row(const json& cmp, const std::string& name) {
  for (const json& r : cmp["models"]) {
    if (r["model"] == name) return &r;
  }
  return nullptr;
}

// One grid point of one method over its seeds.
struct PointResult {
  const SweepUnit* unit = nullptr;  // its first seed's
  json row;                         // the method's row of the point's comparison.json
  std::optional<double> holdout;    // mean holdout score over the seeds; nullopt when any collapsed
  double forget = 0, utility = 0, gap = 0, seconds = 0;
  bool collapsed = false, front = false;
};

Result<Metrics> metrics_of(const std::string& summary) {
  LETHE_ASSIGN_OR_RETURN(json j, read_json(summary));
  if (!j.contains("metrics")) return Status::error(summary + ": no \"metrics\"");
  Metrics m;
  for (const auto& [k, v] : j["metrics"].items()) {
    if (v.is_number()) m[k] = v.get<double>();
  }
  return m;
}

std::string settings_text(const SweepUnit& u) {
  std::string s;
  for (const auto& [k, v] : u.settings) s += (s.empty() ? "" : " ") + k + "=" + v;
  return s.empty() ? "(defaults)" : s;
}

}  // namespace

Status sweep_report(const RunConfig& cfg, const std::vector<SweepUnit>& units) {
  if (!writes_reports()) return Status::ok();
  const std::string dir = cfg.run.dir + "/sweep";
  std::vector<PointResult> points;
  json reference;  // the target and retrain rows (the same in every point)
  for (size_t i = 0; i < units.size();) {
    size_t end = i;
    while (end < units.size() && units[end].point == units[i].point) ++end;
    const SweepUnit& u = units[i];
    const std::string point_dir = dir + "/" + u.point;
    LETHE_RETURN_IF_ERROR(run_compare(point_dir, /*print=*/false));
    LETHE_ASSIGN_OR_RETURN(json cmp, read_json(point_dir + "/comparison.json"));
    const json* row = model_row(cmp, u.method);
    if (!row) return Status::error(point_dir + "/comparison.json: no row for " + u.method);
    if (reference.is_null()) reference = {{"target", *model_row(cmp, "target")}, {"retrain", *model_row(cmp, "retrain")}};
    PointResult p;
    p.unit = &u;
    p.row = *row;
    p.forget = mean_of(*row, "forget_gap").value_or(1);
    p.gap = mean_of(*row, "gap_to_retrain").value_or(1);
    p.seconds = mean_of(*row, "seconds").value_or(0);
    p.collapsed = row->value("collapsed", false) || row->value("collapsed_seeds", 0) > 0;
    // The retrain-free score of the point's final model (Note [Checkpoint selection]), over its seeds.
    double sum = 0;
    bool scored = true;
    for (size_t s = i; s < end; ++s) {
      LETHE_ASSIGN_OR_RETURN(Metrics m, metrics_of(summary_of(units[s])));
      LETHE_ASSIGN_OR_RETURN(Metrics start, metrics_of(units[s].cfg.run.dir + "/target/summary.json"));
      const auto h = holdout_score(m, start);
      scored = scored && h.has_value();
      sum += h.value_or(0);
    }
    if (scored) p.holdout = sum / static_cast<double>(end - i);
    points.push_back(std::move(p));
    i = end;
  }
  const size_t n_seeds = seed_runs(cfg).size();
  const bool qa = mean_of(reference["target"], "knowmem_retain").has_value();
  for (PointResult& p : points) p.utility = utility_of(p.row, qa);
  const double retrain_s = mean_of(reference["retrain"], "seconds").value_or(0);
  // Note [Pareto front]: per method, over its points that did not collapse.
  std::vector<std::string> methods;
  for (const PointResult& p : points) {
    if (std::find(methods.begin(), methods.end(), p.unit->method) == methods.end()) methods.push_back(p.unit->method);
  }
  for (const std::string& m : methods) {
    std::vector<PointResult*> mine;
    std::vector<FrontPoint> plane;
    for (PointResult& p : points) {
      if (p.unit->method == m && !p.collapsed) mine.push_back(&p), plane.push_back({p.forget, p.utility});
    }
    const std::vector<bool> on = pareto_front(plane);
    for (size_t k = 0; k < mine.size(); ++k) mine[k]->front = on[k];
  }

  const char* utility_name = qa ? "KnowMem-r" : "MA-r×100";
  std::string out = fmt::format("sweep of {} points ({} method{}; {} seed{}), {} unlearning runs, in {}\n\n", points.size(),
                                methods.size(), methods.size() > 1 ? "s" : "", n_seeds, n_seeds > 1 ? "s: cells are means" : "",
                                units.size(), dir);
  out += fmt::format("{:<13} {:<34} {:>7} {:>9} {:>8} {:>9} {:>8} {:>7} {:>7} {:>7} {:>12} {:>5}\n", "method", "settings",
                     "VerbMem", qa ? "KnowMem-f" : "", "PrivLeak", utility_name, "PPL", "time s", "holdout", "gap-f", "gap", "front");
  for (const PointResult& p : points) {
    const json& r = p.row;
    out += fmt::format("{:<13} {:<34} {:>7.1f} {:>9} {:>8.1f} {:>9.1f} {:>8.2f} {:>7.1f} {:>7} {:>7.2f} {:>12} {:>5}\n", p.unit->method,
                       settings_text(*p.unit), mean_of(r, "verbmem_forget").value_or(0),
                       qa ? fmt::format("{:.1f}", mean_of(r, "knowmem_forget").value_or(0)) : "", mean_of(r, "privleak").value_or(0),
                       p.utility, mean_of(r, "ppl_holdout").value_or(0), p.seconds,
                       p.holdout ? fmt::format("{:.3f}", *p.holdout) : "collapsed", p.forget,
                       n_seeds > 1 ? fmt::format("{:.2f} ± {:.2f}", p.gap, std_of(r, "gap_to_retrain")) : fmt::format("{:.2f}", p.gap),
                       p.front ? "*" : "");
  }
  for (const char* name : {"target", "retrain"}) {
    const json& r = reference[name];
    out += fmt::format("{:<13} {:<34} {:>7.1f} {:>9} {:>8.1f} {:>9.1f} {:>8.2f} {:>7.1f}\n", name, "", mean_of(r, "verbmem_forget").value_or(0),
                       qa ? fmt::format("{:.1f}", mean_of(r, "knowmem_forget").value_or(0)) : "", mean_of(r, "privleak").value_or(0),
                       utility_of(r, qa),
                       mean_of(r, "ppl_holdout").value_or(0), mean_of(r, "seconds").value_or(0));
  }
  out += fmt::format("\nholdout: the retrain-free score of the final model (Note [Checkpoint selection]; lower is better); "
                     "gap-f: the gap's forget terms alone; front (*): on the method's Pareto front of gap-f (↓) against {} (↑)\n",
                     utility_name);

  // Per method: the retrain-free choice, the peeking one, and what the sweep cost.
  json j = {{"run", cfg.run.dir}, {"seeds", n_seeds}, {"utility", qa ? "knowmem_retain" : "ma_retain × 100"},
            {"retrain_seconds", retrain_s}, {"points", json::array()}, {"methods", json::object()}};
  double total_s = 0;
  for (const PointResult& p : points) {
    json settings = json::object();
    for (const auto& [k, v] : p.unit->settings) settings[k] = v;
    j["points"].push_back({{"method", p.unit->method}, {"point", p.unit->point}, {"settings", settings}, {"comparison", p.row},
                           {"holdout_score", p.holdout ? json(*p.holdout) : json(nullptr)}, {"forget_gap", p.forget},
                           {"utility", p.utility}, {"gap_to_retrain", p.gap}, {"collapsed", p.collapsed}, {"front", p.front}});
    total_s += p.seconds;
  }
  out += "\n";
  const PointResult* best_free = nullptr;
  for (const std::string& m : methods) {
    const PointResult *free = nullptr, *peek = nullptr;
    double seconds = 0;
    size_t k = 0;
    for (const PointResult& p : points) {
      if (p.unit->method != m) continue;
      ++k;
      seconds += p.seconds;
      if (p.holdout && (!free || *p.holdout < *free->holdout)) free = &p;
      if (!p.collapsed && (!peek || p.gap < peek->gap)) peek = &p;
    }
    json mj = {{"points", k}, {"seconds", seconds}, {"speedup_of_sweep", seconds > 0 ? retrain_s / seconds : 0.0}};
    if (free) {
      out += fmt::format("{}: chosen retrain-free (lowest holdout score) among {} points: {}: gap {:.2f}, {:.1f}× faster than "
                         "retraining for its own run, {:.2f}× for the {} runs of the sweep ({:.1f} s)\n",
                         m, k, settings_text(*free->unit), free->gap, retrain_s / std::max(free->seconds, 1e-9),
                         retrain_s / std::max(seconds, 1e-9), k, seconds);
      mj["chosen_holdout"] = free->unit->point;
      if (!best_free || free->gap < best_free->gap) best_free = free;
    } else {
      out += fmt::format("{}: every one of its {} points collapsed\n", m, k);
    }
    if (peek) {
      out += fmt::format("{:<{}}  lowest gap (peeking at the retrained model): {}: gap {:.2f}\n", "", m.size(), settings_text(*peek->unit), peek->gap);
      mj["lowest_gap_peeking"] = peek->unit->point;
    }
    j["methods"][m] = mj;
  }
  if (best_free) {
    out += fmt::format("\nclosest to the retrained model with settings chosen retrain-free: {} {} (gap {:.2f}{})\n",
                       best_free->unit->method, settings_text(*best_free->unit), best_free->gap,
                       n_seeds > 1 ? fmt::format(" ± {:.2f} over {} seeds", std_of(best_free->row, "gap_to_retrain"), n_seeds)
                                   : ", one seed: no spread is known");
    j["closest_retrain_free"] = best_free->unit->point;
  }
  out += fmt::format("\nthe sweep's cost: {} unlearning runs, {:.1f} s per seed in all, against {:.1f} s for one retraining "
                     "({:.2f}×); the best of k points is k runs, so its honest speedup divides by k\n",
                     units.size() / n_seeds, total_s, retrain_s, retrain_s / std::max(total_s, 1e-9));
  j["seconds_per_seed"] = total_s;
  std::cout << "\n" << out << std::flush;

  // The fronts' plot: index 0 the target and retrain markers; then per method its points, and its front.
  std::ostringstream dat, gp;
  dat << "# name forget_gap utility ('?': a block with no point)\n";
  for (const char* name : {"target", "retrain"}) {
    const json& r = reference[name];
    dat << name << " " << mean_of(r, "forget_gap").value_or(std::string(name) == "target" ? 1.0 : 0.0) << " " << utility_of(r, qa)
        << "\n";
  }
  gp << "# gnuplot sweep.gnuplot  (writes sweep.png)\nset terminal pngcairo size 900,650\nset output 'sweep.png'\n"
     << "set termoption noenhanced\nset datafile missing '?'\nset title 'Every point of each method and its Pareto front (the retrained model: the target to hit)'\n"
     << "set xlabel 'forget gap to the retrained model (0 = retrain, 1 = target)'\nset ylabel '" << utility_name << " (retain utility)'\n"
     << "set key outside right\nset grid\nplot 'sweep.dat' index 0 every ::0::0 using 2:3 with points pt 9 ps 2.5 lc rgb '#d62728' title 'target', \\\n"
     << "     'sweep.dat' index 0 every ::1::1 using 2:3 with points pt 5 ps 2.5 lc rgb '#2ca02c' title 'retrain'";
  for (size_t i = 0; i < methods.size(); ++i) {
    dat << "\n\n# " << methods[i] << ": points\n";
    std::vector<const PointResult*> front;
    for (const PointResult& p : points) {
      if (p.unit->method != methods[i] || p.collapsed) continue;
      dat << p.unit->method << " " << p.forget << " " << p.utility << "\n";
      if (p.front) front.push_back(&p);
    }
    if (front.empty()) dat << methods[i] << " ? ?\n";
    std::sort(front.begin(), front.end(), [](auto* a, auto* b) { return a->forget < b->forget; });
    dat << "\n\n# " << methods[i] << ": front\n";
    for (const PointResult* p : front) dat << p->unit->method << " " << p->forget << " " << p->utility << "\n";
    if (front.empty()) dat << methods[i] << " ? ?\n";
    gp << ", \\\n     'sweep.dat' index " << 2 * i + 1 << " using 2:3 with points pt 7 ps 0.8 lc " << i + 1 << " title '"
       << methods[i] << "', \\\n     'sweep.dat' index " << 2 * i + 2 << " using 2:3 with lines lw 2 lc " << i + 1 << " notitle";
  }
  gp << "\n";
  LETHE_RETURN_IF_ERROR(write_json(dir + "/sweep.json", j));
  LETHE_RETURN_IF_ERROR(write_file_atomic(dir + "/sweep.txt", out));
  LETHE_RETURN_IF_ERROR(write_file_atomic(dir + "/sweep.dat", dat.str()));
  LETHE_RETURN_IF_ERROR(write_file_atomic(dir + "/sweep.gnuplot", gp.str()));
  return draw_gnuplot(dir, "sweep.gnuplot");
}

}  // namespace lethe
