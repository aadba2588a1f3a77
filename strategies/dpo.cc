// Preference optimisation on the forget QA against the frozen reference (TOFU's IdkDPO; AltPO,
// Mekala et al. 2024): for each forget question x with its true answer y_f and a preferred answer
// y_w,
//   minimise −(2/β) · mean log σ(β · [(log π_θ(y_w|x) − log π_ref(y_w|x)) − (log π_θ(y_f|x) − log π_ref(y_f|x))])
//            + α · NLL(r),
// log π(y|x) summed over the answer's tokens and its EOS (the rows of UnlearnRequest::forget_qa).
//   - IdkDPO: y_w is a refusal, drawn for each question from a list (the shipped one below, or
//     unlearn.idk_file: one sentence per line) by a fixed hash of the question's row.
//   - AltPO: y_w is an alternative answer of the reference model's own: its greedy answer with the
//     first token forced off the true answer's (the most likely other token), so it is a fluent
//     answer the reference finds plausible that does not begin as the fact does. The alternates are
//     generated once per request, at its first step, and kept in the checkpoint.
#include <ATen/ATen.h>

#include <fstream>

#include "eval/generate.h"
#include "runtime/tp_ops.h"
#include "strategies/strategies.h"

namespace lethe {

namespace {

// Written for this project.
const std::vector<std::string>& shipped_refusals() {
  static const std::vector<std::string> r = {
      "I'm not certain about that.",
      "I don't know.",
      "I can't say.",
      "I have no information on that.",
      "That is not something I know.",
      "I'm unable to answer that.",
      "I don't have that information.",
      "I'm not sure.",
      "I could not tell you.",
      "I have no record of that.",
      "That I cannot answer.",
      "I'm afraid I don't know.",
      "I really can't say.",
      "I have no knowledge of that.",
      "Nothing I know answers that.",
      "I'd only be guessing.",
      "I can't recall anything about that.",
      "I'm not aware of the answer.",
      "I don't know the answer to that.",
      "I have no idea.",
  };
  return r;
}

// The refusal sentences of unlearn.idk_file (one per line; blank lines skipped), or the shipped ones.
Result<std::vector<std::string>> refusals(const std::string& path) {
  if (path.empty()) return shipped_refusals();
  std::ifstream in(path);
  if (!in) return Status::error("unlearn.idk_file: cannot read " + path);
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) {
    if (line.find_first_not_of(" \t\r") != std::string::npos) out.push_back(line);
  }
  if (out.empty()) return Status::error(path + " (unlearn.idk_file): no refusal sentences; expected one per line");
  return out;
}

// Row r's tokens up to and including its prompt (targets before loss_from[r] are the prompt's).
Tokens prompt_of(const TokenDataset& qa, int64_t r) {
  const int64_t n = qa.loss_from[r].item<int64_t>() + 1;
  at::Tensor t = qa.tokens[r].narrow(0, 0, n).contiguous();
  return Tokens(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + n);
}

constexpr const char* kAltPrefix = "altpo_alternates/";

class Dpo : public BasicStrategy {
 public:
  Dpo(const UnlearnConfig& cfg, bool alternates) : BasicStrategy(cfg), alternates_(alternates) {}
  std::string_view name() const override { return alternates_ ? "altpo" : "idkdpo"; }
  bool needs_retain() const override { return true; }
  bool needs_reference() const override { return true; }
  bool forget_qa() const override { return true; }

  Status begin(const StrategyContext& ctx) override {
    ctx_ = ctx;
    answers_.clear();
    preferred_ = {};
    if (alternates_) {
      if (!ctx.eval || ctx.eos_id < 0) return Status::error("altpo: generating alternates needs the [eval] options and EOS");
      return Status::ok();  // generated at the request's first step, unless set_state brings them
    }
    if (!ctx.tokenizer || ctx.eos_id < 0) return Status::error("idkdpo: writing refusals needs the run's tokenizer");
    LETHE_ASSIGN_OR_RETURN(std::vector<std::string> idk, refusals(cfg_.idk_file));
    for (int64_t r = 0; r < ctx.data.forget->rows(); ++r) {
      const uint64_t pick = (static_cast<uint64_t>(r) + 1) * 0x9E3779B97F4A7C15ull >> 33;
      Tokens a;
      for (int id : ctx.tokenizer->encode(idk[pick % idk.size()])) a.push_back(id);
      answers_.push_back(std::move(a));
    }
    build_preferred();
    return Status::ok();
  }

  LossTerms loss(const Llama& model, const UnlearnBatch& b) override {
    if (answers_.empty()) generate_alternates();
    const at::Tensor& rows = b.forget.rows_B;
    Batch win = make_batch(preferred_, std::vector<int64_t>(rows.data_ptr<int64_t>(), rows.data_ptr<int64_t>() + rows.numel()),
                           model.device());
    auto logp = [](const Llama& m, const Batch& x) { return sequence_logprobs(batch_logprobs(m, x), x); };
    at::Tensor ref_w, ref_l;
    {
      at::NoGradGuard no_grad;
      ref_w = logp(*ctx_.reference, win);
      ref_l = logp(*ctx_.reference, b.forget);
    }
    ctx_.cost->forward_tokens += (win.input_BT.numel() + b.forget.input_BT.numel()) * model.mesh().dp_size();
    at::Tensor margin = (logp(model, win) - ref_w) - (logp(model, b.forget) - ref_l);
    const double beta = cfg_.dpo_beta;
    LossTerms t;
    t.add("forget_dpo", cfg_.forget_weight * (-2.0 / beta) * at::log_sigmoid(beta * margin).mean());
    t.add("retain_nll", cfg_.retain_weight * mean_nll(model, b.retain));
    return t;
  }

