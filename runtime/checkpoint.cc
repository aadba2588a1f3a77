#include "runtime/checkpoint.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <set>

#include <xxhash.h>

#include "base/check.h"
#include "base/log.h"
#include "base/torch_compat.h"
#include "io/atomic_file.h"
#include "io/hdf5_store.h"
#include "runtime/hf_checkpoint.h"

namespace lethe {

namespace fs = std::filesystem;

namespace {

// Note [Reserve before HDF5]: a write error (full disk) met inside HDF5 leaves its file state
// broken — the failed H5Fclose cannot be retried and the library crashes closing it at exit. So the
// space a checkpoint needs is reserved (and released) first: the common full-disk case becomes a
// clean error before HDF5 touches anything.
Status reserve_space(const std::string& path, int64_t bytes) {
  int fd = ::open(path.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
  if (fd < 0) return Status::error(path + ": cannot create (" + std::strerror(errno) + ")");
  const int rc = ::posix_fallocate(fd, 0, bytes);
  ::close(fd);
  ::unlink(path.c_str());
  if (rc != 0) {
    return Status::error(path + ": cannot reserve " + std::to_string(bytes >> 20) + " MiB for the checkpoint (" +
                         std::strerror(rc) + "; disk full?)");
  }
  return Status::ok();
}

int64_t checkpoint_bytes(Checkpointable& t, const StateTensors& state, const CheckpointMeta& meta) {
  int64_t bytes = 1 << 20;  // metadata, attributes, RNG state
  const int64_t states = t.optimizer().mixed_precision() ? 3 : 2;  // moments, and masters apart from the weights
  for (const Param& p : t.model().trained()) {
    int64_t n = 1;
    for (int64_t d : p.global_shape) n *= d;
    bytes += n * (static_cast<int64_t>(p.value.element_size()) + 4 * states);
  }
  for (const auto& [name, x] : state) bytes += static_cast<int64_t>(x.nbytes()) + 4096;
  return bytes + static_cast<int64_t>(meta.config_toml.size());
}

// The boxes of the flat elements [start, start + count) of a row-major tensor of `shape`, in
// row-major order: at most a partial row, whole rows, and a partial row per dimension.
void flat_boxes(const std::vector<int64_t>& shape, size_t dim, std::vector<int64_t> prefix, int64_t start, int64_t count,
                std::vector<Box>& out) {
  if (count <= 0) return;
  int64_t inner = 1;
  for (size_t d = dim + 1; d < shape.size(); ++d) inner *= shape[d];
  auto box = [&](int64_t first, int64_t rows) {  // rows [first, first + rows) of dim, all of the rest
    Box b{prefix, std::vector<int64_t>(dim, 1)};
    b.start.push_back(first);
    b.count.push_back(rows);
    for (size_t d = dim + 1; d < shape.size(); ++d) {
      b.start.push_back(0);
      b.count.push_back(shape[d]);
    }
    out.push_back(b);
  };
  const int64_t end = start + count;
  if (start % inner == 0 && end % inner == 0) return box(start / inner, count / inner);
  const int64_t first_row = start / inner, last_row = (end - 1) / inner;
  std::vector<int64_t> row_prefix = prefix;
  auto partial = [&](int64_t row, int64_t from, int64_t to) {
    row_prefix.resize(prefix.size());
    row_prefix.push_back(row);
    flat_boxes(shape, dim + 1, row_prefix, from, to - from, out);
  };
  if (first_row == last_row) return partial(first_row, start - first_row * inner, end - first_row * inner);
  int64_t full_from = first_row;
  if (start % inner != 0) {
    partial(first_row, start - first_row * inner, inner);
    ++full_from;
  }
  const int64_t full_to = end % inner == 0 ? last_row + 1 : last_row;
  if (full_to > full_from) box(full_from, full_to - full_from);
  if (end % inner != 0) partial(last_row, 0, end - last_row * inner);
}

// Tp rank r's shard of parameter p as a box of its global shape.
Box tp_box(const Param& p, const Mesh& mesh, int r) {
  Box box{std::vector<int64_t>(p.global_shape.size(), 0), p.global_shape};
  if (p.split_dim >= 0) {
    box.count[p.split_dim] /= mesh.tp_size();
    box.start[p.split_dim] = r * box.count[p.split_dim];
  }
  return box;
}

// The boxes (global coordinates) of elements [start, + count) of tp shard `shard`, row-major.
std::vector<Box> shard_boxes(const Box& shard, std::pair<int64_t, int64_t> range) {
  std::vector<Box> out;
  flat_boxes(shard.count, 0, {}, range.first, range.second, out);
  if (shard.count.empty() && range.second > 0) out.push_back(shard);  // a scalar
  for (Box& b : out) {
    for (size_t d = 0; d < b.start.size(); ++d) b.start[d] += shard.start[d];
  }
  return out;
}

// Note [Checkpoint pieces]: every parameter-shaped dataset is written by the ranks holding its
// slices. Weights, and optimizer state held whole by every dp rank: one piece per tp rank (one for
// a replicated tensor), written by dp rank 0. Optimizer state sharded over dp: each (tp, dp) rank
// writes the elements it owns, a flat range of its tp shard, as up to a few boxes (flat_boxes).
// A piece's writer is world rank dp · tp + tp_rank (Mesh: tp innermost).
struct Placed {
  std::vector<Piece> pieces;
  std::vector<int> writers;
  std::vector<int> mine;
};

// `range(k)`: the elements of a tp shard dp rank k owns; null: the whole shard, by dp rank 0.
Placed place(const Param& p, const Mesh& mesh, const std::function<std::pair<int64_t, int64_t>(int)>& range) {
  Placed out;
  const int tp = p.split_dim >= 0 ? mesh.tp_size() : 1, dp = range ? mesh.dp_size() : 1;
  for (int k = 0; k < dp; ++k) {
    for (int r = 0; r < tp; ++r) {
      const Box shard = tp_box(p, mesh, r);
      const int writer = k * mesh.tp_size() + r;
      for (const Box& box : range ? shard_boxes(shard, range(k)) : std::vector<Box>{shard}) {
        if (writer == mesh.world().rank()) out.mine.push_back(static_cast<int>(out.pieces.size()));
        out.pieces.push_back(Piece{box, 0});
        out.writers.push_back(writer);
      }
    }
  }
  return out;
}

struct ShardedWrite {
  std::string name;
  const Param* param;
  at::Tensor data;  // this rank's elements of its pieces, one after another
  Placed placed;
};

std::vector<ShardedWrite> sharded_writes(Checkpointable& t) {
  const Mesh& mesh = t.mesh();
  AdamW& opt = t.optimizer();
  std::vector<ShardedWrite> w;
  const auto& params = t.model().trained();
  for (size_t i = 0; i < params.size(); ++i) {
    const Param& p = params[i];
    w.push_back({"model/" + p.name, &p, p.value.detach(), place(p, mesh, nullptr)});
    for (const StateSlice& s : opt.state_of(i)) {
      std::function<std::pair<int64_t, int64_t>(int)> range;
      if (s.dp_sharded) range = [&opt, i](int k) { return opt.owned_range(i, k); };
      w.push_back({"optim/" + s.name + "/" + p.name, &p, s.data, place(p, mesh, range)});
    }
  }
  // Each writer hashes its pieces; one all-reduce gives every rank every checksum.
  int64_t n = 0;
  for (const auto& x : w) n += static_cast<int64_t>(x.placed.pieces.size());
  at::Tensor sums = at::zeros({n}, at::kLong);
  int64_t k = 0;
  for (auto& x : w) {
    at::Tensor flat = x.placed.mine.empty() ? at::Tensor() : x.data.cpu().contiguous().view({-1});
    int64_t off = 0;
    for (int m : x.placed.mine) {
      const int64_t count = x.placed.pieces[static_cast<size_t>(m)].box.numel();
      sums[k + m] = static_cast<int64_t>(tensor_checksum(flat.narrow(0, off, count)));
      off += count;
    }
    k += static_cast<int64_t>(x.placed.pieces.size());
  }
  mesh.world().all_reduce(sums, ReduceOp::kSum);
  k = 0;
  for (auto& x : w) {
    for (Piece& piece : x.placed.pieces) piece.xxh3 = static_cast<uint64_t>(sums[k++].item<int64_t>());
  }
  return w;
}

Status write_all(H5File& f, Checkpointable& t, const StateTensors& state, const CheckpointMeta& meta) {
  LETHE_RETURN_IF_ERROR(f.set_attr("format", "lethe-checkpoint"));
  LETHE_RETURN_IF_ERROR(f.set_attr("version", kCheckpointVersion));
  LETHE_RETURN_IF_ERROR(f.set_attr("phase", meta.phase));
  LETHE_RETURN_IF_ERROR(f.set_attr("torch_version", compat::kTorchVersion));
  LETHE_RETURN_IF_ERROR(f.set_attr("saved_tp", t.mesh().tp_size()));
  LETHE_RETURN_IF_ERROR(f.set_attr("saved_dp", t.mesh().dp_size()));
  if (!meta.base.empty()) {  // the adapters alone, and what they were trained on
    const LoraOptions& l = t.model().lora();
    std::string targets;
    for (const std::string& x : l.targets) targets += (targets.empty() ? "" : ",") + x;
    LETHE_RETURN_IF_ERROR(f.set_attr("adapter", "lora"));
    LETHE_RETURN_IF_ERROR(f.set_attr("lora_rank", l.rank));
    LETHE_RETURN_IF_ERROR(f.set_attr("lora_alpha", fmt::format("{:.17g}", l.alpha)));
    LETHE_RETURN_IF_ERROR(f.set_attr("lora_dropout", fmt::format("{:.17g}", l.dropout)));
    LETHE_RETURN_IF_ERROR(f.set_attr("lora_targets", targets));
    LETHE_RETURN_IF_ERROR(f.set_attr("base", meta.base));
    LETHE_RETURN_IF_ERROR(f.set_attr("base_checksum", static_cast<int64_t>(meta.base_checksum)));
  }
  for (const ShardedWrite& x : sharded_writes(t)) {
    LETHE_RETURN_IF_ERROR(
        f.write_sharded(x.name, x.param->global_shape, x.data.scalar_type(), x.placed.pieces, x.placed.mine, x.data));
  }
  if (const char* k = std::getenv("LETHE_TEST_STALL_RANK_IN_CHECKPOINT"); k && std::atoi(k) == t.mesh().world().rank()) {
    ::pause();  // test hook: a rank hung mid-write; its peers wait in the next collective write
  }
  LETHE_RETURN_IF_ERROR(f.write_tensor("step", at::scalar_tensor(t.optimizer().steps_taken(), at::kLong)));
  LETHE_RETURN_IF_ERROR(f.write_tensor("rng_cpu", at::detail::getDefaultCPUGenerator().get_state()));
  for (const auto& [name, x] : state) LETHE_RETURN_IF_ERROR(f.write_tensor("state/" + name, x.contiguous()));
  for (const auto& [name, sum] : meta.data_checksums) {
    LETHE_RETURN_IF_ERROR(f.write_tensor("data/" + name, at::scalar_tensor(static_cast<int64_t>(sum), at::kLong)));
  }
  return f.write_string("config", meta.config_toml);
}

// One verdict for all ranks: fails everywhere when `s` failed on any rank (the message names the
// first failing rank; that rank's own message is in its log).
Status agree(Communicator& world, const Status& s) {
  at::Tensor failed = at::full({1}, s ? -1 : world.rank(), at::kLong);
  world.all_reduce(failed, ReduceOp::kMax);
  if (s && failed.item<int64_t>() >= 0) {
    return Status::error("rank " + std::to_string(failed.item<int64_t>()) + " failed (see its log)");
  }
  return s;
}

std::string step_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step-%08lld.h5", static_cast<long long>(step));
  return buf;
}

// Checks that `key` has parameter p's shape (naming a vocabulary mismatch as such).
Status check_shape(const H5File& f, const std::string& key, const Param& p) {
  LETHE_ASSIGN_OR_RETURN(std::vector<int64_t> shape, f.shape(key));
  if ((p.name == "embed" || p.name == "lm_head") && shape.size() == 2 && shape[0] != p.global_shape[0]) {
    return Status::error(f.path() + ": " + key + ": the checkpoint's vocabulary has " + std::to_string(shape[0]) +
                         " tokens, this run's model.vocab_size is " + std::to_string(p.global_shape[0]) +
                         ": it was trained with another tokenizer or vocabulary");
  }
  if (shape != p.global_shape) {
    return Status::error(f.path() + ": " + key + ": shape " + c10::str(at::IntArrayRef(shape)) + ", expected " +
                         c10::str(at::IntArrayRef(p.global_shape)));
  }
  return Status::ok();
}

// This rank's region of a parameter-shaped dataset, 1-D: elements `range` of its tp shard
// (row-major), or the whole shard (nullopt).
Result<at::Tensor> read_held(const H5File& f, const std::string& key, const Param& p, const Mesh& mesh,
                             std::optional<std::pair<int64_t, int64_t>> range = std::nullopt) {
  LETHE_RETURN_IF_ERROR(check_shape(f, key, p));
  const Box shard = tp_box(p, mesh, mesh.tp_rank());
  std::vector<at::Tensor> parts;
  for (const Box& box : range ? shard_boxes(shard, *range) : std::vector<Box>{shard}) {
    LETHE_ASSIGN_OR_RETURN(at::Tensor x, f.read_box(key, box));
    parts.push_back(x.reshape({-1}));
  }
  if (parts.empty()) return at::empty({0}, at::kFloat);
  return parts.size() == 1 ? parts[0] : at::cat(parts);
}

struct Staged {
  std::vector<at::Tensor> params;               // flat, per parameter
  std::vector<std::vector<at::Tensor>> states;  // per parameter, in the order of AdamW::state_of
  int64_t step = 0;
  at::Tensor rng;
  StateTensors state;
};

// Every dataset under `group`, recursively, keyed by its name relative to `group`.
Status read_tree(const H5File& f, const std::string& group, const std::string& rel, StateTensors& out) {
  for (const std::string& n : f.list(group)) {
    const std::string key = rel.empty() ? n : rel + "/" + n;
    auto t = f.read_tensor(group + "/" + n);
    if (t) {
      out[key] = *t;
    } else if (!f.list(group + "/" + n).empty()) {
      LETHE_RETURN_IF_ERROR(read_tree(f, group + "/" + n, key, out));
    } else {
      return t.status();
    }
  }
  return Status::ok();
}

Result<H5File> open_checkpoint(const std::string& path) {
  LETHE_ASSIGN_OR_RETURN(H5File f, H5File::open(path));
  auto format = f.attr_string("format");
  if (!format || *format != "lethe-checkpoint") return Status::error(path + ": not a Lethe checkpoint");
  LETHE_ASSIGN_OR_RETURN(int64_t version, f.attr_int("version"));
  if (version != kCheckpointVersion && version != 3) {  // version 3 is version 4 without master weights
    return Status::error(path + ": checkpoint format version " + std::to_string(version) + ", this build reads 3 and " +
                         std::to_string(kCheckpointVersion));
  }
  return f;
}

// Where a parameter's fp32 value is stored: the master weights of a bf16 checkpoint, else the weights.
std::string value_key(const H5File& f, const Param& p) {
  return f.exists("optim/master/" + p.name) ? "optim/master/" + p.name : "model/" + p.name;
}

// The weights of every parameter, sliced for this rank: the stored weights in their dtype for a
// bf16 model, the most precise copy (masters, when there are) for an fp32 one.
Status read_weights(const H5File& f, const std::vector<Param>& params, const Mesh& mesh, std::vector<at::Tensor>& out) {
  for (const Param& p : params) {
    const std::string key = p.value.scalar_type() == at::kFloat ? value_key(f, p) : "model/" + p.name;
    LETHE_ASSIGN_OR_RETURN(at::Tensor x, read_held(f, key, p, mesh));
    out.push_back(x);
  }
  return Status::ok();
}

// The optimizer state this rank holds, per parameter. Master weights missing from the file (it
// was saved by an fp32 run) come from its weights.
Status read_optimizer(const H5File& f, const std::vector<Param>& params, const Mesh& mesh, AdamW& opt,
                      std::vector<std::vector<at::Tensor>>& out) {
  for (size_t i = 0; i < params.size(); ++i) {
    const Param& p = params[i];
    out.emplace_back();
    for (const StateSlice& s : opt.state_of(i)) {
      const std::string key = s.name == "master" ? value_key(f, p) : "optim/" + s.name + "/" + p.name;
      std::optional<std::pair<int64_t, int64_t>> range;
      if (s.dp_sharded) range = opt.owned_range(i, mesh.dp_rank());
      LETHE_ASSIGN_OR_RETURN(at::Tensor x, read_held(f, key, p, mesh, range));
      out.back().push_back(x);
    }
  }
  return Status::ok();
}

void copy_into(const std::vector<at::Tensor>& flat, const std::vector<at::Tensor>& dst) {
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < flat.size(); ++i) dst[i].copy_(flat[i].view(dst[i].sizes()));
}

std::vector<at::Tensor> values(const std::vector<Param>& params) {
  std::vector<at::Tensor> v;
  for (const Param& p : params) v.push_back(p.value);
  return v;
}

// The adapter attributes of an open checkpoint, or nullopt for one of full weights.
Result<std::optional<AdapterSource>> adapter_source_of(const H5File& f) {
  auto kind = f.attr_string("adapter");
  if (!kind) return std::optional<AdapterSource>();
  if (*kind != "lora") return Status::error(f.path() + ": adapter \"" + *kind + "\": this build reads \"lora\"");
  AdapterSource src;
  LETHE_ASSIGN_OR_RETURN(src.lora.rank, f.attr_int("lora_rank"));
  LETHE_ASSIGN_OR_RETURN(std::string alpha, f.attr_string("lora_alpha"));
  LETHE_ASSIGN_OR_RETURN(std::string dropout, f.attr_string("lora_dropout"));
  LETHE_ASSIGN_OR_RETURN(std::string targets, f.attr_string("lora_targets"));
  LETHE_ASSIGN_OR_RETURN(src.base, f.attr_string("base"));
  LETHE_ASSIGN_OR_RETURN(int64_t sum, f.attr_int("base_checksum"));
  src.lora.alpha = std::stod(alpha);
  src.lora.dropout = std::stod(dropout);
  for (size_t at = 0; at <= targets.size();) {
    const size_t comma = std::min(targets.find(',', at), targets.size());
    src.lora.targets.push_back(targets.substr(at, comma - at));
    at = comma + 1;
  }
  src.base_checksum = static_cast<uint64_t>(sum);
  return std::optional<AdapterSource>(src);
}

// Whether adapters of `a` can be loaded as adapters of `b`: the same rank, scale and projections.
bool same_adapters(const LoraOptions& a, const LoraOptions& b) {
  return a.rank == b.rank && a.alpha == b.alpha &&
         std::set<std::string>(a.targets.begin(), a.targets.end()) == std::set<std::string>(b.targets.begin(), b.targets.end());
}

std::string describe(const LoraOptions& l) {
  std::string t;
  for (const std::string& x : l.targets) t += (t.empty() ? "" : ", ") + x;
  return fmt::format("rank {}, alpha {:g} on {}", l.rank, l.alpha, t);
}

// A LoRA run's checkpoint must hold its kind of adapters, trained on the same base (the same
// checksum); a full run's must hold full weights.
Status check_base(const H5File& f, const CheckpointMeta& expect, const Llama& model) {
  LETHE_ASSIGN_OR_RETURN(std::optional<AdapterSource> saved, adapter_source_of(f));
  if (expect.base.empty()) {
    if (saved) return Status::error(f.path() + ": holds LoRA adapters; this run trains every weight (unlearn.adapter = \"none\")");
    return Status::ok();
  }
  if (!saved) return Status::error(f.path() + ": holds full weights, not adapters; this run trains LoRA adapters");
  if (!same_adapters(saved->lora, model.lora())) {
    return Status::error(f.path() + ": adapters of " + describe(saved->lora) + ", this run's are " + describe(model.lora()) +
                         " (unlearn.lora_rank, lora_alpha, lora_targets)");
  }
  if (saved->base_checksum != expect.base_checksum) {
    return Status::error(f.path() + ": its adapters were trained on base " + saved->base + " (checksum " +
                         std::to_string(saved->base_checksum) + "), but this run's base " + expect.base +
                         " has checksum " + std::to_string(expect.base_checksum) + ": the base changed");
  }
  return Status::ok();
}

Status load_adapters(const std::string& path, const AdapterSource& src, Llama& model, const Mesh& mesh) {
  LETHE_ASSIGN_OR_RETURN(std::optional<AdapterSource> stacked, read_adapter_source(src.base));
  if (stacked) return Status::error(path + ": its base " + src.base + " holds adapters too; merge those first");
  LETHE_RETURN_IF_ERROR(load_weights(src.base, model, mesh).with_context(path + ": its base"));
  if (src.base_checksum != 0) {
    LETHE_ASSIGN_OR_RETURN(uint64_t now, weights_checksum(src.base, mesh.world()));
    if (now != src.base_checksum) {
      return Status::error(path + ": its adapters were trained on base " + src.base + " (checksum " +
                           std::to_string(src.base_checksum) + "), which now has checksum " + std::to_string(now) +
                           ": the base changed");
    }
  }
  const bool merge = model.adapters().empty();
  if (merge) {
    model.add_lora(src.lora);
  } else if (!same_adapters(src.lora, model.lora())) {
    return Status::error(path + ": adapters of " + describe(src.lora) + ", the model's are " + describe(model.lora()));
  }
  if (is_peft_dir(path)) {
    LETHE_RETURN_IF_ERROR(load_peft_adapters(path, model));
  } else {
    LETHE_ASSIGN_OR_RETURN(H5File f, open_checkpoint(path));
    std::vector<at::Tensor> staged;
    LETHE_RETURN_IF_ERROR(read_weights(f, model.trained(), mesh, staged));
    copy_into(staged, values(model.trained()));
  }
  if (merge) model.merge_adapters();
  return Status::ok();
}

}  // namespace

