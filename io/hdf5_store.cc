#include "io/hdf5_store.h"

#include <ATen/ATen.h>
#include <hdf5.h>
#include <xxhash.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <tuple>
#include <utility>

#include "base/deadline.h"

namespace lethe {

namespace {

// RAII for one hid_t with its matching close function.
class Handle {
 public:
  Handle(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
  Handle(Handle&& o) noexcept : id_(o.id_), close_(o.close_) { o.id_ = -1; }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  ~Handle() {
    if (id_ >= 0) close_(id_);
  }
  hid_t get() const { return id_; }
  bool ok() const { return id_ >= 0; }

 private:
  hid_t id_;
  herr_t (*close_)(hid_t);
};

struct TypeInfo {
  at::ScalarType scalar;
  const char* name;
  hid_t (*h5)();
};
hid_t t_f32() { return H5T_NATIVE_FLOAT; }
hid_t t_f64() { return H5T_NATIVE_DOUBLE; }
hid_t t_i64() { return H5T_NATIVE_INT64; }
hid_t t_i32() { return H5T_NATIVE_INT32; }
hid_t t_u8() { return H5T_NATIVE_UINT8; }
hid_t t_u16() { return H5T_NATIVE_UINT16; }
const TypeInfo kTypes[] = {
    {at::kFloat, "float32", t_f32}, {at::kDouble, "float64", t_f64}, {at::kLong, "int64", t_i64},
    {at::kInt, "int32", t_i32},     {at::kByte, "uint8", t_u8},      {at::kBFloat16, "bfloat16", t_u16},
    {at::kHalf, "float16", t_u16},
};

const TypeInfo* type_of(at::ScalarType s) {
  for (const auto& t : kTypes) if (t.scalar == s) return &t;
  return nullptr;
}
const TypeInfo* type_named(const std::string& n) {
  for (const auto& t : kTypes) if (n == t.name) return &t;
  return nullptr;
}

// Property lists; an invalid handle (a failed H5P call) makes the call that uses it fail, and that
// failure is checked there.
Handle link_props() {
  Handle p(H5Pcreate(H5P_LINK_CREATE), H5Pclose);
  if (p.ok() && H5Pset_create_intermediate_group(p.get(), 1) < 0) return Handle(-1, H5Pclose);
  return p;
}

Handle collective_xfer() {
  Handle p(H5Pcreate(H5P_DATASET_XFER), H5Pclose);
  if (p.ok() && H5Pset_dxpl_mpio(p.get(), H5FD_MPIO_COLLECTIVE) < 0) return Handle(-1, H5Pclose);
  return p;
}

// Every file reserves a user block that HDF5 skips: the seal (Note [Sealed files]).
constexpr hsize_t kUserBlock = 512;
constexpr char kSealMagic[] = "lethe-xxh3-64\n";

Handle file_create_props() {
  Handle p(H5Pcreate(H5P_FILE_CREATE), H5Pclose);
  if (p.ok() && H5Pset_userblock(p.get(), kUserBlock) < 0) return Handle(-1, H5Pclose);
  return p;
}

herr_t write_array_attr(hid_t obj, const std::string& key, hid_t type, std::vector<hsize_t> dims, const void* data) {
  Handle space(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), H5Sclose);
  if (!space.ok()) return -1;
  Handle a(H5Acreate2(obj, key.c_str(), type, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  return a.ok() ? H5Awrite(a.get(), type, data) : -1;
}

// Reads a 1- or 2-d attribute of `type` into `out` (resized); false when absent or malformed.
template <class T>
bool read_array_attr(hid_t obj, const std::string& key, hid_t type, std::vector<T>& out, std::vector<hsize_t>& dims) {
  if (H5Aexists(obj, key.c_str()) <= 0) return false;
  Handle a(H5Aopen(obj, key.c_str(), H5P_DEFAULT), H5Aclose);
  Handle space(H5Aget_space(a.get()), H5Sclose);
  const int nd = H5Sget_simple_extent_ndims(space.get());
  if (nd < 1 || nd > 2) return false;
  dims.assign(static_cast<size_t>(nd), 0);
  if (H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr) < 0) return false;
  const hssize_t n = H5Sget_simple_extent_npoints(space.get());
  if (n < 0 || n > (hssize_t{1} << 24)) return false;  // a checksum table, not a crafted 10^12 entries
  out.assign(static_cast<size_t>(n), T{});
  return H5Aread(a.get(), type, out.data()) >= 0;
}

herr_t write_attr(hid_t obj, const std::string& key, hid_t type, const void* data) {
  if (H5Aexists(obj, key.c_str()) > 0 && H5Adelete(obj, key.c_str()) < 0) return -1;
  Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  Handle a(H5Acreate2(obj, key.c_str(), type, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  return a.ok() ? H5Awrite(a.get(), type, data) : -1;
}

herr_t write_str_attr(hid_t obj, const std::string& key, const std::string& v) {
  Handle type(H5Tcopy(H5T_C_S1), H5Tclose);
  if (H5Tset_size(type.get(), std::max<size_t>(1, v.size())) < 0) return -1;
  std::string padded = v.empty() ? std::string(1, '\0') : v;
  return write_attr(obj, key, type.get(), padded.data());
}

bool read_str_attr(hid_t obj, const std::string& key, std::string& out) {
  if (H5Aexists(obj, key.c_str()) <= 0) return false;
  Handle a(H5Aopen(obj, key.c_str(), H5P_DEFAULT), H5Aclose);
  Handle type(H5Aget_type(a.get()), H5Tclose);
  if (H5Tget_class(type.get()) != H5T_STRING) return false;
  const size_t n = H5Tget_size(type.get());
  if (n == 0 || n > (size_t{1} << 20)) return false;  // attributes are short
  Handle space(H5Aget_space(a.get()), H5Sclose);
  if (H5Sget_simple_extent_npoints(space.get()) != 1) return false;
  std::string buf(n, '\0');
  Handle mem(H5Tcopy(H5T_C_S1), H5Tclose);
  if (H5Tset_size(mem.get(), n) < 0 || H5Aread(a.get(), mem.get(), buf.data()) < 0) return false;
  out = buf.substr(0, buf.find('\0'));
  return true;
}

// xxh3-64 of a file's bytes after the user block: {checksum, end offset, last read's result (0: EOF, <0: error)}.
std::tuple<uint64_t, off_t, ssize_t> checksum_after_user_block(int fd) {
  XXH3_state_t* st = XXH3_createState();
  XXH3_64bits_reset(st);
  std::vector<char> buf(size_t{8} << 20);
  off_t at = static_cast<off_t>(kUserBlock);
  ssize_t n = 0;
  while ((n = ::pread(fd, buf.data(), buf.size(), at)) > 0) {
    XXH3_64bits_update(st, buf.data(), static_cast<size_t>(n));
    at += n;
  }
  const uint64_t sum = XXH3_64bits_digest(st);
  XXH3_freeState(st);
  return {sum, at, n};
}

std::string seal_line(uint64_t sum, int64_t length) {
  char b[64];
  std::snprintf(b, sizeof b, "%s%016llx %lld\n", kSealMagic, static_cast<unsigned long long>(sum), static_cast<long long>(length));
  return b;
}

std::string fmt_hex(uint64_t v) {
  char b[17];
  std::snprintf(b, sizeof b, "%016llx", static_cast<unsigned long long>(v));
  return b;
}

}  // namespace

int64_t Box::numel() const {
  int64_t n = 1;
  for (int64_t c : count) n *= c;
  return n;
}

uint64_t tensor_checksum(const at::Tensor& t) {
  at::Tensor c = t.cpu().contiguous();
  return XXH3_64bits(c.data_ptr(), c.numel() * c.element_size());
}

Result<H5File> H5File::create(const std::string& path) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  Handle fcpl = file_create_props();
  hid_t id = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, fcpl.get(), H5P_DEFAULT);
  if (id < 0) return Status::error(path + ": cannot create the HDF5 file");
  return H5File(id, path);
}

Result<H5File> H5File::create_parallel(const std::string& path, MPI_Comm comm, double timeout_s) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  int rank = 0, size = 1;
  if (MPI_Comm_rank(comm, &rank) != MPI_SUCCESS || MPI_Comm_size(comm, &size) != MPI_SUCCESS)
    return Status::error(path + ": not a valid MPI communicator for MPI-IO");
  H5File f(-1, path, /*parallel=*/true, rank);
  f.comm_ = comm;
  f.size_ = size;
  f.timeout_s_ = timeout_s;
  Status s = f.collective("creating the file", [&]() -> Status {
    Handle fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
    Handle fcpl = file_create_props();
    if (!fapl.ok() || H5Pset_fapl_mpio(fapl.get(), comm, MPI_INFO_NULL) < 0) return f.error("cannot set up MPI-IO");
    f.id_ = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, fcpl.get(), fapl.get());
    return f.id_ < 0 ? f.error("cannot create the HDF5 file (MPI-IO)") : Status::ok();
  });
  if (!s) return s;
  return f;
}

