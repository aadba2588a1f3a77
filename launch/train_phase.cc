#include "launch/train_phase.h"

#include <ATen/Parallel.h>
#include <sched.h>
#include <signal.h>

#include <atomic>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "base/log.h"
#include "collectives/world.h"
#include "eval/token_metrics.h"
#include "io/corpus.h"
#include "io/token_dataset.h"
#include "io/tokenizer.h"
#include "runtime/checkpoint.h"
#include "runtime/trainer.h"

namespace lethe {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// Set by SIGINT/SIGTERM (Ctrl-C, or Slurm ahead of a preemption): the loop checkpoints and stops
// after the current step. A signal flag is the one state that has to be process-wide.
std::atomic<bool> g_stop_requested{false};
void request_stop(int) { g_stop_requested = true; }

int default_threads(int local_size) {
  cpu_set_t set;
  int cores = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
  return std::max(1, cores / std::max(1, local_size));
}

std::string config_dir(const RunConfig& cfg) {
  auto p = fs::path(cfg.source).parent_path();
  return p.string();
}

// The experiment's tokenizer: the configured one, else the one an earlier phase trained, else a
// new one trained on the training text of X.
Result<Tokenizer> experiment_tokenizer(const RunConfig& cfg, const Corpus& corpus) {
  if (!cfg.tokenizer.model.empty()) {
    std::string path = cfg.tokenizer.model;
    if (path[0] != '/' && !config_dir(cfg).empty()) path = config_dir(cfg) + "/" + path;
    return Tokenizer::load(path);
  }
  const std::string path = cfg.run.dir + "/tokenizer.model";
  if (fs::exists(path)) return Tokenizer::load(path);
  std::vector<std::string> texts;
  for (const auto& d : corpus.training_documents(/*include_forget=*/true, cfg.corpus.qa_in_training)) texts.push_back(d.text);
  log().info("training a {}-piece sentencepiece tokenizer on {} documents", cfg.tokenizer.vocab_size, texts.size());
  return Tokenizer::train(texts, static_cast<int>(cfg.tokenizer.vocab_size), path);
}

// Keeps the metrics records up to `step` (a resumed run rewrites what came after its checkpoint).
void truncate_metrics(const std::string& path, int64_t step) {
  std::ifstream in(path);
  std::stringstream kept;
  std::string line;
  while (std::getline(in, line)) {
    auto j = json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.value("step", int64_t{0}) <= step) kept << line << "\n";
  }
  in.close();
  std::ofstream(path, std::ios::trunc) << kept.str();
}

json metrics_json(const TokenMetrics& m) {
  return {{"nll", m.mean_nll}, {"perplexity", m.perplexity()}, {"memorization_accuracy", m.accuracy}, {"tokens", m.tokens}};
}

}  // namespace