at::Tensor int_state(int64_t v) { return at::scalar_tensor(v, at::kLong); }

Result<int64_t> read_int(const StateTensors& state, const std::string& key) {
  auto it = state.find(key);
  if (it == state.end() || it->second.numel() != 1) return Status::error("state/" + key + ": missing or not a scalar");
  return it->second.item<int64_t>();
}

void put_cursor(StateTensors& state, const std::string& prefix, DataCursor c) {
  state[prefix + "_epoch"] = int_state(c.epoch);
  state[prefix + "_offset"] = int_state(c.offset);
}

Result<DataCursor> read_cursor(const StateTensors& state, const std::string& prefix) {
  LETHE_ASSIGN_OR_RETURN(int64_t epoch, read_int(state, prefix + "_epoch"));
  LETHE_ASSIGN_OR_RETURN(int64_t offset, read_int(state, prefix + "_offset"));
  return DataCursor{epoch, offset};
}

// Note [Parallel commit]: rank 0 prepares (folder, space) and every rank learns the outcome; then
// all ranks write the file collectively. An HDF5 error on one rank in that phase ends the job
// (its peers are inside collective calls and cannot be told); the temporary file is never renamed,
// so earlier checkpoints and `latest` stay as they were. Only after the collective close does rank 0
// sync, rename and move `latest`.
Result<std::string> save_checkpoint(const std::string& dir, Checkpointable& t, const CheckpointMeta& meta, int64_t keep) {
  Communicator& world = t.mesh().world();
  const bool parallel = world.size() > 1;
  const std::string name = step_name(t.optimizer().steps_taken());
  const StateTensors state = t.state();
  const std::string final_path = dir + "/" + name, tmp = final_path + ".tmp";
  std::error_code ec;
  Status prepared = Status::ok();
  if (world.rank() == 0) {
    fs::create_directories(dir, ec);
    // Test hook: LETHE_TEST_NO_RESERVE=1 skips the reservation, so that a full disk is met inside
    // the collective write (tests/checkpoint_full_disk.sh).
    prepared = ec ? Status::error(dir + ": cannot create: " + ec.message())
            : std::string(std::getenv("LETHE_TEST_NO_RESERVE") ? std::getenv("LETHE_TEST_NO_RESERVE") : "") == "1"
                ? Status::ok()
                                                    : reserve_space(tmp, checkpoint_bytes(t, state, meta));
  }
  if (Status s = agree(world, prepared); !s) return s.with_context("checkpoint not written; earlier checkpoints are untouched");

  Status s = [&]() -> Status {
    const IoChannel io = world.io();
    LETHE_ASSIGN_OR_RETURN(H5File f, parallel ? H5File::create_parallel(tmp, io.comm, io.timeout_s) : H5File::create(tmp));
    LETHE_RETURN_IF_ERROR(write_all(f, t, state, meta));
    if (const char* k = std::getenv("LETHE_TEST_KILL_RANK_IN_CHECKPOINT"); k && std::atoi(k) == world.rank()) {
      ::raise(SIGKILL);  // test hook: a rank dying mid-write (tests/checkpoint_kill.sh)
    }
    return f.close();
  }();
  if (!s && parallel) fatal(__FILE__, __LINE__, "rank " + std::to_string(world.rank()) + ": " + s.message());
  if (s && world.rank() == 0) {
    s = [&]() -> Status {
      LETHE_RETURN_IF_ERROR(H5File::seal(tmp));
      LETHE_RETURN_IF_ERROR(commit_file(tmp, final_path));
      return write_file_atomic(dir + "/latest", name + "\n");
    }();
  }
  s = agree(world, s);
  if (!s) {
    if (world.rank() == 0) fs::remove(tmp, ec);
    return s.with_context("checkpoint not written; earlier checkpoints are untouched");
  }
  if (world.rank() == 0) {
    std::vector<std::string> all = list_checkpoints(dir);
    for (size_t i = static_cast<size_t>(keep); i < all.size(); ++i) fs::remove(all[i], ec);
  }
  world.barrier();
  return final_path;
}