// Note [Sealed files]: libhdf5 can crash on a crafted or corrupted file, so no file reaches it
// unverified. Every file Lethe writes starts with a 512-byte user block, which HDF5 skips; once the
// file is closed, seal() writes there the xxh3-64 and the length of everything after it. open()
// checks both before HDF5 sees the file. Verified (path, size, mtime) are remembered for the
// process, so a checkpoint opened several times is read once.
Status H5File::seal(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDWR);
  if (fd < 0) return Status::error(path + ": cannot open to seal (" + std::strerror(errno) + ")");
  const auto [sum, at, n] = checksum_after_user_block(fd);
  char block[kUserBlock] = {};
  const std::string line = seal_line(sum, at - static_cast<off_t>(kUserBlock));
  std::memcpy(block, line.data(), line.size());
  const bool ok = n == 0 && ::pwrite(fd, block, sizeof block, 0) == static_cast<ssize_t>(sizeof block);
  ::close(fd);
  return ok ? Status::ok() : Status::error(path + ": cannot seal (read or write failed: " + std::strerror(errno) + ")");
}

Status H5File::verify_seal(const std::string& path) {
  struct stat info {};
  if (::stat(path.c_str(), &info) != 0) return Status::error(path + ": missing or unreadable (" + std::strerror(errno) + ")");
  static std::mutex mu;
  static std::map<std::string, std::pair<int64_t, int64_t>> verified;  // path → (size, mtime ns)
  const std::pair<int64_t, int64_t> id{info.st_size, int64_t{info.st_mtim.tv_sec} * 1000000000 + info.st_mtim.tv_nsec};
  {
    std::lock_guard<std::mutex> lock(mu);
    if (auto it = verified.find(path); it != verified.end() && it->second == id) return Status::ok();
  }
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return Status::error(path + ": cannot open (" + std::strerror(errno) + ")");
  char block[kUserBlock + 1] = {};
  const ssize_t head = ::pread(fd, block, kUserBlock, 0);
  unsigned long long stored = 0;
  long long length = -1;
  const size_t magic = sizeof kSealMagic - 1;
  if (head != static_cast<ssize_t>(kUserBlock) || std::memcmp(block, kSealMagic, magic) != 0 ||
      std::sscanf(block + magic, "%16llx %lld", &stored, &length) != 2) {
    ::close(fd);
    return Status::error(path + ": no Lethe seal in its first " + std::to_string(kUserBlock) +
                         " bytes (not written by Lethe, written before sealing, or corrupt); not opened");
  }
  // The seal line exactly as seal() writes it (no other spelling of the same numbers), then zeros.
  const std::string line = seal_line(stored, length);
  const char* block_end = block + kUserBlock;
  if (std::memcmp(block, line.data(), line.size()) != 0 ||
      std::any_of(static_cast<const char*>(block) + line.size(), block_end, [](char c) { return c != 0; })) {
    ::close(fd);
    return Status::error(path + ": the user block is not the seal and zeros (corrupt); not opened");
  }
  if (length != info.st_size - static_cast<long long>(kUserBlock)) {
    ::close(fd);
    return Status::error(path + ": " + std::to_string(info.st_size) + " bytes, the seal says " +
                         std::to_string(length + static_cast<long long>(kUserBlock)) + " (truncated or appended to); not opened");
  }
  const auto [actual, at, n] = checksum_after_user_block(fd);
  ::close(fd);
  if (n < 0) return Status::error(path + ": read failed (" + std::string(std::strerror(errno)) + ")");
  if (actual != stored) {
    return Status::error(path + ": file checksum mismatch (sealed " + fmt_hex(stored) + ", computed " + fmt_hex(actual) +
                         "): the file is corrupt; not opened");
  }
  std::lock_guard<std::mutex> lock(mu);
  verified[path] = id;
  return Status::ok();
}

