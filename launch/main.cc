// lethe: the command line. Every error reaches here as one message and a non-zero exit.
#include <CLI/CLI.hpp>

#include <exception>
#include <filesystem>
#include <functional>
#include <iostream>

#include <nlohmann/json.hpp>

#include "base/log.h"
#include "base/memory.h"
#include "collectives/world.h"
#include "io/config.h"
#include "launch/bench.h"
#include "launch/convert.h"
#include "launch/plan_command.h"
#include "launch/seeds.h"
#include "launch/sweep.h"
#include "launch/train_phase.h"
#include "launch/unlearn_phase.h"
#include "strategies/strategies.h"

namespace {

// In a multi-rank job an error may have happened on this rank alone: end every rank, so no peer
// is left waiting in a collective.
int finish(const lethe::Status& s) {
  if (s) return 0;
  if (lethe::multi_process()) lethe::abort_job("error: " + s.message());
  lethe::log().error("{}", s.message());
  return 1;
}

// The embedded default end to end: target, retrain, every unlearning method, and (once every
// phase of every seed has finished) the comparison. With `resume`, phases that finished are kept
// and interrupted ones continue.
lethe::Status quickstart(const lethe::RunConfig& cfg, bool resume) {
  namespace fs = std::filesystem;
  for (const lethe::RunConfig& run : lethe::seed_runs(cfg)) {  // Note [Seeds]
    LETHE_ASSIGN_OR_RETURN(const bool trained, lethe::train_models(run, resume));
    if (!trained) return lethe::Status::ok();  // stopped: continue with --resume
    LETHE_RETURN_IF_ERROR(lethe::run_unlearn_phase(run, {resume, 0}));
    for (const auto& m : lethe::resolve_methods(run.unlearn.methods)) {
      if (!fs::exists(run.run.dir + "/unlearn-" + m + "/summary.json")) return lethe::Status::ok();
    }
  }
  return lethe::run_compare(cfg.run.dir);
}

// One phase for each seed of experiment.seeds.
lethe::Status each_seed(const lethe::RunConfig& cfg, const std::function<lethe::Status(const lethe::RunConfig&)>& phase) {
  for (const lethe::RunConfig& run : lethe::seed_runs(cfg)) LETHE_RETURN_IF_ERROR(phase(run));
  return lethe::Status::ok();
}

}  // namespace