Status load_checkpoint(const std::string& path, Checkpointable& t, const CheckpointMeta& expect) {
  const Mesh& mesh = t.mesh();
  const auto& params = t.model().trained();
  Staged st;
  at::Tensor step;
  // Every rank reads and verifies its own regions; all must succeed before anything changes.
  Status read = [&]() -> Status {
    LETHE_ASSIGN_OR_RETURN(H5File f, open_checkpoint(path));
    LETHE_RETURN_IF_ERROR(check_base(f, expect, t.model()));
    for (const auto& [name, sum] : expect.data_checksums) {
      auto stored = f.read_tensor("data/" + name);
      if (stored && static_cast<uint64_t>(stored->item<int64_t>()) != sum) {
        return Status::error(path + ": was trained on different \"" + name +
                             "\" data (token checksum differs): corpus, tokenizer or seq_len changed since");
      }
    }
    LETHE_RETURN_IF_ERROR(read_weights(f, params, mesh, st.params));
    LETHE_RETURN_IF_ERROR(read_optimizer(f, params, mesh, t.optimizer(), st.states));
    LETHE_ASSIGN_OR_RETURN(step, f.read_tensor("step"));
    LETHE_ASSIGN_OR_RETURN(st.rng, f.read_tensor("rng_cpu"));
    return read_tree(f, "state", "", st.state);
  }();
  LETHE_RETURN_IF_ERROR(agree(mesh.world(), read).with_context(path));
  // set_state checks before it changes anything; after it, nothing can fail.
  if (Status s = t.set_state(st.state); !s) return s.with_context(path);

  // Everything read and verified: commit.
  copy_into(st.params, values(params));
  for (size_t i = 0; i < params.size(); ++i) {
    std::vector<at::Tensor> held;
    for (const StateSlice& s : t.optimizer().state_of(i)) held.push_back(s.data);
    copy_into(st.states[i], held);
  }
  t.optimizer().set_steps_taken(step.item<int64_t>());
  at::Generator gen = at::detail::getDefaultCPUGenerator();  // a handle to the shared generator
  gen.set_state(st.rng);
  return Status::ok();
}