Result<H5File> H5File::open(const std::string& path) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  LETHE_RETURN_IF_ERROR(verify_seal(path));
  if (H5Fis_hdf5(path.c_str()) <= 0)
    return Status::error(path + ": missing, unreadable or not an HDF5 file (truncated or corrupt?)");
  hid_t id = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (id < 0) return Status::error(path + ": cannot open as HDF5 (truncated or corrupt?)");
  return H5File(id, path);
}

Status H5File::collective(const std::string& what, const std::function<Status()>& call) const {
  if (!parallel_) return call();
  Deadline d("rank " + std::to_string(rank_) + " of " + std::to_string(size_) + ": " + path_ + ": " + what +
                 " did not complete within " + std::to_string(timeout_s_) +
                 " s (run.collective_timeout_s): a peer rank died or hung in this collective checkpoint write, or the file "
                 "system is full or stalled",
             timeout_s_);
  return call();
}

H5File::H5File(H5File&& o) noexcept
    : id_(o.id_), path_(std::move(o.path_)), parallel_(o.parallel_), rank_(o.rank_), size_(o.size_), comm_(o.comm_),
      timeout_s_(o.timeout_s_) {
  o.id_ = -1;
}
H5File& H5File::operator=(H5File&& o) noexcept {
  if (this != &o) {
    (void)close();
    id_ = std::exchange(o.id_, -1);
    path_ = std::move(o.path_);
    parallel_ = o.parallel_;
    rank_ = o.rank_;
    size_ = o.size_;
    comm_ = o.comm_;
    timeout_s_ = o.timeout_s_;
  }
  return *this;
}
H5File::~H5File() { (void)close(); }

