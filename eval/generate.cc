#include "eval/generate.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <map>
#include <numeric>

#include "base/check.h"
#include "eval/dp_split.h"
#include "runtime/tp_ops.h"

namespace lethe {

namespace {

// A chunk of texts run forward (right-padded): their caches and the argmax at every position.
struct Prefilled {
  KVCache cache;
  at::Tensor argmax_BL;  // on the host
};

Prefilled prefill(const Llama& model, const std::vector<const Tokens*>& texts, const std::vector<int64_t>& lens) {
  const auto B = static_cast<int64_t>(texts.size());
  const int64_t L = *std::max_element(lens.begin(), lens.end());
  at::Tensor input = at::zeros({B, L}, at::kLong), seg = at::full({B, L}, -1, at::kLong);
  auto in = input.accessor<int64_t, 2>(), sg = seg.accessor<int64_t, 2>();
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t = 0; t < lens[b]; ++t) {
      in[b][t] = (*texts[b])[t];
      sg[b][t] = 0;
    }
  }
  Prefilled p{KVCache(L), {}};
  at::Tensor h = model.hidden(input, at::arange(L, at::kLong).expand({B, L}), seg, &p.cache);
  p.argmax_BL = vocab_parallel_argmax(model.logits(h), model.vocab_start(), model.tp()).cpu().contiguous();
  return p;
}

// Greedy continuations of `jobs`, each from its text's row `slot` of `p`.
std::vector<Tokens> decode(const Llama& model, const Prefilled& p, const std::vector<const PrefixGeneration*>& jobs,
                           const std::vector<int64_t>& slot) {
  const auto R = static_cast<int64_t>(jobs.size());
  int64_t steps = 0;
  std::vector<int64_t> start(static_cast<size_t>(R));
  for (int64_t r = 0; r < R; ++r) {
    steps = std::max(steps, jobs[r]->max_new);
    start[r] = jobs[r]->start;
  }
  std::vector<Tokens> out(static_cast<size_t>(R));
  if (steps == 0) return out;
  // The rows' caches: their text's keys and values, positions from `start` on masked out (segment -1).
  const int64_t L = p.cache.length;
  KVCache cache(L + steps - 1);
  const at::Tensor rows = at::tensor(slot, at::kLong).to(model.device());
  for (auto [src, dst] : {std::pair{&p.cache.k, &cache.k}, std::pair{&p.cache.v, &cache.v}}) {
    for (const at::Tensor& layer : *src) {
      std::vector<int64_t> shape = layer.sizes().vec();
      shape[0] = R;
      shape[2] = cache.capacity;
      dst->push_back(at::empty(shape, layer.options()));
      dst->back().narrow(2, 0, L).copy_(layer.narrow(2, 0, L).index_select(0, rows));
    }
  }
  const at::Tensor start_R1 = at::tensor(start, at::kLong).unsqueeze(1);
  at::Tensor seg = at::full({R, cache.capacity}, -1, at::kLong);
  seg.narrow(1, 0, L).masked_fill_(at::arange(L, at::kLong).unsqueeze(0).lt(start_R1), 0);
  cache.segments_BS = seg.to(model.device());
  cache.length = L;

  at::Tensor ids = at::empty({R}, at::kLong);
  const auto argmax = p.argmax_BL.accessor<int64_t, 2>();
  for (int64_t r = 0; r < R; ++r) ids[r] = argmax[slot[r]][start[r] - 1];
  std::vector<bool> done(static_cast<size_t>(R), false);
  const at::Tensor step_seg = at::zeros({R, 1}, at::kLong);
  for (int64_t i = 0; i < steps; ++i) {
    const int64_t* t = ids.data_ptr<int64_t>();  // the host decides which rows stop
    bool all_done = true;
    for (int64_t r = 0; r < R; ++r) {
      Tokens& o = out[static_cast<size_t>(r)];
      if (!done[r]) {
        if (jobs[r]->stop_id >= 0 && t[r] == jobs[r]->stop_id) {
          done[r] = true;
        } else {
          o.push_back(t[r]);
          done[r] = static_cast<int64_t>(o.size()) >= jobs[r]->max_new;
        }
      }
      all_done = all_done && done[r];
    }
    if (all_done || i + 1 == steps) break;
    at::Tensor h = model.hidden(ids.unsqueeze(1), start_R1 + i, step_seg, &cache);
    ids = vocab_parallel_argmax(model.logits(h), model.vocab_start(), model.tp()).squeeze(1).cpu().contiguous();
  }
  return out;
}

}  // namespace