Result<std::optional<AdapterSource>> read_adapter_source(const std::string& path) {
  if (is_peft_dir(path)) {
    LETHE_ASSIGN_OR_RETURN(AdapterSource src, read_peft_source(path));
    return std::optional<AdapterSource>(src);
  }
  if (fs::is_directory(path) || !fs::exists(path)) return std::optional<AdapterSource>();
  LETHE_ASSIGN_OR_RETURN(H5File f, open_checkpoint(path));
  return adapter_source_of(f);
}

Result<uint64_t> weights_checksum(const std::string& path, Communicator& world) {
  if (!is_hf_dir(path)) {  // a Lethe checkpoint: its stored checksums, read by every rank
    LETHE_ASSIGN_OR_RETURN(H5File f, open_checkpoint(path));
    std::vector<uint64_t> sums;
    for (const std::string group : {"model", "optim/master"}) {
      if (!f.exists(group)) continue;
      for (const std::string& n : f.list(group)) {
        LETHE_ASSIGN_OR_RETURN(uint64_t x, f.stored_checksum(group + "/" + n));
        sums.push_back(name_hash(group + "/" + n) ^ x);
      }
    }
    return static_cast<uint64_t>(XXH3_64bits(sums.data(), sums.size() * sizeof(uint64_t)));
  }
  Result<uint64_t> mine = uint64_t{0};
  if (world.rank() == 0) mine = hf_checksum(path);
  at::Tensor shared = at::zeros({2}, at::kLong);  // {failed on rank 0, checksum}
  if (world.rank() == 0) {
    shared[0] = mine ? 0 : 1;
    shared[1] = mine ? static_cast<int64_t>(*mine) : 0;
  }
  world.broadcast(shared, 0);
  if (world.rank() == 0) return mine;
  if (shared[0].item<int64_t>() != 0) return Status::error(path + ": rank 0 could not checksum the base (see its log)");
  return static_cast<uint64_t>(shared[1].item<int64_t>());
}

