#include "io/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

namespace lethe {

namespace fs = std::filesystem;

// Note [Atomic file]: a reader sees the old file or the new one, never a prefix, and after a crash
// (power loss included) the new name never points at unwritten data: the data is on disk (fsync)
// before the rename, and the rename is on disk (fsync of the folder) before the call returns.
Status fsync_path(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return Status::error(path + ": cannot open for fsync (" + std::strerror(errno) + ")");
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  return rc == 0 ? Status::ok() : Status::error(path + ": fsync failed (" + std::strerror(err) + ")");
}

Status commit_file(const std::string& tmp, const std::string& path) {
  std::error_code ec;
  Status s = fsync_path(tmp);
  if (s) {
    fs::rename(tmp, path, ec);
    if (ec) s = Status::error(path + ": rename failed: " + ec.message());
  }
  if (!s) {
    fs::remove(tmp, ec);
    return s;
  }
  const std::string dir = fs::path(path).parent_path().string();
  return fsync_path(dir.empty() ? "." : dir);
}

Status write_file_atomic(const std::string& path, std::string_view bytes) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Status::error(tmp + ": cannot create (" + std::strerror(errno) + ")");
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      return Status::error(tmp + ": write failed (" + std::strerror(err) + "; disk full?)");
    }
    done += static_cast<size_t>(n);
  }
  if (::close(fd) != 0) {
    ::unlink(tmp.c_str());
    return Status::error(tmp + ": close failed (" + std::string(std::strerror(errno)) + ")");
  }
  return commit_file(tmp, path);
}

}  // namespace lethe