Status H5File::close() {
  if (id_ < 0) return Status::ok();
  return collective("closing the file", [&] {
    herr_t f = H5Fflush(id_, H5F_SCOPE_GLOBAL);
    herr_t c = H5Fclose(id_);
    id_ = -1;
    return f < 0 || c < 0 ? error("flush/close failed (disk full?)") : Status::ok();
  });
}

Status H5File::write_tensor(const std::string& name, const at::Tensor& tensor) {
  return collective("writing " + name, [&] { return write_tensor_now(name, tensor); });
}

Status H5File::write_tensor_now(const std::string& name, const at::Tensor& tensor) {
  const TypeInfo* type = type_of(tensor.scalar_type());
  if (!type) return error(name + ": unsupported dtype " + std::string(c10::toString(tensor.scalar_type())));
  at::Tensor t = tensor.detach().cpu().contiguous();
  std::vector<hsize_t> dims(t.sizes().begin(), t.sizes().end());
  Handle space(dims.empty() ? H5Screate(H5S_SCALAR) : H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), H5Sclose);
  Handle lcpl = link_props();
  Handle ds(H5Dcreate2(id_, name.c_str(), type->h5(), space.get(), lcpl.get(), H5P_DEFAULT, H5P_DEFAULT), H5Dclose);
  if (!ds.ok()) return error(name + ": cannot create the dataset");
  uint64_t sum = tensor_checksum(t);
  if (parallel_) {  // rank 0's data and checksum; the others take part with an empty selection
    if (MPI_Bcast(&sum, 1, MPI_UINT64_T, 0, comm_) != MPI_SUCCESS) return error(name + ": MPI_Bcast of its checksum failed");
    Handle xfer = collective_xfer();
    if (rank_ != 0 && t.numel() > 0 && H5Sselect_none(space.get()) < 0) return error(name + ": cannot select");
    Handle mem(H5Scopy(space.get()), H5Sclose);
    if (t.numel() > 0 && H5Dwrite(ds.get(), type->h5(), mem.get(), space.get(), xfer.get(), t.data_ptr()) < 0)
      return error(name + ": write failed (disk full?)");
  } else if (t.numel() > 0 && H5Dwrite(ds.get(), type->h5(), H5S_ALL, H5S_ALL, H5P_DEFAULT, t.data_ptr()) < 0) {
    return error(name + ": write failed (disk full?)");
  }
  if (write_str_attr(ds.get(), "dtype", type->name) < 0 || write_attr(ds.get(), "xxh3_64", H5T_NATIVE_UINT64, &sum) < 0)
    return error(name + ": cannot write attributes");
  return Status::ok();
}

