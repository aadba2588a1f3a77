// Evaluation: ROUGE-L, n-gram overlap, AUC and PrivLeak against hand-computed cases; greedy
// generation with KV cache and left padding against plain recomputation; teacher-forced metrics
// against a direct computation from the logits; TOFU's KS p-value against scipy, its truth ratio
// against the logits.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "collectives/local_communicator.h"
#include "eval/challenge.h"
#include "eval/generate.h"
#include "eval/memorization.h"
#include "eval/muse.h"
#include "eval/rouge.h"
#include "eval/tofu.h"
#include "io/corpus.h"
#include "io/tokenizer.h"
#include "tests/helpers.h"

namespace lethe {
namespace {

TEST(Rouge, HandComputedCases) {
  // the cat sat on the mat / the cat is on the mat: LCS "the cat on the mat" = 5 of 6 each.
  EXPECT_NEAR(rouge_l_f1("The cat sat on the mat.", "the cat is on the mat"), 5.0 / 6.0, 1e-12);
  // a b c / c b a: LCS 1; P = R = 1/3.
  EXPECT_NEAR(rouge_l_f1("a b c", "c b a"), 1.0 / 3.0, 1e-12);
  // P = 2/2, R = 2/4: F1 = 2/3. Case and punctuation do not count.
  EXPECT_NEAR(rouge_l_f1("Hello, WORLD!", "hello big world again"), 2.0 / 3.0, 1e-12);
  EXPECT_EQ(rouge_l_f1("", "anything"), 0.0);
  EXPECT_EQ(rouge_l_f1("x y", "z"), 0.0);
  EXPECT_EQ(rouge_words("Born 1932, in Oslo-Nord."), (std::vector<std::string>{"born", "1932", "in", "oslo", "nord"}));
  EXPECT_NEAR(rouge_l_f1(Tokens{1, 2, 3, 4}, Tokens{1, 3, 4}), 2 * (3.0 / 4) * 1.0 / (3.0 / 4 + 1.0), 1e-12);
}

TEST(Memorization, NgramOverlapAucAndPrivLeakByHand) {
  // generated bigrams (1,2) (2,3) (3,4); truth has (2,3) (3,4) (4,5): 2 of 3.
  EXPECT_NEAR(ngram_overlap({1, 2, 3, 4}, {2, 3, 4, 5}, 2), 2.0 / 3.0, 1e-12);
  EXPECT_EQ(ngram_overlap({1}, {1, 2}, 2), 0.0);
  // pairs (3,2) (3,2) win, (1,2) (1,2) lose: 0.5; ties count half.
  EXPECT_NEAR(auc({3, 1}, {2, 2}), 0.5, 1e-12);
  EXPECT_NEAR(auc({2}, {2}), 0.5, 1e-12);
  EXPECT_NEAR(auc({0.1, 0.2}, {0.3, 0.4}), 0.0, 1e-12);
  EXPECT_NEAR(auc({5, 1, 4}, {2, 3}), 4.0 / 6.0, 1e-12);
  EXPECT_NEAR(privleak(0.0, 0.5), -100.0, 1e-12);
  EXPECT_NEAR(privleak(0.5, 0.5), 0.0, 1e-12);
  EXPECT_NEAR(privleak(0.75, 0.5), 50.0, 1e-12);
}

TEST(Muse, KnowMemPromptFormat) {
  EXPECT_EQ(knowmem_prompt({{"Who?", "Ann"}, {"When?", "1990"}}, "Where?"),
            "Question: Who?\nAnswer: Ann\n\nQuestion: When?\nAnswer: 1990\n\nQuestion: Where?\nAnswer:");
  EXPECT_EQ(knowmem_prompt({}, "Where?"), "Question: Where?\nAnswer:");
}

struct RandomModel {
  LocalCommunicator world;
  Mesh mesh = Mesh::create(world, MeshConfig{}).value();
  ModelConfig cfg = [] {
    ModelConfig m;
    m.vocab_size = 40;
    m.hidden_size = 32;
    m.intermediate_size = 64;
    m.num_hidden_layers = 2;
    m.num_attention_heads = 4;
    m.num_key_value_heads = 2;
    m.initializer_range = 0.3;
    return m;
  }();
  Llama model{cfg, mesh, 11};
};

Tokens random_tokens(int64_t n, int64_t seed) {
  Tokens t{1};
  for (int64_t i = 1; i < n; ++i) t.push_back(4 + (seed * 7919 + i * 104729) % 36);
  return t;
}

// Greedy decoding by recomputing the whole sequence every step (no cache, no padding).
Tokens slow_greedy(const Llama& m, Tokens x, int64_t max_new) {
  at::NoGradGuard g;
  Tokens out;
  for (int64_t i = 0; i < max_new; ++i) {
    const auto T = static_cast<int64_t>(x.size());
    at::Tensor in = at::tensor(x, at::kLong).unsqueeze(0);
    at::Tensor logits = m.full_logits(in, at::arange(T, at::kLong).unsqueeze(0), at::zeros({1, T}, at::kLong));
    const int64_t next = logits[0][T - 1].argmax().item<int64_t>();
    out.push_back(next);
    x.push_back(next);
  }
  return out;
}

TEST(Generate, CachedLeftPaddedBatchEqualsRecomputingEachPromptAlone) {
  RandomModel r;
  std::vector<Tokens> prompts = {random_tokens(3, 1), random_tokens(9, 2), random_tokens(6, 3)};
  std::vector<Tokens> batched = greedy_generate(r.model, prompts, 12, /*stop_id=*/-1, /*batch_size=*/8);
  ASSERT_EQ(batched.size(), 3u);
  for (size_t i = 0; i < prompts.size(); ++i) EXPECT_EQ(batched[i], slow_greedy(r.model, prompts[i], 12)) << "prompt " << i;
  // A stop id ends a continuation before it (and is not returned).
  const Tokens full = batched[1];
  std::vector<Tokens> stopped = greedy_generate(r.model, {prompts[1]}, 12, full[4]);
  const auto first = std::find(full.begin(), full.end(), full[4]) - full.begin();
  EXPECT_EQ(stopped[0], Tokens(full.begin(), full.begin() + first));
}

// One pool of jobs with their own lengths and stop tokens, decoded two at a time (sorted by prompt
// length, so the batches mix the callers' jobs), equals each job decoded alone without a cache.
TEST(Generate, PoolOfJobsEqualsEachJobRecomputedAlone) {
  RandomModel r;
  const std::vector<Tokens> prompts = {random_tokens(9, 2), random_tokens(3, 1), random_tokens(6, 3), random_tokens(4, 5)};
  std::vector<Tokens> slow;
  for (const Tokens& p : prompts) slow.push_back(slow_greedy(r.model, p, 12));
  std::vector<Generation> jobs = {{prompts[0], 12, -1}, {prompts[1], 3, -1}, {prompts[2], 12, slow[2][5]}, {prompts[3], 7, -1}};
  // Three prefixes of one text, continued from one forward of it.
  const Tokens text = random_tokens(14, 7);
  const std::vector<PrefixGeneration> prefixes = {{0, 8, 5, -1}, {0, 3, 5, -1}, {0, 14, 5, -1}};
  GenerationPool pool;
  const size_t a = pool.add({jobs[0], jobs[1]}), b = pool.add({jobs[2], jobs[3]}), c = pool.add({text}, prefixes);
  pool.run(r.model, /*batch_size=*/2);
  for (size_t i = 0; i < prefixes.size(); ++i) {
    const Tokens prompt(text.begin(), text.begin() + prefixes[i].start);
    EXPECT_EQ(pool.results(c)[i], slow_greedy(r.model, prompt, 5)) << "prefix of " << prefixes[i].start;
  }
  ASSERT_EQ(pool.results(a).size(), 2u);
  ASSERT_EQ(pool.results(b).size(), 2u);
  EXPECT_EQ(pool.results(a)[0], slow[0]);
  EXPECT_EQ(pool.results(a)[1], Tokens(slow[1].begin(), slow[1].begin() + 3));
  const auto stop = std::find(slow[2].begin(), slow[2].end(), slow[2][5]) - slow[2].begin();
  EXPECT_EQ(pool.results(b)[0], Tokens(slow[2].begin(), slow[2].begin() + stop));
  EXPECT_EQ(pool.results(b)[1], Tokens(slow[3].begin(), slow[3].begin() + 7));
  EXPECT_EQ(generation_tokens(pool.texts(), pool.jobs()), (9 + 12) + (3 + 3) + (6 + 12) + (4 + 7) + (14 + 3 * 5));
}

// Note [Run-ahead]: a text the model reproduces is continued from its prefill's argmax, and
// decoding starts only where the greedy continuation leaves the text. The text here is a prompt,
// the model's own 10-token greedy continuation, then four tokens of no pattern; every prefix
// (inside the reproduced part, at its end, past it, with a stop token met during run-ahead, with a
// continuation that runs off the text's end) continues as recomputation does.
TEST(Generate, RunAheadOnAReproducedTextEqualsRecomputation) {
  RandomModel r;
  const Tokens prompt = random_tokens(5, 3);
  const Tokens own = slow_greedy(r.model, prompt, 10);
  Tokens text = prompt;
  text.insert(text.end(), own.begin(), own.end());
  for (int64_t i = 0; i < 4; ++i) text.push_back(text[text.size() - 1 - i] == 7 ? 8 : 7);
  const auto n = static_cast<int64_t>(text.size());
  std::vector<PrefixGeneration> jobs;
  for (int64_t start : {int64_t{1}, int64_t{3}, int64_t{5}, int64_t{8}, int64_t{14}, int64_t{15}, n - 2, n}) {
    jobs.push_back({0, start, 6, -1});
  }
  jobs.push_back({0, 5, 12, own[4]});  // stops at the 5th reproduced token
  jobs.push_back({0, 6, 3, -1});       // ends inside the reproduced part
  const std::vector<Tokens> got = greedy_generate(r.model, {text}, jobs, /*batch_size=*/3);
  ASSERT_EQ(got.size(), jobs.size());
  for (size_t i = 0; i < jobs.size(); ++i) {
    Tokens want = slow_greedy(r.model, Tokens(text.begin(), text.begin() + jobs[i].start), jobs[i].max_new);
    if (jobs[i].stop_id >= 0) want.resize(std::find(want.begin(), want.end(), jobs[i].stop_id) - want.begin());
    EXPECT_EQ(got[i], want) << "start " << jobs[i].start << ", max_new " << jobs[i].max_new;
  }
  EXPECT_EQ(got[2], Tokens(own.begin(), own.begin() + 6));  // the text itself, from run-ahead
}

// extraction_likelihood is its jobs, one greedy_generate call and its scores: the halves, run
// through a pool shared with other jobs, give the same EL.
TEST(Memorization, ExtractionJobsInASharedPoolGiveTheSameEl) {
  RandomModel r;
  const std::vector<Tokens> samples = {random_tokens(20, 4), random_tokens(13, 5), random_tokens(6, 6)};
  const ExtractionOptions el{3, 4, 5, 2};
  const std::vector<PrefixGeneration> plan = extraction_jobs(samples, el);
  ASSERT_EQ(plan.size(), 4u + 2u);  // starts 4, 8, 12, 16 and 4, 8; the 6-token sample has none
  GenerationPool pool;
  pool.add({{random_tokens(7, 9), 9, -1}});
  const size_t at = pool.add(samples, plan);
  pool.run(r.model, 3);
  EXPECT_EQ(extraction_scores(samples, el, plan, pool.results(at)), extraction_likelihood(r.model, samples, el));
}

TEST(Memorization, TeacherForcedMetricsMatchTheLogits) {
  RandomModel r;
  std::vector<Tokens> samples = {random_tokens(12, 4), random_tokens(7, 5)};
  TeacherForced tf = teacher_forced(r.model, samples, 0.4, /*batch_size=*/1);
  ASSERT_EQ(tf.ma.size(), 2u);
  double nll = 0;
  for (size_t s = 0; s < samples.size(); ++s) {
    const Tokens& x = samples[s];
    const auto n = static_cast<int64_t>(x.size()) - 1;
    at::Tensor in = at::tensor(Tokens(x.begin(), x.end() - 1), at::kLong).unsqueeze(0);
    at::Tensor logits = r.model.full_logits(in, at::arange(n, at::kLong).unsqueeze(0), at::zeros({1, n}, at::kLong))[0];
    at::Tensor lp = at::log_softmax(logits, -1);
    std::vector<double> token_lp;
    std::vector<bool> hit;
    for (int64_t t = 0; t < n; ++t) {
      token_lp.push_back(lp[t][x[t + 1]].item<double>());
      hit.push_back(logits[t].argmax().item<int64_t>() == x[t + 1]);
      nll -= token_lp.back();
    }
    double hits = 0;
    for (bool h : hit) hits += h;
    int64_t run = 0;
    while (run < n && hit[n - 1 - run]) ++run;
    std::vector<double> sorted = token_lp;
    std::sort(sorted.begin(), sorted.end());
    const auto k = static_cast<int64_t>(std::ceil(0.4 * static_cast<double>(n)));
    double low = 0;
    for (int64_t i = 0; i < k; ++i) low += sorted[i];
    EXPECT_NEAR(tf.ma[s], hits / static_cast<double>(n), 1e-9);
    EXPECT_NEAR(tf.es[s], static_cast<double>(run) / static_cast<double>(n), 1e-9);
    EXPECT_NEAR(tf.mink[s], -low / static_cast<double>(k), 1e-4);
  }
  EXPECT_EQ(tf.tokens, 11 + 6);
  EXPECT_NEAR(tf.perplexity(), std::exp(nll / 17.0), 1e-3 * tf.perplexity());
}

// whp_logits: a model with a logit companion (Note [Logit combination]) is evaluated on
// v − α · ReLU(v_c − v). Its logits, its greedy continuations (the KV cache holding both models'
// layers, left-padded batches) and its teacher-forced metrics equal those computed by hand from
// two plain models' logits.
TEST(Memorization, AModelWithALogitCompanionIsEvaluatedOnTheCombinedLogits) {
  RandomModel r;
  const Llama plain{r.cfg, r.mesh, 11}, reinforced{r.cfg, r.mesh, 12};
  const double alpha = 2.0;
  r.model.set_logit_companion(&reinforced, alpha);
  at::NoGradGuard g;
  auto logits_of = [](const Llama& m, const Tokens& x) {  // [T, V]
    const auto T = static_cast<int64_t>(x.size());
    return m.full_logits(at::tensor(x, at::kLong).unsqueeze(0), at::arange(T, at::kLong).unsqueeze(0), at::zeros({1, T}, at::kLong))[0];
  };
  auto by_hand = [&](const Tokens& x) {
    const at::Tensor v = logits_of(plain, x), vc = logits_of(reinforced, x);
    return v - alpha * at::relu(vc - v);
  };
  const Tokens x = random_tokens(10, 3);
  EXPECT_TRUE(at::allclose(logits_of(r.model, x), by_hand(x), 1e-5, 1e-5));
  EXPECT_GT((by_hand(x) - logits_of(plain, x)).abs().max().item<double>(), 1e-2);
  // Greedy decoding: the cached, left-padded batch against recomputing the hand combination.
  const std::vector<Tokens> prompts = {random_tokens(3, 1), random_tokens(9, 2), random_tokens(6, 3)};
  const std::vector<Tokens> batched = greedy_generate(r.model, prompts, 10, /*stop_id=*/-1, /*batch_size=*/8);
  for (size_t i = 0; i < prompts.size(); ++i) {
    Tokens seq = prompts[i], expected;
    for (int i_step = 0; i_step < 10; ++i_step) {
      const int64_t next = by_hand(seq)[static_cast<int64_t>(seq.size()) - 1].argmax().item<int64_t>();
      expected.push_back(next);
      seq.push_back(next);
    }
    EXPECT_EQ(batched[i], expected) << "prompt " << i;
  }
  // Teacher-forced: MA and NLL of each sample from the hand combination.
  const std::vector<Tokens> samples = {random_tokens(12, 4), random_tokens(7, 5)};
  const TeacherForced tf = teacher_forced(r.model, samples, 0.4, /*batch_size=*/2);
  for (size_t s = 0; s < samples.size(); ++s) {
    const Tokens& y = samples[s];
    const at::Tensor logits = by_hand(Tokens(y.begin(), y.end() - 1));
    const at::Tensor lp = at::log_softmax(logits, -1);
    double nll = 0, hits = 0;
    for (size_t t = 0; t + 1 < y.size(); ++t) {
      nll -= lp[static_cast<int64_t>(t)][y[t + 1]].item<double>();
      hits += logits[static_cast<int64_t>(t)].argmax().item<int64_t>() == y[t + 1];
    }
    EXPECT_NEAR(tf.nll[s], nll, 1e-4 * nll);
    EXPECT_NEAR(tf.ma[s], hits / static_cast<double>(y.size() - 1), 1e-9);
  }
  // Without the companion the model is itself again.
  r.model.set_logit_companion(nullptr, 0);
  EXPECT_TRUE(at::allclose(logits_of(r.model, x), logits_of(plain, x)));
}

TEST(Memorization, ExtractionLikelihoodOfTheModelsOwnContinuationIsOne) {
  // A sample that is the model's own greedy continuation is reproduced exactly from every start.
  RandomModel r;
  Tokens prompt = random_tokens(4, 6);
  Tokens sample = prompt;
  for (int64_t t : slow_greedy(r.model, prompt, 20)) sample.push_back(t);
  std::vector<double> el = extraction_likelihood(r.model, {sample}, {3, 4, 0, 8});
  EXPECT_NEAR(el[0], 1.0, 1e-12);
  // …and a sample the model would not produce scores less.
  std::vector<double> other = extraction_likelihood(r.model, {random_tokens(24, 7)}, {3, 4, 0, 8});
  EXPECT_LT(other[0], 0.5);
}

}  // namespace
}  // namespace lethe