Status load_weights(const std::string& path, Llama& model, const Mesh& mesh) {
  LETHE_ASSIGN_OR_RETURN(std::optional<AdapterSource> adapters, read_adapter_source(path));
  if (adapters) return load_adapters(path, *adapters, model, mesh);
  if (is_hf_dir(path)) return load_hf_weights(path, model);
  LETHE_ASSIGN_OR_RETURN(H5File f, open_checkpoint(path));
  std::vector<at::Tensor> staged;
  LETHE_RETURN_IF_ERROR(read_weights(f, model.params(), mesh, staged));
  copy_into(staged, values(model.params()));
  return Status::ok();
}

std::vector<std::string> list_checkpoints(const std::string& dir) {
  std::vector<std::string> files;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string n = e.path().filename().string();
    if (n.rfind("step-", 0) == 0 && n.size() > 3 && n.substr(n.size() - 3) == ".h5") files.push_back(e.path().string());
  }
  std::sort(files.rbegin(), files.rend());
  std::ifstream latest(dir + "/latest");
  std::string name;
  if (latest >> name) {
    auto it = std::find(files.begin(), files.end(), dir + "/" + name);
    if (it != files.end()) std::rotate(files.begin(), it, it + 1);
  }
  return files;
}

Status keep_checkpoint(const std::string& path, const std::string& kept, Communicator& world) {
  Status s = Status::ok();
  if (world.rank() == 0) {
    const std::string tmp = kept + ".tmp";
    std::error_code ec;
    fs::remove(tmp, ec);
    fs::create_hard_link(path, tmp, ec);
    if (ec) fs::copy_file(path, tmp, ec);
    if (ec) {
      s = Status::error(kept + ": cannot keep " + path + " (" + ec.message() + ")");
    } else {
      s = commit_file(tmp, kept);
    }
  }
  return agree(world, s);
}

void drop_checkpoints_after(const std::string& dir, int64_t step, Communicator& world) {
  if (world.rank() == 0) {
    std::error_code ec;
    for (const std::string& path : list_checkpoints(dir)) {
      if (fs::path(path).filename().string() > step_name(step)) fs::remove(path, ec);
    }
  }
  world.barrier();
}

Result<std::string> resume_latest(const std::string& dir, Checkpointable& t, const CheckpointMeta& expect) {
  std::vector<std::string> candidates = list_checkpoints(dir);
  if (candidates.empty()) return Status::error(dir + ": no checkpoint to resume from");
  std::string problems;
  for (const auto& path : candidates) {
    Status s = load_checkpoint(path, t, expect);
    if (s) {
      if (!problems.empty()) log().warn("resumed from {} because a newer checkpoint is unusable", path);
      return path;
    }
    log().error("cannot resume from {}", s.message());
    problems += "\n  " + s.message();
  }
  return Status::error(dir + ": no usable checkpoint:" + problems);
}

}  // namespace lethe
