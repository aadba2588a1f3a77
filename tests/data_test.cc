// Corpus generation and import, tokenizer, packing and the data loader.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <set>
#include <sstream>
#include <tuple>

#include "io/corpus.h"
#include "io/token_dataset.h"
#include "io/tokenizer.h"
#include "strategies/strategies.h"
#include "tests/helpers.h"

namespace lethe {
namespace {

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(Corpus, SameSeedSameBytes) {
  CorpusConfig cfg;
  cfg.people = 40;
  std::string a = test::scratch_dir("a"), b = test::scratch_dir("b"), c = test::scratch_dir("c");
  ASSERT_TRUE(write_corpus(generate_corpus(cfg), a).is_ok());
  ASSERT_TRUE(write_corpus(generate_corpus(cfg), b).is_ok());
  cfg.seed += 1;
  ASSERT_TRUE(write_corpus(generate_corpus(cfg), c).is_ok());
  for (const char* f : {"forget.jsonl", "retain.jsonl", "holdout.jsonl", "forget_qa.jsonl", "retain_qa.jsonl"}) {
    EXPECT_FALSE(slurp(a + "/" + f).empty()) << f;
    EXPECT_EQ(slurp(a + "/" + f), slurp(b + "/" + f)) << f;
  }
  EXPECT_NE(slurp(a + "/retain.jsonl"), slurp(c + "/retain.jsonl"));
}

TEST(Corpus, SplitsAreDisjointAndSized) {
  CorpusConfig cfg;
  cfg.people = 200;
  Corpus c = generate_corpus(cfg);
  std::map<std::string, std::set<Split>> splits_of;
  for (const auto& d : c.docs) splits_of[d.group].insert(d.split);
  for (const auto& q : c.qa) splits_of[q.group].insert(q.split);
  int forget = 0, holdout = 0;
  for (const auto& [person, splits] : splits_of) {
    ASSERT_EQ(splits.size(), 1u) << person << " is in two splits";
    forget += *splits.begin() == Split::kForget;
    holdout += *splits.begin() == Split::kHoldout;
  }
  EXPECT_EQ(splits_of.size(), 200u);
  EXPECT_EQ(forget, 20);  // 10 %
  EXPECT_EQ(holdout, 20);
  EXPECT_EQ(c.docs.size(), 200u * 3);
  for (const auto& q : c.qa) {
    EXPECT_FALSE(q.paraphrased_answer.empty());
    EXPECT_GE(q.perturbed_answers.size(), 1u);
    for (const auto& p : q.perturbed_answers) EXPECT_NE(p, q.answer);
  }
  // The target sees forget + retain, the retrained model retain only; neither sees holdout.
  for (bool include_forget : {true, false}) {
    for (const auto& d : c.training_documents(include_forget, true)) {
      EXPECT_NE(d.split, Split::kHoldout);
      if (!include_forget) {
        EXPECT_NE(d.split, Split::kForget);
      }
    }
  }
}

TEST(Corpus, ForgetIdsMustExist) {
  CorpusConfig cfg;
  cfg.people = 20;
  cfg.forget_ids = {"p0003"};
  auto c = load_corpus(cfg, "");
  ASSERT_TRUE(c.is_ok());
  for (const auto& d : c->docs) {
    if (d.group == "p0003") {
      EXPECT_EQ(d.split, Split::kForget);
    }
  }
  cfg.forget_ids = {"p9999"};
  auto bad = load_corpus(cfg, "");
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("corpus.forget_ids: \"p9999\" is not a person or document id"), std::string::npos);
}

TEST(Corpus, JsonlImportAndErrors) {
  std::string dir = test::scratch_dir("jsonl");
  std::ofstream(dir + "/retain.jsonl") << R"({"id": "r1", "text": "Alpha beta."})" "\n\n"
                                       << R"({"id": "r2", "text": "Gamma delta."})" "\n";
  std::ofstream(dir + "/forget.jsonl") << R"({"id": "f1", "text": "Secret text."})" "\n";
  std::ofstream(dir + "/forget_qa.jsonl") << R"({"question": "What?", "answer": "Secret."})" "\n";
  CorpusConfig cfg;
  cfg.source = "jsonl";
  cfg.retain_file = "retain.jsonl";
  cfg.forget_file = "forget.jsonl";
  cfg.forget_qa_file = "forget_qa.jsonl";
  auto c = load_corpus(cfg, dir);
  ASSERT_TRUE(c.is_ok()) << c.status().message();
  EXPECT_EQ(c->documents(Split::kRetain).size(), 2u);
  EXPECT_EQ(c->documents(Split::kForget).size(), 1u);
  EXPECT_EQ(c->qa.size(), 1u);

  std::ofstream(dir + "/bad.jsonl") << R"({"id": "r1", "text": "ok"})" "\n" << R"({"id": "r2"})" "\n";
  cfg.retain_file = "bad.jsonl";
  auto bad = load_corpus(cfg, dir);
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("bad.jsonl:2: expected a string \"text\""), std::string::npos) << bad.status().message();

