// An HDF5 file of named tensors, strings and attributes; the storage under checkpoints.
//
// Every tensor is one dataset of its full logical shape with two attributes: "dtype" (the torch
// dtype name; 16-bit floats are stored as uint16 because HDF5 1.10 has no bf16) and "xxh3_64",
// a checksum of its raw bytes that read_tensor verifies. Names may contain '/' (groups are
// created as needed) and '.' (kept: "model/layers.0.attn.wq"). Readable with h5py.
// Handles are RAII; every HDF5 return code is checked and turned into a Status naming the file
// and the object.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"

namespace lethe {

class H5File {
 public:
  static Result<H5File> create(const std::string& path);  // truncates
  static Result<H5File> open(const std::string& path);    // read-only
  H5File(H5File&& o) noexcept;
  H5File& operator=(H5File&& o) noexcept;
  H5File(const H5File&) = delete;
  H5File& operator=(const H5File&) = delete;
  ~H5File();

  Status write_tensor(const std::string& name, const at::Tensor& t);
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

  // Flushes and closes; after this the object is empty. A failure here (full disk) is reported.
  Status close();
  const std::string& path() const { return path_; }

 private:
  H5File(int64_t id, std::string path) : id_(id), path_(std::move(path)) {}
  Status error(const std::string& what) const { return Status::error(path_ + ": " + what); }
  int64_t id_ = -1;  // hid_t
  std::string path_;
};

// xxh3-64 of a contiguous tensor's bytes.
uint64_t tensor_checksum(const at::Tensor& t);

}  // namespace lethe
