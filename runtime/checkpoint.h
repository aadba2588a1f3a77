// Checkpoints: one HDF5 file per checkpoint, independent of the parallel layout (every tensor is
// stored at its full logical shape and each rank loads its own slice), versioned, checksummed,
// and made visible only once complete. Format: docs/checkpoint-format.md.
//
// Protocol (Note [Atomic checkpoint]): write <dir>/step-NNNNNNNN.h5.tmp, flush and close, fsync,
// rename to step-NNNNNNNN.h5, fsync the folder, then replace <dir>/latest (a one-line file naming
// the checkpoint) the same way. A failure at any point removes the temporary file and leaves every
// earlier checkpoint and the `latest` pointer as they were.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"
#include "io/token_dataset.h"
#include "runtime/model.h"
#include "runtime/optimizer.h"

namespace lethe {

inline constexpr int64_t kCheckpointVersion = 4;

// Named tensors a loop needs to continue exactly (data cursors, counters, a strategy's state),
// stored under "state/" next to the model and optimizer. Names may contain '/'.
using StateTensors = std::map<std::string, at::Tensor>;

// Helpers for StateTensors: int64 scalars and data cursors ("<prefix>_epoch", "<prefix>_offset").
at::Tensor int_state(int64_t v);
Result<int64_t> read_int(const StateTensors& state, const std::string& key);
void put_cursor(StateTensors& state, const std::string& prefix, DataCursor c);
Result<DataCursor> read_cursor(const StateTensors& state, const std::string& prefix);

// What a checkpoint saves and restores: implemented by the train loop and the unlearning engine.
class Checkpointable {
 public:
  virtual ~Checkpointable() = default;
  virtual Llama& model() = 0;
  virtual AdamW& optimizer() = 0;
  virtual const Mesh& mesh() const = 0;
  virtual StateTensors state() const = 0;
  // All or nothing: checks every entry it needs before changing anything.
  virtual Status set_state(const StateTensors& state) = 0;
};

// A checkpoint of weights alone (an imported or computed model): a fresh optimizer, no loop state.
class WeightsOnly : public Checkpointable {
 public:
  WeightsOnly(Llama& model, const Mesh& mesh) : model_(model), mesh_(mesh), opt_(model, AdamHyper{}, mesh) {}
  Llama& model() override { return model_; }
  AdamW& optimizer() override { return opt_; }
  const Mesh& mesh() const override { return mesh_; }
  StateTensors state() const override { return {}; }
  Status set_state(const StateTensors&) override { return Status::ok(); }

 private:
  Llama& model_;
  const Mesh& mesh_;
  AdamW opt_;
};

struct CheckpointMeta {
  std::string phase;        // "target", "retrain", …
  std::string config_toml;  // the effective config of the run
  std::map<std::string, uint64_t> data_checksums;  // token dataset name → TokenDataset::checksum()
  // A LoRA run: the frozen base's path and weights_checksum(base). Its checkpoints hold the
  // adapters alone and are refused when the base's checksum changed.
  std::string base;
  uint64_t base_checksum = 0;
};

// What adapters were trained on: a Lethe LoRA checkpoint, or a PEFT folder.
struct AdapterSource {
  LoraOptions lora;
  std::string base;            // the base weights' path
  uint64_t base_checksum = 0;  // weights_checksum(base) when the adapters were saved (0: not recorded)
};
// The adapters `path` holds, or nullopt when it holds full weights (or is not a checkpoint).
Result<std::optional<AdapterSource>> read_adapter_source(const std::string& path);

// A checksum of the weights at `path` that changes when they do: for a Lethe checkpoint, of the
// stored checksums of its weight datasets (no data read); for a Hugging Face folder, xxh3 of
// config.json and every safetensors file (one read of the files, on world rank 0). Collective over `world`.
Result<uint64_t> weights_checksum(const std::string& path, Communicator& world);

// Saves the model, optimizer, step (the optimizer's), the loop's state and the RNG; prunes all but the newest
// `keep` checkpoints. Returns the new file's path. Collective over the mesh's world: with several
// ranks one file is written through MPI-IO, each rank writing its own slices (Note [Parallel commit]).
Result<std::string> save_checkpoint(const std::string& dir, Checkpointable& loop, const CheckpointMeta& meta, int64_t keep);

// Restores everything save_checkpoint wrote, at any tp × dp and ZeRO-1 setting: each rank reads only
// the regions it holds. All or nothing, on every rank: the loop is touched only after every rank
// read and verified its regions. Collective over the mesh's world.
// Fails when the checkpoint was trained on other data than `expect.data_checksums` says.
Status load_checkpoint(const std::string& path, Checkpointable& loop, const CheckpointMeta& expect);

// Loads only the model parameters (any checkpoint phase, a Hugging Face folder, a Lethe LoRA
// checkpoint or a PEFT folder) into `model`, sliced for `mesh`. Adapters load on top of their base
// (refused when its checksum changed): into the model's adapters when it has them (the same rank
// and targets), else merged into its weights. Collective over the mesh's world.
Status load_weights(const std::string& path, Llama& model, const Mesh& mesh);

// Checkpoints in `dir`, newest first: the one `latest` names, then older ones by step.
std::vector<std::string> list_checkpoints(const std::string& dir);

// Keeps the checkpoint `path` also as `kept` (a name pruning and list_checkpoints never touch): a
// hard link, or a copy where the file system has none, renamed into place by world rank 0 so that
// `kept` is whole or as it was. Collective over `world`.
Status keep_checkpoint(const std::string& path, const std::string& kept, Communicator& world);

// Removes the checkpoints in `dir` taken after optimizer step `step`: a branch a rollback abandoned,
// which would otherwise sort as newer than what follows it. Collective over `world`.
void drop_checkpoints_after(const std::string& dir, int64_t step, Communicator& world);

// Resumes from the newest loadable checkpoint in `dir`: if `latest` is corrupt, says so and falls
// back to the next older one (the corrupt file is left in place for inspection). Returns the path used.
Result<std::string> resume_latest(const std::string& dir, Checkpointable& loop, const CheckpointMeta& expect);

}  // namespace lethe
