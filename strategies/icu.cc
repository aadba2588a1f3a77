// ICU, "Learn while Unlearn" (Tang et al. 2024, arXiv 2407.20271), all three parts:
//
// - Knowledge Unlearning Induction: gradient ascent on the forget samples still being unlearned.
// - Contrastive Learning Enhancement: each forget sample is paired (once per request) with its
//   nearest retain sample by cosine similarity of the reference model's mean-pooled final hidden
//   states; the pair is learned with α · NLL + β · KL(π_ref ‖ π_θ), so the neighbourhood of what is
//   forgotten keeps its knowledge. Loss: −NLL(f) + α · NLL(p) + β · KL(p).
// - Iterative Unlearning Refinement: after each cycle every forget sample (removed ones included,
//   so a sample that resurfaces comes back) is re-checked: its first icu_prefix tokens are
//   continued greedily for up to eval.verbmem_new_tokens tokens (ending at the tokenizer's EOS) and
//   the continuation compared with the sample's next tokens by token ROUGE-L F1 (the paper uses
//   BERTScore/BLEU; any documented similarity is allowed). A sample counts as forgotten when its
//   score is at most the mean score of the same check on holdout samples — the level of data the
//   model never saw, measured again only when a probe of the holdout says the model moved (Note
//   [Holdout level]). Forgotten samples leave the unlearning set with their pairs. The method
//   stops when EL_n (eval.el_*) and MA on the forget set are at or below their holdout level (EL_n
//   generated only once MA is: Note [EL when needed]), or the set is empty — but never on a
//   collapsed model (Note [Collapse guard]): when the probe's perplexity exceeds kCollapseFactor ×
//   the reference's on it, it stops and says the model collapsed instead.
#include <ATen/ATen.h>
#include <fmt/format.h>

#include <cmath>
#include <numeric>
#include <span>

#include "base/log.h"
#include "eval/dp_split.h"
#include "eval/memorization.h"
#include "eval/rouge.h"
#include "strategies/strategies.h"

namespace lethe {

namespace {


// Mean-pooled final hidden states, L2-normalised, one row per sample [rows, D]. Each dp rank embeds
// its block of rows; the blocks are gathered.
at::Tensor embeddings(const Llama& model, const TokenDataset& ds, Cost& cost) {
  at::NoGradGuard no_grad;
  const DpBlock mine = dp_block(model.mesh(), static_cast<size_t>(ds.rows()));
  std::vector<at::Tensor> parts{at::empty({0, model.config().hidden_size}, at::TensorOptions(model.device()).dtype(at::kFloat))};
  for (auto r = static_cast<int64_t>(mine.first); r < static_cast<int64_t>(mine.last); r += 32) {
    Batch rows = make_batch(ds, row_range(r, std::min<int64_t>(r + 32, static_cast<int64_t>(mine.last))), model.device());
    at::Tensor h = model.hidden(rows).to(at::kFloat);
    at::Tensor mask = rows.segments_BT.ge(0).to(at::kFloat).unsqueeze(-1);
    parts.push_back((h * mask).sum(1) / mask.sum(1).clamp_min(1));
  }
  cost.forward_tokens += ds.rows() * ds.seq_len;
  at::Tensor e = dp_gather_rows(model.mesh(), at::cat(parts), static_cast<size_t>(ds.rows()));
  return e / e.norm(2, 1, true).clamp_min(1e-12);
}

// The refinement check's jobs: each sample's first `prefix` tokens (after BOS) continued for up to
// `max_new` tokens, stopping at `eos` (`text` indexes `samples`); each truth is the sample's next
// tokens, as many, without the EOS (VerbMem's comparison, in tokens).
struct Check {
  std::vector<PrefixGeneration> jobs;
  std::vector<Tokens> truths;
};

Check check_jobs(const std::vector<Tokens>& samples, int64_t prefix, int64_t max_new, int64_t eos) {
  Check c;
  for (size_t i = 0; i < samples.size(); ++i) {
    const Tokens& x = samples[i];
    const int64_t p = std::min<int64_t>(1 + prefix, static_cast<int64_t>(x.size()) / 2);
    Tokens rest(x.begin() + p, x.begin() + std::min<int64_t>(static_cast<int64_t>(x.size()), p + max_new));
    if (!rest.empty() && rest.back() == eos) rest.pop_back();
    c.jobs.push_back({i, p, max_new, eos});
    c.truths.push_back(std::move(rest));
  }
  return c;
}

// Token ROUGE-L F1 of each continuation against its truth.
std::vector<double> similarities(const Check& c, std::span<const Tokens> gens) {
  std::vector<double> sim;
  for (size_t i = 0; i < c.truths.size(); ++i) sim.push_back(rouge_l_f1(gens[i], c.truths[i]));
  return sim;
}

class Icu : public BasicStrategy {
 public:
  using BasicStrategy::BasicStrategy;
  std::string_view name() const override { return "icu"; }
  bool needs_retain() const override { return true; }
  bool retain_batch() const override { return false; }  // pairs are built from the retain set
  bool needs_reference() const override { return true; }
  bool needs_holdout() const override { return true; }

