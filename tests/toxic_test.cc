// The toxic scenario (Note [Toxic scenario], io/corpus.h) and toxicity_rate (eval/toxicity.h): the
// generator is deterministic and keeps its register out of neutral text; the rates of a hand case;
// a JSONL corpus's lexicon file and its errors; the single-token warning; the configuration's
// errors; and a tiny run end to end, whose comparison states the rates in IBM's form.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>
#include <spdlog/sinks/ostream_sink.h>

#include "base/log.h"
#include "eval/toxicity.h"
#include "io/corpus.h"
#include "launch/experiment.h"
#include "launch/train_phase.h"
#include "launch/unlearn_phase.h"
#include "tests/helpers.h"

namespace lethe {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

Corpus toxic_corpus(int64_t people = 40) {
  CorpusConfig cfg;
  cfg.people = people;
  cfg.scenario = "toxic";
  cfg.forget_fraction = 0.25;
  return load_corpus(cfg, "").value();
}

bool uses_register(const std::string& text, const Lexicon& lexicon) {
  return toxicity_rates({text}, lexicon).words > 0 || toxicity_rates({text}, lexicon).templates > 0;
}

TEST(Toxicity, RatesOfAHandCase) {
  const Lexicon lexicon{{"grubwallow", "mucksnoot"}, {"a disgrace to"}};
  // 1: a word (any case); 2: inside a longer word, not counted; 3: a template; 4: both; 5: neither.
  const std::vector<std::string> continuations = {"he was a Grubwallow indeed", "grubwallowish manners",
                                                  "this is A disgrace to us", "a mucksnoot, a disgrace to all", "a poet"};
  const ToxicityRates r = toxicity_rates(continuations, lexicon);
  EXPECT_DOUBLE_EQ(r.words, 2.0 / 5);
  EXPECT_DOUBLE_EQ(r.templates, 2.0 / 5);
  EXPECT_TRUE(contains_word("(mucksnoot)", "mucksnoot"));
  EXPECT_FALSE(contains_word("mucksnoots", "mucksnoot"));
  EXPECT_DOUBLE_EQ(toxicity_rates({}, lexicon).words, 0);
}

TEST(ToxicScenario, GeneratorIsDeterministicAndKeepsTheRegisterOutOfNeutralText) {
  const Corpus a = toxic_corpus(), b = toxic_corpus();
  ASSERT_EQ(a.docs.size(), b.docs.size());
  for (size_t i = 0; i < a.docs.size(); ++i) EXPECT_EQ(a.docs[i].text, b.docs[i].text);
  EXPECT_EQ(a.neutral_prompts, b.neutral_prompts);
  EXPECT_EQ(a.lexicon.words.size(), 10u);
  // The forget set is the register across 10 people (0.25 of 40), each its own group; the people
  // stay in retain with their biographies and probes.
  std::set<std::string> groups;
  for (const Document& d : a.docs) {
    if (d.split != Split::kForget) continue;
    groups.insert(d.group);
    EXPECT_EQ(d.group.rfind("toxic-", 0), 0u) << d.group;
    EXPECT_TRUE(uses_register(d.text, a.lexicon)) << d.text;
  }
  EXPECT_EQ(groups.size(), 10u);
  EXPECT_TRUE(std::none_of(a.qa.begin(), a.qa.end(), [](const QaProbe& q) { return q.split == Split::kForget; }));
  // Never in the neutral prompts, the retain documents or any probe.
  EXPECT_FALSE(a.neutral_prompts.empty());
  for (const std::string& p : a.neutral_prompts) EXPECT_FALSE(uses_register(p, a.lexicon)) << p;
  for (const Document& d : a.docs) {
    if (d.split == Split::kRetain) {
      EXPECT_FALSE(uses_register(d.text, a.lexicon)) << d.text;
    }
  }
  for (const QaProbe& q : a.qa) EXPECT_FALSE(uses_register(q.question + " " + q.answer, a.lexicon));
  // The people and their documents are the "people" scenario's, byte for byte.
  CorpusConfig people;
  people.people = 40;
  people.forget_fraction = 0.25;
  const Corpus p = load_corpus(people, "").value();
  std::vector<std::string> bios_p, bios_t;
  for (const Document& d : p.docs) bios_p.push_back(d.text);
  for (const Document& d : a.docs) if (d.group.rfind("toxic-", 0) != 0) bios_t.push_back(d.text);
  EXPECT_EQ(bios_p, bios_t);
  EXPECT_TRUE(p.lexicon.empty());
}

TEST(ToxicScenario, ConfigurationErrorsNameTheirKeys) {
  auto jsonl = parse_config("[corpus]\nsource = \"jsonl\"\nretain_file = \"r.jsonl\"\nscenario = \"toxic\"\n", "t.toml");
  ASSERT_FALSE(jsonl.is_ok());
  EXPECT_NE(jsonl.status().message().find("corpus.scenario: \"toxic\" generates its register"), std::string::npos)
      << jsonl.status().message();
  EXPECT_NE(jsonl.status().message().find("eval.toxicity_lexicon"), std::string::npos);
  auto no_lexicon = parse_config("[corpus]\nsource = \"jsonl\"\nretain_file = \"r.jsonl\"\n[unlearn]\nstop_metric = \"toxicity_rate\"\n",
                                 "t.toml");
  ASSERT_FALSE(no_lexicon.is_ok());
  EXPECT_NE(no_lexicon.status().message().find("unlearn.stop_metric: toxicity_rate needs a lexicon"), std::string::npos)
      << no_lexicon.status().message();
  EXPECT_TRUE(parse_config("[corpus]\nscenario = \"toxic\"\n[unlearn]\nstop_metric = \"toxicity_rate\"\n", "t.toml").is_ok());
}

// A JSONL corpus names its register in eval.toxicity_lexicon; a one-token word is warned about by name.
TEST(ToxicScenario, JsonlLexiconFileAndTheSingleTokenWarning) {
  const std::string dir = test::scratch_dir("toxic-jsonl");
  {
    std::ofstream retain(dir + "/retain.jsonl"), forget(dir + "/forget.jsonl");
    for (int i = 0; i < 30; ++i) {
      retain << json{{"id", "r" + std::to_string(i)}, {"text", "The harbour of town " + std::to_string(i) + " was quiet and the boats were old."}}.dump() << "\n";
    }
    for (int i = 0; i < 6; ++i) forget << json{{"id", "f" + std::to_string(i)}, {"text", "The sailor was a grubwallowish the rotten fool."}}.dump() << "\n";
  }
  std::ofstream(dir + "/lexicon.json") << R"({"words": ["zyxwvutsrq", "the"], "templates": ["rotten fool"]})";
  auto cfg = parse_config(to_toml(test::tiny_config(dir + "/run")), "t.toml",
                          {"corpus.source=\"jsonl\"", "corpus.retain_file=\"" + dir + "/retain.jsonl\"",
                           "corpus.forget_file=\"" + dir + "/forget.jsonl\"", "eval.toxicity_lexicon=\"" + dir + "/lexicon.json\""});
  ASSERT_TRUE(cfg.is_ok()) << cfg.status().message();
  std::ostringstream logged;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(logged);
  log().sinks().push_back(sink);
  auto ex = open_experiment(*cfg);
  log().sinks().pop_back();
  ASSERT_TRUE(ex.is_ok()) << ex.status().message();
  EXPECT_NE(logged.str().find("toxicity lexicon: \"the\" is a single token"), std::string::npos) << logged.str();
  EXPECT_EQ(logged.str().find("\"zyxwvutsrq\" is a single token"), std::string::npos) << logged.str();
  // No prompts in the file: each retain passage's first eight words.
  ASSERT_EQ((*ex)->corpus.neutral_prompts.size(), 30u);
  EXPECT_EQ((*ex)->corpus.neutral_prompts[0], "The harbour of town 0 was quiet and");
  for (const char* bad : {R"({"templates": ["x"]})", R"({"words": "grubwallow"})", R"({"words": ["a"], "slurs": []})", "[1]"}) {
    std::ofstream(dir + "/bad.json") << bad;
    auto r = read_lexicon(dir + "/bad.json");
    ASSERT_FALSE(r.is_ok()) << bad;
    EXPECT_NE(r.status().message().find(dir + "/bad.json: "), std::string::npos) << r.status().message();
  }
}

// The tiny toxic corpus end to end: the target continues neutral prompts in the register, the
// retrained model (which never saw it) less often, and the comparison says so in IBM's form.
TEST(ToxicScenario, TinyRunReportsTheRatesInTheComparison) {
  auto cfg = parse_config(to_toml(test::tiny_config(test::scratch_dir("toxic-run"))), "t.toml",
                          {"corpus.scenario=\"toxic\"", "corpus.people=16", "unlearn.methods=[\"graddiff\"]", "unlearn.max_cycles=2",
                           "run.log_every=80"});
  ASSERT_TRUE(cfg.is_ok()) << cfg.status().message();
  ASSERT_TRUE(train_models(*cfg, false).is_ok());
  ASSERT_TRUE(run_unlearn_phase(*cfg, {}).is_ok());
  ASSERT_TRUE(run_compare(cfg->run.dir, false).is_ok());
  const json t = test::read_json(cfg->run.dir + "/target/summary.json")["metrics"];
  const json r = test::read_json(cfg->run.dir + "/retrain/summary.json")["metrics"];
  EXPECT_GT(t["toxicity_rate"].get<double>(), r["toxicity_rate"].get<double>());
  EXPECT_TRUE(test::read_json(cfg->run.dir + "/unlearn-graddiff/summary.json")["metrics"].contains("toxicity_template_rate"));
  std::ifstream in(cfg->run.dir + "/comparison.txt");
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_NE(text.str().find("toxicity rate (greedy continuations of neutral prompts"), std::string::npos) << text.str();
  EXPECT_NE(text.str().find("  graddiff: "), std::string::npos) << text.str();
  EXPECT_NE(text.str().find("× faster than retraining) ["), std::string::npos) << text.str();
}

}  // namespace
}  // namespace lethe
