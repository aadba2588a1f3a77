#include "launch/plan_command.h"

#include <filesystem>
#include <fstream>
#include <iostream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "runtime/model.h"
#include "strategies/strategies.h"

namespace lethe {

namespace {

Result<ModelConfig> plan_model(const std::string& model) {
  namespace fs = std::filesystem;
  if (!fs::exists(model)) {
    auto preset = model_preset(model);
    if (!preset) return Status::error("--model " + model + ": no such file, and " + preset.status().message());
    return preset;
  }
  const std::string path = fs::is_directory(model) ? model + "/config.json" : model;
  ModelConfig m;
  LETHE_RETURN_IF_ERROR(read_hf_config(path, m));
  return m;
}

// FLOP/s per device achieved by a Lethe run, from its summary.json.
Result<double> measured_flops_per_device(const std::string& path) {
  std::ifstream f(path);
  if (!f) return Status::error(path + ": cannot open (expected a summary.json of a lethe run)");
  nlohmann::json j = nlohmann::json::parse(f, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Status::error(path + ": not valid JSON");
  const nlohmann::json* cost = j.contains("cost") ? &j["cost"] : nullptr;
  if (!cost || !cost->contains("flops_per_s") || !(*cost)["flops_per_s"].is_number() || !cost->contains("devices") ||
      !(*cost)["devices"].is_number_integer()) {
    return Status::error(path + ": expected cost.flops_per_s and cost.devices (a summary.json written by lethe)");
  }
  const double flops = (*cost)["flops_per_s"].get<double>();
  const int64_t devices = (*cost)["devices"].get<int64_t>();
  if (!(flops > 0) || devices < 1) return Status::error(path + ": cost.flops_per_s and cost.devices must be > 0");
  return flops / static_cast<double>(devices);
}

}  // namespace

Status run_plan(PlanInput in, const std::string& model, const std::string& measured, const PlanFlags& flags) {
  if (flags.zero1) return Status::error("--zero1: replaced by --optimizer zero1 (or distributed)");
  if (flags.grad_dtype != "fp32" && flags.grad_dtype != "bf16") {
    return Status::error("--grad-dtype " + flags.grad_dtype + ": expected fp32 or bf16");
  }
  in.bf16_grads = flags.grad_dtype == "bf16";
  if (!flags.method.empty()) {
    LETHE_ASSIGN_OR_RETURN(in.reference, reference_use_of(flags.method));
  } else if (flags.reference == "none" || flags.reference == "cached" || flags.reference == "resident") {
    in.reference = flags.reference == "none" ? ReferenceUse::kNone
                   : flags.reference == "cached" ? ReferenceUse::kCached : ReferenceUse::kResident;
  } else {
    return Status::error("--reference " + flags.reference + ": expected none, cached or resident");
  }
  if (in.forwards == 0) {  // a step without retain rows (GA, WGA, UNDIAL, CE-U) has one forward
    in.forwards = flags.method.empty() ? 2 : runs_outside_cycles(flags.method) ? 1
                  : make_strategy(flags.method, UnlearnConfig{}).value()->retain_batch() ? 2 : 1;
  }
  LETHE_ASSIGN_OR_RETURN(in.model, plan_model(model));
  std::string source;
  if (!measured.empty()) {
    LETHE_ASSIGN_OR_RETURN(double flops, measured_flops_per_device(measured));
    in.tokens_per_s_per_gpu = flops / train_flops_per_token(in.model, in.seq_len);
    source = fmt::format("throughput from {} ({:.3g} FLOP/s per device)\n", measured, flops);
  }
  LETHE_ASSIGN_OR_RETURN(Plan p, make_plan(in));
  std::cout << source << format_plan(in, p);
  if (!p.fits) return Status::error("plan: " + over_budget(in, p));
  return Status::ok();
}

}  // namespace lethe
