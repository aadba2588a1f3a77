// `lethe convert`: Hugging Face safetensors folders to Lethe HDF5 checkpoints and back.
#pragma once

#include <string>

#include "base/status.h"
#include "io/config.h"

namespace lethe {

// Reads a Hugging Face Llama folder (config.json gives the architecture; each rank reads only its
// tp slice) and saves it as a Lethe checkpoint (step 0, fresh optimizer) in `out_dir`, with the
// folder's tokenizer.model (when it has one) copied beside it and named in the embedded config.
Status run_convert_from_hf(RunConfig cfg, const std::string& hf_dir, const std::string& out_dir);

// Loads a Lethe checkpoint (saved at any tp × dp) and writes a Hugging Face folder: sharded
// safetensors of at most `shard_mb` MB, the index and config.json, parameters as `dtype`
// ("float32", "bfloat16" or "float16"). A LoRA checkpoint is written as a PEFT folder (its
// adapters, for its base; `base` replaces the recorded base path in adapter_config.json when
// given), or with `merge` as the merged weights.
struct ToHfOptions {
  std::string dtype = "bfloat16";
  double shard_mb = 5000;
  bool merge = false;
  std::string base;
};
Status run_convert_to_hf(const RunConfig& cfg, const std::string& checkpoint, const std::string& out_dir,
                         const ToHfOptions& opts);

}  // namespace lethe
