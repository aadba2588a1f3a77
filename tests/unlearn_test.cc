// Unlearning end to end on the tiny corpus: the target memorised the forget people and the
// retrained model did not; every method moves the forget metrics toward the retrained model while
// retain KnowMem stays within a stated bound; ICU's refinement and stop rule; a resumed unlearning
// run (two sequential requests) equals an uninterrupted one; bad input is a clear error.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>
#include <spdlog/sinks/ostream_sink.h>

#include "base/log.h"
#include "collectives/local_communicator.h"
#include "io/atomic_file.h"
#include "io/hdf5_store.h"
#include "io/safetensors.h"
#include "eval/memorization.h"
#include "eval/selection.h"
#include "eval/tofu.h"
#include "launch/convert.h"
#include "launch/experiment.h"
#include "launch/train_phase.h"
#include "launch/unlearn_phase.h"
#include "runtime/checkpoint.h"
#include "runtime/hf_checkpoint.h"
#include "runtime/unlearner.h"
#include "strategies/strategies.h"
#include "tests/helpers.h"

namespace lethe {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

using test::read_json;
using test::read_jsonl;

// The tiny corpus with QA renderings trained on (so KnowMem measures knowledge the target has).
RunConfig unlearn_config(const std::string& dir, std::vector<std::string> extra = {}) {
  RunConfig cfg = test::tiny_config(dir);
  extra.insert(extra.begin(), {"corpus.qa_in_training=true", "run.log_every=40", "unlearn.max_cycles=6",
                               "unlearn.lr=3e-4", "unlearn.keep_checkpoints=1"});
  for (const auto& o : extra) {
    auto c = parse_config(to_toml(cfg), "unlearn-test", {o});
    EXPECT_TRUE(c.is_ok()) << c.status().message();
    cfg = c.value();
  }
  return cfg;
}

class Unlearning : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(test::scratch_dir("unlearning"));
    RunConfig cfg = unlearn_config(*dir_);
    for (bool target : {true, false}) {
      Status s = run_train_phase(cfg, {target, false, 0});
      ASSERT_TRUE(s.is_ok()) << s.message();
    }
  }
  // A config for another folder that unlearns this suite's target with its tokenizer.
  static RunConfig elsewhere(const std::string& name, std::vector<std::string> extra) {
    const std::string ckpt = list_checkpoints(*dir_ + "/target/checkpoints").front();
    extra.push_back("unlearn.from=" + ckpt);
    extra.push_back("tokenizer.model=" + *dir_ + "/tokenizer.model");
    return unlearn_config(test::scratch_dir(name), extra);
  }
  static std::string* dir_;
};
std::string* Unlearning::dir_ = nullptr;

TEST_F(Unlearning, EveryMethodForgetsTowardTheRetrainedModelAndKeepsRetainKnowledge) {
  const json t = read_json(*dir_ + "/target/summary.json")["metrics"];
  const json r = read_json(*dir_ + "/retrain/summary.json")["metrics"];
  // The target memorised the forget people; the retrained model never saw them.
  EXPECT_GT(t["verbmem_forget"].get<double>(), r["verbmem_forget"].get<double>() + 30) << t << r;
  EXPECT_GT(t["knowmem_forget"].get<double>(), r["knowmem_forget"].get<double>() + 40) << t << r;
  EXPECT_GT(r["knowmem_retain"].get<double>(), 80);
  EXPECT_LT(t["mink_auc"].get<double>(), 0.2);  // forget texts look far more "member" than holdout

  // The shared rate, and for the later methods rates of their own (their shipped defaults, scaled
  // from the published ones, move the forget metrics less on this small corpus:
  // docs/strategies.md; UNDIAL's and AltPO's are their shipped ones, given here because the shared
  // rate the run gives ranks above shipped defaults).
  Status s = run_unlearn_phase(unlearn_config(*dir_, {"unlearn.lr=1e-4", "unlearn.methods=[\"all\"]", "unlearn.wga.lr=1e-4",
                                                      "unlearn.satimp.lr=1.5e-4", "unlearn.satimp.forget_weight=1.0",
                                                      "unlearn.ceu.lr=6e-5", "unlearn.pdu.lr=6e-5", "unlearn.rmu.lr=3e-3",
                                                      "unlearn.rmu.rmu_layer=1", "unlearn.idkdpo.lr=1e-4",
                                                      "unlearn.undial.lr=4e-4", "unlearn.altpo.lr=4e-5"}),
                               {});
  ASSERT_TRUE(s.is_ok()) << s.message();
  // Retain-KnowMem bound: methods whose every step has a retain term (GradDiff, KL, SimNPO, ICU)
  // keep ≥ 50 % of the target's; GA and NPO, whose loss is dominated by ascent, keep ≥ 10 %.
  // Holdout matching ascends until the forget NLL reaches the holdout's, here perplexity ≈ 65
  // against the forget set's ≈ 2.5 (a 12-person corpus generalises little): ≥ 30 %.
  const std::map<std::string, double> keep = {{"ga", 0.1},  {"graddiff", 0.5}, {"kl", 0.5},     {"npo", 0.1},
                                              {"simnpo", 0.5}, {"icu", 0.5},   {"wga", 0.1},    {"satimp", 0.5},
                                              {"undial", 0.1}, {"ceu", 0.1},   {"pdu", 0.5},    {"rmu", 0.5},
                                              {"idkdpo", 0.5}, {"altpo", 0.5}, {"task_vector", 0.5},
                                              {"whp", 0.5},    {"whp_logits", 0.5}, {"holdout_match", 0.3}};
  for (const std::string& m : strategy_names()) {
    const json summary = read_json(*dir_ + "/unlearn-" + m + "/summary.json");
    const json u = summary["metrics"];
    SCOPED_TRACE(m + ": " + u.dump());
    const double t_v = t["verbmem_forget"], r_v = r["verbmem_forget"], u_v = u["verbmem_forget"];
    const double t_k = t["knowmem_forget"], r_k = r["knowmem_forget"], u_k = u["knowmem_forget"];
    // At least a third of the way from the target to the retrained model on both forget metrics
    // (IdkDPO trains on the forget QA only, and its refusals leave the passages' VerbMem near the
    // target's; AltPO's alternate answers move it).
    if (m != "idkdpo") EXPECT_LT(u_v, t_v - (t_v - r_v) / 3);
    EXPECT_LT(u_k, t_k - (t_k - r_k) / 3);
    EXPECT_GE(u["knowmem_retain"].get<double>(), keep.at(m) * t["knowmem_retain"].get<double>());
    EXPECT_TRUE(u.contains("privleak"));
    EXPECT_GT(summary["cost"]["train_tokens"].get<int64_t>(), 0);
    // One record per cycle; the task vector's and whp_logits' one record is their result.
    const bool outside = runs_outside_cycles(m);
    EXPECT_EQ(read_jsonl(*dir_ + "/unlearn-" + m + "/metrics.jsonl").size(), outside ? 1u : 6u);
    // Where the time went (Note [Phase profile]): the parts and the rest add up to the total, and
    // the method's own cost is the part of it spent unlearning.
    const json prof = summary["profile"];
    double parts = 0;
    for (const auto& [part, v] : prof.items()) parts += part == "total" ? 0.0 : v.get<double>();
    EXPECT_NEAR(parts, prof["total"].get<double>(), 1e-6) << prof;
    const std::vector<std::string> named = m == "task_vector"  ? std::vector<std::string>{"reinforce", "arithmetic", "evaluation", "checkpoints"}
                                           : m == "whp_logits" ? std::vector<std::string>{"reinforce", "evaluation"}
                                                               : std::vector<std::string>{"unlearn_steps", "learn_steps", "evaluation", "checkpoints"};
    for (const std::string& part : named) EXPECT_GT(prof.value(part, 0.0), 0.0) << part << ": " << prof;
    if (m == "icu") EXPECT_GT(prof.value("refinement", 0.0), 0.0) << prof;
    // A method that reuses the shared reinforced model counts its fine-tune without having spent it.
    const bool reinforced = m == "task_vector" || m == "whp" || m == "whp_logits";
    const double shared = reinforced ? read_json(*dir_ + "/reinforced/summary.json")["cost"]["seconds"].get<double>() : 0.0;
    EXPECT_LE(summary["cost"]["seconds"].get<double>() - shared, prof["total"].get<double>());
  }
  // Methods with a reference model count its forwards.
  EXPECT_GT(read_json(*dir_ + "/unlearn-kl/summary.json")["cost"]["forward_tokens"].get<int64_t>(), 0);

  ASSERT_TRUE(run_compare(*dir_).is_ok());
  std::ifstream profile(*dir_ + "/profile.txt");
  const std::string profile_text((std::istreambuf_iterator<char>(profile)), std::istreambuf_iterator<char>());
  EXPECT_NE(profile_text.find("refinement"), std::string::npos) << profile_text;
  const json cmp = read_json(*dir_ + "/comparison.json");
  EXPECT_EQ(cmp["models"].size(), 2 + strategy_names().size());
  // PrivLeak of every row against the retrained model's AUC, from each model's own summary.
  EXPECT_EQ(cmp["auc_retrain"].get<double>(), r["mink_auc"].get<double>());
  for (const json& row : cmp["models"]) {
    const std::string name = row["model"];
    const std::string phase = name == "target" || name == "retrain" ? name : "unlearn-" + name;
    const double auc = read_json(*dir_ + "/" + phase + "/summary.json")["metrics"]["mink_auc"];
    EXPECT_NEAR(row["privleak"].get<double>(), 100 * (auc / r["mink_auc"].get<double>() - 1), 1e-9) << name;
  }
  EXPECT_GT(std::abs(cmp["models"][0]["privleak"].get<double>()), 1.0);  // the target leaks
  // TOFU: forget quality of every row is the KS p-value of its per-item forget truth ratios
  // against the retrained model's, both read from the summaries; model utility from its metrics.
  const auto retrain_tr = read_json(*dir_ + "/retrain/summary.json")["truth_ratios_forget"].get<std::vector<double>>();
  ASSERT_FALSE(retrain_tr.empty());
  for (const json& row : cmp["models"]) {
    const std::string name = row["model"];
    const std::string phase = name == "target" || name == "retrain" ? name : "unlearn-" + name;
    const json summary = read_json(*dir_ + "/" + phase + "/summary.json");
    const auto tr = summary["truth_ratios_forget"].get<std::vector<double>>();
    EXPECT_EQ(tr.size(), retrain_tr.size()) << name;
    EXPECT_DOUBLE_EQ(row["forget_quality"].get<double>(), ks_2samp_pvalue(tr, retrain_tr)) << name;
    EXPECT_DOUBLE_EQ(row["model_utility"].get<double>(), summary["metrics"]["model_utility"].get<double>()) << name;
    if (phase != "target" && phase != "retrain") {
      EXPECT_DOUBLE_EQ(summary["metrics"]["forget_quality"].get<double>(), row["forget_quality"].get<double>()) << name;
    }
  }
  EXPECT_EQ(cmp["models"][1]["forget_quality"].get<double>(), 1.0);  // the retrained model against itself
  EXPECT_TRUE(cmp.contains("closest_to_retrain"));
  EXPECT_TRUE(fs::exists(*dir_ + "/comparison.gnuplot"));
  // Trajectories (Note [Trajectories]): per method the target, then every cycle (all evaluated here),
  // the last one the cycle the summary reports; one panel each in trajectories.gnuplot.
  EXPECT_EQ(cmp["trajectory_utility"], "knowmem_retain");
  std::ifstream script(*dir_ + "/trajectories.gnuplot");
  const std::string gp((std::istreambuf_iterator<char>(script)), std::istreambuf_iterator<char>());
  for (const std::string& m : strategy_names()) {
    SCOPED_TRACE(m);
    const json& path = cmp["trajectories"][m];
    const auto records = read_jsonl(*dir_ + "/unlearn-" + m + "/metrics.jsonl");
    ASSERT_EQ(path.size(), records.size() + 1);
    EXPECT_EQ(path[0]["at"], "target");
    EXPECT_EQ(path[0]["verbmem_forget"], t["verbmem_forget"]);
    for (size_t i = 0; i < records.size(); ++i) {
      const json& m_i = records[i]["metrics"];
      EXPECT_EQ(path[i + 1]["verbmem_forget"], m_i["verbmem_forget"]);
      EXPECT_EQ(path[i + 1]["knowmem_forget"], m_i["knowmem_forget"]);
      EXPECT_EQ(path[i + 1]["utility"], m_i["knowmem_retain"]);
    }
    EXPECT_EQ(path.back()["verbmem_forget"], read_json(*dir_ + "/unlearn-" + m + "/summary.json")["metrics"]["verbmem_forget"]);
    EXPECT_NE(gp.find("set title '" + m + "'\n"), std::string::npos);
  }
}