Status H5File::write_sharded(const std::string& name, const std::vector<int64_t>& global_shape, at::ScalarType dtype,
                             const std::vector<Piece>& pieces, const std::vector<int>& mine, const at::Tensor& data) {
  return collective("writing " + name, [&] { return write_sharded_now(name, global_shape, dtype, pieces, mine, data); });
}

Status H5File::write_sharded_now(const std::string& name, const std::vector<int64_t>& global_shape, at::ScalarType dtype,
                                 const std::vector<Piece>& pieces, const std::vector<int>& mine, const at::Tensor& data) {
  const TypeInfo* type = type_of(dtype);
  if (!type) return error(name + ": unsupported dtype " + std::string(c10::toString(dtype)));
  const int nd = static_cast<int>(global_shape.size());
  std::vector<hsize_t> dims(global_shape.begin(), global_shape.end());
  Handle space(H5Screate_simple(nd, dims.data(), nullptr), H5Sclose);
  Handle lcpl = link_props();
  Handle ds(H5Dcreate2(id_, name.c_str(), type->h5(), space.get(), lcpl.get(), H5P_DEFAULT, H5P_DEFAULT), H5Dclose);
  if (!ds.ok()) return error(name + ": cannot create the dataset");
  std::vector<int64_t> starts, counts;
  std::vector<uint64_t> sums;
  for (const Piece& p : pieces) {
    starts.insert(starts.end(), p.box.start.begin(), p.box.start.end());
    counts.insert(counts.end(), p.box.count.begin(), p.box.count.end());
    sums.push_back(p.xxh3);
  }
  const std::vector<hsize_t> table{pieces.size(), static_cast<hsize_t>(nd)};
  if (write_str_attr(ds.get(), "dtype", type->name) < 0 ||
      write_array_attr(ds.get(), "piece_start", H5T_NATIVE_INT64, table, starts.data()) < 0 ||
      write_array_attr(ds.get(), "piece_count", H5T_NATIVE_INT64, table, counts.data()) < 0 ||
      write_array_attr(ds.get(), "piece_xxh3", H5T_NATIVE_UINT64, {pieces.size()}, sums.data()) < 0)
    return error(name + ": cannot write attributes");
  // This rank's boxes as one selection (a union of hyperslabs is traversed in row-major order,
  // the order of `data`), read from a 1-D memory space.
  at::Tensor t = mine.empty() ? at::Tensor() : data.detach().cpu().to(dtype).contiguous();
  int64_t total = 0;
  if (H5Sselect_none(space.get()) < 0) return error(name + ": cannot select");
  for (int i : mine) {
    const Box& box = pieces[static_cast<size_t>(i)].box;
    std::vector<hsize_t> start(box.start.begin(), box.start.end()), count(box.count.begin(), box.count.end());
    if (box.numel() == 0) continue;
    if (H5Sselect_hyperslab(space.get(), H5S_SELECT_OR, start.data(), nullptr, count.data(), nullptr) < 0)
      return error(name + ": cannot select piece " + std::to_string(i));
    total += box.numel();
  }
  if (t.defined() && t.numel() != total) {
    return error(name + ": " + std::to_string(t.numel()) + " elements given for pieces of " + std::to_string(total));
  }
  const hsize_t mem_count = static_cast<hsize_t>(total);
  Handle mem(total > 0 ? H5Screate_simple(1, &mem_count, nullptr) : H5Screate(H5S_SCALAR), H5Sclose);
  if (total == 0 && H5Sselect_none(mem.get()) < 0) return error(name + ": cannot select");
  Handle xfer = parallel_ ? collective_xfer() : Handle(H5Pcreate(H5P_DATASET_XFER), H5Pclose);
  if ((parallel_ || total > 0) &&
      H5Dwrite(ds.get(), type->h5(), mem.get(), space.get(), xfer.get(), total > 0 ? t.data_ptr() : nullptr) < 0)
    return error(name + ": write failed (disk full?)");
  return Status::ok();
}

