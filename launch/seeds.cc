#include "launch/seeds.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <map>
#include <optional>

#include "io/atomic_file.h"
#include "eval/selection.h"
#include "launch/experiment.h"

namespace lethe {

namespace fs = std::filesystem;

std::vector<RunConfig> seed_runs(const RunConfig& cfg) {
  if (cfg.experiment.seeds <= 1) return {cfg};
  std::vector<RunConfig> runs;
  for (int64_t k = 0; k < cfg.experiment.seeds; ++k) {
    RunConfig c = cfg;
    c.run.seed = cfg.run.seed + k;
    c.run.dir = cfg.run.dir + "/seed-" + std::to_string(c.run.seed);
    c.experiment.seeds = 1;
    runs.push_back(std::move(c));
  }
  return runs;
}

std::vector<std::string> seed_dirs(const std::string& dir) {
  std::vector<std::pair<int64_t, std::string>> found;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string n = e.path().filename().string();
    if (n.rfind("seed-", 0) != 0 || !fs::exists(e.path() / "target" / "summary.json")) continue;
    const std::string digits = n.substr(5);
    if (digits.empty() || !std::all_of(digits.begin(), digits.end(), ::isdigit)) continue;
    found.emplace_back(std::stoll(digits), e.path().string());
  }
  std::sort(found.begin(), found.end());
  std::vector<std::string> dirs;
  for (auto& [seed, path] : found) dirs.push_back(path);
  return dirs;
}

Spread spread(const std::vector<double>& values) {
  Spread s;
  s.n = values.size();
  if (values.empty()) return s;
  for (double v : values) s.mean += v;
  s.mean /= static_cast<double>(s.n);
  if (s.n < 2) return s;
  double ss = 0;
  for (double v : values) ss += (v - s.mean) * (v - s.mean);
  s.std = std::sqrt(ss / static_cast<double>(s.n - 1));
  return s;
}

namespace {

// The columns of the aggregate table: comparison.json's key, its header, decimals, and a scale.
struct Column {
  const char* key;
  const char* header;
  int decimals;
  double scale = 1;
  bool table = true;  // false: in comparison.json only
};
const Column kColumns[] = {{"verbmem_forget", "VerbMem", 1},   {"knowmem_forget", "KnowMem-f", 1},
                           {"privleak", "PrivLeak", 1},        {"knowmem_retain", "KnowMem-r", 1},
                           {"ma_retain", "MA-r", 3},
                           {"forget_quality", "FQ", 3},        {"model_utility", "MU", 3},
                           {"ppl_holdout", "PPL", 2},          {"seconds", "time s", 1},
                           {"flops", "TFLOP", 3, 1e-12},       {"speedup_vs_retrain", "speedup", 1},
                           {"gap_to_retrain", "gap", 2},
                           {"forget_gap", "gap-f", 2, 1, false}};

// One model over the seeds: each column's values (null where a seed did not measure it).
struct SeedRows {
  std::string name;
  std::map<std::string, std::vector<double>> values;
  int64_t seeds = 0, collapsed = 0;
  bool peeking = false;
  bool method() const { return name != "target" && name != "retrain"; }
};

const json* row_of(const json& cmp, const std::string& model) {
  for (const json& row : cmp["models"]) {
    if (row["model"] == model) return &row;
  }
  return nullptr;
}

std::optional<double> number(const json& row, const char* key) {
  return row.contains(key) && row[key].is_number() ? std::optional<double>(row[key].get<double>()) : std::nullopt;
}

// Note [Gap beyond the spread]: the forget metrics of the gap (VerbMem, KnowMem-forget) are
// distances divided by the target–retrain difference. Where that difference is within the seeds'
// spread (|mean target − mean retrain| ≤ std target + std retrain), it is noise, and dividing by it
// gives gaps of any size; the aggregate's gap leaves such a metric out and says so.
std::vector<std::string> unseparated_forget_metrics(const std::vector<json>& per_seed) {
  std::vector<std::string> out;
  if (per_seed.size() < 2) return out;
  for (const char* key : {"verbmem_forget", "knowmem_forget"}) {
    std::vector<double> t, r;
    for (const json& cmp : per_seed) {
      const json *target = row_of(cmp, "target"), *retrain = row_of(cmp, "retrain");
      if (!target || !retrain) continue;
      if (auto v = number(*target, key)) t.push_back(*v);
      if (auto v = number(*retrain, key)) r.push_back(*v);
    }
    if (t.size() < 2 || r.size() < 2) continue;
    const Spread st = spread(t), sr = spread(r);
    if (std::abs(st.mean - sr.mean) <= st.std + sr.std) out.push_back(key);
  }
  return out;
}

// A row's gap to the retrained model with the metrics in `left_out` taken out (Note [Closest to
// retrain]): an absent KnowMem-forget is left out by retrain_gap, and a VerbMem equal in all three
// points is a distance of 0.
// Returns {the gap, its forget terms alone}.
std::pair<double, double> gap_without(const json& row, const json& target, const json& retrain,
                                      const std::vector<std::string>& left_out) {
  const bool verbmem = std::find(left_out.begin(), left_out.end(), "verbmem_forget") == left_out.end();
  const bool knowmem = std::find(left_out.begin(), left_out.end(), "knowmem_forget") == left_out.end();
  auto point = [&](const json& x) {
    return GapPoint{verbmem ? x["verbmem_forget"].get<double>() : 0.0, x["privleak"].get<double>(),
                    knowmem ? number(x, "knowmem_forget") : std::nullopt, number(x, "knowmem_retain"), number(x, "ma_retain")};
  };
  return {retrain_gap(point(row), point(target), point(retrain)), forget_gap(point(row), point(target), point(retrain))};
}

}  // namespace

