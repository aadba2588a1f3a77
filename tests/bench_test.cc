// lethe bench (launch/bench.h): nested forget sets share the target's training data; the three
// benches on the tiny corpus train each model they need once (a rerun trains none), share one
// target, and report what their summaries hold; bad input is named.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <set>

#include <nlohmann/json.hpp>

#include "eval/challenge.h"
#include "io/corpus.h"
#include "launch/bench.h"
#include "tests/helpers.h"

namespace lethe {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using test::read_json;

RunConfig bench_config(const std::string& dir, std::vector<std::string> extra = {}) {
  RunConfig cfg = test::tiny_config(dir);
  extra.insert(extra.begin(), {"corpus.qa_in_training=true", "run.log_every=80", "unlearn.max_cycles=2", "unlearn.lr=3e-4",
                               "unlearn.keep_checkpoints=1", "unlearn.methods=[\"ga\", \"graddiff\"]"});
  auto c = parse_config(to_toml(cfg), "bench-test", extra);
  EXPECT_TRUE(c.is_ok()) << c.status().message();
  return c.value();
}

std::vector<std::string> trained(const std::string& report) { return read_json(report)["trained"].get<std::vector<std::string>>(); }

std::set<std::string> groups_of(const Corpus& c, Split s) {
  std::set<std::string> out;
  for (const Document& d : c.docs) if (d.split == s) out.insert(d.group);
  return out;
}

TEST(Corpus, ForgetGroupsKeepsTheFirstPeopleAndTheTargetsData) {
  CorpusConfig cfg;
  cfg.people = 20;
  cfg.forget_fraction = 0.25;
  const Corpus all = load_corpus(cfg, "").value();
  std::vector<std::string> order;  // forget people in corpus order
  for (const Document& d : all.docs) {
    if (d.split == Split::kForget && std::find(order.begin(), order.end(), d.group) == order.end()) order.push_back(d.group);
  }
  ASSERT_EQ(order.size(), 5u);
  cfg.forget_groups = 2;
  const Corpus two = load_corpus(cfg, "").value();
  EXPECT_EQ(groups_of(two, Split::kForget), (std::set<std::string>{order[0], order[1]}));
  EXPECT_EQ(groups_of(two, Split::kHoldout), groups_of(all, Split::kHoldout));
  for (const QaProbe& q : two.qa) {
    if (q.group == order[2]) {
      EXPECT_EQ(q.split, Split::kRetain);
    }
  }
  // The target trains on the same documents, in the same order, whatever forget_groups says.
  const auto a = all.training_documents(true, true), b = two.training_documents(true, true);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i].text, b[i].text);
  cfg.forget_groups = 6;
  auto bad = load_corpus(cfg, "");
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("corpus.forget_groups = 6, but the forget set has only 5 group(s)"), std::string::npos);
}

TEST(Bench, ScalabilitySizesDefaultToShareOfPeopleAndLeaveRetainPeople) {
  RunConfig cfg = parse_config("", "<embedded default>").value();
  EXPECT_EQ(scalability_sizes(cfg, {}).value(), (std::vector<int64_t>{5, 10, 20, 40}));
  EXPECT_EQ(scalability_sizes(cfg, {20, 3, 20}).value(), (std::vector<int64_t>{3, 20}));
  auto bad = scalability_sizes(cfg, {90});  // 90 forget + 10 holdout of 100
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("--people: a forget set of 90 people and corpus.holdout_fraction's 10 holdout people leave no "
                                        "retain people"), std::string::npos) << bad.status().message();
  EXPECT_FALSE(scalability_sizes(cfg, {0, 4}).is_ok());
}

TEST(Bench, ChallengeNeedsTwoSeedsAndItsReducedDefaultStaysARealExperiment) {
  const RunConfig tiny = bench_config(test::scratch_dir("challenge-one-seed"));
  Status one = run_bench_challenge(tiny, {0, {}, 4, 1});
  ASSERT_FALSE(one.is_ok());
  EXPECT_NE(one.message().find("--seeds 1: "), std::string::npos);
  EXPECT_NE(one.message().find("at least 2 models a side"), std::string::npos);
  EXPECT_FALSE(fs::exists(tiny.run.dir + "/bench/challenge/seed-1234"));
  // At least 30 people, 5 forgotten and 5 held out, and the default model.
  const RunConfig reduced = parse_config("", "<embedded default>", challenge_reduced_overrides()).value();
  const Corpus c = load_corpus(reduced.corpus, "").value();
  EXPECT_EQ(reduced.corpus.people, 30);
  EXPECT_EQ(groups_of(c, Split::kForget).size(), 5u);
  EXPECT_EQ(groups_of(c, Split::kHoldout).size(), 5u);
  const ModelConfig def;
  EXPECT_EQ(reduced.model.hidden_size, def.hidden_size);
  EXPECT_EQ(reduced.model.num_hidden_layers, def.num_hidden_layers);
  EXPECT_EQ(reduced.train.steps, parse_config("", "d").value().train.steps);
}