Result<at::Tensor> H5File::read_region(int64_t ds, int64_t file_type, at::ScalarType scalar, const Box& box) const {
  Handle space(H5Dget_space(ds), H5Sclose);
  std::vector<hsize_t> start(box.start.begin(), box.start.end()), count(box.count.begin(), box.count.end());
  at::Tensor t = at::empty(box.count, at::TensorOptions().dtype(scalar));
  if (t.numel() == 0) return t;
  if (!count.empty() && H5Sselect_hyperslab(space.get(), H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr) < 0)
    return Status::error("cannot select the region");
  Handle mem(count.empty() ? H5Screate(H5S_SCALAR) : H5Screate_simple(static_cast<int>(count.size()), count.data(), nullptr),
             H5Sclose);
  if (H5Dread(ds, file_type, mem.get(), space.get(), H5P_DEFAULT, t.data_ptr()) < 0)
    return Status::error("read failed (truncated or corrupt file?)");
  return t;
}

Result<std::vector<int64_t>> H5File::shape(const std::string& name) const {
  if (!exists(name)) return error("no dataset \"" + name + "\"");
  Handle ds(H5Dopen2(id_, name.c_str(), H5P_DEFAULT), H5Dclose);
  Handle space(H5Dget_space(ds.get()), H5Sclose);
  const int nd = H5Sget_simple_extent_ndims(space.get());
  if (nd < 0) return error(name + ": unreadable dataspace");
  std::vector<hsize_t> dims(static_cast<size_t>(nd));
  if (H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr) < 0) return error(name + ": unreadable dataspace");
  return std::vector<int64_t>(dims.begin(), dims.end());
}

Result<uint64_t> H5File::stored_checksum(const std::string& name) const {
  if (!exists(name)) return error(name + ": no such dataset");
  Handle ds(H5Dopen2(id_, name.c_str(), H5P_DEFAULT), H5Dclose);
  if (H5Aexists(ds.get(), "xxh3_64") > 0) {
    uint64_t stored = 0;
    Handle a(H5Aopen(ds.get(), "xxh3_64", H5P_DEFAULT), H5Aclose);
    if (H5Aread(a.get(), H5T_NATIVE_UINT64, &stored) < 0) return error(name + ": unreadable checksum attribute");
    return stored;
  }
  std::vector<uint64_t> sums;
  std::vector<hsize_t> hd;
  if (!read_array_attr(ds.get(), "piece_xxh3", H5T_NATIVE_UINT64, sums, hd)) return error(name + ": missing checksum attributes");
  return static_cast<uint64_t>(XXH3_64bits(sums.data(), sums.size() * sizeof(uint64_t)));
}

