// Hugging Face Llama checkpoints in and out: a folder with config.json and model.safetensors, or
// shards listed by model.safetensors.index.json (docs/interop.md).
//
// Names and layouts map one to one (kHfNames in hf_checkpoint.cc): Hugging Face stores nn.Linear
// weights as [out, in], as Lethe does, and its q/k projections in the rotate-half RoPE order that
// Lethe's RoPE uses, so no tensor is permuted. (Meta's original interleaved checkpoints are
// permuted by Hugging Face's own conversion script before they reach this format.)
#pragma once

#include <ATen/core/Tensor.h>

#include <string>

#include "base/status.h"
#include "runtime/checkpoint.h"
#include "runtime/model.h"

namespace lethe {

// The Hugging Face name of a Lethe parameter ("layers.3.attn.wq" → "model.layers.3.self_attn.q_proj.weight").
std::string hf_name(const std::string& lethe_name);

// A folder holding config.json and model.safetensors or model.safetensors.index.json.
bool is_hf_dir(const std::string& path);

// xxh3 of a Hugging Face folder's config.json and every *.safetensors file in name order, streamed
// (one read of the files): what weights_checksum gives a Hugging Face base.
Result<uint64_t> hf_checksum(const std::string& dir);

// Loads every parameter of `model` from a Hugging Face folder; each rank maps the files and reads
// only its tensor-parallel slice of each tensor. The folder's shapes must match the model's (the
// error names the tensor and the file). Collective over nothing: every rank reads for itself.
Status load_hf_weights(const std::string& dir, Llama& model);

// Writes `model` to `dir` as Hugging Face safetensors shards of at most `shard_bytes` each (one
// tensor per shard when a tensor is larger), the index, and config.json, parameters converted to
// `dtype` (F32, BF16 or F16). Tensors are gathered over tp one at a time and written by world rank
// 0. Collective over the model's mesh.
Status export_hf(const Llama& model, const std::string& dir, int64_t shard_bytes, at::ScalarType dtype);

// PEFT LoRA folders (docs/interop.md): adapter_config.json and adapter_model.safetensors, tensors
// named base_model.model.<Hugging Face module>.lora_A.weight [r, in] and .lora_B.weight [out, r].
bool is_peft_dir(const std::string& path);
// The adapter options and base of a PEFT folder; its base path, when relative, is taken relative
// to the folder. Errors name the key (or the target module Lethe cannot adapt).
Result<AdapterSource> read_peft_source(const std::string& dir);
// Reads every adapter of `model` (which has adapters matching the folder's) from the folder, each
// rank its tp slice; shapes are checked against the model first.
Status load_peft_adapters(const std::string& dir, Llama& model);
// Writes `model`'s adapters as a PEFT folder for base `base` (checksum recorded in the file's
// metadata). Gathered over tp, written by world rank 0. Collective over the model's mesh.
Status export_peft(const Llama& model, const std::string& dir, const std::string& base, uint64_t base_checksum);

}  // namespace lethe
