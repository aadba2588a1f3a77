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

uint64_t tensor_checksum(const at::Tensor& t) {
  at::Tensor c = t.contiguous();
  return XXH3_64bits(c.data_ptr(), c.numel() * c.element_size());
}

Result<H5File> H5File::create(const std::string& path) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  hid_t id = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  if (id < 0) return Status::error(path + ": cannot create the HDF5 file");
  return H5File(id, path);
}

Result<H5File> H5File::open(const std::string& path) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  if (H5Fis_hdf5(path.c_str()) <= 0)
    return Status::error(path + ": missing, unreadable or not an HDF5 file (truncated or corrupt?)");
  hid_t id = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (id < 0) return Status::error(path + ": cannot open as HDF5 (truncated or corrupt?)");
  return H5File(id, path);
}

H5File::H5File(H5File&& o) noexcept : id_(o.id_), path_(std::move(o.path_)) { o.id_ = -1; }
H5File& H5File::operator=(H5File&& o) noexcept {
  if (this != &o) {
    if (id_ >= 0) H5Fclose(id_);
    id_ = o.id_;
    path_ = std::move(o.path_);
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
  if (t.numel() > 0 && H5Dwrite(ds.get(), type->h5(), H5S_ALL, H5S_ALL, H5P_DEFAULT, t.data_ptr()) < 0)
    return error(name + ": write failed (disk full?)");
  uint64_t sum = tensor_checksum(t);
  if (write_str_attr(ds.get(), "dtype", type->name) < 0 || write_attr(ds.get(), "xxh3_64", H5T_NATIVE_UINT64, &sum) < 0)
    return error(name + ": cannot write attributes");
  return Status::ok();
}

Result<at::Tensor> H5File::read_tensor(const std::string& name) const {
  if (!exists(name)) return error("no dataset \"" + name + "\"");
  Handle ds(H5Dopen2(id_, name.c_str(), H5P_DEFAULT), H5Dclose);
  if (!ds.ok()) return error(name + ": cannot open the dataset");
  std::string dtype;
  if (!read_str_attr(ds.get(), "dtype", dtype) || !type_named(dtype)) return error(name + ": missing or unknown \"dtype\" attribute");
  const TypeInfo* type = type_named(dtype);
  Handle space(H5Dget_space(ds.get()), H5Sclose);
  int rank = H5Sget_simple_extent_ndims(space.get());
  if (rank < 0) return error(name + ": unreadable dataspace");
  std::vector<hsize_t> dims(rank);
  H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
  std::vector<int64_t> shape(dims.begin(), dims.end());
  at::Tensor t = at::empty(shape, at::TensorOptions().dtype(type->scalar));
  if (t.numel() > 0 && H5Dread(ds.get(), type->h5(), H5S_ALL, H5S_ALL, H5P_DEFAULT, t.data_ptr()) < 0)
    return error(name + ": read failed (truncated or corrupt file?)");
  uint64_t stored = 0;
  if (H5Aexists(ds.get(), "xxh3_64") <= 0) return error(name + ": missing checksum attribute");
  Handle a(H5Aopen(ds.get(), "xxh3_64", H5P_DEFAULT), H5Aclose);
  if (H5Aread(a.get(), H5T_NATIVE_UINT64, &stored) < 0) return error(name + ": unreadable checksum attribute");
  uint64_t actual = tensor_checksum(t);
  if (stored != actual) {
    return error(name + ": checksum mismatch (stored " + std::to_string(stored) + ", computed " +
                 std::to_string(actual) + "): the file is corrupt");
  }
  return t;
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
