// lethe: the command line. Every error reaches here as one message and a non-zero exit.
#include <CLI/CLI.hpp>

#include <exception>
#include <filesystem>
#include <iostream>

#include "base/log.h"
#include "io/config.h"
#include "launch/train_phase.h"

namespace {

int finish(const lethe::Status& s) {
  if (s) return 0;
  lethe::log().error("{}", s.message());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Lethe: make a language model forget part of its training data, and measure it."};
  app.require_subcommand(1);

  std::string config_path;
  std::vector<std::string> overrides;
  lethe::PhaseOptions opts;
  auto add_phase = [&](const char* name, const char* help) {
    CLI::App* c = app.add_subcommand(name, help);
    c->add_option("config", config_path, "run file (TOML); see docs/config.md")->required();
    c->add_option("--set", overrides, "override a key: section.key=value (repeatable)");
    c->add_flag("--resume", opts.resume, "continue from the newest usable checkpoint of this phase");
    c->add_option("--stop-after", opts.stop_after, "checkpoint and stop after N steps (resume later)");
    return c;
  };
  CLI::App* train = add_phase("train", "train the target model on all of X (forget + retain)");
  CLI::App* retrain = add_phase("retrain", "retrain from the same initialisation on X \\ Y (the gold standard)");
  CLI::App* quick = app.add_subcommand("quickstart", "the embedded default: generate a corpus, train the target, retrain");
  std::string quick_dir = "runs/quickstart";
  quick->add_option("--dir", quick_dir, "experiment folder");
  quick->add_option("--set", overrides, "override a key: section.key=value (repeatable)");

  CLI11_PARSE(app, argc, argv);
  try {
    if (quick->parsed()) {
      overrides.insert(overrides.begin(), "run.dir=" + quick_dir);
      auto cfg = lethe::parse_config("", "<embedded default>", overrides);
      if (!cfg) return finish(cfg.status());
      lethe::Status s = lethe::run_train_phase(*cfg, {true, false, 0});
      // A stopped (interrupted) target phase writes no summary: do not go on to the retrain.
      if (s && std::filesystem::exists(cfg->run.dir + "/target/summary.json")) {
        s = lethe::run_train_phase(*cfg, {false, false, 0});
      }
      return finish(s);
    }
    auto cfg = lethe::load_config(config_path, overrides);
    if (!cfg) return finish(cfg.status());
    opts.include_forget = train->parsed();
    (void)retrain;
    return finish(lethe::run_train_phase(*cfg, opts));
  } catch (const std::exception& e) {
    lethe::log().error("{}", e.what());
    return 1;
  }
}
