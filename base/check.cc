#include "base/check.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>

namespace lethe {

namespace {
void default_hook(const std::string& message) {
  std::fprintf(stderr, "%s\n", message.c_str());
  std::fflush(stderr);
  std::abort();
}
std::atomic<AbortHook> g_hook{&default_hook};
}  // namespace

void set_abort_hook(AbortHook hook) { g_hook = hook ? hook : &default_hook; }

void fatal(const char* file, int line, const std::string& message) {
  g_hook.load()(std::string("fatal: ") + file + ":" + std::to_string(line) + ": " + message);
  std::abort();  // a hook must not return
}

}  // namespace lethe