// Three hand-made seed folders (Note [Seeds]): the aggregate's means and sample standard deviations
// are those computed by hand from the per-seed summaries, and a method is named closest only when
// the one-sd intervals of its gap and the runner-up's do not overlap (Note [Closest beyond the spread]).
TEST(Compare, SeedsGiveMeanAndStdAndClosestOnlyBeyondTheSpread) {
  auto summary = [](double verbmem, double seconds, double ma = 0.8) {
    return json{{"metrics", {{"verbmem_forget", verbmem}, {"mink_auc", 0.3}, {"ppl_holdout", 20.0}, {"ma_retain", ma}}},
                {"cost", {{"seconds", seconds}, {"flops", 1e12}}}};
  };
  // Target 90 and retrain 40 in every seed, so a method's gap is (VerbMem − 40) / 50.
  auto experiment = [&](const std::string& name, const std::vector<double>& npo_verbmem,
                        const std::vector<double>& target_verbmem = {90, 90, 90}, double npo_ma = 0.8) {
    const std::string dir = test::scratch_dir(name);
    const std::vector<double> ga_verbmem = {45, 50, 55}, ga_seconds = {10, 12, 14};
    for (size_t k = 0; k < 3; ++k) {
      const std::string seed = dir + "/seed-" + std::to_string(1234 + k);
      for (const auto& [phase, j] : {std::pair{"target", summary(target_verbmem[k], 60)}, std::pair{"retrain", summary(40, 60)},
                                     std::pair{"unlearn-ga", summary(ga_verbmem[k], ga_seconds[k])},
                                     std::pair{"unlearn-npo", summary(npo_verbmem[k], 10, npo_ma)}}) {
        fs::create_directories(seed + "/" + phase);
        EXPECT_TRUE(write_json(seed + "/" + phase + "/summary.json", j).is_ok());
        std::ofstream(seed + "/" + phase + "/metrics.jsonl") << json{{"request", 0}, {"cycle", 0}, {"metrics", j["metrics"]}}.dump() << "\n";
      }
    }
    Status s = run_compare(dir);
    EXPECT_TRUE(s.is_ok()) << s.message();
    return dir;
  };
  const std::string apart = experiment("seeds-apart", {60, 70, 80});
  const json cmp = read_json(apart + "/comparison.json");
  EXPECT_EQ(cmp["seeds"], json({"seed-1234", "seed-1235", "seed-1236"}));
  std::map<std::string, json> by_name;
  for (const json& row : cmp["models"]) by_name[row["model"]] = row;
  ASSERT_EQ(by_name.size(), 4u);
  // ga: VerbMem 45, 50, 55 → mean 50, std √((25 + 0 + 25) / 2) = 5; seconds 10, 12, 14 → 12 ± 2;
  // speedup 60 / s → 6, 5, 4.2857…; gap 0.1, 0.2, 0.3 → 0.2 ± 0.1.
  EXPECT_DOUBLE_EQ(by_name["ga"]["verbmem_forget"]["mean"].get<double>(), 50.0);
  EXPECT_DOUBLE_EQ(by_name["ga"]["verbmem_forget"]["std"].get<double>(), 5.0);
  EXPECT_DOUBLE_EQ(by_name["ga"]["seconds"]["std"].get<double>(), 2.0);
  const double sp[] = {6.0, 5.0, 60.0 / 14}, sp_mean = (sp[0] + sp[1] + sp[2]) / 3;
  double ss = 0;
  for (double v : sp) ss += (v - sp_mean) * (v - sp_mean);
  EXPECT_NEAR(by_name["ga"]["speedup_vs_retrain"]["mean"].get<double>(), sp_mean, 1e-12);
  EXPECT_NEAR(by_name["ga"]["speedup_vs_retrain"]["std"].get<double>(), std::sqrt(ss / 2), 1e-12);
  EXPECT_NEAR(by_name["ga"]["gap_to_retrain"]["mean"].get<double>(), 0.2, 1e-12);
  EXPECT_NEAR(by_name["ga"]["gap_to_retrain"]["std"].get<double>(), 0.1, 1e-12);
  EXPECT_TRUE(by_name["ga"]["knowmem_forget"].is_null());
  EXPECT_EQ(by_name["target"]["seeds"], 3);
  // npo: gaps 0.4, 0.6, 0.8 (0.6 ± 0.2): 0.2 + 0.1 < 0.6 − 0.2, so ga is closest beyond the spread.
  EXPECT_EQ(cmp["closest_to_retrain"], "ga");
  // npo at gaps 0.2, 0.4, 0.6 (0.4 ± 0.2): the intervals overlap, and nothing is named.
  const std::string close = experiment("seeds-close", {50, 60, 70});
  const json cmp2 = read_json(close + "/comparison.json");
  EXPECT_FALSE(cmp2.contains("closest_to_retrain")) << cmp2.dump();
  std::ifstream table(close + "/comparison.txt");
  const std::string text((std::istreambuf_iterator<char>(table)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("no method is closest beyond the spread over 3 seeds: ga (gap 0.20 ± 0.10) and npo (gap 0.40 ± 0.20)"),
            std::string::npos) << text;
  EXPECT_NE(text.find("50.0 ± 5.0"), std::string::npos) << text;
  // A target whose VerbMem is within the seeds' spread of the retrained model's (39, 42, 40 against
  // 40): the gap leaves VerbMem out, and what remains is retain MA: npo's 0.6 against 0.8 is 0.25.
  const std::string noise = experiment("seeds-noise", {50, 60, 70}, {39, 42, 40}, 0.6);
  const json cmp3 = read_json(noise + "/comparison.json");
  EXPECT_EQ(cmp3["gap_leaves_out"], json({"verbmem_forget"}));
  for (const json& row : cmp3["models"]) {
    const double expected = row["model"] == "npo" ? 0.25 : 0.0;  // ga keeps the retrained model's retain MA
    if (row["model"] == "npo" || row["model"] == "ga") {
      EXPECT_NEAR(row["gap_to_retrain"]["mean"].get<double>(), expected, 1e-12) << row;
    }
  }
  // Each seed folder has its own single-seed comparison, which says that it has no spread.
  std::ifstream one(close + "/seed-1234/comparison.txt");
  const std::string one_text((std::istreambuf_iterator<char>(one)), std::istreambuf_iterator<char>());
  EXPECT_NE(one_text.find("one seed: no spread is known"), std::string::npos) << one_text;
}

// A method whose cycle was chosen by unlearn.select = "oracle" is marked as peeking, in the table
// and in comparison.json, and so is the claim that names it closest.
TEST(Compare, OracleSelectedRowsAreMarkedAsPeeking) {
  const std::string dir = test::scratch_dir("compare-oracle");
  auto summary = [](double verbmem, const std::string& select) {
    json j = {{"metrics", {{"verbmem_forget", verbmem}, {"mink_auc", 0.3}, {"ppl_holdout", 20.0}, {"ma_retain", 0.8}}},
              {"cost", {{"seconds", 10.0}, {"flops", 1e12}}}};
    if (!select.empty()) j["select"] = {{"rule", select}, {"peeking", select == "oracle"}, {"requests", json::array()}};
    return j;
  };
  for (const auto& [phase, j] : {std::pair{"target", summary(90, "")}, std::pair{"retrain", summary(40, "")},
                                 std::pair{"unlearn-ga", summary(45, "oracle")}, std::pair{"unlearn-npo", summary(60, "holdout")}}) {
    fs::create_directories(dir + "/" + phase);
    ASSERT_TRUE(write_json(dir + "/" + phase + "/summary.json", j).is_ok());
    std::ofstream(dir + "/" + phase + "/metrics.jsonl") << json{{"request", 0}, {"cycle", 0}, {"metrics", j["metrics"]}}.dump() << "\n";
  }
  Status compared = run_compare(dir);
  ASSERT_TRUE(compared.is_ok()) << compared.message();
  const json cmp = read_json(dir + "/comparison.json");
  EXPECT_EQ(cmp["closest_to_retrain"], "ga");
  for (const json& row : cmp["models"]) EXPECT_EQ(row["peeking"], row["model"] == "ga") << row;
  std::ifstream table(dir + "/comparison.txt");
  const std::string text((std::istreambuf_iterator<char>(table)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("holdout does not): ga: oracle, npo: holdout"), std::string::npos) << text;
  EXPECT_NE(text.find("ga (largest normalised gap 0.10; 0 = retrain, 1 = target), 1.0× faster than retraining — but its cycle "
                      "was chosen by peeking at the retrained model"), std::string::npos) << text;
}

// Trajectories without QA (a JSONL corpus without QA files): utility is retain MA × 100, a cycle
// that was not evaluated (unlearn.eval_every) is no point, and the plot has no KnowMem series. A
// collapsed model is never named closest, however near its forget metrics are.
TEST(Compare, WithoutQaTrajectoriesUseRetainMaAndACollapsedModelIsNeverClosest) {
  const std::string dir = test::scratch_dir("compare-no-qa");
  auto summary = [](double verbmem, double ma, double ppl = 20.0) {
    return json{{"metrics", {{"verbmem_forget", verbmem}, {"mink_auc", 0.3}, {"ppl_holdout", ppl}, {"ma_retain", ma}}},
                {"cost", {{"seconds", 10.0}, {"flops", 1e12}}}};
  };
  // npo sits exactly on the retrained model's VerbMem (gap 0) with a collapsed model: holdout
  // perplexity 201, above 10× the target's 20 (Note [Collapse guard]).
  fs::create_directories(dir + "/unlearn-npo");
  std::ofstream(dir + "/unlearn-npo/metrics.jsonl") << json{{"request", 0}, {"cycle", 0}, {"metrics", summary(40, 0.75, 201)["metrics"]}}.dump() << "\n";
  for (const auto& [phase, j] : {std::pair{"target", summary(90, 0.8)}, std::pair{"retrain", summary(40, 0.75)},
                                 std::pair{"unlearn-ga", summary(30, 0.5)}, std::pair{"unlearn-npo", summary(40, 0.75, 201)}}) {
    fs::create_directories(dir + "/" + phase);
    ASSERT_TRUE(write_json(dir + "/" + phase + "/summary.json", j).is_ok());
  }
  std::ofstream(dir + "/unlearn-ga/metrics.jsonl") << json{{"request", 0}, {"cycle", 0}, {"metrics", summary(60, 0.7)["metrics"]}}.dump() << "\n"
                                                   << json{{"request", 0}, {"cycle", 1}, {"metrics", json::object()}}.dump() << "\n"
                                                   << json{{"request", 0}, {"cycle", 2}, {"metrics", summary(30, 0.5)["metrics"]}}.dump() << "\n";
  Status compared = run_compare(dir);
  ASSERT_TRUE(compared.is_ok()) << compared.message();
  const json cmp = read_json(dir + "/comparison.json");
  EXPECT_EQ(cmp["trajectory_utility"], "ma_retain × 100");
  EXPECT_EQ(cmp["closest_to_retrain"], "ga");
  for (const json& row : cmp["models"]) EXPECT_EQ(row["collapsed"], row["model"] == "npo") << row;
  std::ifstream table(dir + "/comparison.txt");
  const std::string text((std::istreambuf_iterator<char>(table)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("collapsed (holdout perplexity above 10× the target's 20.00; never named closest): npo"), std::string::npos) << text;
  // No KnowMem column; retain MA is the utility, in the table and in the gap: ga's VerbMem is 0.2
  // of the target–retrain gap away, its retain MA 1/3 below the retrained model's 0.75.
  EXPECT_EQ(text.find("KnowMem-f"), std::string::npos) << text;
  EXPECT_NE(text.find("MA-r"), std::string::npos) << text;
  for (const json& row : cmp["models"]) {
    if (row["model"] == "ga") {
      EXPECT_NEAR(row["gap_to_retrain"].get<double>(), 1.0 / 3, 1e-12) << row;
    }
  }
  const json& path = cmp["trajectories"]["ga"];
  ASSERT_EQ(path.size(), 3u);
  EXPECT_EQ(path[0]["at"], "target");
  EXPECT_EQ(path[1]["at"], "r0c0");
  EXPECT_EQ(path[2]["at"], "r0c2");
  EXPECT_DOUBLE_EQ(path[0]["utility"].get<double>(), 80.0);
  EXPECT_DOUBLE_EQ(path[1]["utility"].get<double>(), 70.0);
  EXPECT_DOUBLE_EQ(path[2]["verbmem_forget"].get<double>(), 30.0);
  EXPECT_TRUE(path[2]["knowmem_forget"].is_null());
  std::ifstream script(dir + "/trajectories.gnuplot");
  const std::string gp((std::istreambuf_iterator<char>(script)), std::istreambuf_iterator<char>());
  EXPECT_NE(gp.find("retain MA × 100"), std::string::npos);
  EXPECT_EQ(gp.find("KnowMem-f"), std::string::npos);
  // A record that is not JSON names its file and line.
  std::ofstream(dir + "/unlearn-ga/metrics.jsonl", std::ios::app) << "{broken\n";
  Status bad = run_compare(dir);
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.message().find(dir + "/unlearn-ga/metrics.jsonl:4: not a cycle record"), std::string::npos) << bad.message();
}

// RMU trains only the down-projections of blocks ℓ−2 … ℓ (here ℓ = 1 of 2: both blocks'), in its
// steps and its learn steps alike: every other tensor of its checkpoint equals the target's.
TEST_F(Unlearning, RmuChangesOnlyTheDownProjectionsItNames) {
  RunConfig cfg = elsewhere("rmu-only", {"unlearn.methods=[\"rmu\"]", "unlearn.max_cycles=1", "unlearn.rmu_layer=1"});
  ASSERT_TRUE(run_unlearn_phase(cfg, {}).is_ok());
  auto target = H5File::open(list_checkpoints(*dir_ + "/target/checkpoints").front()).value();
  auto rmu = H5File::open(list_checkpoints(cfg.run.dir + "/unlearn-rmu/checkpoints").front()).value();
  int changed = 0;
  for (const std::string& n : target.list("model")) {
    const bool named = n == "layers.0.mlp.w_down" || n == "layers.1.mlp.w_down";
    const bool same = at::equal(target.read_tensor("model/" + n).value(), rmu.read_tensor("model/" + n).value());
    EXPECT_EQ(same, !named) << n;
    changed += !same;
  }
  EXPECT_EQ(changed, 2);
}

// Task vector: every weight of the result is θ − λ (θ_ft − θ), θ the target and θ_ft the
// reinforced model; a second run with another λ reuses the reinforced model (not trained again)
// and still counts its cost.
TEST_F(Unlearning, TaskVectorIsTheTargetMinusLambdaTimesTheSharedReinforcedDelta) {
  const std::string tv = "unlearn.methods=[\"task_vector\"]";
  RunConfig cfg = elsewhere("task-vector", {tv});
  ASSERT_TRUE(run_unlearn_phase(cfg, {}).is_ok());
  const std::string reinforced = read_json(cfg.run.dir + "/reinforced/summary.json")["checkpoint"];
  const auto trained_at = fs::last_write_time(reinforced);
  auto check = [&](double lambda) {
    auto target = H5File::open(list_checkpoints(*dir_ + "/target/checkpoints").front()).value();
    auto ft = H5File::open(reinforced).value();
    auto u = H5File::open(list_checkpoints(cfg.run.dir + "/unlearn-task_vector/checkpoints").front()).value();
    for (const std::string& n : target.list("model")) {
      const at::Tensor theta = target.read_tensor("model/" + n).value(), delta = ft.read_tensor("model/" + n).value() - theta;
      EXPECT_GT(delta.abs().max().item<double>(), 0) << n << ": the fine-tune did not move it";
      EXPECT_TRUE(at::allclose(u.read_tensor("model/" + n).value(), theta - lambda * delta, 1e-5, 1e-6)) << n << " at λ " << lambda;
    }
    const json summary = read_json(cfg.run.dir + "/unlearn-task_vector/summary.json");
    EXPECT_EQ(summary["cost"]["train_tokens"].get<int64_t>(), 40 * cfg.unlearn.forget_batch * cfg.data.seq_len);  // the fine-tune's
    EXPECT_EQ(read_jsonl(cfg.run.dir + "/unlearn-task_vector/metrics.jsonl").size(), 1u);
  };
  check(5.0);
  cfg = parse_config(to_toml(cfg), "unlearn-test", {"unlearn.task_vector.task_vector_lambda=1"}).value();  // the same folder
  ASSERT_TRUE(run_unlearn_phase(cfg, {}).is_ok());
  EXPECT_EQ(fs::last_write_time(reinforced), trained_at);
  check(1.0);
}

// WHP in one run with whp_logits and the task vector: the reinforced model is trained once and
// each counts its cost; whp translates the forget people's anchors (every one occurs) and, with
// two sequential requests, resumes from its checkpointed labels (twice, across the second
// request) to the same cycles; whp_logits' metrics are `lethe eval
// --companion` of the two checkpoints it names.
TEST_F(Unlearning, WhpSharesTheReinforcedModelResumesFromItsLabelsAndWhpLogitsIsTheCombinedModel) {
  std::ostringstream logged;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(logged);
  log().sinks().push_back(sink);
  RunConfig all = elsewhere("whp-all", {"unlearn.methods=[\"whp\", \"whp_logits\", \"task_vector\"]", "unlearn.max_cycles=2",
                                        "unlearn.requests=2"});
  RunConfig resumed = elsewhere("whp-resumed", {"unlearn.methods=[\"whp\"]", "unlearn.max_cycles=2", "unlearn.requests=2"});
  ASSERT_TRUE(run_unlearn_phase(all, {}).is_ok());
  ASSERT_TRUE(run_unlearn_phase(resumed, {false, 1}).is_ok());
  ASSERT_TRUE(run_unlearn_phase(resumed, {true, 2}).is_ok());  // crosses into the second request
  ASSERT_TRUE(run_unlearn_phase(resumed, {true, 0}).is_ok());
  log().sinks().pop_back();
  const std::string text = logged.str();
  EXPECT_EQ(text.find("never occurs"), std::string::npos) << text;
  EXPECT_NE(text.find("anchored term(s) translated in the forget set, 0 left as they are"), std::string::npos) << text;
  // Trained once (the later methods reuse it), counted by each.
  size_t trained = 0;
  for (size_t at = text.find("steps on the forget passages"); at != std::string::npos; at = text.find("steps on the forget passages", at + 1)) ++trained;
  EXPECT_EQ(trained, 2u) << "once per run folder: " << text;
  const int64_t fine_tune = 40 * all.unlearn.forget_batch * all.data.seq_len;
  for (const char* m : {"whp", "whp_logits", "task_vector"}) {
    const json summary = read_json(all.run.dir + "/unlearn-" + m + "/summary.json");
    EXPECT_GE(summary["cost"]["train_tokens"].get<int64_t>(), fine_tune) << m;
  }
  EXPECT_GT(read_json(all.run.dir + "/unlearn-whp/summary.json")["cost"]["forward_tokens"].get<int64_t>(), 0);
  // The resumed run: the same cycles and costs, the labels from the checkpoint.
  auto a = read_jsonl(all.run.dir + "/unlearn-whp/metrics.jsonl"), b = read_jsonl(resumed.run.dir + "/unlearn-whp/metrics.jsonl");
  ASSERT_EQ(a.size(), 4u);
  ASSERT_EQ(b.size(), a.size());
  EXPECT_EQ(a.back()["request"], 1);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i]["losses"], b[i]["losses"]) << i;
    EXPECT_EQ(a[i]["metrics"], b[i]["metrics"]) << i;
    EXPECT_EQ(a[i]["cost"]["forward_tokens"], b[i]["cost"]["forward_tokens"]) << i;
  }
  auto ckpt = H5File::open(list_checkpoints(resumed.run.dir + "/unlearn-whp/checkpoints").front()).value();
  for (const char* request : {"forget-0", "forget-1"}) {
    EXPECT_TRUE(ckpt.read_tensor(std::string("state/strategy/whp_labels/") + request).is_ok()) << request;
  }
  // whp_logits: the target and the reinforced model at α, evaluated again by `lethe eval --companion`.
  const json logits = read_json(all.run.dir + "/unlearn-whp_logits/summary.json");
  ASSERT_TRUE(logits.contains("companion")) << logits;
  EXPECT_EQ(logits["companion"]["alpha"], all.unlearn.whp_alpha);
  const std::string out = all.run.dir + "/eval-combined.json";
  ASSERT_TRUE(run_eval(all, logits["from"], out, logits["companion"]["checkpoint"], all.unlearn.whp_alpha).is_ok());
  const json again = read_json(out)["metrics"];
  for (const auto& [k, v] : logits["metrics"].items()) EXPECT_NEAR(again[k].get<double>(), v.get<double>(), 1e-9) << k;
  const double ppl = logits["metrics"]["ppl_forget"], ppl_target = read_json(*dir_ + "/target/summary.json")["metrics"]["ppl_forget"];
  EXPECT_GT(ppl, 1.05 * ppl_target) << "the combination raised the forget perplexity";
}

