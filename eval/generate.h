// Batched greedy decoding with a KV cache.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/model.h"

namespace lethe {

using Tokens = std::vector<int64_t>;

// Greedy continuation of each prompt (token ids, BOS included if wanted), `max_new` tokens each,
// `batch_size` prompts at a time. Prompts of different lengths are left-padded with a segment of
// their own, so padding is never attended to and each prompt's positions start at 0. A
// continuation ends after `stop_id` when it is ≥ 0 (the stop token is not returned).
// Collective over the model's whole mesh: each dp rank generates its block of the prompts
// (eval/dp_split.h) and every rank returns all continuations.
std::vector<Tokens> greedy_generate(const Llama& model, const std::vector<Tokens>& prompts, int64_t max_new,
                                    int64_t stop_id, int64_t batch_size = 32);

// Forward tokens a greedy_generate call processed (prompt tokens + generated tokens), for cost.
int64_t generation_tokens(const std::vector<Tokens>& prompts, int64_t max_new);

}  // namespace lethe
