// An HDF5 file of named tensors, strings and attributes; the storage under checkpoints.
//
// Every tensor is one dataset of its full logical shape with two attributes: "dtype" (the torch
// dtype name; 16-bit floats are stored as uint16 because HDF5 1.10 has no bf16) and "xxh3_64",
// a checksum of its raw bytes that read_tensor verifies. Names may contain '/' (groups are
// created as needed) and '.' (kept: "model/layers.0.attn.wq"). Readable with h5py.
// Handles are RAII; every HDF5 return code is checked and turned into a Status naming the file
// and the object. Files are sealed (Note [Sealed files] in hdf5_store.cc): open() refuses a file
// whose whole-file checksum does not match before libhdf5 parses any of it.
#pragma once

#include <ATen/core/Tensor.h>
#include <mpi.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "base/status.h"


namespace lethe {

// A rectangular region of a dataset: start and count per dimension.
struct Box {
  std::vector<int64_t> start, count;
  int64_t numel() const;
};

// One piece of a sharded dataset: its region, the writer's checksum of its bytes, and whether this
// rank writes it (with `data`, of the box's shape).
struct Piece {
  Box box;
  uint64_t xxh3 = 0;
};

class H5File {
 public:
  static Result<H5File> create(const std::string& path);  // truncates
  // Collective over `comm`: one file written by every rank through MPI-IO. In this mode every
  // write below is collective (same names, shapes and order on every rank); write_tensor and
  // write_string store rank 0's data and checksum, write_sharded each rank's own piece. Each
  // collective call runs under a Deadline of `timeout_s`: a rank stalled past it ends the job with
  // a message naming the rank, the file and the dataset.
  static Result<H5File> create_parallel(const std::string& path, MPI_Comm comm, double timeout_s);
  // Read-only, after verify_seal.
  static Result<H5File> open(const std::string& path);
  // After close(), on one rank: writes the whole-file checksum into the user block.
  static Status seal(const std::string& path);
  // OK when the file's seal matches its contents (the check open() makes).
  static Status verify_seal(const std::string& path);
  H5File(H5File&& o) noexcept;
  H5File& operator=(H5File&& o) noexcept;
  H5File(const H5File&) = delete;
  H5File& operator=(const H5File&) = delete;
  ~H5File();

  Status write_tensor(const std::string& name, const at::Tensor& t);
  // A dataset of `global_shape` tiled by `pieces` (every rank passes the same list, checksums
  // included); this rank writes the pieces indexed by `mine` (none: nothing), in increasing
  // row-major order, from `data`: their elements one after another (any shape, `dtype`). The
  // pieces' boxes and checksums are stored as attributes, so any region can be read back and verified.
  Status write_sharded(const std::string& name, const std::vector<int64_t>& global_shape, at::ScalarType dtype,
                       const std::vector<Piece>& pieces, const std::vector<int>& mine, const at::Tensor& data);
  // The region `box` of a dataset written by write_sharded (or write_tensor), verifying the
  // checksum of every stored piece it overlaps (reading those pieces whole).
  Result<at::Tensor> read_box(const std::string& name, const Box& box) const;
  // The full logical shape of a dataset.
  Result<std::vector<int64_t>> shape(const std::string& name) const;
  // A checksum of the dataset's contents from its stored checksum attributes alone (no data read):
  // its xxh3_64, or the xxh3 of its pieces' checksums.
  Result<uint64_t> stored_checksum(const std::string& name) const;
  // Reads and verifies the checksum. REQUIRES: the dataset was written by write_tensor.
  Result<at::Tensor> read_tensor(const std::string& name) const;
  Status write_string(const std::string& name, const std::string& s);
  Result<std::string> read_string(const std::string& name) const;
  // Attributes on the root group.
  Status set_attr(const std::string& key, int64_t v);
  Status set_attr(const std::string& key, const std::string& v);
  Result<int64_t> attr_int(const std::string& key) const;
  Result<std::string> attr_string(const std::string& key) const;
  bool exists(const std::string& name) const;
  // Names of the objects directly inside `group`, sorted.
  std::vector<std::string> list(const std::string& group) const;

  // Flushes and closes (collective for a parallel file); after this the object is empty. A failure
  // here (full disk) is reported.
  Status close();
  const std::string& path() const { return path_; }

 private:
  H5File(int64_t id, std::string path, bool parallel = false, int rank = 0)
      : id_(id), path_(std::move(path)), parallel_(parallel), rank_(rank) {}
  // Runs `call`, under the deadline when the file is parallel.
  Status collective(const std::string& what, const std::function<Status()>& call) const;
  Status write_tensor_now(const std::string& name, const at::Tensor& t);
  Status write_sharded_now(const std::string& name, const std::vector<int64_t>& global_shape, at::ScalarType dtype,
                           const std::vector<Piece>& pieces, const std::vector<int>& mine, const at::Tensor& data);
  Result<at::Tensor> read_region(int64_t ds, int64_t file_type, at::ScalarType scalar, const Box& box) const;
  Status error(const std::string& what) const { return Status::error(path_ + ": " + what); }
  int64_t id_ = -1;  // hid_t
  std::string path_;
  bool parallel_ = false;  // created with create_parallel: writes are collective
  int rank_ = 0, size_ = 1;  // this rank and the ranks of the parallel file's communicator
  MPI_Comm comm_ = MPI_COMM_NULL;
  double timeout_s_ = 0;
};

// xxh3-64 of a contiguous tensor's bytes.
uint64_t tensor_checksum(const at::Tensor& t);

}  // namespace lethe
