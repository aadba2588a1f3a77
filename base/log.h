// Rank-prefixed logging on spdlog. Every line reads "[rank R] ...". Rank 0 logs at info; other
// ranks log warnings and errors only, so a 64-rank job prints progress once.
#pragma once

#include <spdlog/spdlog.h>

namespace lethe {

// Sets the rank shown in every line and the level (rank 0: info, others: warn). Call once the
// world is known; before that lines read "[rank ?]".
void init_logging(int rank);

// The process-wide logger (one of the two allowed globals, with the abort hook).
spdlog::logger& log();

}  // namespace lethe