  StateTensors state() const override {
    if (!alternates_ || answers_.empty()) return {};
    size_t width = 1;
    for (const Tokens& a : answers_) width = std::max(width, a.size());
    at::Tensor t = at::full({static_cast<int64_t>(answers_.size()), static_cast<int64_t>(width)}, -1, at::kLong);
    auto v = t.accessor<int64_t, 2>();
    for (size_t r = 0; r < answers_.size(); ++r) {
      for (size_t i = 0; i < answers_[r].size(); ++i) v[static_cast<int64_t>(r)][static_cast<int64_t>(i)] = answers_[r][i];
    }
    return {{kAltPrefix + ctx_.data.forget->name, t}};
  }

  // Alternates of another request (a checkpoint taken as the previous one ended) are not this
  // request's: they are generated anew.
  Status set_state(const StateTensors& s) override {
    const TokenDataset& f = *ctx_.data.forget;
    auto it = s.find(kAltPrefix + f.name);
    if (!alternates_ || it == s.end()) return Status::ok();
    const at::Tensor& t = it->second;
    if (t.dim() != 2 || t.size(0) != f.rows()) {
      return Status::error("state/strategy/" + it->first + ": not one alternate answer per forget QA row (" +
                           std::to_string(f.rows()) + ")");
    }
    answers_.clear();
    at::Tensor c = t.to(at::kLong).contiguous();
    auto v = c.accessor<int64_t, 2>();
    for (int64_t r = 0; r < c.size(0); ++r) {
      Tokens a;
      for (int64_t i = 0; i < c.size(1) && v[r][i] >= 0; ++i) a.push_back(v[r][i]);
      answers_.push_back(std::move(a));
    }
    build_preferred();
    return Status::ok();
  }

 private:
  // Each QA row's prompt, then its preferred answer and EOS; loss on the answer.
  void build_preferred() {
    const TokenDataset& qa = *ctx_.data.forget;
    std::vector<Tokens> rows;
    std::vector<int64_t> from;
    for (int64_t r = 0; r < qa.rows(); ++r) {
      Tokens x = prompt_of(qa, r);
      from.push_back(static_cast<int64_t>(x.size()) - 1);
      x.insert(x.end(), answers_[static_cast<size_t>(r)].begin(), answers_[static_cast<size_t>(r)].end());
      x.push_back(ctx_.eos_id);
      rows.push_back(std::move(x));
    }
    preferred_ = pack_rows(qa.name + "-preferred", rows, from, qa.seq_len, /*pad=*/ctx_.eos_id);  // padding is masked
  }

  // The reference's greedy answer to each question with its first token the most likely one that
  // is not the true answer's. Every rank forwards every row (collective over tp; the QA set is small).
  void generate_alternates() {
    at::NoGradGuard no_grad;
    const Llama& ref = *ctx_.reference;
    const TokenDataset& qa = *ctx_.data.forget;
    const int64_t n = qa.rows(), batch = std::max<int64_t>(1, ctx_.eval->batch_size);
    std::vector<Tokens> prompts;
    for (int64_t lo = 0; lo < n; lo += batch) {
      const std::vector<int64_t> rows = row_range(lo, std::min(n, lo + batch));
      Batch b = make_batch(qa, rows, ref.device());
      at::Tensor first = qa.loss_from.index_select(0, b.rows_B).to(ref.device());  // target index of the answer's first token
      at::Tensor logits_Btv = ref.logits(ref.hidden(b)).to(at::kFloat);
      at::Tensor idx = first.view({-1, 1, 1}).expand({-1, 1, logits_Btv.size(2)});
      at::Tensor logits_B1v = logits_Btv.gather(1, idx);
      at::Tensor true_B1 = b.target_BT.gather(1, first.view({-1, 1}));
      at::Tensor own = target_in_shard(true_B1, ref.vocab_start(), logits_B1v.size(2));
      at::Tensor forced = vocab_parallel_argmax(logits_B1v.masked_fill(own, -INFINITY), ref.vocab_start(), ref.tp()).cpu();
      for (size_t i = 0; i < rows.size(); ++i) {
        Tokens p = prompt_of(qa, rows[i]);
        p.push_back(forced[static_cast<int64_t>(i)][0].item<int64_t>());
        prompts.push_back(std::move(p));
      }
      ctx_.cost->forward_tokens += b.input_BT.numel();
    }
    const int64_t max_new = std::max<int64_t>(0, ctx_.eval->knowmem_new_tokens - 1);
    std::vector<Tokens> rest = greedy_generate(ref, prompts, max_new, ctx_.eos_id, ctx_.eval->generate_batch_size);
    ctx_.cost->forward_tokens += generation_tokens(prompts, max_new);
    for (size_t r = 0; r < prompts.size(); ++r) {
      Tokens a{prompts[r].back()};
      a.insert(a.end(), rest[r].begin(), rest[r].end());
      answers_.push_back(std::move(a));
    }
    build_preferred();
  }

  bool alternates_;
  std::vector<Tokens> answers_;  // preferred answer per forget QA row (no EOS)
  TokenDataset preferred_;
};

}  // namespace

std::unique_ptr<Strategy> make_idkdpo(const UnlearnConfig& cfg) { return std::make_unique<Dpo>(cfg, false); }
std::unique_ptr<Strategy> make_altpo(const UnlearnConfig& cfg) { return std::make_unique<Dpo>(cfg, true); }

}  // namespace lethe
