#include "runtime/checkpoint.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "base/check.h"
#include "base/log.h"
#include "base/torch_compat.h"
#include "io/hdf5_store.h"

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

// Writes `path` via a temporary file, fsync and rename.
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
  for (const Param& p : t.model().params()) bytes += 3 * p.value.numel() * 4;  // weights + two moments
  for (const auto& [name, x] : state) bytes += static_cast<int64_t>(x.nbytes()) + 4096;
  return bytes + static_cast<int64_t>(meta.config_toml.size());
}

Status write_all(H5File& f, Checkpointable& t, const StateTensors& state, const CheckpointMeta& meta) {
  LETHE_RETURN_IF_ERROR(f.set_attr("format", "lethe-checkpoint"));
  LETHE_RETURN_IF_ERROR(f.set_attr("version", kCheckpointVersion));
  LETHE_RETURN_IF_ERROR(f.set_attr("phase", meta.phase));
  LETHE_RETURN_IF_ERROR(f.set_attr("torch_version", compat::kTorchVersion));
  const auto& params = t.model().params();
  for (size_t i = 0; i < params.size(); ++i) {
    const std::string& n = params[i].name;
    LETHE_RETURN_IF_ERROR(f.write_tensor("model/" + n, params[i].value));
    LETHE_RETURN_IF_ERROR(f.write_tensor("optim/exp_avg/" + n, t.optimizer().exp_avg()[i]));
    LETHE_RETURN_IF_ERROR(f.write_tensor("optim/exp_avg_sq/" + n, t.optimizer().exp_avg_sq()[i]));
  }
  LETHE_RETURN_IF_ERROR(f.write_tensor("step", at::scalar_tensor(t.optimizer().steps_taken(), at::kLong)));
  LETHE_RETURN_IF_ERROR(f.write_tensor("rng_cpu", at::detail::getDefaultCPUGenerator().get_state()));
  for (const auto& [name, x] : state) LETHE_RETURN_IF_ERROR(f.write_tensor("state/" + name, x.contiguous()));
  for (const auto& [name, sum] : meta.data_checksums) {
    LETHE_RETURN_IF_ERROR(f.write_tensor("data/" + name, at::scalar_tensor(static_cast<int64_t>(sum), at::kLong)));
  }
  return f.write_string("config", meta.config_toml);
}

std::string step_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step-%08lld.h5", static_cast<long long>(step));
  return buf;
}

// Reads a parameter-shaped dataset and cuts this rank's slice.
Result<at::Tensor> read_shard(const H5File& f, const std::string& key, const Param& p, int tp_rank, int tp_size) {
  LETHE_ASSIGN_OR_RETURN(at::Tensor full, f.read_tensor(key));
  if ((p.name == "embed" || p.name == "lm_head") && full.dim() == 2 && full.size(0) != p.global_shape[0]) {
    return Status::error(f.path() + ": " + key + ": the checkpoint's vocabulary has " + std::to_string(full.size(0)) +
                         " tokens, this run's model.vocab_size is " + std::to_string(p.global_shape[0]) +
                         ": it was trained with another tokenizer or vocabulary");
  }
  if (full.sizes().vec() != p.global_shape) {
    return Status::error(f.path() + ": " + key + ": shape " + c10::str(full.sizes()) + ", expected " +
                         c10::str(at::IntArrayRef(p.global_shape)));
  }
  if (p.split_dim < 0) return full;
  const int64_t n = p.global_shape[p.split_dim] / tp_size;
  return full.narrow(p.split_dim, tp_rank * n, n).contiguous();
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

// Reads `prefix + name` for every parameter of `params`, sliced for this rank.
Status read_group(const H5File& f, const std::vector<Param>& params, const std::string& prefix, const Mesh& mesh,
                  std::vector<at::Tensor>& out) {
  for (const Param& p : params) {
    LETHE_ASSIGN_OR_RETURN(at::Tensor x, read_shard(f, prefix + p.name, p, mesh.tp_rank(), mesh.tp_size()));
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

Result<std::string> save_checkpoint(const std::string& dir, Checkpointable& t, const CheckpointMeta& meta, int64_t keep) {
  LETHE_CHECK_MSG(t.mesh().world().size() == 1, "checkpoint writes from several ranks need the parallel writer");
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return Status::error(dir + ": cannot create: " + ec.message());
  const std::string name = step_name(t.optimizer().steps_taken());
  const StateTensors state = t.state();
  const std::string final_path = dir + "/" + name, tmp = final_path + ".tmp";
  Status s = [&]() -> Status {
    LETHE_RETURN_IF_ERROR(reserve_space(tmp, checkpoint_bytes(t, state, meta)));
    LETHE_ASSIGN_OR_RETURN(H5File f, H5File::create(tmp));
    LETHE_RETURN_IF_ERROR(write_all(f, t, state, meta));
    LETHE_RETURN_IF_ERROR(f.close());
    LETHE_RETURN_IF_ERROR(fsync_path(tmp));
    fs::rename(tmp, final_path, ec);
    if (ec) return Status::error(final_path + ": rename failed: " + ec.message());
    LETHE_RETURN_IF_ERROR(fsync_path(dir));
    return write_file_atomic(dir + "/latest", name + "\n");
  }();
  if (!s) {
    fs::remove(tmp, ec);
    return s.with_context("checkpoint not written; earlier checkpoints are untouched");
  }
  std::vector<std::string> all = list_checkpoints(dir);
  for (size_t i = static_cast<size_t>(keep); i < all.size(); ++i) fs::remove(all[i], ec);
  return final_path;
}

Status load_checkpoint(const std::string& path, Checkpointable& t, const CheckpointMeta& expect) {
  LETHE_ASSIGN_OR_RETURN(H5File f, open_checkpoint(path));
  for (const auto& [name, sum] : expect.data_checksums) {
    auto stored = f.read_tensor("data/" + name);
    if (stored && static_cast<uint64_t>(stored->item<int64_t>()) != sum) {
      return Status::error(path + ": was trained on different \"" + name +
                           "\" data (token checksum differs): corpus, tokenizer or seq_len changed since");
    }
  }
  const Mesh& mesh = t.mesh();
  const auto& params = t.model().params();
  Staged st;
  LETHE_RETURN_IF_ERROR(read_group(f, params, "model/", mesh, st.params));
  LETHE_RETURN_IF_ERROR(read_group(f, params, "optim/exp_avg/", mesh, st.m));
  LETHE_RETURN_IF_ERROR(read_group(f, params, "optim/exp_avg_sq/", mesh, st.v));
  LETHE_ASSIGN_OR_RETURN(at::Tensor step, f.read_tensor("step"));
  LETHE_ASSIGN_OR_RETURN(st.rng, f.read_tensor("rng_cpu"));
  LETHE_RETURN_IF_ERROR(read_tree(f, "state", "", st.state));
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
