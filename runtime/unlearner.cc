#include "runtime/unlearner.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/csrc/autograd/autograd.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdlib>

#include "base/check.h"
#include "base/log.h"

namespace lethe {

namespace {

AdamHyper adam_hyper(const UnlearnConfig& u) {
  AdamHyper h;
  h.beta1 = u.beta1;
  h.beta2 = u.beta2;
  h.weight_decay = u.weight_decay;
  return h;
}

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

const TokenDataset& forget_data(const Strategy& s, const UnlearnRequest& r) { return s.forget_qa() ? r.forget_qa : r.forget; }

Unlearner::Unlearner(Llama& model, const Mesh& mesh, Strategy& strategy, const UnlearnConfig& cfg,
                     const std::vector<UnlearnRequest>& requests, const TokenDataset* retain,
                     const TokenDataset* holdout, const Llama* reference, uint64_t seed)
    : model_(model), mesh_(mesh), strategy_(strategy), cfg_(cfg), requests_(requests), retain_(retain),
      holdout_(holdout), reference_(reference), seed_(seed), opt_(model, adam_hyper(cfg), mesh),
      retain_loader_(retain ? retain->rows() : 0, seed ^ 0x5EED) {}

Status Unlearner::check(const Strategy& s, const UnlearnConfig& cfg, const std::vector<UnlearnRequest>& requests,
                        const TokenDataset* retain, const TokenDataset* holdout, const Llama* reference) {
  const std::string who = "unlearn method \"" + std::string(s.name()) + "\"";
  if (requests.empty()) return Status::error(who + ": the forget set is empty: nothing to unlearn");
  for (const auto& r : requests) {
    if (s.forget_qa() && (!r.forget_qa.tokens.defined() || r.forget_qa.rows() == 0)) {
      return Status::error(who + " unlearns forget QA (question → answer pairs), and forget request \"" + r.name +
                           "\" has none (a JSONL corpus gives them in corpus.forget_qa_file)");
    }
    if (forget_data(s, r).rows() == 0) return Status::error(who + ": forget request \"" + r.name + "\" has no samples");
  }
  const bool wants_retain = s.needs_retain() || cfg.learn_steps > 0;
  if (wants_retain && (!retain || retain->rows() == 0)) {
    return Status::error(who + (s.needs_retain() ? " needs retain data" : " with unlearn.learn_steps > 0 needs retain data") +
                         ", and the corpus has none (give corpus.retain_file, or set unlearn.learn_steps = 0 and "
                         "pick a method without a retain term)");
  }
  if (s.needs_holdout() && (!holdout || holdout->rows() == 0)) {
    return Status::error(who + " needs holdout (never trained) data to judge what \"forgotten\" means, and the corpus "
                               "has none (corpus.holdout_fraction or corpus.holdout_file)");
  }
  if (s.keeps_reference() && !reference) return Status::error(who + " needs the reference model");
  return Status::ok();
}

Status Unlearner::prepare(Strategy& strategy, const std::vector<UnlearnRequest>& requests, PrepareContext ctx) {
  if (!strategy.needs_reference()) return Status::ok();
  const std::string who = "unlearn method \"" + std::string(strategy.name()) + "\"";
  if (!ctx.reference) return Status::error(who + " needs the reference model");
  if (strategy.needs_reinforced() && !ctx.reinforced) return Status::error(who + " needs the reinforced model");
  LETHE_CHECK(ctx.cost);
  ctx.forget_sets.clear();
  for (const UnlearnRequest& r : requests) ctx.forget_sets.push_back(&forget_data(strategy, r));
  const auto start = std::chrono::steady_clock::now();
  LETHE_RETURN_IF_ERROR(strategy.prepare(ctx));
  ctx.cost->seconds += seconds_since(start);
  return Status::ok();
}

void Unlearner::add_cost(const Cost& c) {
  cost_.train_tokens += c.train_tokens;
  cost_.forward_tokens += c.forward_tokens;
  cost_.seconds += c.seconds;
}

std::vector<int64_t> Unlearner::my_rows(const std::vector<int64_t>& global) const {
  const size_t per = global.size() / static_cast<size_t>(mesh_.dp_size());
  auto first = global.begin() + static_cast<std::ptrdiff_t>(per * static_cast<size_t>(mesh_.dp_rank()));
  return {first, first + static_cast<std::ptrdiff_t>(per)};
}

void Unlearner::optimizer_step(const at::Tensor& loss) {
  // Each dp rank's loss is a mean over its rows (token means: Note [Token means under dp]);
  // dividing by dp and summing the gradients over dp gives the gradient of the global-batch mean.
  opt_.overlap_next_backward();
  torch::autograd::backward({loss / static_cast<double>(mesh_.dp_size())});
  for (size_t i = 0; i < model_.trained().size(); ++i) {
    if (!strategy_.trains(model_.trained()[i])) opt_.drop_grad(i);
  }
  opt_.step(cfg_.lr, cfg_.grad_clip);
}

std::map<std::string, at::Tensor> Unlearner::unlearn_step(DataLoader& order, const std::vector<int64_t>& active) {
  const auto dp = static_cast<int64_t>(mesh_.dp_size());
  int64_t n = std::min<int64_t>(cfg_.forget_batch, static_cast<int64_t>(active.size()));
  n = std::max(dp, n / dp * dp);
  std::vector<int64_t> rows;
  for (int64_t i : order.next_rows(n)) rows.push_back(active[static_cast<size_t>(i)]);
  const TokenDataset& forget = forget_data(strategy_, requests_[static_cast<size_t>(request_)]);
  UnlearnBatch b;
  b.forget = make_batch(forget, my_rows(rows), model_.device());
  model_.set_dropout_step(opt_.steps_taken());
  int64_t processed = n * forget.seq_len;
  if (strategy_.retain_batch()) {
    b.retain = make_batch(*retain_, my_rows(retain_loader_.next_rows(cfg_.retain_batch)), model_.device());
    processed += cfg_.retain_batch * retain_->seq_len;
  }
  LossTerms terms = strategy_.loss(model_, b);
  std::vector<at::Tensor> parts;
  for (const auto& [name, t] : terms.terms) parts.push_back(t.detach().to(at::kDouble).reshape({1}));
  at::Tensor avg = at::cat(parts);
  mesh_.dp().all_reduce(avg, ReduceOp::kAvg);  // each term over the global batch, kept on the device
  std::map<std::string, at::Tensor> values;
  for (size_t i = 0; i < terms.terms.size(); ++i) values[terms.terms[i].first] = avg[static_cast<int64_t>(i)];
  optimizer_step(terms.total());
  cost_.train_tokens += processed;
  return values;
}

at::Tensor Unlearner::learn_step() {
  Batch b = make_batch(*retain_, my_rows(retain_loader_.next_rows(cfg_.retain_batch)), model_.device());
  model_.set_dropout_step(opt_.steps_taken());
  at::Tensor loss = mean_nll(model_, b);
  at::Tensor value = loss.detach().to(at::kDouble).reshape({1});
  mesh_.dp().all_reduce(value, ReduceOp::kAvg);
  optimizer_step(loss);
  cost_.train_tokens += cfg_.retain_batch * retain_->seq_len;
  return value;
}

Status Unlearner::begin_request() {
  if (begun_ == request_) return Status::ok();
  StrategyContext ctx{{&forget_data(strategy_, requests_[static_cast<size_t>(request_)]), retain_, holdout_}, reference_,
                      &cost_, &model_, &cfg_, &eval_, eos_id_, tokenizer_};
  const auto start = std::chrono::steady_clock::now();
  LETHE_RETURN_IF_ERROR(strategy_.begin(ctx));
  cost_.seconds += seconds_since(start);
  begun_ = request_;
  return Status::ok();
}

Status Unlearner::select(const UnlearnHooks& hooks, CycleReport& rep) {
  Selection s = best_;
  if (!s.score) {
    if (hooks.score) {
      log().warn("request {}: no evaluated cycle could be selected (each was collapsed or had no score); its last cycle "
                 "is kept", request_);
    }
    s = {request_, rep.cycle, rep.step, std::nullopt};
  } else if (s.cycle != rep.cycle) {
    if (!hooks.restore) return Status::error("unlearn.select: the engine was given a score hook without a restore hook");
    LETHE_RETURN_IF_ERROR(hooks.restore(s));
    log().info("request {}: cycle {} selected (score {:.4f}); its model restored over cycle {}'s", request_, s.cycle,
               *s.score, rep.cycle);
  }
  selected_.push_back(s);
  best_ = {};
  rep.selected = s;
  return Status::ok();
}

Status Unlearner::run(const UnlearnHooks& hooks) {
  int64_t cycles_run = 0;
  Profile unused;
  Profile& prof = hooks.profile ? *hooks.profile : unused;
  while (!finished()) {
    {
      auto timed = prof.time("begin_request");
      LETHE_RETURN_IF_ERROR(begin_request());
    }
    const auto start = std::chrono::steady_clock::now();
    CycleReport rep;
    rep.request = request_;
    rep.cycle = cycle_;
    const std::vector<int64_t> active = strategy_.forget_rows();
    rep.forget_samples = static_cast<int64_t>(active.size());
    if (active.empty()) {
      rep.stop_reason = "the forget set is empty";
    } else {
      // A fresh order per (request, cycle): resuming at a cycle boundary needs no forget cursor.
      DataLoader order(static_cast<int64_t>(active.size()), seed_ + 1000003 * (request_ + 1) + static_cast<uint64_t>(cycle_));
      // Loss terms are summed on the device and read once, at the end of the cycle.
      std::map<std::string, at::Tensor> sums;
      auto accumulate = [&](const std::string& name, const at::Tensor& v, int64_t steps) {
        at::Tensor part = v / static_cast<double>(steps);
        sums[name] = sums.count(name) ? sums[name] + part : part;
      };
      {
        auto timed = prof.time("unlearn_steps");
        for (int64_t s = 0; s < cfg_.unlearn_steps; ++s) {
          for (const auto& [name, v] : unlearn_step(order, active)) accumulate(name, v, cfg_.unlearn_steps);
        }
      }
      {
        auto timed = prof.time("learn_steps");
        for (int64_t s = 0; s < cfg_.learn_steps; ++s) accumulate("learn_nll", learn_step().squeeze(0), cfg_.learn_steps);
      }
      for (const auto& [name, v] : sums) rep.losses[name] = v.item<double>();
      Verdict v;
      {
        auto timed = prof.time("refinement");
        v = strategy_.end_cycle({request_, cycle_, &model_});
      }
      if (v.stop) rep.stop_reason = v.reason;
    }
    cost_.seconds += seconds_since(start);
    rep.step = opt_.steps_taken();
    const bool out_of_time = cfg_.time_budget_s > 0 && cost_.seconds >= cfg_.time_budget_s;
    // Evaluated every eval_every cycles, and always when the request ends here.
    const bool ends = !rep.stop_reason.empty() || cycle_ + 1 >= cfg_.max_cycles || out_of_time;
    if (hooks.evaluate && (ends || (cycle_ + 1) % cfg_.eval_every == 0)) rep.metrics = hooks.evaluate(model_, request_, cycle_);
    if (rep.stop_reason.empty() && !cfg_.stop_metric.empty()) {
      auto it = rep.metrics.find(cfg_.stop_metric);
      if (it != rep.metrics.end() && it->second <= cfg_.stop_value) {
        rep.stop_reason = cfg_.stop_metric + " reached " + std::to_string(cfg_.stop_value);
      }
    }
    if (rep.stop_reason.empty() && cycle_ + 1 >= cfg_.max_cycles) rep.stop_reason = "max_cycles reached";
    if (out_of_time && rep.stop_reason.empty()) rep.stop_reason = "time budget spent";
    rep.cost = cost_;
    if (hooks.score && !rep.metrics.empty()) rep.score = hooks.score(rep.metrics);
    rep.best = rep.score && (!best_.score || *rep.score < *best_.score);
    if (rep.best) best_ = {request_, cycle_, rep.step, rep.score};
    if (!rep.stop_reason.empty()) LETHE_RETURN_IF_ERROR(select(hooks, rep));
    // Advance first, so the checkpoint names the next cycle to run.
    if (rep.stop_reason.empty()) {
      ++cycle_;
    } else {
      request_ = out_of_time ? static_cast<int64_t>(requests_.size()) : request_ + 1;
      cycle_ = 0;
      // The checkpoint then holds the next request's fresh strategy state.
      if (!finished()) LETHE_RETURN_IF_ERROR(begin_request());
    }
    if (hooks.report) hooks.report(rep);
    ++reports_;  // before the checkpoint, which then counts this report
    if (const char* k = std::getenv("LETHE_TEST_KILL_AFTER_REPORT"); k && std::atoi(k) == reports_) {
      ::raise(SIGKILL);  // test hook: killed between a cycle's record and its checkpoint (tests/kill_after_report.sh)
    }
    if (hooks.checkpoint) LETHE_RETURN_IF_ERROR(hooks.checkpoint(rep));
    ++cycles_run;
    if ((hooks.stop_after_cycles > 0 && cycles_run >= hooks.stop_after_cycles) || (hooks.interrupted && hooks.interrupted())) {
      break;
    }
  }
  return Status::ok();
}

StateTensors Unlearner::state() const {
  StateTensors s;
  s["request"] = int_state(request_);
  s["cycle"] = int_state(cycle_);
  s["reports"] = int_state(reports_);
  put_cursor(s, "retain", retain_loader_.cursor());
  s["cost_train_tokens"] = int_state(cost_.train_tokens);
  s["cost_forward_tokens"] = int_state(cost_.forward_tokens);
  s["cost_seconds"] = at::scalar_tensor(cost_.seconds, at::kDouble);
  for (auto& [name, t] : strategy_.state()) s["strategy/" + name] = t;
  // One row per finished request, then the current request's best so far: cycle, step, score (NaN: none).
  std::vector<double> rows;
  for (const Selection& x : selected_) rows.insert(rows.end(), {double(x.cycle), double(x.step), x.score.value_or(NAN)});
  rows.insert(rows.end(), {double(best_.cycle), double(best_.step), best_.score.value_or(NAN)});
  s["selection"] = at::tensor(rows, at::kDouble).reshape({-1, 3});
  return s;
}

Status Unlearner::set_state(const StateTensors& s) {
  LETHE_ASSIGN_OR_RETURN(int64_t request, read_int(s, "request"));
  LETHE_ASSIGN_OR_RETURN(int64_t cycle, read_int(s, "cycle"));
  LETHE_ASSIGN_OR_RETURN(int64_t reports, read_int(s, "reports"));
  LETHE_ASSIGN_OR_RETURN(DataCursor retain, read_cursor(s, "retain"));
  LETHE_ASSIGN_OR_RETURN(int64_t train_tokens, read_int(s, "cost_train_tokens"));
  LETHE_ASSIGN_OR_RETURN(int64_t forward_tokens, read_int(s, "cost_forward_tokens"));
  auto secs = s.find("cost_seconds");
  if (secs == s.end()) return Status::error("state/cost_seconds: missing");
  if (request < 0 || request > static_cast<int64_t>(requests_.size())) {
    return Status::error("state/request: " + std::to_string(request) + ", but this run has " +
                         std::to_string(requests_.size()) + " forget request(s)");
  }
  std::vector<Selection> selected;
  Selection best;
  if (auto it = s.find("selection"); it != s.end()) {  // absent in checkpoints from before unlearn.select
    const at::Tensor t = it->second.to(at::kDouble).contiguous();
    if (t.dim() != 2 || t.size(1) != 3 || t.size(0) != request + 1) {
      return Status::error("state/selection: expected shape [" + std::to_string(request + 1) + ", 3] (one row per finished "
                           "request and the current one), got [" + fmt::format("{}", fmt::join(t.sizes(), ", ")) + "]");
    }
    auto acc = t.accessor<double, 2>();
    for (int64_t r = 0; r <= request; ++r) {
      Selection x{r, static_cast<int64_t>(acc[r][0]), static_cast<int64_t>(acc[r][1]), std::nullopt};
      if (!std::isnan(acc[r][2])) x.score = acc[r][2];
      (r < request ? selected.emplace_back(x) : best) = x;
    }
  }
  StateTensors strategy;
  for (const auto& [name, t] : s) {
    if (name.rfind("strategy/", 0) == 0) strategy[name.substr(9)] = t;
  }
  const int64_t saved_request = request_;
  request_ = request;
  if (!finished()) {
    begun_ = -1;
    Status st = begin_request();
    if (st) st = strategy_.set_state(strategy);
    if (!st) {
      request_ = saved_request;
      return st;
    }
  }
  cycle_ = cycle;
  reports_ = reports;
  selected_ = std::move(selected);
  best_ = best;
  retain_loader_.set_cursor(retain);
  cost_ = Cost{train_tokens, forward_tokens, secs->second.item<double>()};
  return Status::ok();
}

}  // namespace lethe
