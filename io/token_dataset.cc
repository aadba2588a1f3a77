#include "io/token_dataset.h"

#include <ATen/ATen.h>
#include <xxhash.h>

namespace lethe {

uint64_t TokenDataset::checksum() const {
  XXH3_state_t* st = XXH3_createState();
  XXH3_64bits_reset(st);
  for (const at::Tensor& t : {tokens, segments, loss_from}) {
    if (!t.defined()) continue;
    at::Tensor c = t.contiguous();
    XXH3_64bits_update(st, c.data_ptr(), c.numel() * c.element_size());
  }
  uint64_t h = XXH3_64bits_digest(st);
  XXH3_freeState(st);
  return h;
}

Result<TokenDataset> pack_documents(const std::string& name, const std::vector<Document>& docs,
                                    const Tokenizer& tok, int64_t seq_len, int64_t vocab_limit, Packing packing) {
  if (docs.empty()) return Status::error("dataset \"" + name + "\" has no documents");
  if (tok.vocab_size() > vocab_limit) {
    return Status::error(tok.path() + ": tokenizer vocabulary (" + std::to_string(tok.vocab_size()) +
                         ") is larger than the model's vocab_size (" + std::to_string(vocab_limit) + ")");
  }
  const int64_t width = seq_len + 1;
  std::vector<int64_t> tokens, segments, positions;
  int64_t used = width;  // forces a new row for the first chunk
  auto new_row = [&] {
    tokens.insert(tokens.end(), width, tok.pad());
    segments.insert(segments.end(), width, -1);
    positions.insert(positions.end(), width, 0);
    used = 0;
  };
  TokenDataset ds;
  ds.name = name;
  ds.seq_len = seq_len;
  for (const Document& d : docs) {
    std::vector<int> ids = tok.encode(d.text);
    ids.insert(ids.begin(), tok.bos());
    ids.push_back(tok.eos());
    const auto sample = static_cast<int64_t>(ds.sample_ids.size());
    ds.sample_ids.push_back(d.id);
    for (size_t start = 0; start + 1 < ids.size() || start == 0; start += seq_len) {
      const auto len = static_cast<int64_t>(std::min<size_t>(width, ids.size() - start));
      if (packing == Packing::kOnePerRow || used + len > width) new_row();
      const size_t base = tokens.size() - width + used;
      for (int64_t i = 0; i < len; ++i) {
        tokens[base + i] = ids[start + i];
        segments[base + i] = sample;
        positions[base + i] = i;
      }
      used += len;
      if (start + len >= ids.size()) break;
    }
  }
  const int64_t n = static_cast<int64_t>(tokens.size()) / width;
  auto to_tensor = [&](std::vector<int64_t>& v) { return at::tensor(v, at::kLong).view({n, width}); };
  ds.tokens = to_tensor(tokens);
  ds.segments = to_tensor(segments);
  ds.positions = to_tensor(positions);
  return ds;
}

TokenDataset pack_rows(const std::string& name, const std::vector<std::vector<int64_t>>& rows,
                       const std::vector<int64_t>& loss_from, int64_t seq_len, int64_t pad) {
  const auto n = static_cast<int64_t>(rows.size()), width = seq_len + 1;
  TokenDataset ds;
  ds.name = name;
  ds.seq_len = seq_len;
  ds.tokens = at::full({n, width}, pad, at::kLong);
  ds.segments = at::full({n, width}, -1, at::kLong);
  ds.positions = at::zeros({n, width}, at::kLong);
  ds.loss_from = at::tensor(loss_from, at::kLong);
  auto tok = ds.tokens.accessor<int64_t, 2>(), seg = ds.segments.accessor<int64_t, 2>(), pos = ds.positions.accessor<int64_t, 2>();
  for (int64_t r = 0; r < n; ++r) {
    const auto len = std::min<int64_t>(width, static_cast<int64_t>(rows[r].size()));
    for (int64_t i = 0; i < len; ++i) tok[r][i] = rows[r][i], seg[r][i] = r, pos[r][i] = i;
    ds.sample_ids.push_back(name + "-" + std::to_string(r));
  }
  return ds;
}

namespace {

// [B, T] true where the input's target is the same sample's next token, from [B, T+1] segments.
// With loss_from, targets before each row's loss_from are masked too.
at::Tensor loss_mask(const TokenDataset& ds, const at::Tensor& rows, const at::Tensor& seg) {
  const int64_t T = ds.seq_len;
  at::Tensor in_seg = seg.narrow(1, 0, T);
  at::Tensor mask = in_seg.ge(0) & in_seg.eq(seg.narrow(1, 1, T));
  if (!ds.loss_from.defined()) return mask;
  return mask & at::arange(T, at::kLong).unsqueeze(0).ge(ds.loss_from.index_select(0, rows).unsqueeze(1));
}

}  // namespace

int64_t count_loss_tokens(const TokenDataset& ds, const std::vector<int64_t>& rows) {
  at::Tensor idx = at::tensor(rows, at::kLong);
  return loss_mask(ds, idx, ds.segments.index_select(0, idx)).sum().item<int64_t>();
}

Batch make_batch(const TokenDataset& ds, const std::vector<int64_t>& rows, at::Device device) {
  at::Tensor idx = at::tensor(rows, at::kLong);
  const int64_t T = ds.seq_len;
  at::Tensor seg = ds.segments.index_select(0, idx);  // on the host: counted here, not on the device
  at::Tensor in_seg = seg.narrow(1, 0, T);
  at::Tensor mask = loss_mask(ds, idx, seg);
  Batch b;
  b.loss_tokens = mask.sum().item<int64_t>();
  b.one_sample_per_row = in_seg.eq(in_seg.narrow(1, 0, 1)).logical_and(in_seg.ge(0)).all().item<bool>();
  at::Tensor tok = ds.tokens.index_select(0, idx).to(device);
  at::Tensor pos = ds.positions.index_select(0, idx).to(device);
  seg = seg.to(device);
  b.input_BT = tok.narrow(1, 0, T);
  b.target_BT = tok.narrow(1, 1, T);
  b.positions_BT = pos.narrow(1, 0, T);
  b.segments_BT = seg.narrow(1, 0, T);
  b.loss_mask_BT = mask.to(at::kFloat).to(device);
  b.rows_B = idx;
  return b;
}

std::vector<int64_t> DataLoader::permutation(int64_t epoch) const {
  std::vector<int64_t> p(rows_);
  for (int64_t i = 0; i < rows_; ++i) p[i] = i;
  uint64_t s = seed_ * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(epoch) * 0xD1B54A32D192ED03ull + 1;
  for (int64_t i = rows_ - 1; i > 0; --i) {  // Fisher–Yates with an xorshift stream
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    std::swap(p[i], p[s % static_cast<uint64_t>(i + 1)]);
  }
  return p;
}

std::vector<int64_t> DataLoader::next_rows(int64_t n) {
  std::vector<int64_t> out;
  out.reserve(n);
  while (static_cast<int64_t>(out.size()) < n) {
    if (cursor_.offset >= rows_) {
      ++cursor_.epoch;
      cursor_.offset = 0;
    }
    if (perm_epoch_ != cursor_.epoch) {
      perm_ = permutation(cursor_.epoch);
      perm_epoch_ = cursor_.epoch;
    }
    out.push_back(perm_[cursor_.offset++]);
  }
  return out;
}

}  // namespace lethe
