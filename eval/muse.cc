#include "eval/muse.h"

#include <algorithm>

#include <fmt/format.h>

#include "eval/memorization.h"
#include "eval/rouge.h"

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
    if (q.split == Split::kForget && (!cap || s.forget_qa.size() < cap)) s.forget_qa.push_back({q.question, q.answer});
    if (q.split != Split::kRetain) continue;
    if (static_cast<int64_t>(s.shots.size()) < cfg.knowmem_shots) {
      s.shots.push_back({q.question, q.answer});
    } else if (!cap || s.retain_qa.size() < cap) {
      s.retain_qa.push_back({q.question, q.answer});
    }
  }
  return s;
}

const std::vector<std::string>& metric_names() {
  static const std::vector<std::string> names = {
      "verbmem_forget", "knowmem_forget", "knowmem_retain", "mink_auc", "el_forget", "el_holdout",
      "ma_forget",      "ma_retain",      "ma_holdout",     "es_forget", "ppl_forget", "ppl_retain",
      "ppl_holdout"};
  return names;
}

std::string metric_text(const Metrics& m, const std::string& key, int decimals) {
  auto it = m.find(key);
  return it == m.end() ? "n/a" : fmt::format("{:.{}f}", it->second, decimals);
}

double verbmem(const Llama& model, const Tokenizer& tok, const std::vector<Tokens>& passages, int64_t prefix,
               int64_t new_tokens, int64_t batch_size) {
  std::vector<Tokens> prompts;
  std::vector<std::string> truths;
  for (const Tokens& x : passages) {
    if (static_cast<int64_t>(x.size()) <= prefix + 2) continue;  // nothing left to continue
    prompts.emplace_back(x.begin(), x.begin() + 1 + prefix);
    Tokens rest(x.begin() + 1 + prefix, x.begin() + std::min<int64_t>(static_cast<int64_t>(x.size()), 1 + prefix + new_tokens));
    if (!rest.empty() && rest.back() == tok.eos()) rest.pop_back();
    truths.push_back(tok.decode(as_ints(rest)));
  }
  std::vector<Tokens> gen = greedy_generate(model, prompts, new_tokens, tok.eos(), batch_size);
  std::vector<double> scores;
  for (size_t i = 0; i < gen.size(); ++i) scores.push_back(rouge_l_f1(tok.decode(as_ints(gen[i])), truths[i]));
  return 100.0 * mean(scores);
}

std::string knowmem_prompt(const std::vector<QaItem>& shots, const std::string& question) {
  std::string p;
  for (const QaItem& s : shots) p += render_qa(s.question, s.answer) + "\n\n";
  return p + "Question: " + question + "\nAnswer:";
}

double knowmem(const Llama& model, const Tokenizer& tok, const std::vector<QaItem>& probes,
               const std::vector<QaItem>& shots, int64_t new_tokens, int64_t batch_size) {
  std::vector<Tokens> prompts;
  for (const QaItem& q : probes) {
    Tokens x{tok.bos()};
    for (int id : tok.encode(knowmem_prompt(shots, q.question))) x.push_back(id);
    prompts.push_back(std::move(x));
  }
  std::vector<Tokens> gen = greedy_generate(model, prompts, new_tokens, tok.eos(), batch_size);
  std::vector<double> scores;
  for (size_t i = 0; i < gen.size(); ++i) {
    scores.push_back(rouge_l_f1(cut_answer(tok.decode(as_ints(gen[i]))), probes[i].answer));
  }
  return 100.0 * mean(scores);
}

Metrics evaluate(const Llama& model, const Tokenizer& tok, const EvalSet& set, const EvalConfig& cfg) {
  Metrics m;
  const int64_t B = cfg.batch_size;
  m["verbmem_forget"] = verbmem(model, tok, set.forget, cfg.verbmem_prefix, cfg.verbmem_new_tokens, B);
  if (!set.forget_qa.empty()) m["knowmem_forget"] = knowmem(model, tok, set.forget_qa, set.shots, cfg.knowmem_new_tokens, B);
  if (!set.retain_qa.empty()) m["knowmem_retain"] = knowmem(model, tok, set.retain_qa, set.shots, cfg.knowmem_new_tokens, B);
  const TeacherForced f = teacher_forced(model, set.forget, cfg.mink_k, B);
  const TeacherForced r = teacher_forced(model, set.retain, cfg.mink_k, B);
  const TeacherForced h = teacher_forced(model, set.holdout, cfg.mink_k, B);
  m["mink_auc"] = auc(f.mink, h.mink);
  m["ma_forget"] = mean(f.ma);
  m["ma_retain"] = mean(r.ma);
  m["ma_holdout"] = mean(h.ma);
  m["es_forget"] = mean(f.es);
  m["ppl_forget"] = f.perplexity();
  m["ppl_retain"] = r.perplexity();
  m["ppl_holdout"] = h.perplexity();
  const ExtractionOptions el{cfg.el_n, cfg.el_stride, cfg.el_max_new_tokens, B};
  m["el_forget"] = mean(extraction_likelihood(model, set.forget, el));
  m["el_holdout"] = mean(extraction_likelihood(model, set.holdout, el));
  return m;
}

}  // namespace lethe
