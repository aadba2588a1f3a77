#include <gtest/gtest.h>

#include <fstream>

#include "io/config.h"
#include "launch/experiment.h"
#include "tests/helpers.h"

namespace lethe {
namespace {

TEST(Config, DefaultsAreValid) {
  auto cfg = parse_config("", "empty.toml");
  ASSERT_TRUE(cfg.is_ok()) << cfg.status().message();
  EXPECT_EQ(cfg->train.schedule, "cosine");
  EXPECT_EQ(cfg->model.num_key_value_heads, 2);
}

TEST(Config, ReportsEveryProblemWithFileLineAndKey) {
  const char* text =
      "[run]\n"
      "seed = 1\n"
      "colour = \"blue\"\n"          // line 3: unknown key
      "[train]\n"
      "lr = \"fast\"\n"              // line 5: wrong type
      "steps = -3\n"                 // line 6: out of range
      "schedule = \"linear\"\n"      // line 7: not one of
      "[nonsense]\n"                 // line 8: unknown section
      "x = 1\n";
  auto cfg = parse_config(text, "bad.toml");
  ASSERT_FALSE(cfg.is_ok());
  const std::string m = cfg.status().message();
  EXPECT_NE(m.find("5 problem(s)"), std::string::npos) << m;
  EXPECT_NE(m.find("bad.toml:3: run.colour: unknown key"), std::string::npos) << m;
  EXPECT_NE(m.find("bad.toml:5: train.lr: expected a number, got string"), std::string::npos) << m;
  EXPECT_NE(m.find("bad.toml:6: train.steps: value -3 out of range"), std::string::npos) << m;
  EXPECT_NE(m.find("bad.toml:7: train.schedule: \"linear\" is not one of"), std::string::npos) << m;
  EXPECT_NE(m.find("bad.toml:8: nonsense: unknown section"), std::string::npos) << m;
}

TEST(Config, IntegerKeyRejectsFloat) {
  auto cfg = parse_config("[train]\nbatch_size = 1.5\n", "f.toml");
  ASSERT_FALSE(cfg.is_ok());
  EXPECT_NE(cfg.status().message().find("f.toml:2: train.batch_size: expected an integer"), std::string::npos);
}

TEST(Config, SyntaxErrorNamesLine) {
  auto cfg = parse_config("[train]\nlr = = 3\n", "syntax.toml");
  ASSERT_FALSE(cfg.is_ok());
  EXPECT_NE(cfg.status().message().find("syntax.toml:2"), std::string::npos) << cfg.status().message();
}

TEST(Config, CrossFieldChecks) {
  auto cfg = parse_config("[data]\nseq_len = 512\n[model]\nmax_position_embeddings = 256\nnum_key_value_heads = 3\n", "x.toml");
  ASSERT_FALSE(cfg.is_ok());
  const std::string m = cfg.status().message();
  EXPECT_NE(m.find("x.toml:2: data.seq_len: 512 is longer than the model's context"), std::string::npos) << m;
  EXPECT_NE(m.find("x.toml:5: model.num_key_value_heads: must divide num_attention_heads"), std::string::npos) << m;
}

// mesh.optimizer replaced mesh.zero1; bf16 gradients need bf16 weights; fp32 weights with the
// distributed optimizer are fine (the weights are the fp32 masters).
TEST(Config, OptimizerLayoutKeys) {
  auto old = parse_config("[mesh]\nzero1 = true\n", "old.toml");
  ASSERT_FALSE(old.is_ok());
  EXPECT_NE(old.status().message().find("old.toml:2: mesh.zero1: replaced by mesh.optimizer = \"zero1\""), std::string::npos)
      << old.status().message();
  EXPECT_EQ(old.status().message().find("unknown key"), std::string::npos) << old.status().message();
  auto grads = parse_config("[mesh]\ngrad_dtype = \"fp16\"\n", "g.toml");
  ASSERT_FALSE(grads.is_ok());
  EXPECT_NE(grads.status().message().find("g.toml:2: mesh.grad_dtype: \"fp16\" is not one of \"fp32\", \"bf16\""),
            std::string::npos) << grads.status().message();
  auto fp32 = parse_config("[mesh]\ngrad_dtype = \"bf16\"\n", "w.toml");
  ASSERT_FALSE(fp32.is_ok());
  EXPECT_NE(fp32.status().message().find("w.toml:2: mesh.grad_dtype: bf16 gradients need bf16 weights"), std::string::npos)
      << fp32.status().message();
  auto ok = parse_config("[mesh]\noptimizer = \"distributed\"\n", "d.toml");
  EXPECT_TRUE(ok.is_ok()) << ok.status().message();
  auto mixed = parse_config("[train]\ndtype = \"bf16\"\n[mesh]\noptimizer = \"zero1\"\ngrad_dtype = \"bf16\"\n", "m.toml");
  ASSERT_TRUE(mixed.is_ok()) << mixed.status().message();
  EXPECT_EQ(mixed->mesh.optimizer, "zero1");
  EXPECT_EQ(parse_config(to_toml(*mixed), "again").value().mesh.grad_dtype, "bf16");
}

TEST(Config, OverridesApplyAndAreChecked) {
  auto cfg = parse_config("[train]\nlr = 0.1\n", "o.toml", {"train.lr=3e-4", "run.dir=runs/x y", "train.dtype=bf16"});
  ASSERT_TRUE(cfg.is_ok()) << cfg.status().message();
  EXPECT_DOUBLE_EQ(cfg->train.lr, 3e-4);
  EXPECT_EQ(cfg->run.dir, "runs/x y");
  EXPECT_EQ(cfg->train.dtype, "bf16");
  auto bad = parse_config("", "o.toml", {"train.steps=many"});
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("--set train.steps: train.steps: expected an integer"), std::string::npos)
      << bad.status().message();
  EXPECT_FALSE(parse_config("", "o.toml", {"nodot=3"}).is_ok());
}

TEST(Config, EffectiveConfigRoundTrips) {
  auto cfg = parse_config("[train]\nlr = 0.01\n[corpus]\nforget_ids = [\"p0001\"]\n", "r.toml");
  ASSERT_TRUE(cfg.is_ok());
  std::string text = to_toml(*cfg);
  auto again = parse_config(text, "effective.toml");
  ASSERT_TRUE(again.is_ok()) << again.status().message();
  EXPECT_EQ(to_toml(*again), text);
  EXPECT_NE(text.find("lr = 0.01"), std::string::npos);
  EXPECT_NE(text.find("intermediate_size = 352"), std::string::npos);  // defaults included
}

// Note [Method sections]: the built-in values, a method's shipped defaults, the [unlearn] keys the
// run gives, then the method's own section.
TEST(Config, MethodSectionsOverrideTheSharedKeysForThatMethodAlone) {
  auto cfg = parse_config("[unlearn]\nlr = 1e-3\nretain_weight = 2.0\n[unlearn.wga]\nlr = 2e-5\n[unlearn.npo]\nnpo_beta = 0.5\n",
                          "m.toml", {"unlearn.pdu.pdu_dual_lr=0.25"});
  ASSERT_TRUE(cfg.is_ok()) << cfg.status().message();
  EXPECT_DOUBLE_EQ(cfg->unlearn_for("ga").lr, 1e-3);          // shared
  EXPECT_DOUBLE_EQ(cfg->unlearn_for("wga").lr, 2e-5);         // its section
  EXPECT_DOUBLE_EQ(cfg->unlearn_for("ceu").lr, 1e-3);         // the given shared key over a shipped default
  EXPECT_DOUBLE_EQ(cfg->unlearn_for("satimp").forget_weight, 0.1);   // shipped, the key not given
  EXPECT_DOUBLE_EQ(cfg->unlearn_for("satimp").retain_weight, 2.0);   // given
  EXPECT_DOUBLE_EQ(cfg->unlearn_for("graddiff").retain_weight, 2.0);
  EXPECT_DOUBLE_EQ(cfg->unlearn_for("kl").retain_weight, 2.0);
  EXPECT_EQ(cfg->unlearn_for("kl").max_cycles, 12);                  // shipped (a sweep's choice)
  EXPECT_EQ(cfg->unlearn_for("ga").max_cycles, 8);                   // built-in
  EXPECT_DOUBLE_EQ(cfg->unlearn_for("npo").npo_beta, 0.5);
  EXPECT_DOUBLE_EQ(cfg->unlearn_for("simnpo").npo_beta, 0.1);
  EXPECT_DOUBLE_EQ(cfg->unlearn_for("pdu").pdu_dual_lr, 0.25);  // --set into a section
  // The effective config writes each section's differences and reads back the same settings.
  const std::string text = to_toml(*cfg);
  EXPECT_NE(text.find("[unlearn.wga]"), std::string::npos) << text;
  EXPECT_EQ(text.find("[unlearn.ga]"), std::string::npos) << text;
  auto again = parse_config(text, "effective.toml");
  ASSERT_TRUE(again.is_ok()) << again.status().message();
  EXPECT_EQ(to_toml(*again), text);
  EXPECT_DOUBLE_EQ(again->unlearn_for("wga").lr, 2e-5);
  for (const std::string& m : unlearn_method_names()) {
    const UnlearnConfig a = again->unlearn_for(m), b = cfg->unlearn_for(m);
    EXPECT_TRUE(a.lr == b.lr && a.max_cycles == b.max_cycles && a.retain_weight == b.retain_weight &&
                a.forget_weight == b.forget_weight && a.weight_decay == b.weight_decay && a.npo_beta == b.npo_beta)
        << m;
  }
  // A given key counts at its built-in value too, and stays given through the effective config; a
  // key not given leaves the shipped default, and --set on the effective config still reaches it.
  auto given = parse_config("[unlearn]\nmax_cycles = 8\n", "g.toml");
  ASSERT_TRUE(given.is_ok()) << given.status().message();
  EXPECT_EQ(given->unlearn_for("kl").max_cycles, 8);
  EXPECT_EQ(parse_config(to_toml(*given), "effective.toml")->unlearn_for("kl").max_cycles, 8);
  auto plain = parse_config("", "p.toml");
  ASSERT_TRUE(plain.is_ok()) << plain.status().message();
  const std::string effective = to_toml(*plain);
  EXPECT_EQ(parse_config(effective, "effective.toml")->unlearn_for("kl").max_cycles, 12);
  EXPECT_DOUBLE_EQ(parse_config(effective, "effective.toml")->unlearn_for("kl").lr, 1e-4);
  auto two = parse_config(effective, "effective.toml", {"unlearn.max_cycles=2"});
  ASSERT_TRUE(two.is_ok()) << two.status().message();
  for (const char* m : {"ga", "kl", "npo", "icu"}) EXPECT_EQ(two->unlearn_for(m).max_cycles, 2) << m;
  // A section that sets a method back to the shared value keeps it through the effective config.
  auto same = parse_config("[unlearn]\nlr = 1e-3\n[unlearn.ceu]\nlr = 1e-3\n", "s.toml");
  ASSERT_TRUE(same.is_ok()) << same.status().message();
  EXPECT_DOUBLE_EQ(parse_config(to_toml(*same), "effective.toml")->unlearn_for("ceu").lr, 1e-3);
  // RMU's layer must be a block of the model (here 4 blocks), wherever it is set.
  auto rmu = parse_config("[unlearn.rmu]\nrmu_layer = 4\n", "rmu.toml");
  ASSERT_FALSE(rmu.is_ok());
  EXPECT_NE(rmu.status().message().find("unlearn.rmu_layer: 4 is not a block of the model (blocks 0 … 3"), std::string::npos)
      << rmu.status().message();
  // A section for no method, a run-wide key in a section, a bad value: each names its key.
  auto bad = parse_config("[unlearn.npoo]\nlr = 1e-4\n[unlearn.ga]\nrequests = 2\n", "b.toml", {"unlearn.ceu.lr=fast"});
  ASSERT_FALSE(bad.is_ok());
  const std::string msg = bad.status().message();
  EXPECT_NE(msg.find("b.toml:1: [unlearn.npoo]: not a method's section; valid: ga, graddiff"), std::string::npos) << msg;
  EXPECT_NE(msg.find("unlearn.ga.requests: unknown key"), std::string::npos) << msg;
  EXPECT_NE(msg.find("--set unlearn.ceu.lr: unlearn.ceu.lr: expected a number"), std::string::npos) << msg;
}

TEST(Config, ReadsHuggingFaceConfigJson) {
  std::string dir = test::scratch_dir("hf");
  std::ofstream(dir + "/config.json") << R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 32000,
    "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
    "max_position_embeddings": 4096, "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "tie_word_embeddings": false})";
  std::ofstream(dir + "/run.toml") << "[model]\nconfig_json = \"config.json\"\n[data]\nseq_len = 128\n";
  auto cfg = load_config(dir + "/run.toml");
  ASSERT_TRUE(cfg.is_ok()) << cfg.status().message();
  EXPECT_EQ(cfg->model.num_hidden_layers, 32);
  EXPECT_EQ(cfg->model.num_key_value_heads, 32);  // absent → equal to heads, as in transformers
  EXPECT_EQ(cfg->model.intermediate_size, 11008);

  std::ofstream(dir + "/both.toml") << "[model]\nconfig_json = \"config.json\"\nhidden_size = 8\n";
  auto both = load_config(dir + "/both.toml");
  ASSERT_FALSE(both.is_ok());
  EXPECT_NE(both.status().message().find("both.toml:3: model.hidden_size: set either"), std::string::npos);

  std::ofstream(dir + "/missing.toml") << "[model]\nconfig_json = \"nope.json\"\n";
  auto missing = load_config(dir + "/missing.toml");
  ASSERT_FALSE(missing.is_ok());
  EXPECT_NE(missing.status().message().find("nope.json: cannot open"), std::string::npos);
}

TEST(Config, MissingFileIsAClearError) {
  auto cfg = load_config("/nonexistent/run.toml");
  ASSERT_FALSE(cfg.is_ok());
  EXPECT_EQ(cfg.status().message(), "/nonexistent/run.toml: cannot open the config file");
}

// Every layout error is found from the config and the launcher's rank count alone (before MPI
// starts; the mpirun entries in tests/CMakeLists.txt check that), and names its key.
TEST(Layout, ValidateLayoutNamesEachKey) {
  RunConfig cfg = test::tiny_config(test::scratch_dir("layout"));
  cfg.mesh.tp = 2;
  cfg.mesh.dp = 2;
  EXPECT_TRUE(validate_layout(cfg, 4).is_ok()) << validate_layout(cfg, 4).message();
  auto error = [&](RunConfig c, int world) { return validate_layout(c, world).message(); };
  EXPECT_NE(error(cfg, 2).find("mesh.tp (2) × mesh.dp (2) must equal the number of ranks the launcher started (2)"),
            std::string::npos);
  RunConfig c = cfg;
  c.model.num_key_value_heads = 3;
  c.model.num_attention_heads = 3;
  EXPECT_NE(error(c, 4).find("model.num_attention_heads (3) is not divisible by mesh.tp (2)"), std::string::npos) << error(c, 4);
  c = cfg;
  c.unlearn.retain_batch = 3;
  EXPECT_NE(error(c, 4).find("unlearn.retain_batch (3 rows) must be divisible by mesh.dp (2)"), std::string::npos) << error(c, 4);
  c = cfg;
  c.unlearn.forget_batch = 5;
  EXPECT_NE(error(c, 4).find("unlearn.forget_batch (5 rows)"), std::string::npos);
  c = cfg;
  c.train.batch_size = 6;
  c.train.grad_accum = 2;
  EXPECT_NE(error(c, 4).find("train.batch_size / train.grad_accum (3 rows)"), std::string::npos);
  c = cfg;
  c.unlearn.stop_metric = "verbmen";
  EXPECT_NE(error(c, 4).find("unlearn.stop_metric: \"verbmen\" is not a metric"), std::string::npos);
  c = cfg;
  c.unlearn.methods = {"ga", "nope"};
  EXPECT_NE(error(c, 4).find("nope"), std::string::npos);
}

}  // namespace
}  // namespace lethe