  std::ofstream(dir + "/empty.jsonl");
  cfg.retain_file = "empty.jsonl";
  auto empty = load_corpus(cfg, dir);
  ASSERT_FALSE(empty.is_ok());
  EXPECT_NE(empty.status().message().find("empty.jsonl: the retain corpus is empty"), std::string::npos);

  cfg.retain_file = "missing.jsonl";
  auto missing = load_corpus(cfg, dir);
  ASSERT_FALSE(missing.is_ok());
  EXPECT_NE(missing.status().message().find("missing.jsonl: cannot open"), std::string::npos);
}

// A run's written corpus re-imported as JSONL keeps each document's person (`group`): forget_ids
// names a person, and every one of that person's passages moves to the forget set.
TEST(Corpus, WrittenCorpusReimportsWithItsGroups) {
  CorpusConfig gen;
  gen.people = 30;
  const Corpus original = generate_corpus(gen);
  const std::string dir = test::scratch_dir("reimport");
  ASSERT_TRUE(write_corpus(original, dir).is_ok());
  CorpusConfig cfg;
  cfg.source = "jsonl";
  cfg.retain_file = "retain.jsonl";
  cfg.forget_file = "forget.jsonl";
  cfg.holdout_file = "holdout.jsonl";
  std::string person;
  for (const Document& d : original.docs) {
    if (d.split == Split::kRetain) person = d.group;
  }
  cfg.forget_ids = {person};
  auto c = load_corpus(cfg, dir);
  ASSERT_TRUE(c.is_ok()) << c.status().message();
  ASSERT_EQ(c->docs.size(), original.docs.size());
  size_t moved = 0, of_person = 0;
  for (size_t i = 0; i < c->docs.size(); ++i) {
    const Document& d = c->docs[i];
    const auto same = std::find_if(original.docs.begin(), original.docs.end(), [&](const Document& o) { return o.id == d.id; });
    ASSERT_NE(same, original.docs.end()) << d.id;
    EXPECT_EQ(d.group, same->group) << d.id;
    if (d.group == person) {
      ++of_person;
      moved += d.split == Split::kForget;
    }
  }
  EXPECT_EQ(of_person, static_cast<size_t>(gen.passages_per_person));
  EXPECT_EQ(moved, of_person);  // all of the person's passages, not one document
  // Without forget_ids: the same splits, and the forget documents in the same order with the same
  // groups (what unlearn.requests splits by), as generated.
  cfg.forget_ids.clear();
  auto same = load_corpus(cfg, dir);
  ASSERT_TRUE(same.is_ok()) << same.status().message();
  auto forget_groups = [](const Corpus& k) {
    std::vector<std::pair<std::string, std::string>> g;
    for (const Document& d : k.docs) if (d.split == Split::kForget) g.emplace_back(d.id, d.group);
    return g;
  };
  EXPECT_EQ(forget_groups(*same), forget_groups(original));
  for (const Document& d : same->docs) {
    const auto o = std::find_if(original.docs.begin(), original.docs.end(), [&](const Document& x) { return x.id == d.id; });
    EXPECT_EQ(d.split, o->split) << d.id;
  }
  std::ofstream(dir + "/bad-group.jsonl") << R"({"id": "r1", "text": "ok", "group": 7})" "\n";
  cfg.retain_file = "bad-group.jsonl";
  auto bad = load_corpus(cfg, dir);
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("bad-group.jsonl:1: expected a string \"group\""), std::string::npos)
      << bad.status().message();
}

class TokenizerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    CorpusConfig cfg;
    cfg.people = 30;
    corpus_ = new Corpus(generate_corpus(cfg));
    std::vector<std::string> texts;
    for (const auto& d : corpus_->training_documents(true, true)) texts.push_back(d.text);
    dir_ = new std::string(test::scratch_dir("tok"));
    auto t = Tokenizer::train(texts, 512, *dir_ + "/tokenizer.model");
    ASSERT_TRUE(t.is_ok()) << t.status().message();
    tok_ = new Tokenizer(t.value());
  }
  static Corpus* corpus_;
  static Tokenizer* tok_;
  static std::string* dir_;
};
Corpus* TokenizerTest::corpus_ = nullptr;
Tokenizer* TokenizerTest::tok_ = nullptr;
std::string* TokenizerTest::dir_ = nullptr;

// WHP's anchors of the generated corpus (3 forget people of 30): every forget person's names and
// titles, translated to generics no forget person has; on every forget passage and QA rendering
// each term is replaced and nothing else changes (the inverse dictionary gives the text back),
// and the token-level translation decodes to the text-level one.
TEST_F(TokenizerTest, WhpAnchorsTranslateEveryTermOfAGeneratedPersonAndNothingElse) {
  CorpusConfig cfg;
  cfg.people = 30;
  auto anchors = generated_anchors(cfg, *corpus_);
  ASSERT_TRUE(anchors.is_ok()) << anchors.status().message();
  std::set<std::string> terms, generics;
  for (const Anchor& a : *anchors) {
    terms.insert(a.term);
    generics.insert(a.generic);
  }
  EXPECT_EQ(generics.size(), anchors->size()) << "one generic per term";
  for (const Anchor& a : *anchors) EXPECT_EQ(terms.count(a.generic), 0u) << a.term << " → " << a.generic;
  std::vector<Anchor> inverse;
  for (const Anchor& a : *anchors) inverse.push_back({a.generic, a.term});

  int64_t people = 0, occurrences = 0;
  for (const QaProbe& q : corpus_->qa) {
    if (q.split != Split::kForget) continue;
    auto asks = [&](const char* prefix) { return q.question.rfind(prefix, 0) == 0; };
    if (asks("When was ")) {  // "When was <name> born?"
      EXPECT_EQ(terms.count(q.question.substr(9, q.question.size() - 9 - 6)), 1u) << q.question;
      ++people;
    } else if (asks("Where was") || asks("What was the occupation") || asks("Which award")) {
      EXPECT_EQ(terms.count(q.answer), 0u) << q.answer;  // cities, jobs, awards: shared with retain people
    } else {
      EXPECT_EQ(terms.count(q.answer), 1u) << q.question << " " << q.answer;  // spouse, father, best-known work
    }
  }
  EXPECT_EQ(people, 3);
  for (const Document& d : corpus_->training_documents(true, true)) {
    if (d.split != Split::kForget) continue;
    const std::string translated = translate_anchors(d.text, *anchors);
    EXPECT_NE(translated, d.text);
    EXPECT_TRUE(find_anchors(translated, *anchors).empty()) << translated;
    EXPECT_EQ(translate_anchors(translated, inverse), d.text);
    occurrences += static_cast<int64_t>(find_anchors(d.text, *anchors).size());
    // The same at the token level: the row with <s> and </s>, each term's tokens replaced.
    std::vector<int64_t> ids{tok_->bos()};
    for (int id : tok_->encode(d.text)) ids.push_back(id);
    ids.push_back(tok_->eos());
    const TranslatedRow row = translate_row(ids, *anchors, *tok_);
    EXPECT_EQ(std::accumulate(row.skipped.begin(), row.skipped.end(), int64_t{0}), 0) << d.text;
    EXPECT_EQ(tok_->decode(std::vector<int>(row.ids.begin(), row.ids.end())), translated);
    int64_t replaced = 0;
    for (int64_t n : row.replaced) replaced += n;
    EXPECT_EQ(replaced, static_cast<int64_t>(find_anchors(d.text, *anchors).size()));
    // Tokens outside the terms keep their place in order; </s> is the translated row's last.
    int64_t last = -1;
    for (size_t i = 0; i < ids.size(); ++i) {
      if (row.position[i] < 0) continue;
      EXPECT_GT(row.position[i], last);
      last = row.position[i];
    }
    EXPECT_EQ(row.position.back(), static_cast<int64_t>(row.ids.size()) - 1);
    EXPECT_EQ(row.ids.front(), tok_->bos());
  }
  EXPECT_GT(occurrences, 3 * 5 * 4);  // names and titles in every passage
  // A term glued to what precedes it either translates or is left whole, never half.
  const Anchor& a = anchors->front();
  std::vector<int64_t> glued{tok_->bos()};
  for (int id : tok_->encode("(" + a.term + ") was here")) glued.push_back(id);
  const TranslatedRow g = translate_row(glued, *anchors, *tok_);
  const std::string decoded = tok_->decode(std::vector<int>(g.ids.begin(), g.ids.end()));
  EXPECT_TRUE(decoded == "(" + a.term + ") was here" || decoded == "(" + a.generic + ") was here") << decoded;
  EXPECT_EQ(g.skipped[0] + g.replaced[0], 1);
}