  Status begin(const StrategyContext& ctx) override {
    LETHE_RETURN_IF_ERROR(BasicStrategy::begin(ctx));
    if (!ctx.eval || ctx.eos_id < 0) return Status::error("icu: its refinement needs the [eval] options and the tokenizer's EOS");
    const TokenDataset& f = *ctx.data.forget;
    at::Tensor sim = at::matmul(embeddings(*ctx.reference, f, *ctx.cost),
                                embeddings(*ctx.reference, *ctx.data.retain, *ctx.cost).t());
    // Compared at 1e-4 resolution (ties to the lowest row): near-duplicate retain samples would
    // otherwise be picked by float rounding, which differs between tp/dp layouts.
    pair_ = (sim * 1e4).round().argmax(1).cpu();
    remaining_ = at::ones({f.rows()}, at::kLong);
    forget_samples_ = row_samples(f);
    holdout_samples_ = row_samples(*ctx.data.holdout);
    probe_samples_.clear();
    const size_t n = holdout_samples_.size(), k = std::min(n, kProbeSamples);
    for (size_t i = 0; i < k; ++i) probe_samples_.push_back(holdout_samples_[i * n / k]);  // spread over the set
    holdout_ = {};
    return Status::ok();
  }

  std::vector<int64_t> forget_rows() const override {
    std::vector<int64_t> rows;
    const int64_t* r = remaining_.data_ptr<int64_t>();
    for (int64_t i = 0; i < remaining_.numel(); ++i) if (r[i]) rows.push_back(i);
    return rows;
  }

  LossTerms loss(const Llama& model, const UnlearnBatch& b) override {
    at::Tensor pair_rows = pair_.index_select(0, b.forget.rows_B);
    Batch pairs = make_batch(*ctx_.data.retain,
                             std::vector<int64_t>(pair_rows.data_ptr<int64_t>(), pair_rows.data_ptr<int64_t>() + pair_rows.numel()),
                             model.device());
    ctx_.cost->train_tokens += pairs.input_BT.numel() * model.mesh().dp_size();  // every dp rank's pairs
    NllKl p = nll_and_kl(model, *ctx_.reference, pairs, *ctx_.cost);
    LossTerms t;
    t.add("forget_neg_nll", -cfg_.forget_weight * mean_nll(model, b.forget));
    t.add("pair_nll", cfg_.icu_alpha * p.nll);
    t.add("pair_kl", cfg_.icu_beta * p.kl);
    return t;
  }

