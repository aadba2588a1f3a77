#include "io/safetensors.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "base/check.h"
#include "io/atomic_file.h"

namespace lethe {

namespace {

using json = nlohmann::json;

struct Dtype {
  const char* name;
  at::ScalarType type;
};
constexpr Dtype kDtypes[] = {{"F32", at::kFloat}, {"F16", at::kHalf}, {"BF16", at::kBFloat16}};

const char* dtype_name(at::ScalarType t) {
  for (const Dtype& d : kDtypes) if (d.type == t) return d.name;
  return nullptr;
}

uint64_t read_le64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// One header entry checked against the data size; its byte count must match its shape.
Result<SafetensorsEntry> parse_entry(const std::string& name, const json& v, uint64_t data_size) {
  auto bad = [&](const std::string& what) { return Status::error("tensor '" + name + "': " + what); };
  if (!v.is_object()) return bad("expected an object with dtype, shape and data_offsets");
  SafetensorsEntry e;
  e.name = name;
  auto dt = v.find("dtype");
  if (dt == v.end() || !dt->is_string()) return bad("missing dtype");
  const Dtype* known = nullptr;
  for (const Dtype& d : kDtypes) if (*dt == d.name) known = &d;
  if (!known) return bad("dtype " + dt->dump() + " is not supported (F32, F16, BF16)");
  e.dtype = known->type;
  auto shape = v.find("shape");
  if (shape == v.end() || !shape->is_array() || shape->size() > 8) return bad("shape must be an array of at most 8 sizes");
  uint64_t bytes = at::elementSize(e.dtype);
  for (const json& s : *shape) {
    if (!s.is_number_unsigned()) return bad("shape " + shape->dump() + " has a size that is not a non-negative integer");
    const uint64_t n = s.get<uint64_t>();
    if (n > (uint64_t{1} << 62) || (n > 0 && bytes > (uint64_t{1} << 62) / n)) return bad("shape " + shape->dump() + " is absurdly large");
    bytes *= n;
    e.shape.push_back(static_cast<int64_t>(n));
  }
  auto off = v.find("data_offsets");
  if (off == v.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
      !(*off)[1].is_number_unsigned()) {
    return bad("data_offsets must be two non-negative integers");
  }
  e.begin = (*off)[0].get<uint64_t>();
  e.end = (*off)[1].get<uint64_t>();
  if (e.begin > e.end || e.end > data_size) {
    return bad("data_offsets " + off->dump() + " fall outside the " + std::to_string(data_size) + " data bytes");
  }
  if (e.end - e.begin != bytes) {
    return bad("data_offsets " + off->dump() + " hold " + std::to_string(e.end - e.begin) + " bytes, but shape " +
               shape->dump() + " of " + known->name + " needs " + std::to_string(bytes));
  }
  return e;
}

}  // namespace

Result<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  SafetensorsFile f;
  f.path_ = path;
  auto fail = [&](const std::string& what) { return Status::error(path + ": " + what); };
  f.fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (f.fd_ < 0) return fail(std::string("cannot open: ") + std::strerror(errno));
  struct stat st {};
  if (fstat(f.fd_, &st) != 0) return fail("cannot stat");
  f.size_ = static_cast<uint64_t>(st.st_size);
  if (f.size_ < 8) return fail("too short for a safetensors file (" + std::to_string(f.size_) + " bytes)");
  void* m = mmap(nullptr, f.size_, PROT_READ, MAP_SHARED, f.fd_, 0);
  if (m == MAP_FAILED) return fail(std::string("cannot map: ") + std::strerror(errno));
  f.map_ = static_cast<const uint8_t*>(m);
  const uint64_t n = read_le64(f.map_);
  if (n > kMaxHeaderBytes) return fail("header length " + std::to_string(n) + " exceeds the 100 MB bound");
  if (n > f.size_ - 8) return fail("header length " + std::to_string(n) + " runs past the end of the file");
  f.data_start_ = 8 + n;
  const uint64_t data_size = f.size_ - f.data_start_;
  const json h = json::parse(f.map_ + 8, f.map_ + 8 + n, nullptr, /*allow_exceptions=*/false);
  if (h.is_discarded() || !h.is_object()) return fail("the header is not a JSON object");
  for (const auto& [name, v] : h.items()) {
    if (name == "__metadata__") {
      if (!v.is_object()) return fail("__metadata__ must be an object of strings");
      for (const auto& [k, s] : v.items()) {
        if (!s.is_string()) return fail("__metadata__." + k + " is not a string");
        f.metadata_[k] = s.get<std::string>();
      }
      continue;
    }
    auto e = parse_entry(name, v, data_size);
    if (!e) return fail(e.status().message());
    f.entries_.push_back(std::move(*e));
  }
  // The tensors must tile the data section exactly: sorted by offset, each starts where the last ended.
  std::vector<const SafetensorsEntry*> order;
  for (const auto& e : f.entries_) order.push_back(&e);
  std::sort(order.begin(), order.end(), [](auto* a, auto* b) { return a->begin != b->begin ? a->begin < b->begin : a->end < b->end; });
  uint64_t at = 0;
  for (const SafetensorsEntry* e : order) {
    if (e->begin != at) {
      return fail("tensor '" + e->name + "' starts at data byte " + std::to_string(e->begin) + ", expected " +
                  std::to_string(at) + (e->begin < at ? " (it overlaps another tensor)" : " (a gap before it)"));
    }
    at = e->end;
  }
  if (at != data_size) {
    return fail("the tensors cover " + std::to_string(at) + " of the " + std::to_string(data_size) + " data bytes");
  }
  return f;
}

