#include "eval/generate.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "eval/dp_split.h"
#include "runtime/tp_ops.h"

namespace lethe {

namespace {

// Next-token ids [B] from the last position of new tokens `input_BT`, extending `cache`.
at::Tensor next_tokens(const Llama& model, const at::Tensor& input_BT, const at::Tensor& positions_BT,
                       const at::Tensor& segments_BT, KVCache& cache) {
  at::Tensor h_BTD = model.hidden(input_BT, positions_BT, segments_BT, &cache);
  at::Tensor last_B1D = h_BTD.narrow(1, h_BTD.size(1) - 1, 1);
  return model.full_logits_from_hidden(last_B1D).argmax(-1).squeeze(1);
}

std::vector<Tokens> generate_batch(const Llama& model, const std::vector<Tokens>& prompts, int64_t max_new,
                                   int64_t stop_id) {
  const int64_t B = static_cast<int64_t>(prompts.size());
  int64_t T = 0;
  for (const Tokens& p : prompts) T = std::max<int64_t>(T, static_cast<int64_t>(p.size()));
  at::Tensor input = at::zeros({B, T}, at::kLong), pos = at::zeros({B, T}, at::kLong);
  at::Tensor seg = at::full({B, T}, -1, at::kLong);
  std::vector<int64_t> len(B);
  for (int64_t b = 0; b < B; ++b) {
    const Tokens& p = prompts[b];
    len[b] = static_cast<int64_t>(p.size());
    const int64_t pad = T - len[b];
    for (int64_t t = 0; t < len[b]; ++t) {
      input[b][pad + t] = p[t];
      pos[b][pad + t] = t;
      seg[b][pad + t] = 0;
    }
  }
  std::vector<Tokens> out(B);
  std::vector<bool> done(B, false);
  KVCache cache;
  at::Tensor next = next_tokens(model, input, pos, seg, cache);
  at::Tensor step_seg = at::zeros({B, 1}, at::kLong);
  at::Tensor step_pos = at::tensor(len, at::kLong).unsqueeze(1);
  for (int64_t i = 0; i < max_new; ++i) {
    auto ids = next.cpu().contiguous();  // the host decides which rows stop
    const int64_t* p = ids.data_ptr<int64_t>();
    bool all_done = true;
    for (int64_t b = 0; b < B; ++b) {
      if (done[b]) continue;
      if (p[b] == stop_id) {
        done[b] = true;
      } else {
        out[b].push_back(p[b]);
      }
      all_done = all_done && done[b];
    }
    if (all_done || i + 1 == max_new) break;
    next = next_tokens(model, ids.unsqueeze(1), step_pos + i, step_seg, cache);
  }
  return out;
}

}  // namespace

std::vector<Tokens> greedy_generate(const Llama& model, const std::vector<Tokens>& prompts, int64_t max_new,
                                    int64_t stop_id, int64_t batch_size) {
  at::NoGradGuard no_grad;
  const DpBlock mine = dp_block(model.mesh(), prompts.size());
  // Row i of this rank's block: [length, tokens…, 0 padding].
  at::Tensor rows = at::zeros({static_cast<int64_t>(mine.last - mine.first), max_new + 1}, at::kLong);
  for (size_t start = mine.first; start < mine.last; start += static_cast<size_t>(batch_size)) {
    const size_t end = std::min(mine.last, start + static_cast<size_t>(batch_size));
    std::vector<Tokens> chunk(prompts.begin() + start, prompts.begin() + end);
    std::vector<Tokens> gen = generate_batch(model, chunk, max_new, stop_id);
    for (size_t i = 0; i < gen.size(); ++i) {
      at::Tensor row = rows[static_cast<int64_t>(start - mine.first + i)];
      row[0] = static_cast<int64_t>(gen[i].size());
      row.narrow(0, 1, static_cast<int64_t>(gen[i].size())).copy_(at::tensor(gen[i], at::kLong));
    }
  }
  at::Tensor all = dp_gather_rows(model.mesh(), rows, prompts.size()).contiguous();
  std::vector<Tokens> out;
  out.reserve(prompts.size());
  for (int64_t i = 0; i < all.size(0); ++i) {
    const int64_t* r = all[i].data_ptr<int64_t>();
    out.emplace_back(r + 1, r + 1 + r[0]);
  }
  return out;
}

int64_t generation_tokens(const std::vector<Tokens>& prompts, int64_t max_new) {
  int64_t n = 0;
  for (const Tokens& p : prompts) n += static_cast<int64_t>(p.size()) + max_new;
  return n;
}

}  // namespace lethe
