// Sweeps (Note [Sweeps], launch/sweep.h): the grid, its points and shards, and the Pareto front
// (Note [Pareto front], eval/selection.h). The sweep end to end, killed and resumed, is
// tests/sweep.sh.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>

#include "eval/selection.h"
#include "launch/sweep.h"
#include "tests/helpers.h"

namespace lethe {
namespace {

TEST(Sweep, ParetoFrontOfHandMadePoints) {
  // {forget gap ↓, utility ↑}. Dominated: 1 by 0 (worse forget, same utility); 3 by 2 (worse on
  // both); 5 by 4 (same forget, lower utility). 6 equals 2: both stay on the front.
  const std::vector<FrontPoint> pts = {{0.2, 60}, {0.3, 60}, {0.4, 80}, {0.5, 70}, {0.1, 40}, {0.1, 30}, {0.4, 80}, {0.9, 95}};
  const std::vector<bool> expected = {true, false, true, false, true, false, true, true};
  EXPECT_EQ(pareto_front(pts), expected);
  EXPECT_EQ(pareto_front({{0.5, 50}}), std::vector<bool>{true});
  EXPECT_TRUE(pareto_front({}).empty());
}

TEST(Sweep, ForgetGapIsTheGapWithoutItsUtilityTerm) {
  // Target VerbMem 80, retrain 50; the model 60: |60 − 50| / 30 = 1/3. PrivLeak −20: 0.2.
  // KnowMem-forget 40 against target 70 and retrain 30: 10 / 40 = 0.25. Retain KnowMem 30 against
  // the retrained model's 60: a utility term of 0.5, in the gap only.
  const GapPoint target{80, -90, 70.0, 60.0, std::nullopt}, retrain{50, 0, 30.0, 60.0, std::nullopt};
  const GapPoint model{60, -20, 40.0, 30.0, std::nullopt};
  EXPECT_NEAR(forget_gap(model, target, retrain), 1.0 / 3, 1e-12);
  EXPECT_NEAR(retrain_gap(model, target, retrain), 0.5, 1e-12);
}

TEST(Sweep, GridValuesAreKeptAsWritten) {
  auto a = parse_grid("unlearn.lr=[1e-4, 3e-4 ,0.001]");
  ASSERT_TRUE(a) << a.status().message();
  EXPECT_EQ(a->key, "unlearn.lr");
  EXPECT_EQ(a->values, (std::vector<std::string>{"1e-4", "3e-4", "0.001"}));
  auto s = parse_grid("unlearn.npo.npo_retain=[\"nll\", 'kl']");
  ASSERT_TRUE(s) << s.status().message();
  EXPECT_EQ(s->values, (std::vector<std::string>{"\"nll\"", "'kl'"}));
  for (const char* bad : {"unlearn.lr", "unlearn.lr=1e-4", "unlearn.lr=[]", "unlearn.lr=[nll]"}) {
    auto r = parse_grid(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_NE(r.status().message().find("--grid unlearn.lr"), std::string::npos) << r.status().message();
  }
}

// A run file for sweep_units, which loads each point's config from it.
std::string run_file(const std::string& dir, const std::string& extra = "", const std::string& name = "run.toml") {
  const std::string path = dir + "/" + name;
  std::ofstream(path) << "[run]\ndir = \"" << dir << "/run\"\n[unlearn]\nmethods = [\"ga\", \"npo\"]\n" << extra;
  return path;
}

TEST(Sweep, UnitsAreMethodsTimesTheirAxesTimesSeeds) {
  const std::string dir = test::scratch_dir("sweep_units"), path = run_file(dir, "[experiment]\nseeds = 2\n");
  auto cfg = load_config(path);
  ASSERT_TRUE(cfg) << cfg.status().message();
  std::vector<GridAxis> grid = {*parse_grid("unlearn.lr=[1e-4, 3e-4]"), *parse_grid("unlearn.npo.npo_retain=[\"nll\", \"kl\"]")};
  auto units = sweep_units(*cfg, path, {}, grid);
  ASSERT_TRUE(units) << units.status().message();
  // ga: 2 learning rates; npo: 2 × 2; each over 2 seeds.
  ASSERT_EQ(units->size(), 12u);
  const SweepUnit& first = (*units)[0];
  EXPECT_EQ(first.point, "ga/lr=1e-4");
  EXPECT_EQ(first.cfg.run.dir, dir + "/run/sweep/ga/lr=1e-4/seed-1234");
  EXPECT_EQ(first.models, dir + "/run/seed-1234");
  EXPECT_EQ(first.cfg.unlearn.methods, std::vector<std::string>{"ga"});
  EXPECT_EQ(first.cfg.run.seed, 1234);
  EXPECT_EQ((*units)[1].cfg.run.seed, 1235);
  EXPECT_EQ((*units)[1].models, dir + "/run/seed-1235");
  EXPECT_DOUBLE_EQ(first.cfg.unlearn_for("ga").lr, 1e-4);
  // The last axis varies fastest; a method section's key applies to its method alone.
  std::vector<std::string> npo;
  for (const SweepUnit& u : *units) {
    if (u.method == "npo" && u.cfg.run.seed == 1234) npo.push_back(u.point);
  }
  EXPECT_EQ(npo, (std::vector<std::string>{"npo/lr=1e-4,npo_retain=nll", "npo/lr=1e-4,npo_retain=kl",
                                           "npo/lr=3e-4,npo_retain=nll", "npo/lr=3e-4,npo_retain=kl"}));
  const SweepUnit& last = units->back();
  EXPECT_DOUBLE_EQ(last.cfg.unlearn_for("npo").lr, 3e-4);
  EXPECT_EQ(last.cfg.unlearn_for("npo").npo_retain, "kl");
  // A grid over a key a method ships a default for still sets it (the section is above the defaults).
  const std::string wga_path = run_file(dir, "[unlearn.wga]\nlr = 1e-6\n", "wga.toml");
  auto wga_cfg = load_config(wga_path, {"unlearn.methods=[\"wga\"]"});
  ASSERT_TRUE(wga_cfg) << wga_cfg.status().message();
  auto wga = sweep_units(*wga_cfg, wga_path, {"unlearn.methods=[\"wga\"]"}, {*parse_grid("unlearn.lr=[3e-3]")});
  ASSERT_TRUE(wga) << wga.status().message();
  ASSERT_EQ(wga->size(), 1u);
  EXPECT_DOUBLE_EQ((*wga)[0].cfg.unlearn_for("wga").lr, 3e-3);
  // No grid: each method once, at its settings.
  auto plain = sweep_units(*cfg, path, {}, {});
  ASSERT_TRUE(plain);
  EXPECT_EQ(plain->size(), 4u);
  EXPECT_EQ((*plain)[0].point, "ga/default");
}

TEST(Sweep, ShardsTogetherCoverEveryUnitOnce) {
  for (int64_t n = 1; n <= 5; ++n) {
    std::vector<int> seen(12, 0);
    for (int64_t i = 0; i < n; ++i) {
      for (size_t u : shard_units(12, {i, n})) ++seen.at(u);
    }
    EXPECT_EQ(seen, std::vector<int>(12, 1)) << n << " shards";
  }
  EXPECT_EQ(shard_units(5, {1, 2}), (std::vector<size_t>{1, 3}));
}

TEST(Sweep, BadGridKeysValuesAndShardsAreNamed) {
  const std::string dir = test::scratch_dir("sweep_errors"), path = run_file(dir);
  auto cfg = load_config(path);
  ASSERT_TRUE(cfg);
  auto fails_with = [&](const char* grid, const std::string& expected) {
    auto units = sweep_units(*cfg, path, {}, {*parse_grid(grid)});
    ASSERT_FALSE(units) << grid;
    EXPECT_NE(units.status().message().find(expected), std::string::npos) << units.status().message();
  };
  fails_with("unlearn.lrr=[1]", "--grid unlearn.lrr: value 1");
  fails_with("unlearn.lrr=[1]", "unknown key");
  fails_with("unlearn.lr=[\"fast\"]", "--grid unlearn.lr: value \"fast\"");
  fails_with("unlearn.lr=[\"fast\"]", "expected a number");
  fails_with("unlearn.lr=[-1]", "out of range");
  fails_with("train.lr=[1e-3]", "--grid train.lr: a sweep varies [unlearn] keys only");
  fails_with("unlearn.methods=[[\"ga\"]]", "--grid unlearn.methods");
  fails_with("unlearn.kl.lr=[1e-4]", "--grid unlearn.kl.lr: kl is not among the sweep's methods");
  fails_with("unlearn.npo.requests=[2]", "--grid unlearn.npo.requests: [unlearn.npo] cannot set requests");
  auto twice = sweep_units(*cfg, path, {}, {*parse_grid("unlearn.lr=[1e-4]"), *parse_grid("unlearn.npo.lr=[1e-3]")});
  ASSERT_FALSE(twice);
  EXPECT_NE(twice.status().message().find("--grid unlearn.npo.lr: --grid unlearn.lr already varies npo's lr"), std::string::npos)
      << twice.status().message();
  for (const char* bad : {"2/2", "-1/2", "0/0", "1", "a/b", "1/2x"}) {
    auto s = parse_shard(bad);
    ASSERT_FALSE(s) << bad;
    EXPECT_EQ(s.status().message().rfind(std::string("--shard ") + bad, 0), 0u) << s.status().message();
  }
  auto ok = parse_shard("3/4");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->index, 3);
  EXPECT_EQ(ok->count, 4);
}

}  // namespace
}  // namespace lethe