SafetensorsFile::SafetensorsFile(SafetensorsFile&& o) noexcept { *this = std::move(o); }

SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&& o) noexcept {
  std::swap(path_, o.path_);
  std::swap(fd_, o.fd_);
  std::swap(map_, o.map_);
  std::swap(size_, o.size_);
  std::swap(data_start_, o.data_start_);
  std::swap(entries_, o.entries_);
  std::swap(metadata_, o.metadata_);
  return *this;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) munmap(const_cast<uint8_t*>(map_), size_);
  if (fd_ >= 0) ::close(fd_);
}

const SafetensorsEntry* SafetensorsFile::find(const std::string& name) const {
  for (const auto& e : entries_) if (e.name == name) return &e;
  return nullptr;
}

at::Tensor SafetensorsFile::read(const SafetensorsEntry& e, int dim, int64_t start, int64_t length) const {
  std::vector<int64_t> shape = e.shape;
  const auto item = static_cast<int64_t>(at::elementSize(e.dtype));
  int64_t outer = 1, inner = item, full = 1;  // inner: bytes of one step along `dim`
  if (dim < 0) {
    for (int64_t s : shape) full *= s;
    inner *= full;
    start = 0;
    length = 1;
    full = 1;
  } else {
    LETHE_CHECK_MSG(dim < static_cast<int>(shape.size()) && start >= 0 && length >= 0 && start + length <= shape[dim],
                    e.name + ": slice out of range");
    for (int i = 0; i < dim; ++i) outer *= shape[i];
    for (size_t i = dim + 1; i < shape.size(); ++i) inner *= shape[i];
    full = shape[dim];
    shape[dim] = length;
  }
  at::Tensor out = at::empty(shape, at::TensorOptions().dtype(e.dtype));
  auto* dst = static_cast<uint8_t*>(out.data_ptr());
  const uint8_t* src = map_ + data_start_ + e.begin;
  if (length * inner > 0) {  // an empty tensor has no buffer to copy into
    for (int64_t o = 0; o < outer; ++o) std::memcpy(dst + o * length * inner, src + (o * full + start) * inner, length * inner);
  }
  // Release the pages read, so that reading a model shard by shard never holds the file.
  const auto page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  const uint64_t lo = (data_start_ + e.begin) / page * page;
  if (e.end > e.begin) madvise(const_cast<uint8_t*>(map_) + lo, data_start_ + e.end - lo, MADV_DONTNEED);
  return out;
}