int main(int argc, char** argv) {
  lethe::keep_freed_host_memory();
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
  CLI::App* sweep = add_run("sweep", "every unlearning method at every grid point (and seed) as resumable sub-runs "
                                     "sharing one target and one retrained model; a table, Pareto fronts and a plot");
  std::vector<std::string> grid_args;
  std::string shard_text = "0/1";
  sweep->add_option("--grid", grid_args, "key=[v, …]: values of an [unlearn] key, every method (repeatable); "
                                         "unlearn.<method>.<key> for one method");
  sweep->add_option("--shard", shard_text, "i/n: run every n-th sub-run from the i-th (a Slurm array task; default 0/1)");
  bool prepare = false;
  sweep->add_flag("--prepare", prepare, "train the shared target and retrained models (every seed), then stop: the step "
                                        "before the shards (launch/lethe-sweep.sbatch)");
  CLI::App* eval = add_run("eval", "evaluate a checkpoint (VerbMem, KnowMem, Min-K% AUC/PrivLeak, EL, MA, ES, perplexity)");
  eval->add_option("--checkpoint", checkpoint, "an HDF5 checkpoint of any phase, or a Hugging Face folder")->required();
  eval->add_option("--out", out, "write the metrics JSON here (default: standard output)");
  std::string companion;
  double alpha = 4;
  eval->add_option("--companion", companion, "evaluate the logits v − α · ReLU(v_c − v) with this checkpoint's v_c (whp_logits)");
  eval->add_option("--alpha", alpha, "α of --companion (default 4)")->check(CLI::NonNegativeNumber);
  CLI::App* convert = app.add_subcommand("convert", "Hugging Face safetensors folders to Lethe checkpoints and back");
  convert->require_subcommand(1);
  std::string hf_dir;
  lethe::ToHfOptions to_hf_opts;
  CLI::App* from_hf = convert->add_subcommand("hf-to-lethe", "a Hugging Face Llama folder to a Lethe checkpoint");
  from_hf->add_option("--hf", hf_dir, "folder with config.json and model.safetensors (or its index)")->required();
  from_hf->add_option("--out", out, "checkpoint folder to write")->required();
  from_hf->add_option("--set", overrides, "override a key: section.key=value (mesh.tp, mesh.dp, …)");
  CLI::App* to_hf = convert->add_subcommand("lethe-to-hf", "a Lethe checkpoint (any tp × dp) to a Hugging Face folder");
  to_hf->add_option("config", config_path, "the run file the checkpoint was trained with (its [model])")->required();
  to_hf->add_option("--checkpoint", checkpoint, "an HDF5 checkpoint of any phase")->required();
  to_hf->add_option("--out", out, "folder to write (sharded safetensors, index, config.json)")->required();
  to_hf->add_option("--dtype", to_hf_opts.dtype, "float32, bfloat16 (default) or float16");
  to_hf->add_option("--shard-mb", to_hf_opts.shard_mb, "largest shard in MB (default 5000)");
  to_hf->add_flag("--merge", to_hf_opts.merge, "a LoRA checkpoint: write the merged weights (default: a PEFT adapter folder)");
  to_hf->add_option("--base", to_hf_opts.base, "a LoRA checkpoint: the base_model_name_or_path to record (default: "
                                               "the base it was trained on)");
  to_hf->add_option("--set", overrides, "override a key: section.key=value");
  CLI::App* plan = app.add_subcommand("plan", "memory per GPU, the fewest GPUs, and unlearning vs retraining cost");
  lethe::PlanInput pin;
  std::string plan_model, measured;
  bool fp32 = false, no_ckpt = false, explicit_attention = false;
  lethe::PlanFlags plan_flags;
  plan->add_option("--model", plan_model, "a preset (llama-2-7b, llama-2-13b, llama-2-70b, llama-3-8b, llama-3-70b), "
                                          "or a Hugging Face config.json or its folder")->required();
  plan->add_option("--tp", pin.tp, "tensor-parallel size (default 1)");
  plan->add_option("--dp", pin.dp, "data-parallel size (default 1)");
  plan->add_option("--optimizer", pin.optimizer, "replicated, zero1 (moments ÷ dp) or distributed (moments and fp32 "
                                                "master weights ÷ dp; the default)");
  plan->add_option("--grad-dtype", plan_flags.grad_dtype, "fp32 (default) or bf16 gradient buffers");
  plan->add_option("--reference", plan_flags.reference, "none (default), cached (NPO: freed after caching) or resident "
                                                        "(KL, ICU)");
  plan->add_option("--method", plan_flags.method, "an unlearning method: sets --reference from its use of the reference");
  plan->add_flag("--zero1", plan_flags.zero1, "(replaced by --optimizer zero1)");
  plan->add_option("--lora-rank", pin.lora_rank, "LoRA adapters of this rank on a frozen base (default 0: full-parameter)");
  plan->add_option("--lora-targets", pin.lora_targets, "projections with adapters (default: q k v o gate up down)");
  plan->add_flag("--fp32", fp32, "fp32 weights and compute (default: bf16 weights, fp32 master weights)");
  plan->add_flag("--no-checkpointing", no_ckpt, "keep every layer's activations");
  plan->add_flag("--explicit-attention", explicit_attention, "attention as LibTorch 1.13 runs it (softmax kept), not SDPA");
  plan->add_option("--seq", pin.seq_len, "sequence length (default 4096)");
  plan->add_option("--batch", pin.micro_batch, "rows per dp rank in each forward (default 1)");
  plan->add_option("--forwards", pin.forwards, "forwards per backward: 2 for unlearning with a retain term (the "
                                               "default; 1 with --method ga), 1 for a training step");
  plan->add_option("--bucket-mb", pin.bucket_mb, "mesh.bucket_mb (default 25)");
  plan->add_option("--gpu-gb", pin.gpu_gb, "memory per GPU in GB (default 80)");
  plan->add_option("--unlearn-tokens", pin.unlearn_tokens, "tokens an unlearning run processes (all cycles)");
  plan->add_option("--retrain-tokens", pin.retrain_tokens, "tokens of a retrain on the remaining data");
  plan->add_option("--tokens-per-s", pin.tokens_per_s_per_gpu, "measured training tokens/s per GPU for this model");
  plan->add_option("--measured", measured, "a summary.json of a lethe run: its FLOP/s per device sets the throughput");
  plan->add_option("--mfu", pin.mfu, "model FLOP utilisation when no throughput is given (default 0.4)");
  plan->add_option("--peak-tflops", pin.peak_tflops, "dense peak per GPU (default 989, H100 bf16)");
  CLI::App* compare = app.add_subcommand("compare", "target, retrain and each method side by side (table, JSON, plot)");
  compare->add_option("run_dir", run_dir, "the experiment folder (run.dir)")->required();
  CLI::App* quick = app.add_subcommand("quickstart", "the embedded default end to end: corpus, target, retrain, "
                                                      "every unlearning method, comparison");
  std::string quick_dir = "runs/quickstart";
  quick->add_option("--dir", quick_dir, "experiment folder");
  quick->add_option("--set", overrides, "override a key: section.key=value (repeatable)");
  quick->add_flag("--resume", resume, "keep finished phases, continue interrupted ones");
  int64_t quick_seeds = 0;
  quick->add_option("--seeds", quick_seeds, "repeat everything over this many seeds (experiment.seeds)")->check(CLI::Range(1, 1000));
  std::vector<std::string> quick_methods;
  quick->add_option("--methods", quick_methods, "unlearning methods to run (default: unlearn.methods); \"all\" runs every one")
      ->delimiter(',');

  CLI::App* bench = app.add_subcommand("bench", "MUSE's scalability and sustainability curves, and the 2023 unlearning "
                                                "challenge's forgetting score (docs/metrics.md)");
  bench->require_subcommand(1);
  lethe::BenchOptions bench_opts;
  std::string bench_dir = "runs/quickstart";
  auto add_bench = [&](const char* name, const char* help) {
    CLI::App* b = bench->add_subcommand(name, help);
    b->add_option("config", config_path, "run file (TOML); default: the embedded default, as lethe quickstart runs it");
    b->add_option("--dir", bench_dir, "the embedded default's experiment folder (default runs/quickstart; the bench "
                                      "writes under <dir>/bench/)");
    b->add_option("--set", overrides, "override a key: section.key=value (repeatable)");
    b->add_option("--budget-s", bench_opts.budget_s, "start no model or run after this many seconds (a rerun continues)")
        ->check(CLI::NonNegativeNumber);
    return b;
  };
  CLI::App* scalability = add_bench("scalability", "forget sets of growing size, each with its own retrained model");
  scalability->add_option("--people", bench_opts.people, "forget-set sizes in people (default: 5, 10, 20, 40 % of corpus.people)")
      ->delimiter(',');
  CLI::App* sustainability = add_bench("sustainability", "sequential deletion requests, against a retrained model per prefix");
  sustainability->add_option("--requests", bench_opts.requests, "sequential requests (default 4)");
  CLI::App* challenge = add_bench("challenge", "the forgetting score of N unlearned against N retrained models per method");
  challenge->add_option("--seeds", bench_opts.seeds, "N, models a side (default 8; at least 2)");

  CLI11_PARSE(app, argc, argv);
  try {
    if (compare->parsed()) return finish(lethe::run_compare(run_dir));
    if (plan->parsed()) {
      if (plan->count("--forwards") == 0) pin.forwards = 0;  // from --method
      pin.bf16 = !fp32;
      pin.checkpointing = !no_ckpt;
      pin.fused_attention = !explicit_attention;
      return finish(lethe::run_plan(pin, plan_model, measured, plan_flags));
    }
    if (from_hf->parsed()) {
      auto cfg = lethe::parse_config("", "<convert>", overrides);
      if (!cfg) return finish(cfg.status());
      return finish(lethe::run_convert_from_hf(*cfg, hf_dir, out));
    }
    if (quick->parsed()) {
      // Each request keeps its best retrain-free cycle (Note [Checkpoint selection]); --set overrides it.
      overrides.insert(overrides.begin(), {"run.dir=" + quick_dir, "unlearn.select=\"holdout\""});
      if (!quick_methods.empty()) overrides.push_back("unlearn.methods=" + nlohmann::json(quick_methods).dump());
      if (quick_seeds > 0) overrides.push_back("experiment.seeds=" + std::to_string(quick_seeds));
      auto cfg = lethe::parse_config("", "<embedded default>", overrides);
      if (!cfg) return finish(cfg.status());
      return finish(quickstart(*cfg, resume));
    }
    if (bench->parsed()) {
      if (config_path.empty()) {  // the embedded default, as the quickstart runs it (the challenge's reduced)
        overrides.insert(overrides.begin(), {"run.dir=" + bench_dir, "unlearn.select=\"holdout\""});
        if (challenge->parsed()) {
          const auto reduced = lethe::challenge_reduced_overrides();
          overrides.insert(overrides.begin() + 2, reduced.begin(), reduced.end());
        }
      }
      auto cfg = config_path.empty() ? lethe::parse_config("", "<embedded default>", overrides) : lethe::load_config(config_path, overrides);
      if (!cfg) return finish(cfg.status());
      if (scalability->parsed()) return finish(lethe::run_bench_scalability(*cfg, bench_opts));
      if (sustainability->parsed()) return finish(lethe::run_bench_sustainability(*cfg, bench_opts));
      return finish(lethe::run_bench_challenge(*cfg, bench_opts));
    }
    auto cfg = lethe::load_config(config_path, overrides);
    if (!cfg) return finish(cfg.status());
    if (train->parsed() || retrain->parsed()) {
      return finish(each_seed(*cfg, [&](const lethe::RunConfig& c) {
        return lethe::run_train_phase(c, {train->parsed(), resume, stop_after});
      }));
    }
    if (unlearn->parsed()) {
      return finish(each_seed(*cfg, [&](const lethe::RunConfig& c) { return lethe::run_unlearn_phase(c, {resume, stop_after}); }));
    }
    if (sweep->parsed()) {
      std::vector<lethe::GridAxis> grid;
      for (const std::string& g : grid_args) {
        auto axis = lethe::parse_grid(g);
        if (!axis) return finish(axis.status());
        grid.push_back(std::move(*axis));
      }
      auto shard = lethe::parse_shard(shard_text);
      if (!shard) return finish(shard.status());
      auto units = lethe::sweep_units(*cfg, config_path, overrides, grid);
      if (!units) return finish(units.status());
      return finish(lethe::run_sweep(*cfg, *units, *shard, prepare));
    }
    if (eval->parsed()) return finish(lethe::run_eval(*cfg, checkpoint, out, companion, alpha));
    if (to_hf->parsed()) return finish(lethe::run_convert_to_hf(*cfg, checkpoint, out, to_hf_opts));
    return 1;
  } catch (const std::exception& e) {
    return finish(lethe::Status::error(e.what()));
  }
}
