// Batched greedy decoding with a preallocated KV cache.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <vector>

#include "runtime/model.h"

namespace lethe {

using Tokens = std::vector<int64_t>;

// One greedy continuation: at most `max_new` tokens after `prompt` (token ids, BOS included if
// wanted); it ends after `stop_id` when that is ≥ 0 (the stop token is not returned).
struct Generation {
  Tokens prompt;
  int64_t max_new = 0;
  int64_t stop_id = -1;
};

// A continuation of a prefix of a shared text: greedy after text[0, start), as Generation.
struct PrefixGeneration {
  size_t text = 0;
  int64_t start = 0;  // 1 ≤ start ≤ the text's length
  int64_t max_new = 0;
  int64_t stop_id = -1;
};

// Note [One generation pool]: every job's continuation, in order. Each dp rank takes its block of
// the jobs (eval/dp_split.h). The texts its jobs continue are run forward once each, shortest
// first, `batch_size` at a time (right-padded), up to the longest prefix any job needs and up to
// max_new − 1 tokens past it: that one forward gives the keys and values of every prefix, and
// every job's continuation for as long as it follows its text (Note [Run-ahead], generate.cc).
// The jobs still open are then decoded `batch_size` at a time, most tokens left first (then the
// longest context), from a copy of their text's cache in which the positions after their context
// are masked out, in a KV cache allocated once for the batch. Each step takes the argmax over the
// vocabulary-parallel logits without gathering them (vocab_parallel_argmax). Rows are independent, so a job's
// continuation does not depend on what it is batched with (up to float rounding of differently
// shaped matrix products). Collective over the model's whole mesh; every rank returns all
// continuations.
std::vector<Tokens> greedy_generate(const Llama& model, const std::vector<Tokens>& texts,
                                    const std::vector<PrefixGeneration>& jobs, int64_t batch_size);
// Each job's prompt as its own text.
std::vector<Tokens> greedy_generate(const Llama& model, const std::vector<Generation>& jobs, int64_t batch_size);

// Jobs of several metrics decoded in one greedy_generate call (Note [One generation pool]); each
// adder gets its own continuations back, in its jobs' order.
class GenerationPool {
 public:
  // Returns the handle results() takes.
  size_t add(const std::vector<Generation>& jobs);
  // Jobs continuing prefixes of `texts` (their `text` fields index `texts`). A text already in
  // the pool (by content, from any add) is kept once, so it runs forward once for all its jobs.
  size_t add(const std::vector<Tokens>& texts, const std::vector<PrefixGeneration>& jobs);
  // Collective over the model's mesh, as greedy_generate.
  void run(const Llama& model, int64_t batch_size);
  std::span<const Tokens> results(size_t handle) const;
  const std::vector<PrefixGeneration>& jobs() const { return jobs_; }
  const std::vector<Tokens>& texts() const { return texts_; }

 private:
  std::vector<Tokens> texts_;
  std::map<Tokens, size_t> index_;  // text → its index in texts_
  std::vector<PrefixGeneration> jobs_;
  std::vector<size_t> starts_;
  std::vector<Tokens> out_;
};

// The same `max_new` and `stop_id` for every prompt.
std::vector<Tokens> greedy_generate(const Llama& model, const std::vector<Tokens>& prompts, int64_t max_new,
                                    int64_t stop_id, int64_t batch_size = 32);

// Forward tokens the jobs cost, for cost accounting: each text once up to its longest prefix,
// plus at most max_new per job.
int64_t generation_tokens(const std::vector<Tokens>& texts, const std::vector<PrefixGeneration>& jobs);
int64_t generation_tokens(const std::vector<Tokens>& prompts, int64_t max_new);

}  // namespace lethe
