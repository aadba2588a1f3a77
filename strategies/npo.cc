// NPO (Zhang et al. 2024): −(2/β) · mean log σ(−β · (log π_θ(y|x) − log π_ref(y|x))) on the forget
// set, with sequence-level log-ratios (MUSE's code uses per-logit differences: REFERENCE.md), plus
// an optional retain term: NLL(r) or KL(π_ref ‖ π_θ) on r (unlearn.npo_retain).
//
// log π_ref(y|x) of every forget sample is fixed data: it is computed for every request's forget set
// before the first one (prepare) and kept in the strategy's state, so the reference model runs on
// each forget set once and, with retain "none" or "nll", is freed right after (before the trained
// model and its optimizer exist) and never loaded on resume.
#include <ATen/ATen.h>

#include <map>

#include "base/check.h"
#include "eval/dp_split.h"
#include "strategies/strategies.h"

namespace lethe {

namespace {

constexpr const char* kRefPrefix = "ref_logprobs/";

class Npo : public BasicStrategy {
 public:
  using BasicStrategy::BasicStrategy;
  std::string_view name() const override { return "npo"; }
  bool needs_retain() const override { return cfg_.npo_retain != "none"; }
  bool needs_reference() const override { return true; }
  bool keeps_reference() const override { return cfg_.npo_retain == "kl"; }

  // Each dp rank scores its block of the forget set in batches of the step's rows per rank (the
  // memory a step's forward needs, without gradients), and the blocks are gathered.
  Status prepare(const PrepareContext& ctx) override {
    at::NoGradGuard no_grad;
    const Llama& reference = *ctx.reference;
    const Mesh& mesh = reference.mesh();
    const size_t batch = static_cast<size_t>(std::max<int64_t>(1, cfg_.forget_batch / mesh.dp_size()));
    for (const TokenDataset* f : ctx.forget_sets) {
      const DpBlock block = dp_block(mesh, static_cast<size_t>(f->rows()));
      std::vector<at::Tensor> parts = {at::empty({0}, at::kFloat)};
      for (size_t i = block.first; i < block.last; i += batch) {
        Batch b = make_batch(*f, row_range(static_cast<int64_t>(i), static_cast<int64_t>(std::min(block.last, i + batch))),
                             reference.device());
        parts.push_back(sequence_logprobs(batch_logprobs(reference, b), b).to(at::kFloat).cpu());
      }
      ref_logprobs_[f->name] = dp_gather_rows(mesh, at::cat(parts), static_cast<size_t>(f->rows()));
      ctx.cost->forward_tokens += f->rows() * f->seq_len;
    }
    return Status::ok();
  }

  LossTerms loss(const Llama& model, const UnlearnBatch& b) override {
    auto cached = ref_logprobs_.find(ctx_.data.forget->name);
    LETHE_CHECK_MSG(cached != ref_logprobs_.end(), "npo: no reference log-probs for " + ctx_.data.forget->name);
    at::Tensor lp = sequence_logprobs(batch_logprobs(model, b.forget), b.forget);
    at::Tensor ratio = lp - cached->second.index_select(0, b.forget.rows_B).to(lp.device());
    const double beta = cfg_.npo_beta;
    LossTerms t;
    t.add("forget_npo", cfg_.forget_weight * (-2.0 / beta) * at::log_sigmoid(-beta * ratio).mean());
    if (cfg_.npo_retain == "nll") t.add("retain_nll", cfg_.retain_weight * mean_nll(model, b.retain));
    if (cfg_.npo_retain == "kl") {
      t.add("retain_kl", cfg_.retain_weight * nll_and_kl(model, *ctx_.reference, b.retain, *ctx_.cost).kl);
    }
    return t;
  }

  StateTensors state() const override {
    StateTensors s;
    for (const auto& [name, lp] : ref_logprobs_) s[kRefPrefix + name] = lp;
    return s;
  }

  Status set_state(const StateTensors& s) override {
    std::map<std::string, at::Tensor> cached;
    for (const auto& [key, t] : s) {
      if (key.rfind(kRefPrefix, 0) == 0) cached[key.substr(std::char_traits<char>::length(kRefPrefix))] = t;
    }
    const TokenDataset& f = *ctx_.data.forget;
    auto it = cached.find(f.name);
    if (it == cached.end() || it->second.dim() != 1 || it->second.size(0) != f.rows()) {
      return Status::error("state/strategy/" + std::string(kRefPrefix) + f.name + ": missing, or not one log-prob per forget sample (" +
                           std::to_string(f.rows()) + ")");
    }
    for (auto& [name, lp] : cached) lp = lp.to(at::kFloat);
    ref_logprobs_ = std::move(cached);
    return Status::ok();
  }

 private:
  std::map<std::string, at::Tensor> ref_logprobs_;  // forget set name → [rows], fp32 on the host
};

}  // namespace

std::unique_ptr<Strategy> make_npo(const UnlearnConfig& cfg) { return std::make_unique<Npo>(cfg); }

}  // namespace lethe