// WHP's bad input: an anchor file with a term the forget set never holds (a warning naming it),
// a missing anchor file, a reinforced model that is neither trained nor given.
TEST_F(Unlearning, WhpBadInputsNameTheTermOrTheKey) {
  auto message = [](const Status& s) { return s.is_ok() ? std::string("(ok)") : s.message(); };
  const std::string anchors = test::scratch_dir("whp-anchors") + "/anchors.json";
  std::ofstream(anchors) << R"({"Zebediah Quaterfoil": "Ann Smith"})";
  std::ostringstream logged;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(logged);
  log().sinks().push_back(sink);
  Status unused = run_unlearn_phase(elsewhere("whp-unused", {"unlearn.methods=[\"whp\"]", "unlearn.max_cycles=1",
                                                              "unlearn.whp.whp_anchors=\"" + anchors + "\""}), {});
  log().sinks().pop_back();
  EXPECT_TRUE(unused.is_ok()) << unused.message();
  EXPECT_NE(logged.str().find("whp: anchor \"Zebediah Quaterfoil\" never occurs in the forget set (unlearn.whp_anchors)"),
            std::string::npos) << logged.str();
  Status missing = run_unlearn_phase(elsewhere("whp-missing", {"unlearn.methods=[\"whp\"]", "unlearn.whp_anchors=\"/nonexistent/a.json\""}), {});
  EXPECT_NE(message(missing).find("/nonexistent/a.json: cannot open the anchor dictionary (unlearn.whp_anchors)"), std::string::npos)
      << message(missing);
  for (const char* m : {"whp_logits", "whp", "task_vector"}) {
    Status none = run_unlearn_phase(elsewhere(std::string("whp-none-") + m, {std::string("unlearn.methods=[\"") + m + "\"]",
                                                                           "unlearn.reinforce_steps=0"}), {});
    EXPECT_NE(message(none).find(std::string("\"") + m + "\" needs a reinforced model: unlearn.reinforce_steps = 0 trains none and "
                                 "unlearn.reinforced names none"), std::string::npos) << message(none);
  }
  Status gone = run_unlearn_phase(elsewhere("whp-gone", {"unlearn.methods=[\"whp_logits\"]", "unlearn.reinforced=\"/nonexistent/r.h5\""}), {});
  EXPECT_NE(message(gone).find("unlearn.reinforced: /nonexistent/r.h5 does not exist"), std::string::npos) << message(gone);
}

