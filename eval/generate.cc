#include "eval/generate.h"

#include <ATen/ATen.h>

#include <algorithm>

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
    auto ids = next.contiguous();
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
  std::vector<Tokens> out;
  out.reserve(prompts.size());
  for (size_t start = 0; start < prompts.size(); start += static_cast<size_t>(batch_size)) {
    const size_t end = std::min(prompts.size(), start + static_cast<size_t>(batch_size));
    std::vector<Tokens> chunk(prompts.begin() + start, prompts.begin() + end);
    for (Tokens& t : generate_batch(model, chunk, max_new, stop_id)) out.push_back(std::move(t));
  }
  return out;
}

int64_t generation_tokens(const std::vector<Tokens>& prompts, int64_t max_new) {
  int64_t n = 0;
  for (const Tokens& p : prompts) n += static_cast<int64_t>(p.size()) + max_new;
  return n;
}

}  // namespace lethe