// Note [Pieces]: a sharded dataset carries the boxes its writers wrote and each box's xxh3. A
// reader wanting any region reads every stored piece that overlaps it, verifies it, and copies the
// overlap; the pieces must cover the region exactly once. So a checkpoint saved at one tp × dp is
// verified when loaded at another, reading at most the pieces it overlaps.
Result<at::Tensor> H5File::read_box(const std::string& name, const Box& want) const {
  LETHE_ASSIGN_OR_RETURN(std::vector<int64_t> dims, shape(name));
  Handle ds(H5Dopen2(id_, name.c_str(), H5P_DEFAULT), H5Dclose);
  std::string dtype;
  if (!read_str_attr(ds.get(), "dtype", dtype) || !type_named(dtype)) return error(name + ": missing or unknown \"dtype\" attribute");
  const TypeInfo* type = type_named(dtype);
  const size_t nd = dims.size();
  // A shape is believed only as far as the file stores its bytes (Lethe never compresses): a
  // crafted 10^12-element shape is refused here, before anything is allocated for it.
  uint64_t bytes = at::elementSize(type->scalar);
  for (int64_t d : dims) {
    if (d < 0 || (d > 0 && bytes > UINT64_MAX / static_cast<uint64_t>(d))) return error(name + ": impossible shape");
    bytes *= static_cast<uint64_t>(d);
  }
  if (bytes > H5Dget_storage_size(ds.get())) {
    return error(name + ": its shape " + c10::str(at::IntArrayRef(dims)) + " needs " + std::to_string(bytes) +
                 " bytes, the file stores " + std::to_string(H5Dget_storage_size(ds.get())) + " (truncated or crafted)");
  }
  if (want.start.size() != nd || want.count.size() != nd) return error(name + ": asked for a region of another rank");
  for (size_t d = 0; d < nd; ++d) {
    if (want.start[d] < 0 || want.count[d] < 0 || want.start[d] + want.count[d] > dims[d])
      return error(name + ": region outside the dataset's shape " + c10::str(at::IntArrayRef(dims)));
  }
  if (H5Aexists(ds.get(), "xxh3_64") > 0) {  // written whole by one writer
    auto full = read_region(ds.get(), type->h5(), type->scalar, Box{std::vector<int64_t>(nd, 0), dims});
    if (!full) return error(name + ": " + full.status().message());
    uint64_t stored = 0;
    Handle a(H5Aopen(ds.get(), "xxh3_64", H5P_DEFAULT), H5Aclose);
    if (H5Aread(a.get(), H5T_NATIVE_UINT64, &stored) < 0) return error(name + ": unreadable checksum attribute");
    const uint64_t actual = tensor_checksum(*full);
    if (stored != actual) {
      return error(name + ": checksum mismatch (stored " + std::to_string(stored) + ", computed " +
                   std::to_string(actual) + "): the file is corrupt");
    }
    at::Tensor t = *full;
    for (size_t d = 0; d < nd; ++d) t = t.narrow(static_cast<int64_t>(d), want.start[d], want.count[d]);
    // A slice is copied so that it does not keep the whole dataset's storage alive.
    return t.numel() == full->numel() ? t : t.clone(at::MemoryFormat::Contiguous);
  }
  std::vector<int64_t> starts, counts;
  std::vector<uint64_t> sums;
  std::vector<hsize_t> sd, cd, hd;
  if (!read_array_attr(ds.get(), "piece_start", H5T_NATIVE_INT64, starts, sd) ||
      !read_array_attr(ds.get(), "piece_count", H5T_NATIVE_INT64, counts, cd) ||
      !read_array_attr(ds.get(), "piece_xxh3", H5T_NATIVE_UINT64, sums, hd) || sd != cd || sd.size() != 2 ||
      sd[1] != nd || hd[0] != sd[0])
    return error(name + ": missing or malformed checksum attributes (xxh3_64, or piece_start/piece_count/piece_xxh3)");
  at::Tensor out = at::empty(want.count, at::TensorOptions().dtype(type->scalar));
  int64_t covered = 0;
  for (size_t p = 0; p < sums.size(); ++p) {
    Box piece{{starts.begin() + p * nd, starts.begin() + (p + 1) * nd}, {counts.begin() + p * nd, counts.begin() + (p + 1) * nd}};
    Box overlap{std::vector<int64_t>(nd), std::vector<int64_t>(nd)};
    for (size_t d = 0; d < nd; ++d) {
      const int64_t lo = std::max(piece.start[d], want.start[d]);
      const int64_t hi = std::min(piece.start[d] + piece.count[d], want.start[d] + want.count[d]);
      overlap.start[d] = lo;
      overlap.count[d] = std::max<int64_t>(0, hi - lo);
    }
    if (overlap.numel() == 0) continue;
    for (size_t d = 0; d < nd; ++d) {
      if (piece.start[d] < 0 || piece.count[d] < 0 || piece.start[d] + piece.count[d] > dims[d])
        return error(name + ": piece " + std::to_string(p) + " lies outside the dataset");
    }
    auto data = read_region(ds.get(), type->h5(), type->scalar, piece);
    if (!data) return error(name + ": " + data.status().message());
    const uint64_t actual = tensor_checksum(*data);
    if (actual != sums[p]) {
      return error(name + ": checksum mismatch in piece " + std::to_string(p) + " (stored " + std::to_string(sums[p]) +
                   ", computed " + std::to_string(actual) + "): the file is corrupt");
    }
    at::Tensor src = *data, dst = out;
    for (size_t d = 0; d < nd; ++d) {
      const auto dd = static_cast<int64_t>(d);
      src = src.narrow(dd, overlap.start[d] - piece.start[d], overlap.count[d]);
      dst = dst.narrow(dd, overlap.start[d] - want.start[d], overlap.count[d]);
    }
    dst.copy_(src);
    covered += overlap.numel();
  }
  if (covered != want.numel()) {
    return error(name + ": the stored pieces cover " + std::to_string(covered) + " of the " +
                 std::to_string(want.numel()) + " elements asked for (overlapping or missing pieces)");
  }
  return out;
}