// unlearn.eval_every = 4 over 6 cycles and 2 requests: each request's 4th and last cycles are
// evaluated, the others carry empty metrics; the summary holds the last cycle's.
TEST_F(Unlearning, EvalEveryEvaluatesEveryNthAndEachRequestsLastCycle) {
  RunConfig cfg = elsewhere("eval-every", {"unlearn.methods=[\"ga\"]", "unlearn.eval_every=4", "unlearn.requests=2"});
  Status s = run_unlearn_phase(cfg, {});
  ASSERT_TRUE(s.is_ok()) << s.message();
  const auto records = read_jsonl(cfg.run.dir + "/unlearn-ga/metrics.jsonl");
  ASSERT_EQ(records.size(), 12u);
  for (const json& rec : records) {
    const int64_t cycle = rec["cycle"];
    EXPECT_EQ(rec["metrics"].empty(), cycle != 3 && cycle != 5) << rec.dump();
  }
  const json summary = read_json(cfg.run.dir + "/unlearn-ga/summary.json");
  EXPECT_EQ(summary["metrics"], records.back()["metrics"]);
}

// unlearn.select = "holdout" (Note [Checkpoint selection]) in a folder without retrain/ (the rule
// never reads it): each request keeps its best-scored cycle (earliest on a tie), restored when it is
// not the last, kept as selected-r<k>.h5 whatever keep_checkpoints says; the summary reports the
// selected cycle's metrics, and a resumed run selects the same.
TEST_F(Unlearning, HoldoutSelectionKeepsEachRequestsBestCycleWithoutTheRetrainedModel) {
  const std::vector<std::string> common = {"unlearn.methods=[\"ga\"]", "unlearn.requests=2", "unlearn.max_cycles=4",
                                           "unlearn.select=\"holdout\"", "unlearn.lr=2e-5",
                                           "unlearn.keep_checkpoints=1"};
  RunConfig a = elsewhere("select-a", common), b = elsewhere("select-b", common);
  ASSERT_FALSE(fs::exists(a.run.dir + "/retrain"));
  Status s = run_unlearn_phase(a, {});
  ASSERT_TRUE(s.is_ok()) << s.message();
  ASSERT_TRUE(run_unlearn_phase(b, {false, 3}).is_ok());
  ASSERT_TRUE(run_unlearn_phase(b, {true, 0}).is_ok());
  const auto ra = read_jsonl(a.run.dir + "/unlearn-ga/metrics.jsonl"), rb = read_jsonl(b.run.dir + "/unlearn-ga/metrics.jsonl");
  ASSERT_EQ(ra.size(), 8u);
  ASSERT_EQ(rb.size(), ra.size());
  const json summary = read_json(a.run.dir + "/unlearn-ga/summary.json");
  EXPECT_EQ(summary["select"]["rule"], "holdout");
  json sa = summary["select"], sb = read_json(b.run.dir + "/unlearn-ga/summary.json")["select"];
  for (json* j : {&sa, &sb}) for (json& r : (*j)["requests"]) r.erase("checkpoint");
  EXPECT_EQ(sa, sb);
  for (int64_t r = 0; r < 2; ++r) {
    int64_t best = -1;
    double score = 0;
    for (const json& rec : ra) {  // a collapsed cycle has no score and is never chosen
      if (rec["request"] != r || !rec.contains("select_score")) continue;
      if (best < 0 || rec["select_score"].get<double>() < score) best = rec["cycle"], score = rec["select_score"];
    }
    ASSERT_GE(best, 0) << "request " << r << ": no cycle was eligible";
    const json& chosen = summary["select"]["requests"][r];
    EXPECT_EQ(chosen["cycle"], best) << "request " << r;
    EXPECT_EQ(ra[static_cast<size_t>(4 * r + 3)]["selected"]["cycle"], best);
    EXPECT_TRUE(fs::exists(a.run.dir + "/unlearn-ga/" + chosen["checkpoint"].get<std::string>()));
    if (r == 1) {
      EXPECT_EQ(summary["metrics"], ra[static_cast<size_t>(4 + best)]["metrics"]);
    }
  }
  // At this rate request 1 is best before its last cycle, so the run rolled back (seed 1234).
  EXPECT_LT(summary["select"]["requests"][1]["cycle"].get<int64_t>(), 3) << summary["select"];
  for (size_t i = 0; i < ra.size(); ++i) EXPECT_EQ(ra[i]["metrics"], rb[i]["metrics"]) << "cycle record " << i;
  // The run ends with the selected weights: the newest checkpoint's model is the kept one's.
  auto newest = H5File::open(list_checkpoints(a.run.dir + "/unlearn-ga/checkpoints").front()).value();
  EXPECT_EQ(summary["select"]["requests"][1]["checkpoint"], "checkpoints/selected-r1.h5");
  auto kept = H5File::open(a.run.dir + "/unlearn-ga/" + summary["select"]["requests"][1]["checkpoint"].get<std::string>()).value();
  for (const std::string& n : newest.list("model")) {
    EXPECT_TRUE(at::equal(newest.read_tensor("model/" + n).value(), kept.read_tensor("model/" + n).value())) << n;
  }
  // "oracle" without a retrained model, "holdout" without holdout data: errors naming what is missing.
  Status oracle = run_unlearn_phase(elsewhere("select-oracle", {"unlearn.methods=[\"ga\"]", "unlearn.select=\"oracle\""}), {});
  EXPECT_NE(oracle.message().find("retrain/summary.json does not exist"), std::string::npos) << oracle.message();
  Status no_holdout = run_unlearn_phase(elsewhere("select-no-holdout", {"unlearn.methods=[\"ga\"]", "unlearn.select=\"holdout\"",
                                                                        "corpus.holdout_fraction=0"}), {});
  EXPECT_NE(no_holdout.message().find("the corpus has none"), std::string::npos) << no_holdout.message();
}

