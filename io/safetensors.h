// The safetensors format (Hugging Face): an 8-byte little-endian header length N, N bytes of JSON
// {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {string: string}}, then
// the raw little-endian data; offsets are relative to the data. F32, F16 and BF16 tensors.
//
// Reading memory-maps the file and validates everything before any tensor is touched: the header
// length (≤ 100 MB and inside the file), the JSON, known dtypes, shapes whose byte counts match
// their offsets without overflow, offsets that tile the data exactly (no gaps, no overlaps, nothing
// past the end). A malformed or hostile file is an error naming the file and the tensor, never an
// out-of-bounds read.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"

namespace lethe {

struct SafetensorsEntry {
  std::string name;
  at::ScalarType dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte offsets in the data section
};

class SafetensorsFile {
 public:
  static constexpr uint64_t kMaxHeaderBytes = 100'000'000;

  static Result<SafetensorsFile> open(const std::string& path);
  SafetensorsFile(SafetensorsFile&&) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&&) noexcept;
  ~SafetensorsFile();

  const std::string& path() const { return path_; }
  const std::vector<SafetensorsEntry>& entries() const { return entries_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const SafetensorsEntry* find(const std::string& name) const;

  // Elements [start, start + length) along `dim` of a tensor (dim < 0: the whole tensor), copied
  // out of the mapping into a new tensor of the file's dtype. Only the bytes of that slice are read,
  // and the pages read are released from this process afterwards (madvise), so importing a shard
  // costs about the shard's memory.
  at::Tensor read(const SafetensorsEntry& e, int dim = -1, int64_t start = 0, int64_t length = -1) const;

 private:
  SafetensorsFile() = default;
  std::string path_;
  int fd_ = -1;
  const uint8_t* map_ = nullptr;
  uint64_t size_ = 0;
  uint64_t data_start_ = 0;
  std::vector<SafetensorsEntry> entries_;
  std::map<std::string, std::string> metadata_;
};

// One tensor a SafetensorsWriter will write: its name, dtype (F32, F16 or BF16) and shape.
struct SafetensorsLayout {
  std::string name;
  at::ScalarType dtype;
  std::vector<int64_t> shape;
};

// A safetensors file written one tensor at a time: the header is written first from the layouts,
// then each tensor's bytes as it is appended, so the writer holds no tensor. The file is made
// under a temporary name and renamed onto `path` by close(); destroyed before, it is removed.
class SafetensorsWriter {
 public:
  static Result<SafetensorsWriter> create(const std::string& path, std::vector<SafetensorsLayout> layouts,
                                          const std::map<std::string, std::string>& metadata = {});
  SafetensorsWriter(SafetensorsWriter&&) noexcept;
  SafetensorsWriter& operator=(SafetensorsWriter&&) noexcept;
  ~SafetensorsWriter();
  // The next tensor, of the next layout's dtype and shape.
  Status append(const at::Tensor& t);
  // After the last tensor: flushes and renames onto the path.
  Status close();

 private:
  SafetensorsWriter() = default;
  std::string path_;
  std::vector<SafetensorsLayout> layouts_;
  size_t next_ = 0;
  std::unique_ptr<std::ofstream> out_;
};

// Writes `tensors` (contiguous or not; F32, F16 or BF16) in order, to a temporary name renamed onto
// `path` once complete.
Status write_safetensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                         const std::map<std::string, std::string>& metadata = {});

}  // namespace lethe
