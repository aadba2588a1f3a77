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

// How far a job's text runs forward: its prefix, and up to max_new − 1 tokens beyond it that
// run-ahead (Note [Run-ahead]) may take as the continuation.
int64_t prefill_length(const PrefixGeneration& j, const Tokens& text) {
  return std::max(j.start, std::min(static_cast<int64_t>(text.size()), j.start + j.max_new - 1));
}

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

// A job's continuation as far as the prefill gives it (Note [Run-ahead]): `out` so far, the text
// position `pos` its last token sits at when decoding must go on from there, or `done`.
struct Started {
  const PrefixGeneration* job = nullptr;
  int64_t slot = 0;  // the text's row in the prefill
  Tokens out;
  int64_t pos = 0;
  bool done = false;
  int64_t left() const { return job->max_new - static_cast<int64_t>(out.size()); }
};

// Note [Run-ahead]: the greedy token after text[0, s) is the prefill's argmax at s − 1. While it
// equals text[s], the context stays a prefix of the text and the next token is again a prefill
// argmax; so a job decodes only from the first token that leaves its text (none for a passage the
// model reproduces). Exact: each token is the argmax of the same context, computed by one forward
// of the text instead of step by step (up to the float rounding of differently shaped products).
Started run_ahead(const PrefixGeneration& job, const Tokens& text, const at::TensorAccessor<int64_t, 1>& argmax,
                  int64_t slot, int64_t prefilled) {
  Started st{&job, slot, {}, job.start, job.max_new <= 0};
  const auto n = static_cast<int64_t>(text.size());
  while (!st.done) {
    const int64_t token = argmax[st.pos - 1];
    if (token == job.stop_id) {
      st.done = true;
      break;
    }
    st.out.push_back(token);
    st.done = st.left() == 0;
    if (st.pos >= n || token != text[st.pos] || st.pos + 1 > prefilled) break;
    ++st.pos;
  }
  return st;
}

// Decodes the rest of each row's continuation: row r's cache is its text's keys and values up to
// `pos` (later positions masked out, segment -1), its last token goes in at `pos`.
void decode(const Llama& model, const Prefilled& p, std::vector<Started*> rows) {
  const auto R = static_cast<int64_t>(rows.size());
  int64_t steps = 0;
  std::vector<int64_t> slot, pos;
  for (const Started* r : rows) {
    steps = std::max(steps, r->left());
    slot.push_back(r->slot);
    pos.push_back(r->pos);
  }
  if (steps == 0) return;
  const int64_t L = *std::max_element(pos.begin(), pos.end());  // the cache positions any row reads
  KVCache cache(L + steps);
  const at::Tensor index = at::tensor(slot, at::kLong).to(model.device());
  for (auto [src, dst] : {std::pair{&p.cache.k, &cache.k}, std::pair{&p.cache.v, &cache.v}}) {
    for (const at::Tensor& layer : *src) {
      std::vector<int64_t> shape = layer.sizes().vec();
      shape[0] = R;
      shape[2] = cache.capacity;
      dst->push_back(at::empty(shape, layer.options()));
      dst->back().narrow(2, 0, L).copy_(layer.narrow(2, 0, L).index_select(0, index));
    }
  }
  const at::Tensor pos_R1 = at::tensor(pos, at::kLong).unsqueeze(1);
  at::Tensor seg = at::full({R, cache.capacity}, -1, at::kLong);
  seg.narrow(1, 0, L).masked_fill_(at::arange(L, at::kLong).unsqueeze(0).lt(pos_R1), 0);
  cache.segments_BS = seg.to(model.device());
  cache.length = L;

  at::Tensor ids = at::empty({R}, at::kLong);
  for (int64_t r = 0; r < R; ++r) ids[r] = rows[r]->out.back();
  const at::Tensor step_seg = at::zeros({R, 1}, at::kLong);
  for (int64_t i = 0; i < steps; ++i) {
    at::Tensor h = model.hidden(ids.unsqueeze(1), pos_R1 + i, step_seg, &cache);
    ids = vocab_parallel_argmax(model.logits(h), model.vocab_start(), model.tp()).squeeze(1).cpu().contiguous();
    const int64_t* t = ids.data_ptr<int64_t>();  // the host decides which rows stop
    bool all_done = true;
    for (int64_t r = 0; r < R; ++r) {
      Started& st = *rows[r];
      if (!st.done) {
        if (t[r] == st.job->stop_id) {
          st.done = true;
        } else {
          st.out.push_back(t[r]);
          st.done = st.left() == 0;
        }
      }
      all_done = all_done && st.done;
    }
    if (all_done) break;
  }
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
    need[jobs[j].text] = std::max(need[jobs[j].text], prefill_length(jobs[j], texts[jobs[j].text]));
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
    // Each job as far as the prefill takes it; the rest decoded in batches.
    const auto argmax = p.argmax_BL.accessor<int64_t, 2>();
    std::vector<Started> started;
    for (auto [j, slot] : chunk_jobs) started.push_back(run_ahead(jobs[j], texts[jobs[j].text], argmax[slot], slot, lens[slot]));
    std::vector<Started*> open;
    for (Started& st : started) {
      if (!st.done) open.push_back(&st);
    }
    // Rows with as many tokens still to decode together: a batch runs until its longest row is done
    // (rows that finish earlier are computed on), so mixing lengths wastes steps; then rows of
    // similar context length, as a batch's cache holds its longest context.
    std::stable_sort(open.begin(), open.end(), [](const Started* a, const Started* b) {
      return a->left() != b->left() ? a->left() > b->left() : a->pos > b->pos;
    });
    for (size_t b = 0; b < open.size(); b += chunk_size) {
      decode(model, p, std::vector<Started*>(open.begin() + b, open.begin() + std::min(open.size(), b + chunk_size)));
    }
    for (size_t i = 0; i < started.size(); ++i) {
      const Tokens& gen = started[i].out;
      at::Tensor row = rows[static_cast<int64_t>(chunk_jobs[i].first - mine.first)];
      row[0] = static_cast<int64_t>(gen.size());
      row.narrow(0, 1, static_cast<int64_t>(gen.size())).copy_(at::tensor(gen, at::kLong));
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
    need[j.text] = std::max(need[j.text], prefill_length(j, texts[j.text]));
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