// A user's anchor dictionary, as JSON or TOML; errors name the file and the term.
TEST(Corpus, WhpAnchorFilesReadAsJsonOrTomlAndBadEntriesAreNamed) {
  const std::string dir = test::scratch_dir("anchors");
  auto write = [&](const std::string& name, const std::string& text) {
    std::ofstream(dir + "/" + name) << text;
    return dir + "/" + name;
  };
  auto json = read_anchors(write("a.json", R"({"Harry Potter": "Jon Smith", "Hogwarts": "the academy"})"));
  ASSERT_TRUE(json.is_ok()) << json.status().message();
  ASSERT_EQ(json->size(), 2u);
  auto toml = read_anchors(write("a.toml", "\"Harry Potter\" = \"Jon Smith\"\nHogwarts = \"the academy\"\n"));
  ASSERT_TRUE(toml.is_ok()) << toml.status().message();
  ASSERT_EQ(toml->size(), 2u);
  for (const auto* v : {&*json, &*toml}) {
    std::map<std::string, std::string> m;
    for (const Anchor& a : *v) m[a.term] = a.generic;
    EXPECT_EQ(m["Harry Potter"], "Jon Smith");
    EXPECT_EQ(m["Hogwarts"], "the academy");
  }
  EXPECT_EQ(translate_anchors("Harry Potter's friend at Hogwarts, not Hogwartsian", *json),
            "Jon Smith's friend at the academy, not Hogwartsian");
  for (const auto& [name, text, needle] : std::vector<std::tuple<std::string, std::string, std::string>>{
           {"n.json", R"({"Harry": 3})", "\"Harry\": expected a non-empty string"},
           {"l.json", R"(["Harry"])", "expected a JSON object"},
           {"e.toml", "Harry = \"\"\n", "\"Harry\": expected a non-empty string"},
           {"z.json", "{}", "no anchors"},
           {"bad.toml", "Harry = \n", "not TOML"}}) {
    auto r = read_anchors(write(name, text));
    ASSERT_FALSE(r.is_ok()) << name;
    EXPECT_NE(r.status().message().find(dir + "/" + name), std::string::npos) << r.status().message();
    EXPECT_NE(r.status().message().find(needle), std::string::npos) << r.status().message();
  }
  auto missing = read_anchors(dir + "/none.json");
  ASSERT_FALSE(missing.is_ok());
  EXPECT_NE(missing.status().message().find("unlearn.whp_anchors"), std::string::npos);
}

TEST_F(TokenizerTest, RoundTripsText) {
  for (const std::string& text : {corpus_->docs[0].text, render_qa(corpus_->qa[0].question, corpus_->qa[0].answer),
                                  std::string("Unseen: Zürich, 1999 — naïve ☃ text.")}) {
    std::vector<int> ids = tok_->encode(text);
    EXPECT_FALSE(ids.empty());
    EXPECT_EQ(tok_->decode(ids), text);
  }
  EXPECT_EQ(tok_->bos(), 1);
  EXPECT_EQ(tok_->eos(), 2);
  EXPECT_EQ(tok_->pad(), 3);
  EXPECT_LE(tok_->vocab_size(), 512);
  auto reloaded = Tokenizer::load(*dir_ + "/tokenizer.model");
  ASSERT_TRUE(reloaded.is_ok());
  EXPECT_EQ(reloaded->encode(corpus_->docs[1].text), tok_->encode(corpus_->docs[1].text));
}

