// Files that appear whole or not at all (Note [Atomic file]): every file Lethe writes for later
// reading goes through here.
#pragma once

#include <string>
#include <string_view>

#include "base/status.h"

namespace lethe {

// Writes `bytes` to <path>.tmp, flushes and fsyncs it, renames it over `path`, and fsyncs the
// folder. On failure the temporary file is removed and `path` is as it was.
Status write_file_atomic(const std::string& path, std::string_view bytes);

// The last steps of write_file_atomic for a temporary file written otherwise (a streamed or a
// collective write): fsync `tmp`, rename it to `path`, fsync the folder. On failure `tmp` is removed.
Status commit_file(const std::string& tmp, const std::string& path);

// fsync of a file or a folder.
Status fsync_path(const std::string& path);

}  // namespace lethe
