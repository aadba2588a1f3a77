#include "io/hdf5_store.h"

#include <ATen/ATen.h>
#include <hdf5.h>
#include <xxhash.h>

#include <algorithm>

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

Handle link_props() {
  Handle p(H5Pcreate(H5P_LINK_CREATE), H5Pclose);
  H5Pset_create_intermediate_group(p.get(), 1);
  return p;
}

Handle collective_xfer() {
  Handle p(H5Pcreate(H5P_DATASET_XFER), H5Pclose);
  H5Pset_dxpl_mpio(p.get(), H5FD_MPIO_COLLECTIVE);
  return p;
}

herr_t write_array_attr(hid_t obj, const std::string& key, hid_t type, std::vector<hsize_t> dims, const void* data) {
  Handle space(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), H5Sclose);
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
  H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
  hsize_t n = 1;
  for (hsize_t d : dims) n *= d;
  out.assign(n, T{});
  return H5Aread(a.get(), type, out.data()) >= 0;
}

herr_t write_attr(hid_t obj, const std::string& key, hid_t type, const void* data) {
  if (H5Aexists(obj, key.c_str()) > 0) H5Adelete(obj, key.c_str());
  Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  Handle a(H5Acreate2(obj, key.c_str(), type, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  return a.ok() ? H5Awrite(a.get(), type, data) : -1;
}

herr_t write_str_attr(hid_t obj, const std::string& key, const std::string& v) {
  Handle type(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(type.get(), std::max<size_t>(1, v.size()));
  std::string padded = v.empty() ? std::string(1, '\0') : v;
  return write_attr(obj, key, type.get(), padded.data());
}

bool read_str_attr(hid_t obj, const std::string& key, std::string& out) {
  if (H5Aexists(obj, key.c_str()) <= 0) return false;
  Handle a(H5Aopen(obj, key.c_str(), H5P_DEFAULT), H5Aclose);
  Handle type(H5Aget_type(a.get()), H5Tclose);
  if (H5Tget_class(type.get()) != H5T_STRING) return false;
  size_t n = H5Tget_size(type.get());
  std::string buf(n, '\0');
  Handle mem(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(mem.get(), n);
  if (H5Aread(a.get(), mem.get(), buf.data()) < 0) return false;
  out = buf.substr(0, buf.find('\0'));
  return true;
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
  hid_t id = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  if (id < 0) return Status::error(path + ": cannot create the HDF5 file");
  return H5File(id, path);
}

Result<H5File> H5File::create_parallel(const std::string& path, MPI_Comm comm) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  Handle fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  H5Pset_fapl_mpio(fapl.get(), comm, MPI_INFO_NULL);
  hid_t id = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get());
  if (id < 0) return Status::error(path + ": cannot create the HDF5 file (MPI-IO)");
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  H5File f(id, path, /*parallel=*/true, rank);
  f.comm_ = comm;
  return f;
}

Result<H5File> H5File::open(const std::string& path) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  if (H5Fis_hdf5(path.c_str()) <= 0)
    return Status::error(path + ": missing, unreadable or not an HDF5 file (truncated or corrupt?)");
  hid_t id = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (id < 0) return Status::error(path + ": cannot open as HDF5 (truncated or corrupt?)");
  return H5File(id, path);
}

H5File::H5File(H5File&& o) noexcept
    : id_(o.id_), path_(std::move(o.path_)), parallel_(o.parallel_), rank_(o.rank_), comm_(o.comm_) {
  o.id_ = -1;
}
H5File& H5File::operator=(H5File&& o) noexcept {
  if (this != &o) {
    if (id_ >= 0) H5Fclose(id_);
    id_ = o.id_;
    path_ = std::move(o.path_);
    parallel_ = o.parallel_;
    rank_ = o.rank_;
    comm_ = o.comm_;
    o.id_ = -1;
  }
  return *this;
}
H5File::~H5File() {
  if (id_ >= 0) H5Fclose(id_);
}

Status H5File::close() {
  if (id_ < 0) return Status::ok();
  herr_t f = H5Fflush(id_, H5F_SCOPE_GLOBAL);
  herr_t c = H5Fclose(id_);
  id_ = -1;
  if (f < 0 || c < 0) return error("flush/close failed (disk full?)");
  return Status::ok();
}

Status H5File::write_tensor(const std::string& name, const at::Tensor& tensor) {
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
    MPI_Bcast(&sum, 1, MPI_UINT64_T, 0, comm_);
    Handle xfer = collective_xfer();
    if (rank_ != 0 && t.numel() > 0) H5Sselect_none(space.get());
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
  H5Sselect_none(space.get());
  for (int i : mine) {
    const Box& box = pieces[static_cast<size_t>(i)].box;
    std::vector<hsize_t> start(box.start.begin(), box.start.end()), count(box.count.begin(), box.count.end());
    if (box.numel() == 0) continue;
    H5Sselect_hyperslab(space.get(), H5S_SELECT_OR, start.data(), nullptr, count.data(), nullptr);
    total += box.numel();
  }
  if (t.defined() && t.numel() != total) {
    return error(name + ": " + std::to_string(t.numel()) + " elements given for pieces of " + std::to_string(total));
  }
  const hsize_t mem_count = static_cast<hsize_t>(total);
  Handle mem(total > 0 ? H5Screate_simple(1, &mem_count, nullptr) : H5Screate(H5S_SCALAR), H5Sclose);
  if (total == 0) H5Sselect_none(mem.get());
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
  if (!count.empty()) H5Sselect_hyperslab(space.get(), H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr);
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
  H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
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
  LETHE_RETURN_IF_ERROR(write_tensor(name, bytes));
  Handle ds(H5Dopen2(id_, name.c_str(), H5P_DEFAULT), H5Dclose);
  if (write_str_attr(ds.get(), "encoding", "utf-8") < 0) return error(name + ": cannot write attributes");
  return Status::ok();
}

Result<std::string> H5File::read_string(const std::string& name) const {
  LETHE_ASSIGN_OR_RETURN(at::Tensor bytes, read_tensor(name));
  if (bytes.scalar_type() != at::kByte || bytes.dim() != 1) return error(name + ": expected a 1-d uint8 dataset");
  const char* p = reinterpret_cast<const char*>(bytes.data_ptr());
  return std::string(p, p + bytes.numel());
}

Status H5File::set_attr(const std::string& key, int64_t v) {
  return write_attr(id_, key, H5T_NATIVE_INT64, &v) < 0 ? error("cannot write attribute " + key) : Status::ok();
}

Status H5File::set_attr(const std::string& key, const std::string& v) {
  return write_str_attr(id_, key, v) < 0 ? error("cannot write attribute " + key) : Status::ok();
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
    ssize_t n = H5Lget_name_by_idx(g.get(), ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT);
    std::string s(n, '\0');
    H5Lget_name_by_idx(g.get(), ".", H5_INDEX_NAME, H5_ITER_INC, i, s.data(), n + 1, H5P_DEFAULT);
    names.push_back(s);
  }
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace lethe