// The scores on hand-made metrics: the starting model scores 1 + 0; a cycle at the holdout level
// with retain MA kept scores 0; halfway, with a tenth of retain MA lost, 0.5 + 0.1; collapsed: none.
TEST(Selection, HoldoutAndOracleScoresByHand) {
  const Metrics start = {{"ma_forget", 0.9}, {"ma_holdout", 0.5}, {"el_forget", 0.6}, {"el_holdout", 0.2},
                         {"mink_auc", 0.9}, {"ma_retain", 0.8}, {"ppl_holdout", 20}, {"verbmem_forget", 80}};
  Metrics m = start;
  EXPECT_DOUBLE_EQ(holdout_score(m, start).value(), 1.0);
  m = {{"ma_forget", 0.7}, {"ma_holdout", 0.5}, {"el_forget", 0.4}, {"el_holdout", 0.2}, {"mink_auc", 0.7},
       {"ma_retain", 0.72}, {"ppl_holdout", 30}};
  EXPECT_NEAR(holdout_score(m, start).value(), 0.6, 1e-12);
  m["ma_forget"] = 0.3;  // over-unlearned past the holdout level by as much: the same distance
  EXPECT_NEAR(holdout_score(m, start).value(), 0.6, 1e-12);
  m["ppl_holdout"] = 201;
  EXPECT_FALSE(holdout_score(m, start).has_value());
  const Metrics retrain = {{"verbmem_forget", 20}, {"mink_auc", 0.5}};
  const Metrics halfway = {{"verbmem_forget", 50}, {"mink_auc", 0.5}, {"ppl_holdout", 25}};
  EXPECT_NEAR(oracle_score(halfway, start, retrain).value(), 0.5, 1e-12);
}