Status compare_seeds(const std::string& dir, const std::vector<std::string>& seeds, bool print) {
  std::vector<json> per_seed, seed_list;
  for (const std::string& s : seeds) {
    LETHE_ASSIGN_OR_RETURN(json cmp, read_json(s + "/comparison.json"));
    per_seed.push_back(std::move(cmp));
    seed_list.push_back(fs::path(s).filename().string());
  }
  const std::vector<std::string> left_out = unseparated_forget_metrics(per_seed);
  std::vector<SeedRows> models;
  for (const json& cmp : per_seed) {
    const json* target = row_of(cmp, "target");
    const json* retrain = row_of(cmp, "retrain");
    for (json row : cmp["models"]) {
      const std::string name = row["model"];
      if (!left_out.empty() && target && retrain) {
        std::tie(row["gap_to_retrain"], row["forget_gap"]) = gap_without(row, *target, *retrain, left_out);
      }
      auto it = std::find_if(models.begin(), models.end(), [&](const SeedRows& m) { return m.name == name; });
      if (it == models.end()) it = models.insert(models.end(), SeedRows{name, {}});
      ++it->seeds;
      it->collapsed += row.value("collapsed", false);
      it->peeking |= row.value("peeking", false);
      for (const Column& c : kColumns) {
        if (row.contains(c.key) && row[c.key].is_number()) it->values[c.key].push_back(row[c.key]);
      }
    }
  }
  const size_t n = seeds.size();
  std::string out = fmt::format("{} seeds ({}); every cell is the mean ± sample standard deviation over them\n\n", n,
                                json(seed_list).dump());
  // Every measured column; retain MA only where there is no retain KnowMem (the single-seed table's rule).
  auto measured = [&](const char* key) {
    return std::any_of(models.begin(), models.end(), [&](const SeedRows& m) { return m.values.count(key) > 0; });
  };
  std::vector<const Column*> shown;
  for (const Column& c : kColumns) {
    if (c.table && measured(c.key) && !(std::string(c.key) == "ma_retain" && measured("knowmem_retain"))) shown.push_back(&c);
  }
  out += fmt::format("{:<10}", "model");
  for (const Column* c : shown) out += fmt::format(" {:>15}", c->header);
  out += "\n";
  json j = {{"run", dir}, {"seeds", seed_list}, {"models", json::array()}};
  std::string incomplete, collapsed;
  for (SeedRows& m : models) {
    out += fmt::format("{:<10}", m.name);
    json row = {{"model", m.name}, {"seeds", m.seeds}, {"collapsed_seeds", m.collapsed}, {"peeking", m.peeking}};
    for (const Column& c : kColumns) {
      const std::vector<double>& v = m.values[c.key];
      const Spread s = spread(v);
      if (measured(c.key)) row[c.key] = v.empty() ? json(nullptr) : json{{"mean", s.mean}, {"std", s.std}, {"values", v}};
      if (std::find(shown.begin(), shown.end(), &c) == shown.end()) continue;
      const bool cost_of_reference = !m.method() && std::string(c.key) == "speedup_vs_retrain";
      out += fmt::format(" {:>15}", cost_of_reference ? ""
                                    : v.empty()       ? "n/a"
                                                      : fmt::format("{:.{}f} ± {:.{}f}", s.mean * c.scale, c.decimals,
                                                                    s.std * c.scale, c.decimals));
    }
    out += "\n";
    j["models"].push_back(row);
    if (m.seeds < static_cast<int64_t>(n)) incomplete += fmt::format("{}{} ({} of {})", incomplete.empty() ? "" : ", ", m.name, m.seeds, n);
    if (m.collapsed > 0) collapsed += fmt::format("{}{} ({} of {})", collapsed.empty() ? "" : ", ", m.name, m.collapsed, m.seeds);
  }
  for (const std::string& key : left_out) {
    out += fmt::format("\n{}: the target and the retrained model do not differ beyond the spread of the seeds; the gap "
                       "leaves it out\n", key);
  }
  j["gap_leaves_out"] = left_out;
  if (!incomplete.empty()) out += "\nnot in every seed (the cells are over the seeds that have it): " + incomplete + "\n";
  if (!collapsed.empty()) out += "\ncollapsed in some seed (never named closest): " + collapsed + "\n";
  // Note [Closest beyond the spread].
  std::vector<std::pair<Spread, const SeedRows*>> ranked;
  for (const SeedRows& m : models) {
    auto gaps = m.values.find("gap_to_retrain");
    if (m.method() && m.collapsed == 0 && m.seeds == static_cast<int64_t>(n) && gaps != m.values.end()) {
      ranked.push_back({spread(gaps->second), &m});
    }
  }
  std::sort(ranked.begin(), ranked.end(), [](const auto& a, const auto& b) { return a.first.mean < b.first.mean; });
  auto gap_text = [](const std::pair<Spread, const SeedRows*>& r) {
    return fmt::format("{} (gap {:.2f} ± {:.2f}{})", r.second->name, r.first.mean, r.first.std,
                       r.second->peeking ? ", its cycles chosen by peeking at the retrained model" : "");
  };
  if (n < 2 && !ranked.empty()) {
    out += "\nclosest to the retrained model on all four MUSE metrics at once: " + gap_text(ranked[0]) +
           "; one seed: no spread is known\n";
    j["closest_to_retrain"] = ranked[0].second->name;
  } else if (ranked.size() == 1) {
    const bool alone = std::count_if(models.begin(), models.end(), [](const SeedRows& m) { return m.method(); }) == 1;
    out += "\nclosest to the retrained model on all four MUSE metrics at once: " + gap_text(ranked[0]) +
           (alone ? ", the only method run\n" : ", the only method in every seed that never collapsed\n");
    j["closest_to_retrain"] = ranked[0].second->name;
  } else if (ranked.size() >= 2) {
    const auto &best = ranked[0], &next = ranked[1];
    if (best.first.mean + best.first.std < next.first.mean - next.first.std) {
      out += fmt::format("\nclosest to the retrained model on all four MUSE metrics at once, beyond the spread over {} seeds: "
                         "{}; next {}\n", n, gap_text(best), gap_text(next));
      j["closest_to_retrain"] = best.second->name;
    } else {
      out += fmt::format("\nno method is closest beyond the spread over {} seeds: {} and {} are within one standard "
                         "deviation of each other\n", n, gap_text(best), gap_text(next));
    }
  }
  j["closest_rule"] = "mean gap + 1 std below the runner-up's mean gap - 1 std; never a method collapsed in any seed";
  if (print) std::cout << "\n" << out << std::flush;
  LETHE_RETURN_IF_ERROR(write_json(dir + "/comparison.json", j));
  return write_file_atomic(dir + "/comparison.txt", out);
}

}  // namespace lethe
