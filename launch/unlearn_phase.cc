#include "launch/unlearn_phase.h"

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "base/check.h"
#include "base/log.h"
#include "eval/memorization.h"
#include "eval/muse.h"
#include "eval/selection.h"
#include "eval/tofu.h"
#include "launch/experiment.h"
#include "runtime/checkpoint.h"
#include "runtime/trainer.h"
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

// Removes `dir` (stale checkpoints another run left) on rank 0 while the others wait, so that no
// rank removes what another has begun to write.
void clear_checkpoints(const Experiment& ex, const std::string& dir) {
  std::error_code ec;
  if (ex.mesh->world().rank() == 0) fs::remove_all(dir, ec);
  ex.mesh->world().barrier();
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
      if (static_cast<int64_t>(ids.size()) > ex.cfg.data.seq_len) {
        log().warn("forget QA probe \"{}\": its prompt alone is longer than data.seq_len ({}); left out of the forget QA",
                   q.question, ex.cfg.data.seq_len);
        continue;
      }
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
// `samples` receives its per-sample scores.
Metrics evaluate_against_retrain(Experiment& ex, const Llama& model, const RetrainReference& retrain,
                                 SampleScores* samples = nullptr) {
  SampleScores s;
  Metrics m = ex.evaluate(model, &s);
  if (retrain.auc) m["privleak"] = privleak(m.at("mink_auc"), *retrain.auc);
  const std::vector<double>& tr = s.forget_truth_ratios;
  if (!tr.empty() && !retrain.forget_truth_ratios.empty()) m["forget_quality"] = ks_2samp_pvalue(tr, retrain.forget_truth_ratios);
  if (samples) *samples = std::move(s);
  return m;
}

Result<Metrics> summary_metrics(const std::string& path) {
  LETHE_ASSIGN_OR_RETURN(json j, read_json(path));
  if (!j.contains("metrics") || !j["metrics"].is_object()) return Status::error(path + ": no \"metrics\" object");
  Metrics m;
  for (const auto& [k, v] : j["metrics"].items()) m[k] = v.get<double>();
  return m;
}

// The metrics of the checkpoint unlearning starts from, which unlearn.select measures against: the
// target's summary when it evaluated that checkpoint, else <run.dir>/source-metrics.json when it
// holds the same weights (path and weights_checksum), else evaluated now and written there.
// Collective over the world.
Result<Metrics> source_metrics(Experiment& ex, const std::string& source) {
  const std::string target = ex.cfg.run.dir + "/target/summary.json", cache = ex.cfg.run.dir + "/source-metrics.json";
  if (auto j = read_json(target); j && !j->value("checkpoint", "").empty()) {
    std::error_code ec;  // false when either file is missing
    if (fs::equivalent(ex.cfg.run.dir + "/target/checkpoints/" + j->value("checkpoint", ""), source, ec)) return summary_metrics(target);
  }
  LETHE_ASSIGN_OR_RETURN(uint64_t checksum, weights_checksum(source, ex.mesh->world()));
  const json key = {{"from", source}, {"weights_checksum", std::to_string(checksum)}};
  if (auto j = read_json(cache); j && j->value("key", json()) == key) return summary_metrics(cache);
  log().info("unlearn.select: evaluating the starting model {} once ({})", source, cache);
  std::unique_ptr<Llama> model = ex.new_model(Experiment::Use::kReference);
  LETHE_RETURN_IF_ERROR(load_weights(source, *model, *ex.mesh));
  const Metrics m = ex.evaluate(*model);
  LETHE_RETURN_IF_ERROR(write_json(cache, {{"key", key}, {"metrics", metrics_json(m)}}));
  return m;
}

// unlearn.select's score (Note [Checkpoint selection]); unset for "last". "oracle" reads the
// retrained model's summary; "holdout" reads nothing of it.
using ScoreFn = std::function<std::optional<double>(const Metrics&)>;
Result<ScoreFn> selection_score(Experiment& ex, const UnlearnConfig& u, const std::string& source, bool has_holdout) {
  if (u.select == "last") return ScoreFn();
  if (u.select == "holdout" && !has_holdout) {
    return Status::error("unlearn.select = \"holdout\" measures forgetting against holdout (never trained) data, and the "
                         "corpus has none (corpus.holdout_fraction or corpus.holdout_file), or choose select = \"last\"");
  }
  LETHE_ASSIGN_OR_RETURN(Metrics start, source_metrics(ex, source));
  if (u.select == "holdout") return ScoreFn([start](const Metrics& m) { return holdout_score(m, start); });
  const std::string path = ex.cfg.run.dir + "/retrain/summary.json";
  if (!fs::exists(path)) {
    return Status::error("unlearn.select = \"oracle\" compares each cycle with the retrained model, and " + path +
                         " does not exist (run `lethe retrain` first, or choose select = \"holdout\")");
  }
  LETHE_ASSIGN_OR_RETURN(Metrics retrained, summary_metrics(path));
  for (const char* k : {"verbmem_forget", "mink_auc"}) {
    if (!retrained.count(k) || !start.count(k)) return Status::error(path + " or the starting model's metrics: no " + std::string(k));
  }
  return ScoreFn([start, retrained](const Metrics& m) { return oracle_score(m, start, retrained); });
}

// An unlearned model's summary.json.
json method_summary(const Experiment& ex, const std::string& method, const std::string& source, const std::string& adapter,
                    int64_t steps, const Metrics& metrics, const Cost& cost, const Profile& prof,
                    std::chrono::steady_clock::time_point phase_start, const SampleScores& samples) {
  const double flops_per_token = train_flops_per_token(ex.cfg.model, ex.cfg.data.seq_len);
  json summary = {{"phase", "unlearn-" + method}, {"method", method}, {"from", source}, {"adapter", adapter},
                  {"steps", steps}, {"flops_per_token", flops_per_token},
                  {"metrics", metrics_json(metrics)}, {"cost", cost_json(cost, flops_per_token, *ex.mesh)},
                  {"profile", profile_json(prof, std::chrono::duration<double>(std::chrono::steady_clock::now() - phase_start).count())}};
  add_sample_scores(summary, samples);
  return summary;
}

// The engine's model and optimizer, without its loop state: what restoring a selected checkpoint replaces.
class ModelAndOptimizer : public Checkpointable {
 public:
  explicit ModelAndOptimizer(Unlearner& e) : engine_(e) {}
  Llama& model() override { return engine_.model(); }
  AdamW& optimizer() override { return engine_.optimizer(); }
  const Mesh& mesh() const override { return engine_.mesh(); }
  StateTensors state() const override { return {}; }
  Status set_state(const StateTensors&) override { return Status::ok(); }

 private:
  Unlearner& engine_;
};

// A request's kept checkpoint in the method's checkpoints/ (Note [Checkpoint selection]).
std::string kept_name(int64_t request) { return "selected-r" + std::to_string(request) + ".h5"; }

// summary.json's "select": the rule, whether it peeked at the retrained model, and each request's choice
// (its kept checkpoint named within the method's folder, so the summary does not depend on run.dir).
json selection_json(const std::string& rule, const std::vector<Selection>& chosen) {
  json requests = json::array();
  for (const Selection& s : chosen) {
    requests.push_back({{"request", s.request}, {"cycle", s.cycle}, {"step", s.step},
                        {"score", s.score ? json(*s.score) : json(nullptr)}, {"checkpoint", "checkpoints/" + kept_name(s.request)}});
  }
  return {{"rule", rule}, {"peeking", rule == "oracle"}, {"requests", requests}};
}

struct UnlearnInputs {
  std::vector<UnlearnRequest> requests;
  std::optional<TokenDataset> retain, holdout;
  std::vector<Document> forget;  // every request's passages (the reinforced model's fine-tune)
};

Result<UnlearnInputs> unlearn_data(const Experiment& ex) {
  const RunConfig& cfg = ex.cfg;
  auto trained = ex.corpus.training_documents(/*include_forget=*/true, cfg.corpus.qa_in_training);
  UnlearnInputs d;
  d.forget = of_split(trained, Split::kForget);
  LETHE_ASSIGN_OR_RETURN(d.requests, make_requests(ex, d.forget, cfg.unlearn.requests));
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

// WHP's anchor dictionary: unlearn.whp_anchors, else the generated corpus's own, else none (the
// reference then labels the original text).
Result<std::vector<Anchor>> whp_anchors(const Experiment& ex, const UnlearnConfig& settings) {
  if (!settings.whp_anchors.empty()) {
    LETHE_ASSIGN_OR_RETURN(std::vector<Anchor> a, read_anchors(config_relative(ex.cfg, settings.whp_anchors)));
    log().info("whp: {} anchors from {}", a.size(), settings.whp_anchors);
    return a;
  }
  if (ex.cfg.corpus.source == "generated") return generated_anchors(ex.cfg.corpus, ex.corpus);
  return std::vector<Anchor>{};
}

template <class T>
const T* ptr(const std::optional<T>& o) { return o ? &*o : nullptr; }

// Note [Reinforced model]: the starting checkpoint fine-tuned further on every request's forget
// passages (packed), unlearn.reinforce_steps AdamW steps of forget_batch rows at reinforce_lr
// (cosine to train.min_lr_ratio, no warm-up). Trained once per run into <run.dir>/reinforced/ and
// reused while its summary names the same source, steps, rate, batch and data; the methods that use
// it (task_vector, whp, whp_logits) each count its cost as their own. unlearn.reinforced names a
// checkpoint to use instead (trained elsewhere: no cost here).
struct Reinforced {
  std::string checkpoint;
  Cost cost;
  uint64_t data_checksum = 0;  // of the packed forget passages it was tuned on
};

Result<Reinforced> reinforced_model(Experiment& ex, const std::string& source, const std::vector<Document>& forget,
                                    const std::string& method) {
  const RunConfig& cfg = ex.cfg;
  const std::string dir = cfg.run.dir + "/reinforced", ckpt_dir = dir + "/checkpoints";
  LETHE_ASSIGN_OR_RETURN(TokenDataset data, ex.dataset("reinforce", forget));
  const uint64_t checksum = data.checksum();
  if (!cfg.unlearn.reinforced.empty()) {
    const std::string given = config_relative(cfg, cfg.unlearn.reinforced);
    if (!fs::exists(given)) return Status::error("unlearn.reinforced: " + given + " does not exist (" + method + "'s reinforced model)");
    log().info("reinforced model: {} (unlearn.reinforced; its fine-tune is not counted in {}'s cost)", given, method);
    return Reinforced{given, Cost{}, checksum};
  }
  LETHE_CHECK_MSG(cfg.unlearn.reinforce_steps > 0, "validate_layout refuses a reinforced model neither trained nor given");
  const json key = {{"from", source}, {"steps", cfg.unlearn.reinforce_steps}, {"lr", cfg.unlearn.reinforce_lr},
                    {"batch", cfg.unlearn.forget_batch}, {"data_checksum", std::to_string(checksum)}};
  auto done = read_json(dir + "/summary.json");
  if (done && done->value("key", json()) == key && !list_checkpoints(ckpt_dir).empty()) {
    log().info("reinforced model: reusing {}", dir);
    const json& c = (*done)["cost"];
    return Reinforced{list_checkpoints(ckpt_dir).front(), Cost{c["train_tokens"], c["forward_tokens"], c["seconds"]}, checksum};
  }
  TrainConfig tc = cfg.train;
  tc.steps = cfg.unlearn.reinforce_steps;
  tc.lr = cfg.unlearn.reinforce_lr;
  tc.warmup_steps = 0;
  tc.batch_size = cfg.unlearn.forget_batch;
  tc.grad_accum = 1;
  tc.weight_decay = 0;
  std::unique_ptr<Llama> model = ex.new_model(Experiment::Use::kTrainLoaded);
  LETHE_RETURN_IF_ERROR(load_weights(source, *model, *ex.mesh));
  Trainer trainer(*model, *ex.mesh, tc, data, static_cast<uint64_t>(cfg.run.seed));
  at::Tensor first_loss, last_loss;
  for (int64_t i = 0; i < tc.steps; ++i) {
    StepStats st = trainer.step();
    (i == 0 ? first_loss : last_loss) = st.loss_value;
  }
  clear_checkpoints(ex, ckpt_dir);
  const CheckpointMeta meta{"reinforced", to_toml(cfg), {{"reinforce", checksum}}, "", 0};
  LETHE_ASSIGN_OR_RETURN(std::string path, save_checkpoint(ckpt_dir, trainer, meta, 1));
  const Cost cost{tc.steps * tc.batch_size * cfg.data.seq_len, 0, trainer.seconds()};
  const double flops_per_token = train_flops_per_token(cfg.model, cfg.data.seq_len);
  log().info("reinforced model: {} steps on the forget passages in {:.1f}s, forget NLL {:.4f} → {:.4f}", tc.steps, cost.seconds,
             first_loss.item<double>(), (last_loss.defined() ? last_loss : first_loss).item<double>());
  LETHE_RETURN_IF_ERROR(write_json(dir + "/summary.json", {{"phase", "reinforced"}, {"key", key}, {"checkpoint", path},
                                                          {"cost", cost_json(cost, flops_per_token, *ex.mesh)}}));
  return Reinforced{path, cost, checksum};
}

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
  LETHE_ASSIGN_OR_RETURN(auto score, selection_score(ex, settings, source, data.holdout.has_value()));
  const bool resuming = opts.resume && !list_checkpoints(ckpt_dir).empty();
  CheckpointMeta meta{"unlearn-" + method, to_toml(cfg), {}, "", 0};
  std::unique_ptr<Llama> model, reference;
  Cost caching;
  // Strategy::prepare with the reference, and the reinforced model and anchors where the method
  // needs them (WHP); they are freed once it ran.
  auto prepare = [&]() -> Status {
    auto timed = prof.time("prepare");
    PrepareContext pc{{}, reference.get(), nullptr, &ex.tok, nullptr, &caching};
    std::unique_ptr<Llama> reinforced;
    std::vector<Anchor> anchors;
    if (strategy->needs_reinforced()) {
      LETHE_ASSIGN_OR_RETURN(Reinforced r, reinforced_model(ex, source, data.forget, method));
      reinforced = ex.new_model(Experiment::Use::kReference);
      LETHE_RETURN_IF_ERROR(load_weights(r.checkpoint, *reinforced, *ex.mesh));
      caching = r.cost;
      pc.reinforced = reinforced.get();
      LETHE_ASSIGN_OR_RETURN(anchors, whp_anchors(ex, settings));
      pc.anchors = &anchors;
    }
    return Unlearner::prepare(*strategy, data.requests, pc);
  };
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
    if (!resuming) LETHE_RETURN_IF_ERROR(prepare());
  } else {
    // The frozen reference, in the run's dtype without gradients. A method that only caches from
    // it does so before the trained model and its optimizer exist, then frees it; a resume needs
    // it only when the method keeps it (what was cached is in the checkpoint).
    if (strategy->needs_reference() && (!resuming || strategy->keeps_reference())) {
      reference = ex.new_model(Experiment::Use::kReference);
      LETHE_RETURN_IF_ERROR(load_weights(source, *reference, *ex.mesh));
    }
    if (!resuming) LETHE_RETURN_IF_ERROR(prepare());
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
  // Note [Checkpoint selection]: the checkpoint after a request's best cycle is kept as
  // selected-r<request>.h5 (outside pruning) until a better one replaces it; without a score
  // (select = "last"), the checkpoint after its last cycle. Each request's model stays on disk
  // (`lethe bench sustainability` evaluates them).
  const auto kept = [&](int64_t request) { return ckpt_dir + "/" + kept_name(request); };
  if (resuming) {
    LETHE_ASSIGN_OR_RETURN(std::string from, resume_latest(ckpt_dir, engine, meta));
    log().info("{}: resumed from {}", method, from);
    // Killed between that checkpoint and keeping it: keep it now.
    std::vector<Selection> chosen = engine.selections();
    chosen.push_back(engine.best());
    for (const Selection& s : chosen) {
      if (s.cycle >= 0 && s.step == engine.optimizer().steps_taken()) LETHE_RETURN_IF_ERROR(keep_checkpoint(from, kept(s.request), ex.mesh->world()));
    }
    // The reports the checkpoint counts are kept; a report written after it is written again.
    const int64_t kept = engine.reports();
    LETHE_RETURN_IF_ERROR(keep_records(dir + "/metrics.jsonl", [&](const json&, int64_t i) { return i < kept; }));
  } else {
    clear_checkpoints(ex, ckpt_dir);
    engine.add_cost(caching);
  }
  std::ofstream metrics(report_path(dir + "/metrics.jsonl"), resuming ? std::ios::app : std::ios::trunc);
  const double flops_per_token = train_flops_per_token(cfg.model, cfg.data.seq_len);
  const RetrainReference retrain = retrain_reference(cfg);
  SampleScores samples;  // of the latest evaluation
  log().info("{}: unlearning {} request(s) from {}", method, data.requests.size(), source);

  StopSignal stop;
  std::vector<std::string> stops;
  UnlearnHooks hooks;
  // This process's evaluations by (request, cycle), with their truth ratios: the selected one's go to the summary.
  std::map<std::pair<int64_t, int64_t>, std::pair<Metrics, SampleScores>> evaluated;
  hooks.evaluate = [&](const Llama& m, int64_t request, int64_t cycle) {
    auto timed = prof.time("evaluation");
    Metrics out = evaluate_against_retrain(ex, m, retrain, &samples);
    evaluated[{request, cycle}] = {out, samples};
    return out;
  };
  hooks.checkpoint = [&](const CycleReport& r) -> Status {
    auto timed = prof.time("checkpoints");
    LETHE_ASSIGN_OR_RETURN(std::string path, save_checkpoint(ckpt_dir, engine, meta, cfg.unlearn.keep_checkpoints));
    // After a rollback the checkpoints of the cycles undone go, once the restored one is written:
    // killed before that, a resume still finds the previous checkpoint and runs the last cycle again.
    if (r.selected && r.selected->cycle != r.cycle) drop_checkpoints_after(ckpt_dir, r.selected->step, ex.mesh->world());
    // A request that ends without a scored cycle (select = "last") keeps its last one.
    const bool keep = r.best || (r.selected && !r.selected->score);
    return keep ? keep_checkpoint(path, kept(r.request), ex.mesh->world()) : Status::ok();
  };
  hooks.score = score;
  hooks.restore = [&](const Selection& s) -> Status {
    auto timed = prof.time("checkpoints");
    ModelAndOptimizer into(engine);
    return load_checkpoint(kept(s.request), into, meta);
  };
  hooks.profile = &prof;
  hooks.report = [&](const CycleReport& r) {
    json j = {{"request", r.request}, {"cycle", r.cycle}, {"step", r.step}, {"forget_samples", r.forget_samples},
              {"losses", metrics_json(r.losses)}, {"metrics", metrics_json(r.metrics)},
              {"cost", cost_json(r.cost, flops_per_token, *ex.mesh)}, {"stop", r.stop_reason}};
    if (r.score) j["select_score"] = *r.score;
    if (r.selected) j["selected"] = {{"cycle", r.selected->cycle}, {"step", r.selected->step}};
    metrics << j.dump() << std::endl;
    const auto& m = r.metrics;
    const std::string seen = m.empty() ? "not evaluated (unlearn.eval_every)"
                                       : fmt::format("VerbMem {}  KnowMem f {} r {}  MA f {}", metric_text(m, "verbmem_forget"),
                                                     metric_text(m, "knowmem_forget"), metric_text(m, "knowmem_retain"),
                                                     metric_text(m, "ma_forget", 3));
    log().info("{} request {} cycle {}: {} samples  {}  {:.1f}s{}", method, r.request, r.cycle, r.forget_samples, seen,
               r.cost.seconds, r.stop_reason.empty() ? "" : "  → " + r.stop_reason);
  };
  hooks.interrupted = [&] { return stop.requested(ex.mesh->world()); };
  hooks.stop_after_cycles = opts.stop_after_cycles;
  LETHE_RETURN_IF_ERROR(engine.run(hooks));
  if (!engine.finished()) {
    log().info("{}: stopped; continue with `lethe unlearn … --resume`", method);
    return Status::ok();
  }
  // The final model is the last request's selected cycle: its evaluation, or (resumed past it) anew.
  const Selection final = engine.selections().empty() ? Selection{} : engine.selections().back();
  Metrics final_metrics;
  if (auto it = evaluated.find({final.request, final.cycle}); final.cycle >= 0 && it != evaluated.end()) {
    std::tie(final_metrics, samples) = it->second;
  } else {
    final_metrics = evaluate_against_retrain(ex, *model, retrain, &samples);
  }
  json summary = method_summary(ex, method, source, cfg.unlearn.adapter, engine.optimizer().steps_taken(), final_metrics,
                                engine.cost(), prof, phase_start, samples);
  summary["select"] = selection_json(settings.select, engine.selections());
  return write_json(dir + "/summary.json", summary);
}

// The methods outside the cycle engine, both on the reinforced model θ_ft; every request is
// removed at once (the fine-tune sees their union) and full weights are used whatever
// unlearn.adapter says.
// - task_vector (Ilharco et al. 2023): θ_u = θ − λ (θ_ft − θ) over every weight tensor; each rank
//   combines its own shards, in fp32, rounded to the run's dtype; saved as a checkpoint.
// - whp_logits (WHP as MUSE evaluates it): no training; the target evaluated with θ_ft as its
//   logit companion, logits v − α · ReLU(v_ft − v) (Note [Logit combination]). Nothing new to
//   save: the summary names the two checkpoints and α (`lethe eval --companion` evaluates it again).
Status arithmetic_one(Experiment& ex, const std::string& method, const std::string& source, const UnlearnInputs& data,
                      const UnlearnOptions& opts) {
  const RunConfig& cfg = ex.cfg;
  const std::string dir = cfg.run.dir + "/unlearn-" + method;
  if (opts.resume && fs::exists(dir + "/summary.json")) {
    log().info("{}: already finished ({}/summary.json)", method, dir);
    return Status::ok();
  }
  const bool task_vector = method == "task_vector";
  const auto phase_start = std::chrono::steady_clock::now();
  Profile prof;
  const UnlearnConfig settings = cfg.unlearn_for(method);
  Reinforced reinforced;
  {
    auto timed = prof.time("reinforce");
    LETHE_ASSIGN_OR_RETURN(reinforced, reinforced_model(ex, source, data.forget, method));
  }
  if (cfg.unlearn.adapter != "none") log().info("{}: uses full weights (unlearn.adapter = \"{}\" does not apply)", method, cfg.unlearn.adapter);
  std::unique_ptr<Llama> model = ex.new_model(task_vector ? Experiment::Use::kTrainLoaded : Experiment::Use::kReference);
  std::unique_ptr<Llama> ft = ex.new_model(Experiment::Use::kReference);
  LETHE_RETURN_IF_ERROR(load_weights(source, *model, *ex.mesh));
  LETHE_RETURN_IF_ERROR(load_weights(reinforced.checkpoint, *ft, *ex.mesh));
  const auto arithmetic_start = std::chrono::steady_clock::now();
  std::string stop;
  if (task_vector) {
    auto timed = prof.time("arithmetic");
    const double lambda = settings.task_vector_lambda;
    at::NoGradGuard no_grad;
    for (size_t i = 0; i < model->params().size(); ++i) {
      Param& p = model->params()[i];
      LETHE_CHECK_MSG(p.name == ft->params()[i].name, "task_vector: parameter lists differ at " + p.name);
      const at::Tensor theta = p.value.to(at::kFloat), tuned = ft->params()[i].value.to(at::kFloat);
      p.value.copy_(theta - lambda * (tuned - theta));
    }
    ft.reset();
    stop = fmt::format("θ − {} (θ_ft − θ) applied", lambda);
  } else {
    model->set_logit_companion(ft.get(), settings.whp_alpha);
    stop = fmt::format("logits v − {} · ReLU(v_ft − v)", settings.whp_alpha);
  }
  Cost cost = reinforced.cost;
  cost.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - arithmetic_start).count();
  fs::create_directories(dir);
  if (writes_reports()) LETHE_RETURN_IF_ERROR(write_file_atomic(dir + "/config.toml", to_toml(cfg)));
  if (task_vector) {
    auto timed = prof.time("checkpoints");
    WeightsOnly weights(*model, *ex.mesh);
    clear_checkpoints(ex, dir + "/checkpoints");
    const CheckpointMeta meta{"unlearn-" + method, to_toml(cfg), {{"reinforce", reinforced.data_checksum}}, "", 0};
    LETHE_RETURN_IF_ERROR(save_checkpoint(dir + "/checkpoints", weights, meta, 1).status());
  }
  SampleScores samples;
  Metrics m;
  {
    auto timed = prof.time("evaluation");
    m = evaluate_against_retrain(ex, *model, retrain_reference(cfg), &samples);
  }
  const double flops_per_token = train_flops_per_token(cfg.model, cfg.data.seq_len);
  std::ofstream metrics(report_path(dir + "/metrics.jsonl"), std::ios::trunc);
  metrics << json{{"request", 0}, {"cycle", 0}, {"step", cfg.unlearn.reinforce_steps}, {"forget_samples", static_cast<int64_t>(data.forget.size())},
                  {"losses", json::object()}, {"metrics", metrics_json(m)}, {"cost", cost_json(cost, flops_per_token, *ex.mesh)},
                  {"stop", stop}}.dump()
          << std::endl;
  log().info("{}: {}  VerbMem {}  KnowMem f {} r {}  {:.1f}s", method, stop, metric_text(m, "verbmem_forget"),
             metric_text(m, "knowmem_forget"), metric_text(m, "knowmem_retain"), cost.seconds);
  json summary = method_summary(ex, method, source, "none", cfg.unlearn.reinforce_steps, m, cost, prof, phase_start, samples);
  if (!task_vector) summary["companion"] = {{"checkpoint", reinforced.checkpoint}, {"alpha", settings.whp_alpha}};
  return write_json(dir + "/summary.json", summary);
}

}  // namespace