TEST_F(Unlearning, IcuRefinementRemovesSamplesAndItsStopRuleFires) {
  RunConfig cfg = elsewhere("icu-stop", {"unlearn.methods=[\"icu\"]", "unlearn.lr=5e-4", "unlearn.max_cycles=20",
                                         "unlearn.learn_steps=0"});
  Status s = run_unlearn_phase(cfg, {});
  ASSERT_TRUE(s.is_ok()) << s.message();
  auto records = read_jsonl(cfg.run.dir + "/unlearn-icu/metrics.jsonl");
  ASSERT_FALSE(records.empty());
  const int64_t all = records.front()["forget_samples"];
  int64_t fewest = all;
  for (const json& rec : records) fewest = std::min<int64_t>(fewest, rec["forget_samples"].get<int64_t>());
  EXPECT_LT(fewest, all) << "refinement never removed a sample";
  const std::string stop = records.back()["stop"];
  EXPECT_EQ(stop.rfind("icu:", 0), 0u) << "stopped by: " << stop << " after " << records.size() << " cycles";
  EXPECT_LT(records.size(), 20u);
}

// ICU's holdout level (Note [Holdout level]) is kept from cycle to cycle and measured again only
// when the holdout probe's perplexity has drifted by more than 10 % since it was: in every cycle's
// checkpoint the level (similarity, EL_n, the probe perplexity it was measured at, holdout MA) is
// either the previous cycle's, all four values, or one measured at a probe perplexity more than
// 10 % away from the previous one's.
TEST_F(Unlearning, IcuMeasuresItsHoldoutLevelAgainOnlyWhenTheProbeDrifts) {
  RunConfig cfg = elsewhere("icu-level", {"unlearn.methods=[\"icu\"]", "unlearn.lr=1e-4", "unlearn.max_cycles=8",
                                          "unlearn.learn_steps=0", "unlearn.keep_checkpoints=20"});
  ASSERT_TRUE(run_unlearn_phase(cfg, {}).is_ok());
  std::vector<std::string> ckpts = list_checkpoints(cfg.run.dir + "/unlearn-icu/checkpoints");
  std::sort(ckpts.begin(), ckpts.end());  // step order
  ASSERT_GE(ckpts.size(), 3u);
  int kept = 0, measured = 0;
  at::Tensor previous;
  for (const std::string& path : ckpts) {
    auto level = H5File::open(path).value().read_tensor("state/strategy/icu_holdout_level");
    ASSERT_TRUE(level.is_ok()) << path;
    const at::Tensor v = level.value();
    ASSERT_EQ(v.numel(), 4) << path;
    if (previous.defined()) {
      if (at::equal(v, previous)) {
        ++kept;
      } else {
        ++measured;
        const double drift = std::abs(std::log(v[2].item<double>() / previous[2].item<double>()));
        EXPECT_GT(drift, std::log1p(0.10)) << path << ": the level changed without the probe drifting";
      }
    }
    previous = v;
  }
  EXPECT_GT(kept, 0);
  EXPECT_GT(measured, 0);
}

// ICU at a rate that wrecks the model (0.05, no retain terms, no learn steps): its stop rule says the
// model collapsed instead of calling the forget set forgotten (Note [Collapse guard]).
TEST_F(Unlearning, IcuNeverDeclaresACollapsedModelForgotten) {
  RunConfig cfg = elsewhere("icu-collapse", {"unlearn.methods=[\"icu\"]", "unlearn.lr=5e-2", "unlearn.max_cycles=4",
                                             "unlearn.learn_steps=0", "unlearn.icu_alpha=0", "unlearn.icu_beta=0"});
  Status s = run_unlearn_phase(cfg, {});
  ASSERT_TRUE(s.is_ok()) << s.message();
  auto records = read_jsonl(cfg.run.dir + "/unlearn-icu/metrics.jsonl");
  ASSERT_FALSE(records.empty());
  const std::string stop = records.back()["stop"];
  EXPECT_EQ(stop.rfind("icu: stopped without success: the model collapsed (holdout probe perplexity ", 0), 0u) << stop;
  const double ppl = records.back()["metrics"]["ppl_holdout"], target = read_json(*dir_ + "/target/summary.json")["metrics"]["ppl_holdout"];
  EXPECT_GT(ppl, kCollapseFactor * target);
  auto ckpt = H5File::open(list_checkpoints(cfg.run.dir + "/unlearn-icu/checkpoints").front()).value();
  EXPECT_TRUE(ckpt.read_tensor("state/strategy/icu_reference_probe_ppl").is_ok());
}

// NPO with retain "none" caches log π_ref of both requests' forget sets up front and frees the
// reference: it gives the same cycles as a run that keeps the reference alive (retain "kl" at
// weight 0, no learn steps, so only the forget term moves the model), and a run resumed twice —
// across the second request, with no reference loaded at all — gives the same cycles again.
TEST_F(Unlearning, NpoWithItsReferenceFreedEqualsOneKeptAliveAndResumesWithoutIt) {
  const std::vector<std::string> common = {"unlearn.methods=[\"npo\"]", "unlearn.requests=2", "unlearn.max_cycles=2",
                                           "unlearn.learn_steps=0"};
  auto with = [&](const std::string& name, std::vector<std::string> extra) {
    extra.insert(extra.end(), common.begin(), common.end());
    return elsewhere(name, extra);
  };
  RunConfig freed = with("npo-freed", {"unlearn.npo_retain=\"none\""});
  // NPO ships retain_weight 4: its section sets 0, so the KL term that keeps the reference alive adds nothing.
  RunConfig kept = with("npo-kept", {"unlearn.npo_retain=\"kl\"", "unlearn.npo.retain_weight=0"});
  RunConfig resumed = with("npo-resumed", {"unlearn.npo_retain=\"none\""});
  ASSERT_TRUE(run_unlearn_phase(freed, {}).is_ok());
  ASSERT_TRUE(run_unlearn_phase(kept, {}).is_ok());
  ASSERT_TRUE(run_unlearn_phase(resumed, {false, 1}).is_ok());
  ASSERT_TRUE(run_unlearn_phase(resumed, {true, 2}).is_ok());
  ASSERT_TRUE(run_unlearn_phase(resumed, {true, 0}).is_ok());
  auto a = read_jsonl(freed.run.dir + "/unlearn-npo/metrics.jsonl");
  auto b = read_jsonl(kept.run.dir + "/unlearn-npo/metrics.jsonl");
  auto c = read_jsonl(resumed.run.dir + "/unlearn-npo/metrics.jsonl");
  ASSERT_EQ(a.size(), 4u);
  ASSERT_EQ(b.size(), a.size());
  ASSERT_EQ(c.size(), a.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i]["losses"]["forget_npo"], b[i]["losses"]["forget_npo"]) << "cycle record " << i;
    EXPECT_EQ(a[i]["metrics"], b[i]["metrics"]) << "cycle record " << i;
    EXPECT_EQ(a[i]["losses"], c[i]["losses"]) << "cycle record " << i;
    EXPECT_EQ(a[i]["metrics"], c[i]["metrics"]) << "cycle record " << i;
  }
  EXPECT_EQ(a.back()["request"], 1);
  // The cache's reference forwards are counted once: every forget sample of both requests.
  EXPECT_EQ(a.back()["cost"]["forward_tokens"], c.back()["cost"]["forward_tokens"]);
  EXPECT_GT(a.back()["cost"]["forward_tokens"].get<int64_t>(), 0);
}

// ICU (which samples remain, its holdout level) and PDU (its dual variable, updated on every step)
// carry state across the resume.
TEST_F(Unlearning, ResumedRunWithSequentialRequestsEqualsUninterruptedOne) {
  const std::vector<std::string> common = {"unlearn.methods=[\"icu\", \"pdu\"]", "unlearn.requests=2",
                                           "unlearn.max_cycles=2", "unlearn.pdu_warmup_cycles=0"};
  RunConfig a = elsewhere("resume-a", common), b = elsewhere("resume-b", common);
  ASSERT_TRUE(run_unlearn_phase(a, {}).is_ok());
  ASSERT_TRUE(run_unlearn_phase(b, {false, 1}).is_ok());
  EXPECT_FALSE(fs::exists(b.run.dir + "/unlearn-icu/summary.json"));
  ASSERT_TRUE(run_unlearn_phase(b, {true, 2}).is_ok());  // crosses into the second request
  ASSERT_TRUE(run_unlearn_phase(b, {true, 0}).is_ok());
  using Keys = std::vector<std::string>;
  for (const auto& [method, states] : {std::pair{"icu", Keys{"remaining", "icu_holdout_level"}}, std::pair{"pdu", Keys{"pdu_lambda"}}}) {
    SCOPED_TRACE(method);
    const std::string run = std::string("/unlearn-") + method;
    auto ra = read_jsonl(a.run.dir + run + "/metrics.jsonl"), rb = read_jsonl(b.run.dir + run + "/metrics.jsonl");
    ASSERT_EQ(ra.size(), 4u);
    ASSERT_EQ(rb.size(), ra.size());
    for (size_t i = 0; i < ra.size(); ++i) {
      EXPECT_EQ(ra[i]["request"], rb[i]["request"]);
      EXPECT_EQ(ra[i]["forget_samples"], rb[i]["forget_samples"]);
      EXPECT_EQ(ra[i]["losses"], rb[i]["losses"]) << "cycle record " << i;
      EXPECT_EQ(ra[i]["metrics"], rb[i]["metrics"]) << "cycle record " << i;
    }
    EXPECT_EQ(ra.back()["request"], 1);
    auto wa = H5File::open(list_checkpoints(a.run.dir + run + "/checkpoints").front()).value();
    auto wb = H5File::open(list_checkpoints(b.run.dir + run + "/checkpoints").front()).value();
    for (const std::string& n : wa.list("model")) {
      EXPECT_TRUE(at::equal(wa.read_tensor("model/" + n).value(), wb.read_tensor("model/" + n).value())) << n;
    }
    for (const std::string& state : states) {
      const std::string key = "state/strategy/" + state;
      EXPECT_TRUE(at::equal(wa.read_tensor(key).value(), wb.read_tensor(key).value())) << key;
    }
  }
}