  Verdict end_cycle(const CycleContext& c) override {
    const Llama& m = *c.model;
    Cost& cost = *ctx_.cost;
    const EvalConfig& e = *ctx_.eval;
    // Teacher-forced statistics every cycle (one forward per sample): the forget set's MA, and the
    // holdout probe's perplexity that the collapse guard and the holdout level's refresh rule read.
    const TeacherForced tf = teacher_forced(m, forget_samples_, e.mink_k, e.batch_size);
    const TeacherForced probe = teacher_forced(m, probe_samples_, e.mink_k, e.batch_size);
    cost.forward_tokens += tf.tokens + probe.tokens;
    // The holdout's statistics only when Note [Holdout level] says they are stale: its MA here,
    // its check in the pool below (and its EL_n when the stop rule reads it: Note [EL when needed]).
    const bool refresh = holdout_stale(probe.perplexity());
    if (refresh) {
      const TeacherForced th = teacher_forced(m, holdout_samples_, e.mink_k, e.batch_size);
      cost.forward_tokens += th.tokens;
      holdout_ = {0, kNotMeasured, probe.perplexity(), mean(th.ma)};
    }
    const double ma_f = mean(tf.ma), ma_h = holdout_.ma;
    // The checks and the stop rule's EL_n on forget and holdout ([eval]'s lengths and EL options):
    // one generation pool, in which both continue prefixes of the same samples.
    const bool need_el = ma_f <= ma_h;
    const ExtractionOptions el{e.el_n, e.el_stride, e.el_max_new_tokens, e.generate_batch_size};
    const Check check_f = check_jobs(forget_samples_, cfg_.icu_prefix, e.verbmem_new_tokens, ctx_.eos_id);
    Check check_h;
    std::vector<PrefixGeneration> el_f, el_h;
    if (refresh) check_h = check_jobs(holdout_samples_, cfg_.icu_prefix, e.verbmem_new_tokens, ctx_.eos_id);
    if (need_el) el_f = extraction_jobs(forget_samples_, el);
    if (need_el && (refresh || holdout_.el < 0)) el_h = extraction_jobs(holdout_samples_, el);
    GenerationPool pool;  // runs each sample once for its check and its EL starts
    const size_t check_f_at = pool.add(forget_samples_, check_f.jobs), el_f_at = pool.add(forget_samples_, el_f);
    const size_t check_h_at = pool.add(holdout_samples_, check_h.jobs), el_h_at = pool.add(holdout_samples_, el_h);
    pool.run(m, e.generate_batch_size);
    cost.forward_tokens += generation_tokens(pool.texts(), pool.jobs());
    if (refresh) holdout_.similarity = mean(similarities(check_h, pool.results(check_h_at)));
    if (!el_h.empty()) holdout_.el = mean(extraction_scores(holdout_samples_, el, el_h, pool.results(el_h_at)));
    const std::vector<double> f = similarities(check_f, pool.results(check_f_at));
    const double unseen = holdout_.similarity;
    int64_t* r = remaining_.data_ptr<int64_t>();
    int64_t left = 0, returned = 0;
    for (size_t i = 0; i < f.size(); ++i) {
      const int64_t keep = f[i] > unseen ? 1 : 0;
      returned += keep && !r[i];
      r[i] = keep;
      left += keep;
    }
    const double el_forget = need_el ? mean(extraction_scores(forget_samples_, el, el_f, pool.results(el_f_at))) : kNotMeasured;
    if (!(ref_probe_ppl_ > 0)) {  // once per run (kept in the state): the reference is frozen
      const TeacherForced r0 = teacher_forced(*ctx_.reference, probe_samples_, e.mink_k, e.batch_size);
      cost.forward_tokens += r0.tokens;
      ref_probe_ppl_ = r0.perplexity();
    }
    log().info("icu refinement: {} of {} forget samples still remembered ({} came back; similarity threshold {:.3f}); "
               "MA {:.3f} vs unseen {:.3f}, {}",
               left, f.size(), returned, unseen, ma_f, ma_h,
               need_el ? fmt::format("EL_{} {:.3f} vs unseen {:.3f}", e.el_n, el_forget, holdout_.el)
                       : fmt::format("EL_{} not needed (MA above unseen)", e.el_n));
    if (!refresh) log().info("icu refinement: holdout level kept (probe perplexity {:.4g}, {:.4g} when it was measured)",
                             probe.perplexity(), holdout_.perplexity);
    if (!(probe.perplexity() <= kCollapseFactor * ref_probe_ppl_)) {
      return {true, fmt::format("icu: stopped without success: the model collapsed (holdout probe perplexity {:.4g}, above {:g}× the "
                                "reference's {:.4g})", probe.perplexity(), kCollapseFactor, ref_probe_ppl_)};
    }
    if (left == 0) return {true, "icu: every forget sample is forgotten"};
    if (need_el && el_forget <= holdout_.el) return {true, "icu: EL and MA on the forget set fell to the unseen level"};
    return {};
  }

