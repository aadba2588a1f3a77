#include "launch/train_phase.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "base/log.h"
#include "launch/experiment.h"
#include "runtime/checkpoint.h"
#include "runtime/trainer.h"

namespace lethe {

namespace fs = std::filesystem;

Status run_train_phase(const RunConfig& cfg, const PhaseOptions& opts) {
  const std::string phase = opts.include_forget ? "target" : "retrain";
  const auto phase_start = std::chrono::steady_clock::now();
  Profile prof;
  LETHE_ASSIGN_OR_RETURN(std::unique_ptr<Experiment> ex, open_experiment(cfg));
  const Mesh& mesh = *ex->mesh;
  const int64_t T = cfg.data.seq_len;
  LETHE_ASSIGN_OR_RETURN(TokenDataset train,
                         ex->dataset("train", ex->corpus.training_documents(opts.include_forget, cfg.corpus.qa_in_training)));

  const std::string dir = cfg.run.dir + "/" + phase, ckpt_dir = dir + "/checkpoints";
  // A resumed run takes every weight from its checkpoint: nothing is drawn.
  std::unique_ptr<Llama> model = ex->new_model(opts.resume && !list_checkpoints(ckpt_dir).empty()
                                                   ? Experiment::Use::kTrainLoaded
                                                   : Experiment::Use::kTrainFromInit);
  Trainer trainer(*model, mesh, cfg.train, train, static_cast<uint64_t>(cfg.run.seed));
  fs::create_directories(dir);
  if (writes_reports()) LETHE_RETURN_IF_ERROR(write_file_atomic(dir + "/config.toml", to_toml(cfg)));
  const CheckpointMeta meta{phase, to_toml(cfg), {{"train", train.checksum()}}, "", 0};
  if (opts.resume) {
    LETHE_ASSIGN_OR_RETURN(std::string from, resume_latest(ckpt_dir, trainer, meta));
    log().info("resumed {} from {} at step {}", phase, from, trainer.steps_taken());
    // The records up to the checkpoint's step are kept; the resumed run rewrites the rest.
    const int64_t step = trainer.steps_taken();
    LETHE_RETURN_IF_ERROR(keep_records(dir + "/metrics.jsonl", [&](const json& j, int64_t) { return j.value("step", 0) <= step; }));
  }
  std::ofstream metrics(report_path(dir + "/metrics.jsonl"), opts.resume ? std::ios::app : std::ios::trunc);

  const double flops_per_token = train_flops_per_token(cfg.model, T);
  log().info("{}: {} parameters, {} rows of {} tokens ({} documents), {} steps of {} rows, {} threads", phase,
             model->num_params_global(), train.rows(), T, train.sample_ids.size(), cfg.train.steps, cfg.train.batch_size,
             ex->threads);
  StopSignal stop;
  const auto start = std::chrono::steady_clock::now();
  const int64_t first_step = trainer.steps_taken();
  double window_seconds = 0;
  int64_t window_tokens = 0, window_rows = 0;
  while (trainer.steps_taken() < cfg.train.steps) {
    StepStats s;
    {
      auto timed = prof.time("steps");
      s = trainer.step();
    }
    window_seconds += s.seconds;
    window_tokens += s.tokens;
    window_rows += cfg.train.batch_size * T;
    // A stop signal is agreed over the ranks every log_every steps (one collective there, none
    // in between).
    const bool log_step = s.step % cfg.run.log_every == 0;
    const bool last = s.step == cfg.train.steps || (opts.stop_after > 0 && s.step - first_step >= opts.stop_after) ||
                      (log_step && stop.requested(mesh.world()));
    if (log_step || last) {
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      const double eta = elapsed / static_cast<double>(s.step - first_step) * static_cast<double>(cfg.train.steps - s.step);
      const double tps = static_cast<double>(window_rows) / window_seconds;
      const double loss = s.loss(), grad_norm = s.grad_norm();  // the only host reads of the loop
      log().info("{} step {}/{}  loss {:.4f}  lr {:.2e}  |g| {:.3f}  {:.0f} tok/s  {:.2f} GFLOP/s  ETA {:.0f}s", phase, s.step,
                 cfg.train.steps, loss, s.lr, grad_norm, tps, tps * flops_per_token / 1e9, eta);
      metrics << json{{"step", s.step}, {"loss", loss}, {"lr", s.lr}, {"grad_norm", grad_norm},
                      {"tokens_per_s", tps}, {"loss_tokens", window_tokens}, {"time_s", elapsed}}.dump()
              << std::endl;
      window_seconds = 0;
      window_tokens = window_rows = 0;
    }
    if ((cfg.train.checkpoint_every > 0 && s.step % cfg.train.checkpoint_every == 0) || last) {
      auto timed = prof.time("checkpoints");
      LETHE_ASSIGN_OR_RETURN(std::string path, save_checkpoint(ckpt_dir, trainer, meta, cfg.train.keep_checkpoints));
      log().info("checkpoint {}", path);
    }
    if (last) break;
  }
  if (trainer.steps_taken() < cfg.train.steps) {
    log().info("{} stopped at step {} of {}; continue with --resume", phase, trainer.steps_taken(), cfg.train.steps);
    return Status::ok();
  }
  const Cost cost{trainer.steps_taken() * cfg.train.batch_size * T, 0, trainer.seconds()};
  log().info("{} trained in {:.1f}s; evaluating", phase, cost.seconds);
  Metrics m;
  SampleScores samples;
  {
    auto timed = prof.time("evaluation");
    m = ex->evaluate(*model, &samples);
  }
  const double total_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - phase_start).count();
  // The checkpoint evaluated (its file name in checkpoints/, so the summary does not depend on where
  // run.dir is): what `lethe unlearn` starts from by default, so it reuses these metrics.
  const std::vector<std::string> saved = list_checkpoints(ckpt_dir);
  json summary = {{"phase", phase},
                  {"checkpoint", saved.empty() ? "" : fs::path(saved.front()).filename().string()},
                  {"steps", trainer.steps_taken()},
                  {"parameters", model->num_params_global()},
                  {"flops_per_token", flops_per_token},
                  {"metrics", metrics_json(m)},
                  {"cost", cost_json(cost, flops_per_token, mesh)},
                  {"profile", profile_json(prof, total_s)}};
  // Per-item forget truth ratios: the retrained model's are what forget quality is tested against.
  add_sample_scores(summary, samples);
  log().info("{}: VerbMem {:.1f}  KnowMem forget {}  KnowMem retain {}  MA forget {:.3f}  ppl holdout {:.2f}", phase,
             m.at("verbmem_forget"), metric_text(m, "knowmem_forget"), metric_text(m, "knowmem_retain"), m.at("ma_forget"),
             m.at("ppl_holdout"));
  LETHE_RETURN_IF_ERROR(write_json(dir + "/summary.json", summary));
  mesh.world().barrier();  // every rank returns once rank 0 wrote the summary (train_models checks for it)
  return Status::ok();
}

Result<bool> train_models(const RunConfig& cfg, bool resume) {
  for (bool target : {true, false}) {
    const std::string dir = cfg.run.dir + (target ? "/target" : "/retrain");
    if (resume && fs::exists(dir + "/summary.json")) continue;
    LETHE_RETURN_IF_ERROR(run_train_phase(cfg, {target, resume && fs::exists(dir + "/checkpoints/latest"), 0}));
    if (!fs::exists(dir + "/summary.json")) return false;
  }
  return true;
}

}  // namespace lethe