Result<SafetensorsWriter> SafetensorsWriter::create(const std::string& path, std::vector<SafetensorsLayout> layouts,
                                                    const std::map<std::string, std::string>& metadata) {
  json h = json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const SafetensorsLayout& l : layouts) {
    const char* dt = dtype_name(l.dtype);
    if (!dt) return Status::error(path + ": tensor '" + l.name + "' has dtype " + c10::toString(l.dtype) + " (F32, F16 or BF16 expected)");
    uint64_t bytes = c10::elementSize(l.dtype);
    for (int64_t d : l.shape) bytes *= static_cast<uint64_t>(d);
    h[l.name] = {{"dtype", dt}, {"shape", l.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string header = h.dump();
  header.append((8 - header.size() % 8) % 8, ' ');  // data 8-byte aligned
  SafetensorsWriter w;
  w.path_ = path;
  w.layouts_ = std::move(layouts);
  w.out_ = std::make_unique<std::ofstream>(path + ".tmp", std::ios::binary | std::ios::trunc);
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(header.size() >> (8 * i));
  w.out_->write(reinterpret_cast<const char*>(len), 8);
  w.out_->write(header.data(), static_cast<std::streamsize>(header.size()));
  if (!*w.out_) return Status::error(path + ".tmp: cannot write (disk full, or no such folder?)");
  return w;
}

SafetensorsWriter::SafetensorsWriter(SafetensorsWriter&&) noexcept = default;
SafetensorsWriter& SafetensorsWriter::operator=(SafetensorsWriter&&) noexcept = default;

SafetensorsWriter::~SafetensorsWriter() {
  if (!out_) return;
  out_.reset();
  std::error_code ec;
  std::filesystem::remove(path_ + ".tmp", ec);
}

Status SafetensorsWriter::append(const at::Tensor& t) {
  if (!out_ || next_ >= layouts_.size()) return Status::error(path_ + ": more tensors appended than declared");
  const SafetensorsLayout& l = layouts_[next_];
  if (t.scalar_type() != l.dtype || t.sizes().vec() != l.shape) {
    return Status::error(path_ + ": tensor '" + l.name + "' appended as " + c10::toString(t.scalar_type()) +
                         c10::str(t.sizes()) + ", declared " + c10::toString(l.dtype) + c10::str(at::IntArrayRef(l.shape)));
  }
  const at::Tensor c = t.detach().cpu().contiguous();
  out_->write(static_cast<const char*>(c.data_ptr()), static_cast<std::streamsize>(c.nbytes()));
  if (!*out_) return Status::error(path_ + ": write failed (disk full?)");
  ++next_;
  return Status::ok();
}

Status SafetensorsWriter::close() {
  if (!out_) return Status::error(path_ + ": already closed");
  if (next_ != layouts_.size()) {
    return Status::error(path_ + ": " + std::to_string(next_) + " of " + std::to_string(layouts_.size()) + " tensors written");
  }
  out_->flush();
  const bool ok = static_cast<bool>(*out_);
  out_.reset();
  const std::string tmp = path_ + ".tmp";
  std::error_code ec;
  if (!ok) {
    std::filesystem::remove(tmp, ec);
    return Status::error(path_ + ": write failed (disk full?)");
  }
  return commit_file(tmp, path_);
}

Status write_safetensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                         const std::map<std::string, std::string>& metadata) {
  std::vector<SafetensorsLayout> layouts;
  for (const auto& [name, t] : tensors) layouts.push_back({name, t.scalar_type(), t.sizes().vec()});
  LETHE_ASSIGN_OR_RETURN(SafetensorsWriter w, SafetensorsWriter::create(path, std::move(layouts), metadata));
  for (const auto& [name, t] : tensors) LETHE_RETURN_IF_ERROR(w.append(t));
  return w.close();
}

}  // namespace lethe
