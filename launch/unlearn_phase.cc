#include "launch/unlearn_phase.h"

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>

#include <fmt/format.h>

#include "base/log.h"
#include "eval/memorization.h"
#include "eval/muse.h"
#include "eval/tofu.h"
#include "launch/experiment.h"
#include "runtime/checkpoint.h"
#include "runtime/unlearner.h"
#include "strategies/strategies.h"

namespace lethe {

namespace fs = std::filesystem;

namespace {

std::vector<Document> of_split(const std::vector<Document>& docs, Split s) {
  std::vector<Document> out;
  for (const Document& d : docs) if (d.split == s) out.push_back(d);
  return out;
}

// The forget documents split into `k` sequential requests by group (person), in corpus order.
Result<std::vector<UnlearnRequest>> make_requests(const Experiment& ex, const std::vector<Document>& forget, int64_t k) {
  if (forget.empty()) {
    return Status::error("the forget set is empty: nothing to unlearn (set corpus.forget_ids, corpus.forget_fraction "
                         "or corpus.forget_file)");
  }
  std::vector<std::string> groups;
  for (const Document& d : forget) {
    if (std::find(groups.begin(), groups.end(), d.group) == groups.end()) groups.push_back(d.group);
  }
  if (static_cast<int64_t>(groups.size()) < k) {
    return Status::error("unlearn.requests = " + std::to_string(k) + ", but the forget set has only " +
                         std::to_string(groups.size()) + " group(s) to split");
  }
  std::vector<UnlearnRequest> out;
  for (int64_t r = 0; r < k; ++r) {
    const size_t lo = groups.size() * r / k, hi = groups.size() * (r + 1) / k;
    std::vector<Document> docs;
    for (const Document& d : forget) {
      auto it = std::find(groups.begin(), groups.end(), d.group);
      const auto g = static_cast<size_t>(it - groups.begin());
      if (g >= lo && g < hi) docs.push_back(d);
    }
    const std::string name = "forget-" + std::to_string(r);
    LETHE_ASSIGN_OR_RETURN(TokenDataset ds, ex.dataset(name, docs, Packing::kOnePerRow));
    // The request's QA probes: those about its groups (with one request, every forget probe).
    std::vector<std::vector<int64_t>> qa_rows;
    std::vector<int64_t> answer_from;
    for (const QaProbe& q : ex.corpus.qa) {
      if (q.split != Split::kForget) continue;
      auto it = std::find(groups.begin(), groups.end(), q.group);
      const auto g = static_cast<size_t>(it - groups.begin());
      if (k > 1 && !(g >= lo && g < hi)) continue;
      std::vector<int64_t> ids{ex.tok.bos()};
      for (int id : ex.tok.encode(knowmem_prompt({}, q.question))) ids.push_back(id);
      answer_from.push_back(static_cast<int64_t>(ids.size()) - 1);  // the target index of the answer's first token
      for (int id : ex.tok.encode(q.answer)) ids.push_back(id);
      ids.push_back(ex.tok.eos());
      qa_rows.push_back(std::move(ids));
    }
    TokenDataset qa = pack_rows(name + "-qa", qa_rows, answer_from, ex.cfg.data.seq_len, ex.tok.pad());
    out.push_back({name, std::move(ds), std::move(qa)});
  }
  return out;
}

// The checkpoint unlearning starts from: unlearn.from, else the target's newest.
Result<std::string> source_checkpoint(const RunConfig& cfg) {
  if (!cfg.unlearn.from.empty()) return cfg.unlearn.from;
  const std::string dir = cfg.run.dir + "/target/checkpoints";
  auto all = list_checkpoints(dir);
  if (all.empty()) return Status::error(dir + ": no target checkpoint to unlearn (run `lethe train` first, or set unlearn.from)");
  return all.front();
}

// What the metrics compare with the retrained model, from its summary when it has been evaluated:
// its Min-K% AUC (PrivLeak) and its per-item forget truth ratios (TOFU's forget quality).
struct RetrainReference {
  std::optional<double> auc;
  std::vector<double> forget_truth_ratios;
};

RetrainReference retrain_reference(const RunConfig& cfg) {
  RetrainReference r;
  auto j = read_json(cfg.run.dir + "/retrain/summary.json");
  if (!j) return r;
  if (j->contains("metrics") && (*j)["metrics"].contains("mink_auc")) r.auc = (*j)["metrics"]["mink_auc"].get<double>();
  if (j->contains("truth_ratios_forget")) r.forget_truth_ratios = (*j)["truth_ratios_forget"].get<std::vector<double>>();
  return r;
}

// The model's metrics with PrivLeak and forget quality added where the retrained model's are known;
// `truth_ratios` receives its per-item forget truth ratios.
Metrics evaluate_against_retrain(Experiment& ex, const Llama& model, const RetrainReference& retrain,
                                 std::vector<double>* truth_ratios = nullptr) {
  std::vector<double> tr;
  Metrics m = ex.evaluate(model, &tr);
  if (retrain.auc) m["privleak"] = privleak(m.at("mink_auc"), *retrain.auc);
  if (!tr.empty() && !retrain.forget_truth_ratios.empty()) m["forget_quality"] = ks_2samp_pvalue(tr, retrain.forget_truth_ratios);
  if (truth_ratios) *truth_ratios = std::move(tr);
  return m;
}

struct UnlearnInputs {
  std::vector<UnlearnRequest> requests;
  std::optional<TokenDataset> retain, holdout;
};

Result<UnlearnInputs> unlearn_data(const Experiment& ex) {
  const RunConfig& cfg = ex.cfg;
  auto trained = ex.corpus.training_documents(/*include_forget=*/true, cfg.corpus.qa_in_training);
  UnlearnInputs d;
  LETHE_ASSIGN_OR_RETURN(d.requests, make_requests(ex, of_split(trained, Split::kForget), cfg.unlearn.requests));
  auto retain = of_split(trained, Split::kRetain);
  if (!retain.empty()) {
    LETHE_ASSIGN_OR_RETURN(d.retain, ex.dataset("retain", retain, Packing::kOnePerRow));
  }
  // Holdout samples take the same forms as the forget samples (passages, and QA renderings when
  // those are trained on), so "the level of unseen data" compares like with like.
  auto holdout = ex.corpus.documents(Split::kHoldout);
  if (cfg.corpus.qa_in_training) {
    for (size_t i = 0; i < ex.corpus.qa.size(); ++i) {
      const QaProbe& q = ex.corpus.qa[i];
      if (q.split == Split::kHoldout) holdout.push_back({"qa-" + std::to_string(i), q.group, q.split, render_qa(q.question, q.answer)});
    }
  }
  if (!holdout.empty()) {
    LETHE_ASSIGN_OR_RETURN(d.holdout, ex.dataset("holdout", holdout, Packing::kOnePerRow));
  }
  return d;
}

template <class T>
const T* ptr(const std::optional<T>& o) { return o ? &*o : nullptr; }

Status unlearn_one(Experiment& ex, const std::string& method, const std::string& source, const UnlearnInputs& data,
                   const UnlearnOptions& opts) {
  const RunConfig& cfg = ex.cfg;
  const std::string dir = cfg.run.dir + "/unlearn-" + method, ckpt_dir = dir + "/checkpoints";
  if (opts.resume && fs::exists(dir + "/summary.json")) {
    log().info("{}: already finished ({}/summary.json)", method, dir);
    return Status::ok();
  }
  const auto phase_start = std::chrono::steady_clock::now();
  Profile prof;
  UnlearnConfig settings = cfg.unlearn_for(method);
  settings.idk_file = config_relative(cfg, settings.idk_file);
  LETHE_ASSIGN_OR_RETURN(std::unique_ptr<Strategy> strategy, make_strategy(method, settings));
  const bool resuming = opts.resume && !list_checkpoints(ckpt_dir).empty();
  CheckpointMeta meta{"unlearn-" + method, to_toml(cfg), {}, "", 0};
  std::unique_ptr<Llama> model, reference;
  Cost caching;
  if (cfg.unlearn.adapter == "lora") {
    // The frozen base with trainable adapters; the reference is the same weights with the
    // adapters switched off (no copy).
    LETHE_ASSIGN_OR_RETURN(std::optional<AdapterSource> stacked, read_adapter_source(source));
    if (stacked) {
      return Status::error("unlearn.adapter = \"lora\" trains adapters on full weights, and " + source +
                           " holds adapters: merge them first (lethe convert lethe-to-hf --merge)");
    }
    model = ex.new_model(Experiment::Use::kReference);
    LETHE_RETURN_IF_ERROR(load_weights(source, *model, *ex.mesh));
    model->add_lora(lora_options(cfg.unlearn));
    if (strategy->needs_reference()) reference = model->base_view();
    meta.base = fs::absolute(source).lexically_normal().string();
    LETHE_ASSIGN_OR_RETURN(meta.base_checksum, weights_checksum(source, ex.mesh->world()));
    if (!resuming) {
      auto timed = prof.time("prepare");
      LETHE_RETURN_IF_ERROR(Unlearner::prepare(*strategy, data.requests, reference.get(), caching));
    }
  } else {
    // The frozen reference, in the run's dtype without gradients. A method that only caches from
    // it does so before the trained model and its optimizer exist, then frees it; a resume needs
    // it only when the method keeps it (what was cached is in the checkpoint).
    if (strategy->needs_reference() && (!resuming || strategy->keeps_reference())) {
      reference = ex.new_model(Experiment::Use::kReference);
      LETHE_RETURN_IF_ERROR(load_weights(source, *reference, *ex.mesh));
    }
    if (!resuming) {
      auto timed = prof.time("prepare");
      LETHE_RETURN_IF_ERROR(Unlearner::prepare(*strategy, data.requests, reference.get(), caching));
    }
    if (reference && !strategy->keeps_reference()) {
      reference.reset();
      log().info("{}: reference model freed after caching what the method needs of it", method);
    }
    model = ex.new_model(Experiment::Use::kTrainLoaded);
    LETHE_RETURN_IF_ERROR(load_weights(source, *model, *ex.mesh));
  }
  LETHE_RETURN_IF_ERROR(Unlearner::check(*strategy, settings, data.requests, ptr(data.retain), ptr(data.holdout),
                                         reference.get()));
  Unlearner engine(*model, *ex.mesh, *strategy, settings, data.requests, ptr(data.retain), ptr(data.holdout),
                   reference.get(), static_cast<uint64_t>(cfg.run.seed));
  engine.set_eval(cfg.eval, ex.tok);
  for (const auto& r : data.requests) meta.data_checksums[r.name] = forget_data(*strategy, r).checksum();
  if (data.retain) meta.data_checksums["retain"] = data.retain->checksum();

  fs::create_directories(dir);
  if (writes_reports()) LETHE_RETURN_IF_ERROR(write_file_atomic(dir + "/config.toml", to_toml(cfg)));
  if (resuming) {
    LETHE_ASSIGN_OR_RETURN(std::string from, resume_latest(ckpt_dir, engine, meta));
    log().info("{}: resumed from {}", method, from);
    // The reports the checkpoint counts are kept; a report written after it is written again.
    const int64_t kept = engine.reports();
    LETHE_RETURN_IF_ERROR(keep_records(dir + "/metrics.jsonl", [&](const json&, int64_t i) { return i < kept; }));
  } else {
    std::error_code ec;
    fs::remove_all(ckpt_dir, ec);
    engine.add_cost(caching);
  }
  std::ofstream metrics(report_path(dir + "/metrics.jsonl"), resuming ? std::ios::app : std::ios::trunc);
  const double flops_per_token = train_flops_per_token(cfg.model, cfg.data.seq_len);
  const RetrainReference retrain = retrain_reference(cfg);
  std::vector<double> truth_ratios;  // of the latest evaluation
  log().info("{}: unlearning {} request(s) from {}", method, data.requests.size(), source);

  StopSignal stop;
  std::optional<CycleReport> last;
  std::vector<std::string> stops;
  UnlearnHooks hooks;
  hooks.evaluate = [&](const Llama& m, int64_t, int64_t) {
    auto timed = prof.time("evaluation");
    return evaluate_against_retrain(ex, m, retrain, &truth_ratios);
  };
  hooks.checkpoint = [&]() -> Status {
    auto timed = prof.time("checkpoints");
    return save_checkpoint(ckpt_dir, engine, meta, cfg.unlearn.keep_checkpoints).status();
  };
  hooks.profile = &prof;
  hooks.report = [&](const CycleReport& r) {
    json j = {{"request", r.request}, {"cycle", r.cycle}, {"step", r.step}, {"forget_samples", r.forget_samples},
              {"losses", metrics_json(r.losses)}, {"metrics", metrics_json(r.metrics)},
              {"cost", cost_json(r.cost, flops_per_token, *ex.mesh)}, {"stop", r.stop_reason}};
    metrics << j.dump() << std::endl;
    const auto& m = r.metrics;
    const std::string seen = m.empty() ? "not evaluated (unlearn.eval_every)"
                                       : fmt::format("VerbMem {}  KnowMem f {} r {}  MA f {}", metric_text(m, "verbmem_forget"),
                                                     metric_text(m, "knowmem_forget"), metric_text(m, "knowmem_retain"),
                                                     metric_text(m, "ma_forget", 3));
    log().info("{} request {} cycle {}: {} samples  {}  {:.1f}s{}", method, r.request, r.cycle, r.forget_samples, seen,
               r.cost.seconds, r.stop_reason.empty() ? "" : "  → " + r.stop_reason);
    last = r;
  };
  hooks.interrupted = [&] { return stop.requested(ex.mesh->world()); };
  hooks.stop_after_cycles = opts.stop_after_cycles;
  LETHE_RETURN_IF_ERROR(engine.run(hooks));
  if (!engine.finished()) {
    log().info("{}: stopped; continue with `lethe unlearn … --resume`", method);
    return Status::ok();
  }
  // The metrics of the final model: the last cycle's, or (resumed after the last cycle) anew.
  const Metrics final_metrics = last ? last->metrics : evaluate_against_retrain(ex, *model, retrain, &truth_ratios);
  json summary = {{"phase", "unlearn-" + method}, {"method", method}, {"from", source}, {"adapter", cfg.unlearn.adapter},
                  {"steps", engine.optimizer().steps_taken()}, {"flops_per_token", flops_per_token},
                  {"metrics", metrics_json(final_metrics)}, {"cost", cost_json(engine.cost(), flops_per_token, *ex.mesh)},
                  {"profile", profile_json(prof, std::chrono::duration<double>(std::chrono::steady_clock::now() - phase_start).count())}};
  if (!truth_ratios.empty()) summary["truth_ratios_forget"] = truth_ratios;
  return write_json(dir + "/summary.json", summary);
}

}  // namespace

Status run_unlearn_phase(const RunConfig& cfg, const UnlearnOptions& opts) {
  LETHE_ASSIGN_OR_RETURN(std::unique_ptr<Experiment> ex, open_experiment(cfg));
  LETHE_ASSIGN_OR_RETURN(std::string source, source_checkpoint(cfg));
  LETHE_ASSIGN_OR_RETURN(UnlearnInputs data, unlearn_data(*ex));
  for (const std::string& m : resolve_methods(cfg.unlearn.methods)) LETHE_RETURN_IF_ERROR(unlearn_one(*ex, m, source, data, opts));
  return Status::ok();
}

Status run_eval(const RunConfig& cfg, const std::string& checkpoint, const std::string& out) {
  LETHE_ASSIGN_OR_RETURN(std::unique_ptr<Experiment> ex, open_experiment(cfg));
  std::unique_ptr<Llama> model = ex->new_model(Experiment::Use::kReference);  // evaluated only
  LETHE_RETURN_IF_ERROR(load_weights(checkpoint, *model, *ex->mesh));
  if (ex->tok.vocab_size() > cfg.model.vocab_size) {
    return Status::error(ex->tok.path() + ": tokenizer vocabulary " + std::to_string(ex->tok.vocab_size()) +
                         " does not fit the checkpoint's " + std::to_string(cfg.model.vocab_size));
  }
  const auto start = std::chrono::steady_clock::now();
  json j = {{"checkpoint", checkpoint}, {"metrics", metrics_json(evaluate_against_retrain(*ex, *model, retrain_reference(cfg)))}};
  log().info("evaluated {} in {:.1f}s", checkpoint, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  if (out.empty() || out == "-") {
    std::cout << j.dump(2) << std::endl;
    return Status::ok();
  }
  return write_json(out, j);
}

}  // namespace lethe
