#include "launch/convert.h"

#include <ATen/ATen.h>

#include <filesystem>

#include "base/log.h"
#include "io/tokenizer.h"
#include "launch/experiment.h"
#include "runtime/checkpoint.h"
#include "runtime/hf_checkpoint.h"

namespace lethe {

Status run_convert_from_hf(RunConfig cfg, const std::string& hf_dir, const std::string& out_dir) {
  if (!is_hf_dir(hf_dir)) {
    return Status::error(hf_dir + ": not a Hugging Face model folder (config.json and model.safetensors or its index)");
  }
  LETHE_RETURN_IF_ERROR(read_hf_config(hf_dir + "/config.json", cfg.model));
  // The tokenizer comes along: copied next to the checkpoint and named in its embedded config.
  const std::string tokenizer = hf_dir + "/tokenizer.model";
  const bool has_tokenizer = std::filesystem::exists(tokenizer);
  if (has_tokenizer) {
    LETHE_ASSIGN_OR_RETURN(Tokenizer tok, Tokenizer::load(tokenizer));
    if (tok.vocab_size() > cfg.model.vocab_size) {
      return Status::error(fmt::format("{}: {} pieces, more than config.json's vocab_size {}", tokenizer, tok.vocab_size(),
                                       cfg.model.vocab_size));
    }
    cfg.tokenizer.model = std::filesystem::absolute(out_dir + "/tokenizer.model").string();
  }
  LETHE_ASSIGN_OR_RETURN(auto ex, open_mesh(cfg));
  auto model = ex->new_model(Experiment::Use::kTrainLoaded);  // checkpointed with a fresh optimizer
  LETHE_RETURN_IF_ERROR(load_hf_weights(hf_dir, *model));
  WeightsOnly w(*model, *ex->mesh);
  LETHE_ASSIGN_OR_RETURN(std::string path, save_checkpoint(out_dir, w, CheckpointMeta{"hf-import", to_toml(cfg), {}, "", 0}, 1));
  if (has_tokenizer && ex->mesh->world().rank() == 0) {
    std::error_code ec;
    std::filesystem::copy_file(tokenizer, cfg.tokenizer.model, std::filesystem::copy_options::overwrite_existing, ec);
    if (ec) return Status::error(cfg.tokenizer.model + ": cannot copy the tokenizer there: " + ec.message());
  }
  log().info("{} ({} parameters{}) → {}", hf_dir, model->num_params_global(), has_tokenizer ? ", tokenizer.model" : "", path);
  return Status::ok();
}

Status run_convert_to_hf(const RunConfig& cfg, const std::string& checkpoint, const std::string& out_dir,
                         const ToHfOptions& opts) {
  const std::string& dtype = opts.dtype;
  const at::ScalarType t = dtype == "float32" ? at::kFloat : dtype == "bfloat16" ? at::kBFloat16 : dtype == "float16" ? at::kHalf : at::kByte;
  if (t == at::kByte) return Status::error("--dtype " + dtype + ": expected float32, bfloat16 or float16");
  LETHE_ASSIGN_OR_RETURN(std::optional<AdapterSource> adapters, read_adapter_source(checkpoint));
  LETHE_ASSIGN_OR_RETURN(auto ex, open_mesh(cfg));
  auto model = ex->new_model(Experiment::Use::kReference);  // read only: no gradients, nothing drawn
  if (adapters && !opts.merge) {  // the adapters as they are, for their base
    model->add_lora(adapters->lora);
    LETHE_RETURN_IF_ERROR(load_weights(checkpoint, *model, *ex->mesh));
    const std::string base = opts.base.empty() ? adapters->base : opts.base;
    LETHE_RETURN_IF_ERROR(export_peft(*model, out_dir, base, adapters->base_checksum));
    log().info("{} → {} (PEFT LoRA adapters, r {}, for base {})", checkpoint, out_dir, adapters->lora.rank, base);
    return Status::ok();
  }
  LETHE_RETURN_IF_ERROR(load_weights(checkpoint, *model, *ex->mesh));  // adapters merged
  LETHE_RETURN_IF_ERROR(export_hf(*model, out_dir, static_cast<int64_t>(opts.shard_mb * 1e6), t));
  log().info("{} → {} ({}, shards of at most {} MB{})", checkpoint, out_dir, dtype, opts.shard_mb,
             adapters ? ", adapters merged" : "");
  return Status::ok();
}

}  // namespace lethe