// LoRA end to end (docs/strategies.md, LoRA): every method runs with adapters; a resumed run with
// two requests equals an uninterrupted one, its checkpoints hold only the adapters; a checkpoint
// whose base changed since is refused, on resume and on evaluation.
TEST_F(Unlearning, LoraRunsEveryMethodResumesBitIdenticallyAndRefusesAChangedBase) {
  const std::string lora = "unlearn.adapter=\"lora\"";
  RunConfig all = elsewhere("lora-all", {lora, "unlearn.max_cycles=1", "unlearn.methods=[\"all\"]"});
  ASSERT_TRUE(run_unlearn_phase(all, {}).is_ok());
  const json target = read_json(*dir_ + "/target/summary.json");
  for (const std::string& m : resolve_methods(all.unlearn.methods)) {
    const json s = read_json(all.run.dir + "/unlearn-" + m + "/summary.json");
    EXPECT_EQ(s["adapter"], runs_outside_cycles(m) ? "none" : "lora") << m;  // the task vector and whp_logits use full weights
    // Forget perplexity (continuous: one cycle at a small rate may leave every greedy decode as it was).
    const double ppl = s["metrics"]["ppl_forget"], ppl_target = target["metrics"]["ppl_forget"];
    EXPECT_GT(std::abs(ppl / ppl_target - 1), 1e-5) << m << ": the adapters changed nothing";
  }
  const std::vector<std::string> common = {lora, "unlearn.methods=[\"icu\"]", "unlearn.requests=2", "unlearn.max_cycles=2"};
  RunConfig a = elsewhere("lora-resume-a", common), b = elsewhere("lora-resume-b", common);
  ASSERT_TRUE(run_unlearn_phase(a, {}).is_ok());
  ASSERT_TRUE(run_unlearn_phase(b, {false, 1}).is_ok());
  ASSERT_TRUE(run_unlearn_phase(b, {true, 2}).is_ok());
  ASSERT_TRUE(run_unlearn_phase(b, {true, 0}).is_ok());
  auto ra = read_jsonl(a.run.dir + "/unlearn-icu/metrics.jsonl"), rb = read_jsonl(b.run.dir + "/unlearn-icu/metrics.jsonl");
  ASSERT_EQ(ra.size(), 4u);
  ASSERT_EQ(rb.size(), ra.size());
  for (size_t i = 0; i < ra.size(); ++i) {
    EXPECT_EQ(ra[i]["losses"], rb[i]["losses"]) << "cycle record " << i;
    EXPECT_EQ(ra[i]["metrics"], rb[i]["metrics"]) << "cycle record " << i;
  }
  auto wa = H5File::open(list_checkpoints(a.run.dir + "/unlearn-icu/checkpoints").front()).value();
  auto wb = H5File::open(list_checkpoints(b.run.dir + "/unlearn-icu/checkpoints").front()).value();
  EXPECT_FALSE(wa.exists("model/embed"));  // the base is not copied into the checkpoint
  EXPECT_EQ(wa.attr_string("adapter").value(), "lora");
  ASSERT_EQ(wa.list("model").size(), 2u * 7u * static_cast<size_t>(a.model.num_hidden_layers));
  for (const std::string& n : wa.list("model")) {
    EXPECT_TRUE(at::equal(wa.read_tensor("model/" + n).value(), wb.read_tensor("model/" + n).value())) << n;
  }

  // The base changes under a stopped run: resume and evaluation refuse it, naming the base.
  const std::string base = test::scratch_dir("lora-base") + "/base.h5";
  fs::copy_file(list_checkpoints(*dir_ + "/target/checkpoints").front(), base);
  RunConfig c = elsewhere("lora-changed", {lora, "unlearn.methods=[\"ga\"]", "unlearn.max_cycles=2"});
  c.unlearn.from = base;
  ASSERT_TRUE(run_unlearn_phase(c, {false, 1}).is_ok());
  fs::copy_file(list_checkpoints(*dir_ + "/retrain/checkpoints").front(), base, fs::copy_options::overwrite_existing);
  Status resumed = run_unlearn_phase(c, {true, 0});
  ASSERT_FALSE(resumed.is_ok());
  EXPECT_NE(resumed.message().find("the base changed"), std::string::npos) << resumed.message();
  EXPECT_NE(resumed.message().find(base), std::string::npos) << resumed.message();
  Status eval = run_eval(c, list_checkpoints(c.run.dir + "/unlearn-ga/checkpoints").front(), c.run.dir + "/eval.json");
  ASSERT_FALSE(eval.is_ok());
  EXPECT_NE(eval.message().find("the base changed"), std::string::npos) << eval.message();
}