namespace lethe {
namespace {

// Two-sided exact KS p-values from Debian's python3-scipy 1.10.1, computed once with
//   scipy.stats.ks_2samp(a, b, method="exact").pvalue
// (the third case has ties within and across the samples and unequal sizes).
TEST(Tofu, KsPValueMatchesScipy) {
  EXPECT_NEAR(ks_2samp_pvalue({0.1, 0.4, 0.7, 0.9, 1.3}, {0.2, 0.5, 0.6, 1.1, 1.2, 1.5, 1.8}), 0.7373737373737375, 1e-12);
  EXPECT_NEAR(ks_2samp_pvalue({0.01, 0.02, 0.03, 0.05, 0.08, 0.13, 0.21, 0.34}, {0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85}),
              0.00015540015540015537, 1e-17);
  EXPECT_NEAR(ks_2samp_pvalue({1, 2, 2, 3, 5, 8}, {2, 3, 3, 4, 6, 7, 9, 10, 11}), 0.5628371628371629, 1e-12);
  EXPECT_EQ(ks_2samp_pvalue({0.3, 0.1, 0.2}, {0.2, 0.3, 0.1}), 1.0);  // the same sample: indistinguishable
}

TEST(Tofu, SummariesAndHarmonicMeanByHand) {
  EXPECT_NEAR(truth_ratio_forget({0.5, 2.0, 1.0}), (0.5 + 0.5 + 1.0) / 3, 1e-9);
  EXPECT_NEAR(truth_ratio_retain({0.5, 2.0}), (0.5 + 0.0) / 2, 1e-9);
  EXPECT_NEAR(harmonic_mean({0.5, 0.25, 1.0}), 3.0 / 7.0, 1e-12);
  EXPECT_EQ(harmonic_mean({0.5, 0.0}), 0.0);
}

// p(a | q) and the truth ratio of one item, against the answer tokens' log-probs from full logits.
TEST(Tofu, TruthRatioAndAnswerProbabilityMatchTheLogits) {
  const std::string dir = test::scratch_dir("tofu");
  CorpusConfig cc;
  cc.people = 12;
  std::vector<std::string> texts;
  for (const Document& d : generate_corpus(cc).docs) texts.push_back(d.text);
  auto trained = Tokenizer::train(texts, 512, dir + "/tokenizer.model");
  ASSERT_TRUE(trained.is_ok()) << trained.status().message();
  const Tokenizer& tok = trained.value();
  LocalCommunicator world;
  Mesh mesh = Mesh::create(world, MeshConfig{}).value();
  ModelConfig mc = llama_shape(512, 32, 64, 2, 4, 2, 128);
  mc.initializer_range = 0.3;
  Llama model(mc, mesh, 5);
  const QaItem item{"Where was Mara born?", "In Velden.", "Mara's birthplace is Velden.", {"In Ostrow.", "In Lund, by the sea."}};
  auto prob = [&](const std::string& answer) {
    Tokens x{tok.bos()};
    for (int id : tok.encode(knowmem_prompt({}, item.question))) x.push_back(id);
    const auto prompt = static_cast<int64_t>(x.size());
    for (int id : tok.encode(answer)) x.push_back(id);
    const auto n = static_cast<int64_t>(x.size()) - 1;
    at::Tensor in = at::tensor(Tokens(x.begin(), x.end() - 1), at::kLong).unsqueeze(0);
    at::Tensor lp = at::log_softmax(model.full_logits(in, at::arange(n, at::kLong).unsqueeze(0), at::zeros({1, n}, at::kLong))[0], -1);
    double nll = 0;
    for (int64_t t = prompt - 1; t < n; ++t) nll -= lp[t][x[static_cast<size_t>(t + 1)]].item<double>();
    return std::exp(-nll / static_cast<double>(n - prompt + 1));
  };
  at::NoGradGuard g;
  const TofuScores s = tofu_scores(model, tok, {item, {"Who?", "Nobody.", "", {}}}, 2);
  ASSERT_EQ(s.prob.size(), 2u);
  ASSERT_EQ(s.truth_ratio.size(), 1u);  // the second item has no paraphrase
  EXPECT_NEAR(s.prob[0], prob(item.answer), 1e-5 * prob(item.answer));
  const double tr = (prob(item.perturbed[0]) + prob(item.perturbed[1])) / 2 / (prob(item.paraphrased) + 1e-10);
  EXPECT_NEAR(s.truth_ratio[0], tr, 1e-4 * tr);
  EXPECT_GT(std::abs(tr - 1), 1e-3);  // a random model still tells these answers apart
}

// The challenge's ε (REFERENCE.md, "Forgetting score"): a perfect separation, and an unlearned
// sample that does not vary (a deterministic method), give the cap; identical samples give 0 (every
// attack either has exactly one zero rate or is no better than chance).
TEST(Challenge, EpsilonOfSeparatedConstantAndIdenticalSamples) {
  EXPECT_EQ(challenge_epsilon(std::vector<double>{1, 2, 3}, std::vector<double>{4, 5, 6}), kEpsilonCap);
  EXPECT_EQ(challenge_epsilon(std::vector<double>{7, 5, 6}, std::vector<double>{1, 2, 3}), kEpsilonCap);
  EXPECT_EQ(challenge_epsilon(std::vector<double>{4, 4, 4}, std::vector<double>{3, 4, 5}), kEpsilonCap);
  EXPECT_EQ(challenge_epsilon(std::vector<double>{3, 1, 2, 2}, std::vector<double>{2, 3, 2, 1}), 0.0);
  EXPECT_EQ(challenge_epsilon(std::vector<double>{2, 2}, std::vector<double>{2, 2}), 0.0);
}

// By hand: U = {1, 2, 3, 10}, R = {2.5, 4, 5, 6}. The best attack says "unlearned" for scores ≤ 3:
// it calls one of four retrained models unlearned (2.5; FPR 1/4) and misses one unlearned (10; FNR
// 1/4), so ε = log(1 − δ − 1/4) − log(1/4) = log(2.99996). "Unlearned" above 3 has FPR = FNR = 3/4.
TEST(Challenge, EpsilonOfAHandCase) {
  const std::vector<double> u{1, 2, 3, 10}, r{2.5, 4, 5, 6};
  EXPECT_NEAR(challenge_epsilon(u, r), std::log((0.75 - 1e-5) / 0.25), 1e-12);
  bool found = false;
  for (const AttackRates& a : threshold_attacks(u, r)) found = found || (a.fpr == 0.25 && a.fnr == 0.25);
  EXPECT_TRUE(found);
  EXPECT_EQ(threshold_attacks(u, r).size(), 2u * 8u);  // 8 distinct thresholds, both directions
}

// Bins of width 0.5 (ε ≥ 6.5 in the 13th), each scoring 2 / 2ⁿ; F is their mean over samples and
// the final score F × utility_U / utility_R.
TEST(Challenge, BinsFAndTheFinalScoreOfAHandCase) {
  EXPECT_EQ(epsilon_bin(0.0), 1);
  EXPECT_EQ(epsilon_bin(0.49), 1);
  EXPECT_EQ(epsilon_bin(0.5), 2);
  EXPECT_EQ(epsilon_bin(1.0986), 3);
  EXPECT_EQ(epsilon_bin(6.49), 13);
  EXPECT_EQ(epsilon_bin(kEpsilonCap), 13);
  EXPECT_EQ(bin_score(1), 1.0);
  EXPECT_EQ(bin_score(3), 0.25);
  EXPECT_EQ(bin_score(13), 2.0 / 8192);
  // Samples: identical (ε 0, bin 1: 1), the hand case (ε 1.0986, bin 3: 1/4), separated (bin 13).
  const std::vector<std::vector<double>> u = {{3, 1, 2, 2}, {1, 2, 3, 10}, {1, 2, 3, 4}};
  const std::vector<std::vector<double>> r = {{2, 3, 2, 1}, {2.5, 4, 5, 6}, {5, 6, 7, 8}};
  const double f = (1.0 + 0.25 + 2.0 / 8192) / 3;
  EXPECT_NEAR(forgetting_f(u, r), f, 1e-15);
  EXPECT_NEAR(challenge_score(f, 0.45, 0.5), f * 0.9, 1e-15);
}

}  // namespace
}  // namespace lethe
