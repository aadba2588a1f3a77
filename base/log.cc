#include "base/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>

namespace lethe {

namespace {
std::shared_ptr<spdlog::logger> make_logger() {
  auto logger = spdlog::stderr_color_mt("lethe");
  logger->set_pattern("[rank ?] %H:%M:%S %^%l%$ %v");
  return logger;
}
}  // namespace

spdlog::logger& log() {
  static std::shared_ptr<spdlog::logger> logger = make_logger();
  return *logger;
}

void init_logging(int rank) {
  log().set_pattern(fmt::format("[rank {}] %H:%M:%S %^%l%$ %v", rank));
  log().set_level(rank == 0 ? spdlog::level::info : spdlog::level::warn);
}

}  // namespace lethe
