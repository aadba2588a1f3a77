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

#include "base/check.h"
#include "base/log.h"
#include "base/torch_compat.h"
#include "collectives/mpi_communicator.h"
#include "io/hdf5_store.h"
#include "runtime/hf_checkpoint.h"

namespace lethe {

namespace fs = std::filesystem;

namespace {

Status fsync_path(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return Status::error(path + ": cannot open for fsync");
  int rc = ::fsync(fd);
  ::close(fd);
  return rc == 0 ? Status::ok() : Status::error(path + ": fsync failed");
}

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
  for (const Param& p : t.model().params()) {
    int64_t n = 1;
    for (int64_t d : p.global_shape) n *= d;
    bytes += 3 * n * 4;  // weights + two moments, fp32
  }
  for (const auto& [name, x] : state) bytes += static_cast<int64_t>(x.nbytes()) + 4096;
  return bytes + static_cast<int64_t>(meta.config_toml.size());
}

// Note [Checkpoint pieces]: every parameter-shaped dataset is written by the ranks holding its
// slices. Parameters: one piece per tp rank (one for a replicated tensor), written by dp rank 0.
// Moments: the same, or with ZeRO-1 one piece per (tp, dp) rank — the rows that rank's optimizer
// owns. A piece's writer is world rank dp · tp + tp_rank (Mesh: tp innermost).
struct Placed {
  std::vector<Piece> pieces;
  std::vector<int> writers;
  int mine = -1;
};

Placed place(const Param& p, const Mesh& mesh, bool by_dp) {
  Placed out;
  const int tp = p.split_dim >= 0 ? mesh.tp_size() : 1, dp = by_dp ? mesh.dp_size() : 1;
  for (int k = 0; k < dp; ++k) {
    for (int r = 0; r < tp; ++r) {
      Box box{std::vector<int64_t>(p.global_shape.size(), 0), p.global_shape};
      if (p.split_dim >= 0) {
        box.count[p.split_dim] /= mesh.tp_size();
        box.start[p.split_dim] = r * box.count[p.split_dim];
      }
      if (by_dp) {
        auto [start, count] = zero1_rows(box.count[0], k, dp);
        box.start[0] += start;
        box.count[0] = count;
        if (count == 0) continue;
      }
      const int writer = k * mesh.tp_size() + r;
      if (writer == mesh.world().rank()) out.mine = static_cast<int>(out.pieces.size());
      out.pieces.push_back(Piece{box, 0});
      out.writers.push_back(writer);
    }
  }
  return out;
}

struct ShardedWrite {
  std::string name;
  const Param* param;
  at::Tensor data;  // this rank's slice (for its piece, if any)
  Placed placed;
};

std::vector<ShardedWrite> sharded_writes(Checkpointable& t) {
  const Mesh& mesh = t.mesh();
  AdamW& opt = t.optimizer();
  std::vector<ShardedWrite> w;
  const auto& params = t.model().params();
  for (size_t i = 0; i < params.size(); ++i) {
    const Param& p = params[i];
    w.push_back({"model/" + p.name, &p, p.value.detach(), place(p, mesh, false)});
    w.push_back({"optim/exp_avg/" + p.name, &p, opt.exp_avg()[i], place(p, mesh, opt.zero1())});
    w.push_back({"optim/exp_avg_sq/" + p.name, &p, opt.exp_avg_sq()[i], place(p, mesh, opt.zero1())});
  }
  // Each writer hashes its piece; one all-reduce gives every rank every checksum.
  int64_t n = 0;
  for (const auto& x : w) n += static_cast<int64_t>(x.placed.pieces.size());
  at::Tensor sums = at::zeros({n}, at::kLong);
  int64_t k = 0;
  for (auto& x : w) {
    if (x.placed.mine >= 0) sums[k + x.placed.mine] = static_cast<int64_t>(tensor_checksum(x.data));
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
  for (const ShardedWrite& x : sharded_writes(t)) {
    LETHE_RETURN_IF_ERROR(
        f.write_sharded(x.name, x.param->global_shape, at::kFloat, x.placed.pieces, x.placed.mine, x.data));
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

// Reads this rank's region of a parameter-shaped dataset: its tp slice, and of that the rows
// [row_start, + rows) along dim 0 (all rows: rows < 0).
Result<at::Tensor> read_shard(const H5File& f, const std::string& key, const Param& p, const Mesh& mesh,
                              int64_t row_start = 0, int64_t rows = -1) {
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
  Box box{std::vector<int64_t>(shape.size(), 0), shape};
  if (p.split_dim >= 0) {
    box.count[p.split_dim] /= mesh.tp_size();
    box.start[p.split_dim] = mesh.tp_rank() * box.count[p.split_dim];
  }
  if (rows >= 0) {
    box.start[0] += row_start;
    box.count[0] = rows;
  }
  return f.read_box(key, box);
}

struct Staged {
  std::vector<at::Tensor> params, m, v;
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
  if (version != kCheckpointVersion) {
    return Status::error(path + ": checkpoint format version " + std::to_string(version) + ", this build reads " +
                         std::to_string(kCheckpointVersion));
  }
  return f;
}

// Reads `prefix + name` for every parameter of `params`, sliced for this rank; with `opt`, the
// rows of each moment that this rank's optimizer holds.
Status read_group(const H5File& f, const std::vector<Param>& params, const std::string& prefix, const Mesh& mesh,
                  std::vector<at::Tensor>& out, AdamW* opt = nullptr) {
  for (size_t i = 0; i < params.size(); ++i) {
    const Param& p = params[i];
    const int64_t start = opt ? opt->row_start(i) : 0, rows = opt ? opt->exp_avg()[i].size(0) : -1;
    LETHE_ASSIGN_OR_RETURN(at::Tensor x, read_shard(f, prefix + p.name, p, mesh, start, rows));
    out.push_back(x);
  }
  return Status::ok();
}

void copy_into(const std::vector<at::Tensor>& src, const std::vector<at::Tensor>& dst) {
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < src.size(); ++i) dst[i].copy_(src[i]);
}

std::vector<at::Tensor> values(const std::vector<Param>& params) {
  std::vector<at::Tensor> v;
  for (const Param& p : params) v.push_back(p.value);
  return v;
}

}  // namespace

Status write_file_atomic(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << text;
    if (!out.flush()) {
      fs::remove(tmp);
      return Status::error(tmp + ": write failed (disk full?)");
    }
  }
  LETHE_RETURN_IF_ERROR(fsync_path(tmp));
  std::error_code ec;
  fs::rename(tmp, path, ec);
  return ec ? Status::error(path + ": rename failed: " + ec.message()) : Status::ok();
}

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
    prepared = ec ? Status::error(dir + ": cannot create: " + ec.message())
                  : reserve_space(tmp, checkpoint_bytes(t, state, meta));
  }
  if (Status s = agree(world, prepared); !s) return s.with_context("checkpoint not written; earlier checkpoints are untouched");

  Status s = [&]() -> Status {
    LETHE_ASSIGN_OR_RETURN(H5File f, parallel ? H5File::create_parallel(tmp, mpi_comm_of(world)) : H5File::create(tmp));
    LETHE_RETURN_IF_ERROR(write_all(f, t, state, meta));
    if (const char* k = std::getenv("LETHE_TEST_KILL_RANK_IN_CHECKPOINT"); k && std::atoi(k) == world.rank()) {
      ::raise(SIGKILL);  // test hook: a rank dying mid-write (tests/checkpoint_kill.sh)
    }
    return f.close();
  }();
  if (!s && parallel) fatal(__FILE__, __LINE__, "rank " + std::to_string(world.rank()) + ": " + s.message());
  if (s && world.rank() == 0) {
    s = [&]() -> Status {
      LETHE_RETURN_IF_ERROR(fsync_path(tmp));
      fs::rename(tmp, final_path, ec);
      if (ec) return Status::error(final_path + ": rename failed: " + ec.message());
      LETHE_RETURN_IF_ERROR(fsync_path(dir));
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
  const auto& params = t.model().params();
  Staged st;
  at::Tensor step;
  // Every rank reads and verifies its own regions; all must succeed before anything changes.
  Status read = [&]() -> Status {
    LETHE_ASSIGN_OR_RETURN(H5File f, open_checkpoint(path));
    for (const auto& [name, sum] : expect.data_checksums) {
      auto stored = f.read_tensor("data/" + name);
      if (stored && static_cast<uint64_t>(stored->item<int64_t>()) != sum) {
        return Status::error(path + ": was trained on different \"" + name +
                             "\" data (token checksum differs): corpus, tokenizer or seq_len changed since");
      }
    }
    LETHE_RETURN_IF_ERROR(read_group(f, params, "model/", mesh, st.params));
    LETHE_RETURN_IF_ERROR(read_group(f, params, "optim/exp_avg/", mesh, st.m, &t.optimizer()));
    LETHE_RETURN_IF_ERROR(read_group(f, params, "optim/exp_avg_sq/", mesh, st.v, &t.optimizer()));
    LETHE_ASSIGN_OR_RETURN(step, f.read_tensor("step"));
    LETHE_ASSIGN_OR_RETURN(st.rng, f.read_tensor("rng_cpu"));
    return read_tree(f, "state", "", st.state);
  }();
  LETHE_RETURN_IF_ERROR(agree(mesh.world(), read).with_context(path));
  // set_state checks before it changes anything; after it, nothing can fail.
  if (Status s = t.set_state(st.state); !s) return s.with_context(path);

  // Everything read and verified: commit.
  copy_into(st.params, values(params));
  copy_into(st.m, t.optimizer().exp_avg());
  copy_into(st.v, t.optimizer().exp_avg_sq());
  t.optimizer().set_steps_taken(step.item<int64_t>());
  at::Generator gen = at::detail::getDefaultCPUGenerator();  // a handle to the shared generator
  gen.set_state(st.rng);
  return Status::ok();
}

Status load_weights(const std::string& path, Llama& model, const Mesh& mesh) {
  if (is_hf_dir(path)) return load_hf_weights(path, model);
  LETHE_ASSIGN_OR_RETURN(H5File f, open_checkpoint(path));
  std::vector<at::Tensor> staged;
  LETHE_RETURN_IF_ERROR(read_group(f, model.params(), "model/", mesh, staged));
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