// Two requests: the run's own target and retrained model, one retrained model for request 1 alone;
// select = "last" keeps each request's model. A budget already spent starts nothing; a rerun after
// the bench finished trains nothing.
TEST(BenchRuns, SustainabilityTrainsOneRetrainedModelPerPrefixOfRequests) {
  const RunConfig cfg = bench_config(test::scratch_dir("bench-sustainability"), {"unlearn.select=\"last\""});
  const std::string dir = cfg.run.dir + "/bench/sustainability";
  ASSERT_TRUE(run_bench_sustainability(cfg, {1e-9, {}, 2, 8}).is_ok());
  EXPECT_FALSE(fs::exists(cfg.run.dir + "/target"));
  Status s = run_bench_sustainability(cfg, {0, {}, 2, 8});
  ASSERT_TRUE(s.is_ok()) << s.message();
  EXPECT_EQ(trained(dir + "/sustainability.json"), (std::vector<std::string>{"../../target", "../../retrain", "after-1/retrain"}));
  const json report = read_json(dir + "/sustainability.json");
  ASSERT_EQ(report["points"].size(), 2u);
  // After request 1: its forget set is the first of the three forget people (12 people, 0.25).
  const json after1 = read_json(dir + "/after-1/unlearn-ga/summary.json");
  EXPECT_EQ(after1["after_request"], 1);
  EXPECT_TRUE(after1["metrics"].contains("privleak"));
  EXPECT_EQ(read_json(dir + "/after-1/target/summary.json")["shared_from"], "../../../../target");
  std::set<std::string> forgotten;  // after-1's forget set: request 1's person alone
  for (const json& d : test::read_jsonl(dir + "/after-1/corpus/forget.jsonl")) forgotten.insert(d["group"].get<std::string>());
  EXPECT_EQ(forgotten.size(), 1u);
  EXPECT_TRUE(fs::exists(dir + "/after-2/unlearn-ga/checkpoints/selected-r0.h5"));
  ASSERT_TRUE(run_bench_sustainability(cfg, {0, {}, 2, 8}).is_ok());
  EXPECT_TRUE(trained(dir + "/sustainability.json").empty());
  EXPECT_FALSE(run_bench_sustainability(cfg, {0, {}, 4, 8}).is_ok());  // 4 requests of 3 forget people
}

// Forget sets of 1 and 2 people: one target (in the largest size's folder, linked and re-evaluated
// by the other), one retrained model per size.
TEST(BenchRuns, ScalabilitySharesOneTargetAndRetrainsPerSize) {
  const RunConfig cfg = bench_config(test::scratch_dir("bench-scalability"), {"unlearn.select=\"holdout\"", "unlearn.methods=[\"ga\"]"});
  Status s = run_bench_scalability(cfg, {0, {2, 1}, 4, 8});
  ASSERT_TRUE(s.is_ok()) << s.message();
  const std::string dir = cfg.run.dir + "/bench/scalability";
  EXPECT_EQ(trained(dir + "/scalability.json"), (std::vector<std::string>{"people-2/target", "people-2/retrain", "people-1/retrain"}));
  const json report = read_json(dir + "/scalability.json");
  ASSERT_EQ(report["points"].size(), 2u);
  EXPECT_EQ(report["points"][0]["x"], 1);
  EXPECT_EQ(report["points"][1]["x"], 2);
  const json shared = read_json(dir + "/people-1/target/summary.json"), own = read_json(dir + "/people-2/target/summary.json");
  EXPECT_EQ(shared["shared_from"], "../../people-2/target");
  EXPECT_EQ(shared["checkpoint"], own["checkpoint"]);
  // The same model on a forget set of 1 person of the 2: other per-sample scores, as many as its passages.
  EXPECT_LT(shared["logprobs_forget"].size(), own["logprobs_forget"].size());
  EXPECT_TRUE(fs::exists(dir + "/scalability.txt"));
}

// N = 2: one target, two retrained models, two unlearning runs of it; the report's F equals the
// challenge's F computed here from the summaries' per-sample scores.
TEST(BenchRuns, ChallengeScoresTheSummariesSamples) {
  const RunConfig cfg = bench_config(test::scratch_dir("bench-challenge"), {"unlearn.methods=[\"ga\"]"});
  Status s = run_bench_challenge(cfg, {0, {}, 4, 2});
  ASSERT_TRUE(s.is_ok()) << s.message();
  const std::string dir = cfg.run.dir + "/bench/challenge";
  EXPECT_EQ(trained(dir + "/challenge.json"), (std::vector<std::string>{"seed-1234/target", "seed-1234/retrain", "seed-1235/retrain"}));
  std::vector<std::vector<double>> u, r;
  for (const char* seed : {"seed-1234", "seed-1235"}) {
    const auto lu = read_json(dir + "/" + seed + "/unlearn-ga/summary.json")["logprobs_forget"].get<std::vector<double>>();
    const auto lr = read_json(dir + "/" + seed + "/retrain/summary.json")["logprobs_forget"].get<std::vector<double>>();
    ASSERT_EQ(lu.size(), lr.size());
    u.resize(lu.size());
    r.resize(lr.size());
    for (size_t i = 0; i < lu.size(); ++i) {
      u[i].push_back(lu[i]);
      r[i].push_back(lr[i]);
    }
  }
  const json row = read_json(dir + "/challenge.json")["methods"][0];
  EXPECT_EQ(row["method"], "ga");
  ASSERT_EQ(row["by_n"].size(), 1u);
  EXPECT_EQ(row["by_n"][0]["n"], 2);
  EXPECT_DOUBLE_EQ(row["by_n"][0]["f"].get<double>(), forgetting_f(u, r));
  EXPECT_TRUE(fs::is_symlink(dir + "/seed-1235/target"));
}

}  // namespace
}  // namespace lethe