TEST_F(TokenizerTest, LoadErrors) {
  auto missing = Tokenizer::load(*dir_ + "/none.model");
  ASSERT_FALSE(missing.is_ok());
  EXPECT_NE(missing.status().message().find("none.model: tokenizer model not found"), std::string::npos);
  std::ofstream(*dir_ + "/junk.model") << "not a model";
  auto junk = Tokenizer::load(*dir_ + "/junk.model");
  ASSERT_FALSE(junk.is_ok());
  EXPECT_NE(junk.status().message().find("junk.model: not a sentencepiece model"), std::string::npos);
}

TEST_F(TokenizerTest, PacksWholeSamplesWithMasks) {
  auto docs = corpus_->documents(Split::kRetain);
  auto ds = pack_documents("retain", docs, *tok_, 64, 1024);
  ASSERT_TRUE(ds.is_ok()) << ds.status().message();
  EXPECT_EQ(ds->sample_ids.size(), docs.size());
  // Every next-token target of every document is a loss position exactly once.
  int64_t expected = 0;
  for (const auto& d : docs) expected += static_cast<int64_t>(tok_->encode(d.text).size()) + 1;
  std::vector<int64_t> all(ds->rows());
  std::iota(all.begin(), all.end(), 0);
  Batch b = make_batch(*ds, all);
  EXPECT_EQ(b.loss_mask_BT.sum().item<int64_t>(), expected);
  // A row's tokens of one sample are contiguous and positions restart at 0 for each sample.
  auto seg = ds->segments.accessor<int64_t, 2>();
  auto pos = ds->positions.accessor<int64_t, 2>();
  for (int64_t r = 0; r < ds->rows(); ++r) {
    for (int64_t t = 1; t <= 64; ++t) {
      if (seg[r][t] < 0) continue;
      EXPECT_EQ(pos[r][t], seg[r][t] == seg[r][t - 1] ? pos[r][t - 1] + 1 : 0);
    }
  }
}

TEST_F(TokenizerTest, LongDocumentsAreChunked) {
  std::string long_text;
  for (int i = 0; i < 20; ++i) long_text += corpus_->docs[i].text + " ";
  auto ds = pack_documents("long", {{"long", "long", Split::kRetain, long_text}}, *tok_, 32, 1024);
  ASSERT_TRUE(ds.is_ok());
  const int64_t n = static_cast<int64_t>(tok_->encode(long_text).size()) + 2;
  EXPECT_EQ(ds->rows(), (n - 1 + 31) / 32);
  std::vector<int64_t> all(ds->rows());
  std::iota(all.begin(), all.end(), 0);
  EXPECT_EQ(make_batch(*ds, all).loss_mask_BT.sum().item<int64_t>(), n - 1);
}

TEST_F(TokenizerTest, RejectsBadInputs) {
  auto empty = pack_documents("forget", {}, *tok_, 64, 1024);
  ASSERT_FALSE(empty.is_ok());
  EXPECT_NE(empty.status().message().find("dataset \"forget\" has no documents"), std::string::npos);
  auto big = pack_documents("retain", corpus_->docs, *tok_, 64, 100);
  ASSERT_FALSE(big.is_ok());
  EXPECT_NE(big.status().message().find("is larger than the model's vocab_size (100)"), std::string::npos);
}

TEST(DataLoader, DeterministicPermutationsPerEpoch) {
  DataLoader a(10, 42), b(10, 42), c(10, 43);
  auto ra = a.next_rows(25), rb = b.next_rows(25), rc = c.next_rows(25);
  EXPECT_EQ(ra, rb);
  EXPECT_NE(ra, rc);
  std::set<int64_t> epoch0(ra.begin(), ra.begin() + 10);
  EXPECT_EQ(epoch0.size(), 10u);  // each epoch is a permutation
  EXPECT_NE(std::vector<int64_t>(ra.begin(), ra.begin() + 10), std::vector<int64_t>(ra.begin() + 10, ra.begin() + 20));
  EXPECT_EQ(a.cursor().epoch, 2);
  EXPECT_EQ(a.cursor().offset, 5);
  DataLoader d(10, 42);
  d.set_cursor({1, 3});
  EXPECT_EQ(d.next_rows(5), std::vector<int64_t>(ra.begin() + 13, ra.begin() + 18));
}

}  // namespace
}  // namespace lethe