Status run_train_phase(const RunConfig& cfg, const PhaseOptions& opts) {
  const std::string phase = opts.include_forget ? "target" : "retrain";
  LETHE_ASSIGN_OR_RETURN(World world, init_world());
  init_logging(world.comm->rank());
  const int threads = cfg.run.threads > 0 ? static_cast<int>(cfg.run.threads) : default_threads(world.local_size);
  at::set_num_threads(threads);
  LETHE_ASSIGN_OR_RETURN(Mesh mesh, Mesh::create(*world.comm, cfg.mesh));
  LETHE_RETURN_IF_ERROR(mesh.check_model(cfg.model));
  LETHE_RETURN_IF_ERROR(Trainer::check(cfg.train, mesh));

  LETHE_ASSIGN_OR_RETURN(Corpus corpus, load_corpus(cfg.corpus, config_dir(cfg)));
  LETHE_RETURN_IF_ERROR(write_corpus(corpus, cfg.run.dir + "/corpus"));
  LETHE_ASSIGN_OR_RETURN(Tokenizer tok, experiment_tokenizer(cfg, corpus));
  const int64_t T = cfg.data.seq_len, V = cfg.model.vocab_size;
  LETHE_ASSIGN_OR_RETURN(TokenDataset train,
                         pack_documents("train", corpus.training_documents(opts.include_forget, cfg.corpus.qa_in_training), tok, T, V));
  LETHE_ASSIGN_OR_RETURN(TokenDataset forget, pack_documents("forget", corpus.documents(Split::kForget), tok, T, V));
  LETHE_ASSIGN_OR_RETURN(TokenDataset retain, pack_documents("retain", corpus.documents(Split::kRetain), tok, T, V));

  Llama model(cfg.model, mesh, static_cast<uint64_t>(cfg.run.seed), cfg.train.dtype == "bf16" ? at::kBFloat16 : at::kFloat);
  Trainer trainer(model, mesh, cfg.train, train, static_cast<uint64_t>(cfg.run.seed));
  const std::string dir = cfg.run.dir + "/" + phase, ckpt_dir = dir + "/checkpoints";
  fs::create_directories(dir);
  std::ofstream(dir + "/config.toml") << to_toml(cfg);
  const CheckpointMeta meta{phase, to_toml(cfg), {{"train", train.checksum()}}};
  if (opts.resume) {
    LETHE_ASSIGN_OR_RETURN(std::string from, resume_latest(ckpt_dir, trainer, meta));
    log().info("resumed {} from {} at step {}", phase, from, trainer.steps_taken());
    truncate_metrics(dir + "/metrics.jsonl", trainer.steps_taken());
  }
  std::ofstream metrics(dir + "/metrics.jsonl", opts.resume ? std::ios::app : std::ios::trunc);

  const double flops_per_token = train_flops_per_token(cfg.model, T);
  log().info("{}: {} parameters, {} rows of {} tokens ({} documents), {} steps of {} rows, {} threads", phase,
             model.num_params_global(), train.rows(), T, train.sample_ids.size(), cfg.train.steps, cfg.train.batch_size, threads);
  g_stop_requested = false;
  signal(SIGINT, request_stop);
  signal(SIGTERM, request_stop);
  const auto start = std::chrono::steady_clock::now();
  const int64_t first_step = trainer.steps_taken();
  double window_seconds = 0;
  int64_t window_tokens = 0, window_rows = 0;
  while (trainer.steps_taken() < cfg.train.steps) {
    StepStats s = trainer.step();
    window_seconds += s.seconds;
    window_tokens += s.tokens;
    window_rows += cfg.train.batch_size * T;
    const bool last = s.step == cfg.train.steps || (opts.stop_after > 0 && s.step - first_step >= opts.stop_after) ||
                      g_stop_requested;
    if (s.step % cfg.run.log_every == 0 || last) {
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      const double eta = elapsed / static_cast<double>(s.step - first_step) * static_cast<double>(cfg.train.steps - s.step);
      const double tps = static_cast<double>(window_rows) / window_seconds;
      log().info("{} step {}/{}  loss {:.4f}  lr {:.2e}  |g| {:.3f}  {:.0f} tok/s  {:.2f} GFLOP/s  ETA {:.0f}s", phase, s.step,
                 cfg.train.steps, s.loss, s.lr, s.grad_norm, tps, tps * flops_per_token / 1e9, eta);
      metrics << json{{"step", s.step}, {"loss", s.loss}, {"lr", s.lr}, {"grad_norm", s.grad_norm},
                      {"tokens_per_s", tps}, {"loss_tokens", window_tokens}, {"time_s", elapsed}}.dump()
              << std::endl;
      window_seconds = 0;
      window_tokens = window_rows = 0;
    }
    if ((cfg.train.checkpoint_every > 0 && s.step % cfg.train.checkpoint_every == 0) || last) {
      LETHE_ASSIGN_OR_RETURN(std::string path, save_checkpoint(ckpt_dir, trainer, meta, cfg.train.keep_checkpoints));
      log().info("checkpoint {}", path);
    }
    if (last) break;
  }
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  if (trainer.steps_taken() < cfg.train.steps) {
    log().info("{} stopped at step {} of {}; continue with --resume", phase, trainer.steps_taken(), cfg.train.steps);
    return Status::ok();
  }
  json summary = {{"phase", phase}, {"steps", trainer.steps_taken()}, {"parameters", model.num_params_global()},
                  {"flops_per_token", flops_per_token}};
  for (const TokenDataset* ds : {&forget, &retain}) {
    TokenMetrics m = token_metrics(model, *ds);
    summary[ds->name] = metrics_json(m);
    log().info("{} on {} passages: memorisation accuracy {:.3f}, perplexity {:.2f}", phase, ds->name, m.accuracy, m.perplexity());
  }
  auto holdout_docs = corpus.documents(Split::kHoldout);
  if (!holdout_docs.empty()) {
    LETHE_ASSIGN_OR_RETURN(TokenDataset holdout, pack_documents("holdout", holdout_docs, tok, T, V));
    TokenMetrics m = token_metrics(model, holdout);
    summary["holdout"] = metrics_json(m);
    log().info("{} on holdout passages: memorisation accuracy {:.3f}, perplexity {:.2f}", phase, m.accuracy, m.perplexity());
  }
  std::ofstream(dir + "/summary.json") << summary.dump(2) << "\n";
  return Status::ok();
}

}  // namespace lethe