  StateTensors state() const override {
    StateTensors s{{"remaining", remaining_.clone()}};
    if (ref_probe_ppl_ > 0) s["icu_reference_probe_ppl"] = at::tensor({ref_probe_ppl_}, at::kDouble);
    if (holdout_.perplexity > 0) {
      s["icu_holdout_level"] = at::tensor({holdout_.similarity, holdout_.el, holdout_.perplexity, holdout_.ma}, at::kDouble);
    }
    return s;
  }
  Status set_state(const StateTensors& s) override {
    auto it = s.find("remaining");
    if (it == s.end() || it->second.numel() != remaining_.numel()) {
      return Status::error("state/strategy/remaining: missing or not one flag per forget sample (" +
                           std::to_string(remaining_.numel()) + ")");
    }
    remaining_ = it->second.to(at::kLong).contiguous().clone();
    // A checkpoint written before the probe holds the full holdout's perplexities instead (keys
    // icu_reference_holdout_ppl, and a 3-value level): they are left, and measured again.
    if (auto p = s.find("icu_reference_probe_ppl"); p != s.end()) ref_probe_ppl_ = p->second.to(at::kDouble).item<double>();
    holdout_ = {};
    if (auto h = s.find("icu_holdout_level"); h != s.end() && h->second.numel() != 3) {
      if (h->second.numel() != 4) {
        return Status::error("state/strategy/icu_holdout_level: expected 4 values (similarity, EL, probe perplexity, MA)");
      }
      const at::Tensor v = h->second.to(at::kDouble).contiguous();
      holdout_ = {v[0].item<double>(), v[1].item<double>(), v[2].item<double>(), v[3].item<double>()};
    }
    return Status::ok();
  }

 private:
  // Note [Holdout level]: the holdout's statistics — its MA (teacher-forced), the check's mean
  // similarity and EL_n (generated) — are those of data the model never saw; unlearning moves them
  // little. They are measured at a request's first refinement and again only when the perplexity
  // of a probe of the holdout (kProbeSamples of its samples spread over the set, teacher-forced
  // every cycle) has moved by more than kHoldoutDrift (relative, either way) since they were. The
  // probe's perplexity is also what the collapse guard compares with the reference's on it.
  static constexpr double kHoldoutDrift = 0.10;
  static constexpr size_t kProbeSamples = 16;
  bool holdout_stale(double ppl) const {
    return !(holdout_.perplexity > 0) || !(std::abs(std::log(ppl / holdout_.perplexity)) <= std::log1p(kHoldoutDrift));
  }
  // Note [EL when needed]: the stop rule asks for EL_n and MA at or below the unseen level; MA
  // comes from the teacher-forced forward every cycle, EL_n from generation at every stride of
  // every sample, the refinement's largest cost. So EL_n is generated only in cycles where MA
  // already is at or below the holdout's, for the forget set and, when the holdout level has none
  // yet, for the holdout: the stop rule decides as if both were measured every cycle, since it
  // cannot fire while MA is above. The holdout's EL_n is then measured with the model of the first
  // cycle that needs it after the level was (re)set, not at the refresh itself.
  static constexpr double kNotMeasured = -1;  // EL_n is a fraction in [0, 1]
  struct HoldoutLevel {
    double similarity = 0, el = kNotMeasured;
    double perplexity = 0;  // the probe's when the level was measured; 0: not measured in this request
    double ma = 0;
  };

  at::Tensor pair_;       // forget row → retain row (host)
  at::Tensor remaining_;  // forget row → 1 while still being unlearned
  std::vector<Tokens> forget_samples_, holdout_samples_, probe_samples_;
  double ref_probe_ppl_ = 0;  // the reference's perplexity on the probe (Note [Collapse guard]); 0 until measured
  HoldoutLevel holdout_;

};

}  // namespace

std::unique_ptr<Strategy> make_icu(const UnlearnConfig& cfg) { return std::make_unique<Icu>(cfg); }

}  // namespace lethe
