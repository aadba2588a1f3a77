// LETHE_CHECK: a broken invariant is a bug, not an input error. It logs file:line and the condition,
// then ends the process through the abort hook (in a multi-rank job the hook aborts every rank,
// so one failing rank never leaves the others hanging).
#pragma once

#include <string>

namespace lethe {

// Called once with the message before the process ends. The default prints and calls std::abort;
// collectives/ installs one that aborts the whole job.
using AbortHook = void (*)(const std::string& message);
void set_abort_hook(AbortHook hook);
[[noreturn]] void fatal(const char* file, int line, const std::string& message);

}  // namespace lethe

#define LETHE_CHECK(cond)                                                      \
  do {                                                                   \
    if (!(cond)) ::lethe::fatal(__FILE__, __LINE__, "LETHE_CHECK(" #cond ")"); \
  } while (0)

#define LETHE_CHECK_MSG(cond, msg)                                                       \
  do {                                                                                       \
    if (!(cond)) ::lethe::fatal(__FILE__, __LINE__, std::string("LETHE_CHECK(" #cond "): ") + (msg)); \
  } while (0)