std::vector<Tokens> greedy_generate(const Llama& model, const std::vector<Tokens>& texts,
                                    const std::vector<PrefixGeneration>& jobs, int64_t batch_size) {
  at::NoGradGuard no_grad;
  const DpBlock mine = dp_block(model.mesh(), jobs.size());
  const auto chunk_size = static_cast<size_t>(std::max<int64_t>(1, batch_size));
  // The texts this rank's jobs continue, each with its jobs and the longest prefix they need;
  // shortest first.
  std::map<size_t, std::vector<size_t>> jobs_of;
  std::map<size_t, int64_t> need;
  int64_t longest = 0;
  for (size_t j = mine.first; j < mine.last; ++j) {
    LETHE_CHECK_MSG(jobs[j].text < texts.size() && jobs[j].start >= 1 &&
                        jobs[j].start <= static_cast<int64_t>(texts[jobs[j].text].size()),
                    "generation job " + std::to_string(j) + ": no prefix of that length in text " + std::to_string(jobs[j].text));
    jobs_of[jobs[j].text].push_back(j);
    need[jobs[j].text] = std::max(need[jobs[j].text], jobs[j].start);
  }
  for (const PrefixGeneration& j : jobs) longest = std::max(longest, j.max_new);
  std::vector<size_t> order;
  for (const auto& [text, n] : need) order.push_back(text);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return need[a] < need[b]; });

  // Row i of this rank's block: [length, tokens…, 0 padding].
  at::Tensor rows = at::zeros({static_cast<int64_t>(mine.last - mine.first), longest + 1}, at::kLong);
  for (size_t c = 0; c < order.size(); c += chunk_size) {
    std::vector<const Tokens*> chunk;
    std::vector<int64_t> lens;
    std::vector<std::pair<size_t, int64_t>> chunk_jobs;  // (job, slot)
    for (size_t k = c; k < std::min(order.size(), c + chunk_size); ++k) {
      chunk.push_back(&texts[order[k]]);
      lens.push_back(need[order[k]]);
      for (size_t j : jobs_of[order[k]]) chunk_jobs.emplace_back(j, static_cast<int64_t>(k - c));
    }
    const Prefilled p = prefill(model, chunk, lens);
    for (size_t b = 0; b < chunk_jobs.size(); b += chunk_size) {
      std::vector<const PrefixGeneration*> batch;
      std::vector<int64_t> slot;
      for (size_t k = b; k < std::min(chunk_jobs.size(), b + chunk_size); ++k) {
        batch.push_back(&jobs[chunk_jobs[k].first]);
        slot.push_back(chunk_jobs[k].second);
      }
      const std::vector<Tokens> gen = decode(model, p, batch, slot);
      for (size_t i = 0; i < gen.size(); ++i) {
        at::Tensor row = rows[static_cast<int64_t>(chunk_jobs[b + i].first - mine.first)];
        row[0] = static_cast<int64_t>(gen[i].size());
        row.narrow(0, 1, static_cast<int64_t>(gen[i].size())).copy_(at::tensor(gen[i], at::kLong));
      }
    }
  }
  at::Tensor all = dp_gather_rows(model.mesh(), rows, jobs.size()).contiguous();
  std::vector<Tokens> out;
  out.reserve(jobs.size());
  for (int64_t i = 0; i < all.size(0); ++i) {
    const int64_t* r = all[i].data_ptr<int64_t>();
    out.emplace_back(r + 1, r + 1 + r[0]);
  }
  return out;
}

std::vector<Tokens> greedy_generate(const Llama& model, const std::vector<Generation>& jobs, int64_t batch_size) {
  GenerationPool pool;
  pool.add(jobs);
  pool.run(model, batch_size);
  return std::vector<Tokens>(pool.results(0).begin(), pool.results(0).end());
}

std::vector<Tokens> greedy_generate(const Llama& model, const std::vector<Tokens>& prompts, int64_t max_new,
                                    int64_t stop_id, int64_t batch_size) {
  std::vector<Generation> jobs;
  jobs.reserve(prompts.size());
  for (const Tokens& p : prompts) jobs.push_back({p, max_new, stop_id});
  return greedy_generate(model, jobs, batch_size);
}

size_t GenerationPool::add(const std::vector<Generation>& jobs) {
  std::vector<Tokens> texts;
  std::vector<PrefixGeneration> prefixes;
  for (const Generation& j : jobs) {
    prefixes.push_back({texts.size(), static_cast<int64_t>(j.prompt.size()), j.max_new, j.stop_id});
    texts.push_back(j.prompt);
  }
  return add(texts, prefixes);
}

size_t GenerationPool::add(const std::vector<Tokens>& texts, const std::vector<PrefixGeneration>& jobs) {
  starts_.push_back(jobs_.size());
  std::vector<size_t> at(texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    auto [it, fresh] = index_.try_emplace(texts[i], texts_.size());
    if (fresh) texts_.push_back(texts[i]);
    at[i] = it->second;
  }
  for (PrefixGeneration j : jobs) {
    j.text = at[j.text];
    jobs_.push_back(j);
  }
  return starts_.size() - 1;
}

void GenerationPool::run(const Llama& model, int64_t batch_size) { out_ = greedy_generate(model, texts_, jobs_, batch_size); }

std::span<const Tokens> GenerationPool::results(size_t handle) const {
  const size_t end = handle + 1 < starts_.size() ? starts_[handle + 1] : jobs_.size();
  return std::span<const Tokens>(out_).subspan(starts_[handle], end - starts_[handle]);
}

int64_t generation_tokens(const std::vector<Tokens>& texts, const std::vector<PrefixGeneration>& jobs) {
  std::map<size_t, int64_t> need;
  int64_t n = 0;
  for (const PrefixGeneration& j : jobs) {
    need[j.text] = std::max(need[j.text], j.start);
    n += j.max_new;
  }
  for (const auto& [text, len] : need) n += len;
  return n;
}

int64_t generation_tokens(const std::vector<Tokens>& prompts, int64_t max_new) {
  int64_t n = 0;
  for (const Tokens& p : prompts) n += static_cast<int64_t>(p.size()) + max_new;
  return n;
}

}  // namespace lethe
