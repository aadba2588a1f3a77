// lethe: the command line. Every error reaches here as one message and a non-zero exit.
#include <CLI/CLI.hpp>

#include <exception>
#include <filesystem>
#include <iostream>

#include "base/log.h"
#include "collectives/world.h"
#include "io/config.h"
#include "launch/convert.h"
#include "launch/train_phase.h"
#include "launch/unlearn_phase.h"

namespace {

// In a multi-rank job an error may have happened on this rank alone: end every rank, so no peer
// is left waiting in a collective.
int finish(const lethe::Status& s) {
  if (s) return 0;
  if (lethe::multi_process()) lethe::abort_job("error: " + s.message());
  lethe::log().error("{}", s.message());
  return 1;
}

// The embedded default end to end: target, retrain, every unlearning method, comparison. With
// `resume`, phases that finished are kept and interrupted ones continue.
lethe::Status quickstart(const lethe::RunConfig& cfg, bool resume) {
  namespace fs = std::filesystem;
  for (bool target : {true, false}) {
    const std::string summary = cfg.run.dir + (target ? "/target" : "/retrain") + "/summary.json";
    if (resume && fs::exists(summary)) continue;
    const bool has_ckpt = fs::exists(cfg.run.dir + (target ? "/target" : "/retrain") + "/checkpoints/latest");
    LETHE_RETURN_IF_ERROR(lethe::run_train_phase(cfg, {target, resume && has_ckpt, 0}));
    // An interrupted phase writes no summary: stop here (continue with --resume).
    if (!fs::exists(summary)) return lethe::Status::ok();
  }
  LETHE_RETURN_IF_ERROR(lethe::run_unlearn_phase(cfg, {resume, 0}));
  for (const auto& m : cfg.unlearn.methods) {
    if (!fs::exists(cfg.run.dir + "/unlearn-" + m + "/summary.json")) return lethe::Status::ok();
  }
  return lethe::run_compare(cfg.run.dir);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Lethe: make a language model forget part of its training data, and measure it."};
  app.require_subcommand(1);

  std::string config_path, checkpoint, out, run_dir;
  std::vector<std::string> overrides;
  bool resume = false;
  int64_t stop_after = 0;
  auto add_run = [&](const char* name, const char* help) {
    CLI::App* c = app.add_subcommand(name, help);
    c->add_option("config", config_path, "run file (TOML); see docs/config.md")->required();
    c->add_option("--set", overrides, "override a key: section.key=value (repeatable)");
    return c;
  };
  auto add_resumable = [&](const char* name, const char* help, const char* stop_help) {
    CLI::App* c = add_run(name, help);
    c->add_flag("--resume", resume, "continue from the newest usable checkpoint");
    c->add_option("--stop-after", stop_after, stop_help);
    return c;
  };
  CLI::App* train = add_resumable("train", "train the target model on all of X (forget + retain)",
                                  "checkpoint and stop after N steps (resume later)");
  CLI::App* retrain = add_resumable("retrain", "retrain from the same initialisation on X \\ Y (the gold standard)",
                                    "checkpoint and stop after N steps (resume later)");
  CLI::App* unlearn = add_resumable("unlearn", "unlearn the forget set from the target with each of unlearn.methods",
                                    "checkpoint and stop after N cycles per method (resume later)");
  CLI::App* eval = add_run("eval", "evaluate a checkpoint (VerbMem, KnowMem, Min-K% AUC/PrivLeak, EL, MA, ES, perplexity)");
  eval->add_option("--checkpoint", checkpoint, "an HDF5 checkpoint of any phase, or a Hugging Face folder")->required();
  eval->add_option("--out", out, "write the metrics JSON here (default: standard output)");
  CLI::App* convert = app.add_subcommand("convert", "Hugging Face safetensors folders to Lethe checkpoints and back");
  convert->require_subcommand(1);
  std::string hf_dir, dtype = "bfloat16";
  double shard_mb = 5000;
  CLI::App* from_hf = convert->add_subcommand("hf-to-lethe", "a Hugging Face Llama folder to a Lethe checkpoint");
  from_hf->add_option("--hf", hf_dir, "folder with config.json and model.safetensors (or its index)")->required();
  from_hf->add_option("--out", out, "checkpoint folder to write")->required();
  from_hf->add_option("--set", overrides, "override a key: section.key=value (mesh.tp, mesh.dp, …)");
  CLI::App* to_hf = convert->add_subcommand("lethe-to-hf", "a Lethe checkpoint (any tp × dp) to a Hugging Face folder");
  to_hf->add_option("config", config_path, "the run file the checkpoint was trained with (its [model])")->required();
  to_hf->add_option("--checkpoint", checkpoint, "an HDF5 checkpoint of any phase")->required();
  to_hf->add_option("--out", out, "folder to write (sharded safetensors, index, config.json)")->required();
  to_hf->add_option("--dtype", dtype, "float32, bfloat16 (default) or float16");
  to_hf->add_option("--shard-mb", shard_mb, "largest shard in MB (default 5000)");
  to_hf->add_option("--set", overrides, "override a key: section.key=value");
  CLI::App* compare = app.add_subcommand("compare", "target, retrain and each method side by side (table, JSON, plot)");
  compare->add_option("run_dir", run_dir, "the experiment folder (run.dir)")->required();
  CLI::App* quick = app.add_subcommand("quickstart", "the embedded default end to end: corpus, target, retrain, "
                                                      "every unlearning method, comparison");
  std::string quick_dir = "runs/quickstart";
  quick->add_option("--dir", quick_dir, "experiment folder");
  quick->add_option("--set", overrides, "override a key: section.key=value (repeatable)");
  quick->add_flag("--resume", resume, "keep finished phases, continue interrupted ones");

  CLI11_PARSE(app, argc, argv);
  try {
    if (compare->parsed()) return finish(lethe::run_compare(run_dir));
    if (from_hf->parsed()) {
      auto cfg = lethe::parse_config("", "<convert>", overrides);
      if (!cfg) return finish(cfg.status());
      return finish(lethe::run_convert_from_hf(*cfg, hf_dir, out));
    }
    if (quick->parsed()) {
      overrides.insert(overrides.begin(), "run.dir=" + quick_dir);
      auto cfg = lethe::parse_config("", "<embedded default>", overrides);
      if (!cfg) return finish(cfg.status());
      return finish(quickstart(*cfg, resume));
    }
    auto cfg = lethe::load_config(config_path, overrides);
    if (!cfg) return finish(cfg.status());
    if (train->parsed() || retrain->parsed()) return finish(lethe::run_train_phase(*cfg, {train->parsed(), resume, stop_after}));
    if (unlearn->parsed()) return finish(lethe::run_unlearn_phase(*cfg, {resume, stop_after}));
    if (eval->parsed()) return finish(lethe::run_eval(*cfg, checkpoint, out));
    if (to_hf->parsed()) return finish(lethe::run_convert_to_hf(*cfg, checkpoint, out, dtype, shard_mb));
    return 1;
  } catch (const std::exception& e) {
    return finish(lethe::Status::error(e.what()));
  }
}