Status run_unlearn_phase(const RunConfig& cfg, const UnlearnOptions& opts) {
  LETHE_ASSIGN_OR_RETURN(std::unique_ptr<Experiment> ex, open_experiment(cfg));
  LETHE_ASSIGN_OR_RETURN(std::string source, source_checkpoint(cfg));
  LETHE_ASSIGN_OR_RETURN(UnlearnInputs data, unlearn_data(*ex));
  for (const std::string& m : resolve_methods(cfg.unlearn.methods)) {
    LETHE_RETURN_IF_ERROR(runs_outside_cycles(m) ? arithmetic_one(*ex, m, source, data, opts) : unlearn_one(*ex, m, source, data, opts));
  }
  ex->mesh->world().barrier();  // every rank returns once rank 0 wrote every summary (the quickstart checks for them)
  return Status::ok();
}

Result<json> evaluate_checkpoint(const RunConfig& cfg, const std::string& checkpoint, const std::string& companion, double alpha) {
  LETHE_ASSIGN_OR_RETURN(std::unique_ptr<Experiment> ex, open_experiment(cfg));
  std::unique_ptr<Llama> model = ex->new_model(Experiment::Use::kReference), other;  // evaluated only
  LETHE_RETURN_IF_ERROR(load_weights(checkpoint, *model, *ex->mesh));
  if (!companion.empty()) {
    other = ex->new_model(Experiment::Use::kReference);
    LETHE_RETURN_IF_ERROR(load_weights(companion, *other, *ex->mesh).with_context("--companion"));
    model->set_logit_companion(other.get(), alpha);
  }
  if (ex->tok.vocab_size() > cfg.model.vocab_size) {
    return Status::error(ex->tok.path() + ": tokenizer vocabulary " + std::to_string(ex->tok.vocab_size()) +
                         " does not fit the checkpoint's " + std::to_string(cfg.model.vocab_size));
  }
  const auto start = std::chrono::steady_clock::now();
  SampleScores samples;
  json j = {{"checkpoint", checkpoint}, {"metrics", metrics_json(evaluate_against_retrain(*ex, *model, retrain_reference(cfg), &samples))}};
  add_sample_scores(j, samples);
  if (other) j["companion"] = {{"checkpoint", companion}, {"alpha", alpha}};
  log().info("evaluated {} in {:.1f}s", checkpoint, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  return j;
}

Status run_eval(const RunConfig& cfg, const std::string& checkpoint, const std::string& out, const std::string& companion,
                double alpha) {
  LETHE_ASSIGN_OR_RETURN(json j, evaluate_checkpoint(cfg, checkpoint, companion, alpha));
  if (out.empty() || out == "-") {
    std::cout << j.dump(2) << std::endl;
    return Status::ok();
  }
  return write_json(out, j);
}

}  // namespace lethe