Result<at::Tensor> H5File::read_tensor(const std::string& name) const {
  LETHE_ASSIGN_OR_RETURN(std::vector<int64_t> dims, shape(name));
  return read_box(name, Box{std::vector<int64_t>(dims.size(), 0), dims});
}

Status H5File::write_string(const std::string& name, const std::string& s) {
  at::Tensor bytes = at::empty({static_cast<int64_t>(s.size())}, at::kByte);
  std::copy(s.begin(), s.end(), reinterpret_cast<char*>(bytes.data_ptr()));
  return collective("writing " + name, [&]() -> Status {
    LETHE_RETURN_IF_ERROR(write_tensor_now(name, bytes));
    Handle ds(H5Dopen2(id_, name.c_str(), H5P_DEFAULT), H5Dclose);
    if (write_str_attr(ds.get(), "encoding", "utf-8") < 0) return error(name + ": cannot write attributes");
    return Status::ok();
  });
}

Result<std::string> H5File::read_string(const std::string& name) const {
  LETHE_ASSIGN_OR_RETURN(at::Tensor bytes, read_tensor(name));
  if (bytes.scalar_type() != at::kByte || bytes.dim() != 1) return error(name + ": expected a 1-d uint8 dataset");
  const char* p = reinterpret_cast<const char*>(bytes.data_ptr());
  return std::string(p, p + bytes.numel());
}

Status H5File::set_attr(const std::string& key, int64_t v) {
  return collective("writing attribute " + key, [&] {
    return write_attr(id_, key, H5T_NATIVE_INT64, &v) < 0 ? error("cannot write attribute " + key) : Status::ok();
  });
}

Status H5File::set_attr(const std::string& key, const std::string& v) {
  return collective("writing attribute " + key, [&] {
    return write_str_attr(id_, key, v) < 0 ? error("cannot write attribute " + key) : Status::ok();
  });
}

Result<int64_t> H5File::attr_int(const std::string& key) const {
  int64_t v = 0;
  if (H5Aexists(id_, key.c_str()) <= 0) return error("missing attribute \"" + key + "\"");
  Handle a(H5Aopen(id_, key.c_str(), H5P_DEFAULT), H5Aclose);
  if (H5Aread(a.get(), H5T_NATIVE_INT64, &v) < 0) return error("unreadable attribute \"" + key + "\"");
  return v;
}

Result<std::string> H5File::attr_string(const std::string& key) const {
  std::string v;
  if (!read_str_attr(id_, key.c_str(), v)) return error("missing or unreadable attribute \"" + key + "\"");
  return v;
}

bool H5File::exists(const std::string& name) const {
  // Checks each path component, as H5Lexists requires.
  size_t pos = 0;
  while (true) {
    pos = name.find('/', pos + 1);
    std::string prefix = name.substr(0, pos);
    if (H5Lexists(id_, prefix.c_str(), H5P_DEFAULT) <= 0) return false;
    if (pos == std::string::npos) return true;
  }
}

std::vector<std::string> H5File::list(const std::string& group) const {
  std::vector<std::string> names;
  if (!exists(group)) return names;
  Handle g(H5Gopen2(id_, group.c_str(), H5P_DEFAULT), H5Gclose);
  H5G_info_t info;
  if (!g.ok() || H5Gget_info(g.get(), &info) < 0) return names;
  for (hsize_t i = 0; i < info.nlinks; ++i) {
    const ssize_t n = H5Lget_name_by_idx(g.get(), ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT);
    if (n < 0) continue;  // unreadable link: not listed, so never loaded
    std::string s(static_cast<size_t>(n), '\0');
    if (H5Lget_name_by_idx(g.get(), ".", H5_INDEX_NAME, H5_ITER_INC, i, s.data(), static_cast<size_t>(n) + 1, H5P_DEFAULT) < 0) continue;
    names.push_back(s);
  }
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace lethe
