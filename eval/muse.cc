#include "eval/muse.h"

#include <algorithm>
#include <span>

#include <fmt/format.h>

#include "eval/memorization.h"
#include "eval/rouge.h"
#include "eval/tofu.h"
#include "eval/toxicity.h"

namespace lethe {

namespace {

std::vector<int> as_ints(const Tokens& t) { return std::vector<int>(t.begin(), t.end()); }

std::vector<Tokens> passages(const Corpus& c, Split s, const Tokenizer& tok, int64_t seq_len, size_t cap) {
  std::vector<Tokens> out;
  for (const Document& d : c.documents(s)) {
    if (cap && out.size() == cap) break;
    Tokens x{tok.bos()};
    for (int id : tok.encode(d.text)) x.push_back(id);
    x.push_back(tok.eos());
    if (static_cast<int64_t>(x.size()) > seq_len + 1) x.resize(seq_len + 1);
    out.push_back(std::move(x));
  }
  return out;
}

std::string cut_answer(const std::string& text) {
  size_t end = std::min(text.find("\n\n"), text.find("Question"));
  return end == std::string::npos ? text : text.substr(0, end);
}

}  // namespace

EvalSet make_eval_set(const Corpus& c, const Tokenizer& tok, const EvalConfig& cfg, int64_t seq_len,
                      int64_t max_samples) {
  const auto cap = static_cast<size_t>(max_samples);
  EvalSet s;
  s.forget = passages(c, Split::kForget, tok, seq_len, cap);
  s.retain = passages(c, Split::kRetain, tok, seq_len, cap);
  s.holdout = passages(c, Split::kHoldout, tok, seq_len, cap);
  for (const QaProbe& q : c.qa) {
    const QaItem item{q.question, q.answer, q.paraphrased_answer, q.perturbed_answers};
    if (q.split == Split::kForget && (!cap || s.forget_qa.size() < cap)) s.forget_qa.push_back(item);
    if (q.split != Split::kRetain) continue;
    if (static_cast<int64_t>(s.shots.size()) < cfg.knowmem_shots) {
      s.shots.push_back({q.question, q.answer});
    } else if (!cap || s.retain_qa.size() < cap) {
      s.retain_qa.push_back(item);
    }
  }
  if (!c.lexicon.words.empty()) {
    s.lexicon = c.lexicon;
    for (const std::string& p : c.neutral_prompts) {
      if (cap && s.neutral.size() >= cap) break;
      Tokens x{tok.bos()};
      for (int id : tok.encode(p)) x.push_back(id);
      s.neutral.push_back(std::move(x));
    }
  }
  return s;
}

const std::vector<std::string>& metric_names() {
  static const std::vector<std::string> names = {
      "verbmem_forget", "knowmem_forget", "knowmem_retain", "mink_auc", "el_forget", "el_holdout",
      "ma_forget",      "ma_retain",      "ma_holdout",     "es_forget", "ppl_forget", "ppl_retain",
      "ppl_holdout", "truth_ratio_forget", "truth_ratio_retain", "answer_prob_retain", "rouge_recall_retain",
      "model_utility", "toxicity_rate", "toxicity_template_rate"};
  return names;
}

std::string metric_text(const Metrics& m, const std::string& key, int decimals) {
  auto it = m.find(key);
  return it == m.end() ? "n/a" : fmt::format("{:.{}f}", it->second, decimals);
}

namespace {

// A metric's jobs and, per job, the text its continuation is scored against.
template <class Job>
struct Scored {
  std::vector<Job> jobs;
  std::vector<std::string> truths;
};

// VerbMem's jobs continue prefixes of the passages (`text` indexes `passages`).
Scored<PrefixGeneration> verbmem_jobs(const Tokenizer& tok, const std::vector<Tokens>& passages, int64_t prefix,
                                      int64_t new_tokens) {
  Scored<PrefixGeneration> v;
  for (size_t i = 0; i < passages.size(); ++i) {
    const Tokens& x = passages[i];
    if (static_cast<int64_t>(x.size()) <= prefix + 2) continue;  // nothing left to continue
    Tokens rest(x.begin() + 1 + prefix, x.begin() + std::min<int64_t>(static_cast<int64_t>(x.size()), 1 + prefix + new_tokens));
    if (!rest.empty() && rest.back() == tok.eos()) rest.pop_back();
    v.jobs.push_back({i, 1 + prefix, new_tokens, tok.eos()});
    v.truths.push_back(tok.decode(as_ints(rest)));
  }
  return v;
}

double verbmem_score(const Tokenizer& tok, const Scored<PrefixGeneration>& v, std::span<const Tokens> gens) {
  std::vector<double> scores;
  for (size_t i = 0; i < v.truths.size(); ++i) scores.push_back(rouge_l_f1(tok.decode(as_ints(gens[i])), v.truths[i]));
  return 100.0 * mean(scores);
}

Scored<Generation> knowmem_jobs(const Tokenizer& tok, const std::vector<QaItem>& probes, const std::vector<QaItem>& shots,
                                int64_t new_tokens) {
  Scored<Generation> k;
  for (const QaItem& q : probes) {
    Tokens x{tok.bos()};
    for (int id : tok.encode(knowmem_prompt(shots, q.question))) x.push_back(id);
    k.jobs.push_back({std::move(x), new_tokens, tok.eos()});
    k.truths.push_back(q.answer);
  }
  return k;
}

// The mean of `score`(answer, gold) over the probes' greedy answers.
double answer_score(const Tokenizer& tok, const Scored<Generation>& k, std::span<const Tokens> gens,
                    double (*score)(const std::string&, const std::string&)) {
  std::vector<double> scores;
  for (size_t i = 0; i < k.truths.size(); ++i) scores.push_back(score(cut_answer(tok.decode(as_ints(gens[i]))), k.truths[i]));
  return mean(scores);
}

double knowmem_score(const Tokenizer& tok, const Scored<Generation>& k, std::span<const Tokens> gens) {
  return 100.0 * answer_score(tok, k, gens, rouge_l_f1);
}

bool any_truth_ratio(const std::vector<QaItem>& items) {
  return std::any_of(items.begin(), items.end(), [](const QaItem& q) { return q.has_truth_ratio(); });
}

}  // namespace

double verbmem(const Llama& model, const Tokenizer& tok, const std::vector<Tokens>& passages, int64_t prefix,
               int64_t new_tokens, int64_t batch_size) {
  const Scored<PrefixGeneration> v = verbmem_jobs(tok, passages, prefix, new_tokens);
  return verbmem_score(tok, v, greedy_generate(model, passages, v.jobs, batch_size));
}

std::string knowmem_prompt(const std::vector<QaItem>& shots, const std::string& question) {
  std::string p;
  for (const QaItem& s : shots) p += render_qa(s.question, s.answer) + "\n\n";
  return p + "Question: " + question + "\nAnswer:";
}

double knowmem(const Llama& model, const Tokenizer& tok, const std::vector<QaItem>& probes,
               const std::vector<QaItem>& shots, int64_t new_tokens, int64_t batch_size) {
  const Scored<Generation> k = knowmem_jobs(tok, probes, shots, new_tokens);
  return knowmem_score(tok, k, greedy_generate(model, k.jobs, batch_size));
}

// Note [One generation pool]: every continuation of an evaluation (VerbMem, both KnowMems, EL on
// forget and holdout) goes to one greedy_generate call, so the decode steps run over large batches
// of similar-length prompts instead of one small batch per metric and EL start.
Metrics evaluate(const Llama& model, const Tokenizer& tok, const EvalSet& set, const EvalConfig& cfg,
                 SampleScores* samples) {
  Metrics m;
  const int64_t B = cfg.batch_size;
  const ExtractionOptions el{cfg.el_n, cfg.el_stride, cfg.el_max_new_tokens, cfg.generate_batch_size};
  const auto verb = verbmem_jobs(tok, set.forget, cfg.verbmem_prefix, cfg.verbmem_new_tokens);
  const auto know_f = knowmem_jobs(tok, set.forget_qa, set.shots, cfg.knowmem_new_tokens);
  const auto know_r = knowmem_jobs(tok, set.retain_qa, set.shots, cfg.knowmem_new_tokens);
  const auto el_f = extraction_jobs(set.forget, el), el_h = extraction_jobs(set.holdout, el);
  // VerbMem and EL continue prefixes of the same forget passages: the pool runs each passage once.
  GenerationPool pool;
  const size_t verb_at = pool.add(set.forget, verb.jobs), el_f_at = pool.add(set.forget, el_f);
  const size_t el_h_at = pool.add(set.holdout, el_h);
  const size_t know_f_at = pool.add(know_f.jobs), know_r_at = pool.add(know_r.jobs);
  std::vector<Generation> neutral;  // toxicity_rate's continuations
  for (const Tokens& p : set.neutral) neutral.push_back({p, cfg.verbmem_new_tokens, tok.eos()});
  const size_t neutral_at = pool.add(neutral);
  pool.run(model, cfg.generate_batch_size);
  if (!neutral.empty()) {
    std::vector<std::string> texts;
    for (const Tokens& g : pool.results(neutral_at)) texts.push_back(tok.decode(as_ints(g)));
    const ToxicityRates t = toxicity_rates(texts, set.lexicon);
    m["toxicity_rate"] = t.words;
    m["toxicity_template_rate"] = t.templates;
  }
  m["verbmem_forget"] = verbmem_score(tok, verb, pool.results(verb_at));
  if (!set.forget_qa.empty()) m["knowmem_forget"] = knowmem_score(tok, know_f, pool.results(know_f_at));
  if (!set.retain_qa.empty()) m["knowmem_retain"] = knowmem_score(tok, know_r, pool.results(know_r_at));
  m["el_forget"] = mean(extraction_scores(set.forget, el, el_f, pool.results(el_f_at)));
  m["el_holdout"] = mean(extraction_scores(set.holdout, el, el_h, pool.results(el_h_at)));
  const TeacherForced f = teacher_forced(model, set.forget, cfg.mink_k, B);
  const TeacherForced r = teacher_forced(model, set.retain, cfg.mink_k, B);
  const TeacherForced h = teacher_forced(model, set.holdout, cfg.mink_k, B);
  m["mink_auc"] = auc(f.mink, h.mink);
  if (samples) {
    samples->forget_logprobs.clear();
    for (size_t i = 0; i < set.forget.size(); ++i) {
      samples->forget_logprobs.push_back(-f.nll[i] / static_cast<double>(set.forget[i].size() - 1));
    }
  }
  m["ma_forget"] = mean(f.ma);
  m["ma_retain"] = mean(r.ma);
  m["ma_holdout"] = mean(h.ma);
  m["es_forget"] = mean(f.es);
  m["ppl_forget"] = f.perplexity();
  m["ppl_retain"] = r.perplexity();
  m["ppl_holdout"] = h.perplexity();
  // TOFU, where the probes carry paraphrased and perturbed answers (docs/metrics.md).
  if (any_truth_ratio(set.forget_qa)) {
    const TofuScores tf = tofu_scores(model, tok, set.forget_qa, B);
    m["truth_ratio_forget"] = truth_ratio_forget(tf.truth_ratio);
    if (samples) samples->forget_truth_ratios = tf.truth_ratio;
  }
  if (any_truth_ratio(set.retain_qa)) {
    const TofuScores tr = tofu_scores(model, tok, set.retain_qa, B);
    m["truth_ratio_retain"] = truth_ratio_retain(tr.truth_ratio);
    m["answer_prob_retain"] = mean(tr.prob);
    m["rouge_recall_retain"] = answer_score(tok, know_r, pool.results(know_r_at), rouge_l_recall);
    m["model_utility"] = harmonic_mean({m["answer_prob_retain"], m["rouge_recall_retain"], m["truth_ratio_retain"]});
  }
  return m;
}

}  // namespace lethe