// A LoRA checkpoint exports as merged weights and as a PEFT folder (names, shapes and
// adapter_config.json as PEFT writes them); both reload to the adapted model's logits, and the
// PEFT folder loads back into adapters exactly and evaluates.
TEST_F(Unlearning, LoraExportsMergedWeightsAndPeftFoldersThatReloadToTheSameLogits) {
  RunConfig cfg = elsewhere("lora-export", {"unlearn.adapter=\"lora\"", "unlearn.methods=[\"npo\"]", "unlearn.max_cycles=1",
                                            "unlearn.lora_targets=[\"q\", \"v\", \"down\"]", "unlearn.lora_rank=4"});
  ASSERT_TRUE(run_unlearn_phase(cfg, {}).is_ok());
  const std::string ckpt = list_checkpoints(cfg.run.dir + "/unlearn-npo/checkpoints").front();
  LocalCommunicator world;
  Mesh mesh = Mesh::create(world, MeshConfig{}).value();
  ModelOptions frozen;
  frozen.trainable = false;
  Llama adapted(cfg.model, mesh, 1, frozen), plain(cfg.model, mesh, 1, frozen), from_peft(cfg.model, mesh, 1, frozen);
  adapted.add_lora(lora_options(cfg.unlearn));
  ASSERT_TRUE(load_weights(ckpt, adapted, mesh).is_ok());
  at::Tensor ids = at::arange(3, 3 + 2 * 20, at::kLong).remainder(cfg.model.vocab_size).view({2, 20});
  at::Tensor pos = at::arange(20, at::kLong).expand({2, 20}).contiguous(), seg = at::zeros({2, 20}, at::kLong);
  at::NoGradGuard no_grad;
  const at::Tensor expected = adapted.full_logits(ids, pos, seg);

  const std::string merged = cfg.run.dir + "/merged", peft = cfg.run.dir + "/peft";
  ASSERT_TRUE(run_convert_to_hf(cfg, ckpt, merged, {"float32", 5000, true, ""}).is_ok());
  ASSERT_TRUE(load_weights(merged, plain, mesh).is_ok());
  EXPECT_LT((plain.full_logits(ids, pos, seg) - expected).abs().max().item<double>(), 1e-5);

  ASSERT_TRUE(run_convert_to_hf(cfg, ckpt, peft, {"float32", 5000, false, ""}).is_ok());
  const json config = read_json(peft + "/adapter_config.json");
  EXPECT_EQ(config["peft_type"], "LORA");
  EXPECT_EQ(config["r"], 4);
  EXPECT_EQ(config["lora_alpha"], cfg.unlearn.lora_alpha);
  EXPECT_EQ(config["lora_dropout"], cfg.unlearn.lora_dropout);
  EXPECT_EQ(config["target_modules"], json({"q_proj", "v_proj", "down_proj"}));
  EXPECT_EQ(config["bias"], "none");
  EXPECT_EQ(config["task_type"], "CAUSAL_LM");
  EXPECT_EQ(config["base_model_name_or_path"], fs::absolute(cfg.unlearn.from).lexically_normal().string());
  auto st = SafetensorsFile::open(peft + "/adapter_model.safetensors").value();
  const int64_t D = cfg.model.hidden_size, F = cfg.model.intermediate_size, r = 4;
  const int64_t kv = cfg.model.num_key_value_heads * cfg.model.head_dim();
  EXPECT_EQ(st.entries().size(), 6u * static_cast<size_t>(cfg.model.num_hidden_layers));
  for (int64_t i = 0; i < cfg.model.num_hidden_layers; ++i) {
    const std::string l = "base_model.model.model.layers." + std::to_string(i) + ".";
    const std::vector<std::pair<std::string, std::vector<int64_t>>> want = {
        {"self_attn.q_proj.lora_A.weight", {r, D}}, {"self_attn.q_proj.lora_B.weight", {D, r}},
        {"self_attn.v_proj.lora_A.weight", {r, D}}, {"self_attn.v_proj.lora_B.weight", {kv, r}},
        {"mlp.down_proj.lora_A.weight", {r, F}},    {"mlp.down_proj.lora_B.weight", {D, r}}};
    for (const auto& [name, shape] : want) {
      const SafetensorsEntry* e = st.find(l + name);
      ASSERT_NE(e, nullptr) << l + name;
      EXPECT_EQ(e->shape, shape) << l + name;
    }
  }
  Llama merged_from_peft(cfg.model, mesh, 1, frozen);
  ASSERT_TRUE(load_weights(peft, merged_from_peft, mesh).is_ok());
  EXPECT_LT((merged_from_peft.full_logits(ids, pos, seg) - expected).abs().max().item<double>(), 1e-5);
  from_peft.add_lora(lora_options(cfg.unlearn));
  ASSERT_TRUE(load_weights(peft, from_peft, mesh).is_ok());
  for (size_t i = 0; i < adapted.adapters().size(); ++i) {
    EXPECT_TRUE(at::equal(from_peft.adapters()[i].value, adapted.adapters()[i].value)) << adapted.adapters()[i].name;
  }
  EXPECT_TRUE(at::equal(from_peft.full_logits(ids, pos, seg), expected));
  Status eval = run_eval(cfg, peft, cfg.run.dir + "/eval.json");
  EXPECT_TRUE(eval.is_ok()) << eval.message();
  // A PEFT folder that does not fit the base, or adapts what Lethe cannot: clear errors.
  json wrong = config;
  wrong["target_modules"] = {"q_proj", "fc1"};
  ASSERT_TRUE(write_file_atomic(peft + "/adapter_config.json", wrong.dump()).is_ok());
  Status module = load_weights(peft, plain, mesh);
  EXPECT_NE(module.message().find("target module \"fc1\" is not a Llama projection"), std::string::npos) << module.message();
  wrong = config;
  wrong["r"] = 8;
  ASSERT_TRUE(write_file_atomic(peft + "/adapter_config.json", wrong.dump()).is_ok());
  Status shape = load_weights(peft, plain, mesh);
  EXPECT_NE(shape.message().find("lora_A.weight has shape [4, " + std::to_string(D) + "], the base model expects [8, "),
            std::string::npos) << shape.message();
  // Adapters of another scale than the model's are refused, not applied with the wrong α / r.
  Llama other_alpha(cfg.model, mesh, 1, frozen);
  other_alpha.add_lora({4, 8.0, {"q", "v", "down"}, 0.0});
  Status alpha = load_weights(ckpt, other_alpha, mesh);
  EXPECT_NE(alpha.message().find("adapters of rank 4, alpha 32 on q, v, down, the model's are rank 4, alpha 8"),
            std::string::npos) << alpha.message();
  // Config: a target that does not exist, a rank of 0.
  auto bad_target = parse_config(to_toml(cfg), "lora-test", {"unlearn.lora_targets=[\"q\", \"qkv\"]"});
  ASSERT_FALSE(bad_target.is_ok());
  EXPECT_NE(bad_target.status().message().find("lora_targets: \"qkv\" is not a projection"), std::string::npos)
      << bad_target.status().message();
  auto bad_rank = parse_config(to_toml(cfg), "lora-test", {"unlearn.lora_rank=0"});
  ASSERT_FALSE(bad_rank.is_ok());
  EXPECT_NE(bad_rank.status().message().find("lora_rank"), std::string::npos) << bad_rank.status().message();
}

TEST_F(Unlearning, BadInputsAreClearErrors) {
  auto message = [](const Status& s) { return s.is_ok() ? std::string("(ok)") : s.message(); };
  // An unknown method names the valid ones.
  Status unknown = run_unlearn_phase(elsewhere("bad-name", {"unlearn.methods=[\"ga\", \"amnesia\"]"}), {});
  EXPECT_NE(message(unknown).find("\"amnesia\" is not an unlearning method; valid: ga, graddiff, kl, npo, simnpo, icu"),
            std::string::npos) << message(unknown);
  // RMU with adapters on no down-projection: nothing it may train has an adapter.
  Status rmu = run_unlearn_phase(elsewhere("bad-rmu", {"unlearn.methods=[\"rmu\"]", "unlearn.adapter=\"lora\"",
                                                       "unlearn.lora_targets=[\"q\", \"v\"]"}), {});
  EXPECT_NE(message(rmu).find("unlearn.lora_targets: RMU trains the MLP down-projections of blocks 0 … 0"), std::string::npos)
      << message(rmu);
  // IdkDPO's refusal file: missing, or without a sentence; a request with no forget QA.
  const std::string idk = "unlearn.methods=[\"idkdpo\"]";
  Status missing = run_unlearn_phase(elsewhere("bad-idk", {idk, "unlearn.idk_file=\"/nonexistent/idk.txt\""}), {});
  EXPECT_NE(message(missing).find("unlearn.idk_file: cannot read /nonexistent/idk.txt"), std::string::npos) << message(missing);
  const std::string blank = test::scratch_dir("idk-blank") + "/idk.txt";
  std::ofstream(blank) << "\n  \n";
  Status no_sentence = run_unlearn_phase(elsewhere("bad-idk-blank", {idk, "unlearn.idk_file=\"" + blank + "\""}), {});
  EXPECT_NE(message(no_sentence).find(blank + " (unlearn.idk_file): no refusal sentences; expected one per line"), std::string::npos)
      << message(no_sentence);
  auto altpo = make_strategy("altpo", UnlearnConfig{}).value();
  std::vector<UnlearnRequest> passages_only(1);
  passages_only[0].name = "forget-0";
  passages_only[0].forget.tokens = at::zeros({2, 5}, at::kLong);
  Status no_qa = Unlearner::check(*altpo, UnlearnConfig{}, passages_only, nullptr, nullptr, nullptr);
  EXPECT_NE(message(no_qa).find("\"altpo\" unlearns forget QA (question → answer pairs), and forget request \"forget-0\" has none"),
            std::string::npos) << message(no_qa);
  // A forget id that is not in the corpus.
  Status stranger = run_unlearn_phase(elsewhere("bad-ids", {"corpus.forget_ids=[\"p9999\"]"}), {});
  EXPECT_NE(message(stranger).find("p9999"), std::string::npos) << message(stranger);
  // No target to unlearn.
  RunConfig fresh = unlearn_config(test::scratch_dir("no-target"));
  EXPECT_NE(message(run_unlearn_phase(fresh, {})).find("no target checkpoint"), std::string::npos);
  // A method that needs retain data, given none; an empty forget set.
  LocalCommunicator world;
  Mesh mesh = Mesh::create(world, MeshConfig{}).value();
  UnlearnConfig u;
  auto graddiff = make_strategy("graddiff", u).value();
  std::vector<UnlearnRequest> one(1);
  one[0].name = "forget-0";
  one[0].forget.tokens = at::zeros({2, 5}, at::kLong);
  Status no_retain = Unlearner::check(*graddiff, u, one, nullptr, nullptr, nullptr);
  EXPECT_NE(message(no_retain).find("\"graddiff\" needs retain data"), std::string::npos) << message(no_retain);
  Status empty = Unlearner::check(*graddiff, u, {}, nullptr, nullptr, nullptr);
  EXPECT_NE(message(empty).find("the forget set is empty"), std::string::npos) << message(empty);
  // Evaluating a checkpoint whose vocabulary differs from the run's.
  RunConfig other_vocab = elsewhere("bad-vocab", {"model.vocab_size=600", "tokenizer.vocab_size=512"});
  const std::string ckpt = list_checkpoints(*dir_ + "/target/checkpoints").front();
  Status vocab = run_eval(other_vocab, ckpt, other_vocab.run.dir + "/eval.json");
  EXPECT_NE(message(vocab).find("vocabulary has 512 tokens, this run's model.vocab_size is 600"), std::string::npos)
      << message(vocab);
}

}  // namespace
}  // namespace lethe
