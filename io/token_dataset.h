// Token datasets: documents tokenized and packed into fixed-length rows, and a deterministic
// loader over them.
//
// Legend: N rows, T = seq_len, B rows in a batch.
// Each row holds T + 1 tokens (inputs are the first T, targets the last T). A document is
// <s> text </s>; documents are packed whole into rows in order (a document longer than T + 1
// tokens is cut into chunks of T + 1 that overlap by one token, so every next-token target is
// seen once). Each token carries its sample (segment) index and its position within the chunk,
// so attention stays inside one sample and a sample's logits do not depend on its neighbours.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"
#include "io/corpus.h"
#include "io/tokenizer.h"

namespace lethe {

struct TokenDataset {
  std::string name;
  int64_t seq_len = 0;
  at::Tensor tokens;     // [N, T+1] int64; padding = tokenizer pad id
  at::Tensor segments;   // [N, T+1] int64; sample index, -1 on padding
  at::Tensor positions;  // [N, T+1] int64; position within the sample's chunk
  std::vector<std::string> sample_ids;  // sample index → document id
  // [N] int64, or undefined: in row r, targets before index loss_from[r] carry no loss (a QA row
  // whose loss is on the answer only: loss_from = the prompt's length − 1).
  at::Tensor loss_from;

  int64_t rows() const { return tokens.size(0); }
  // xxh3-64 over tokens, segments and loss_from: identifies the data a checkpoint was trained on.
  uint64_t checksum() const;
};

// kPacked fills rows with whole documents; kOnePerRow starts every document (chunk) on a row of
// its own, so a row is one sample (sequence-level losses, per-sample unlearning).
enum class Packing { kPacked, kOnePerRow };

// One sequence of token ids per row (cut at seq_len + 1, padded with `pad`), each its own sample,
// row r's loss counting from target index loss_from[r] (answer-only rows, see loss_from).
TokenDataset pack_rows(const std::string& name, const std::vector<std::vector<int64_t>>& rows,
                       const std::vector<int64_t>& loss_from, int64_t seq_len, int64_t pad);

// Errors: no documents, or a tokenizer whose ids exceed `vocab_limit` (the model's vocabulary).
Result<TokenDataset> pack_documents(const std::string& name, const std::vector<Document>& docs,
                                    const Tokenizer& tok, int64_t seq_len, int64_t vocab_limit,
                                    Packing packing = Packing::kPacked);

struct Batch {
  at::Tensor input_BT, target_BT;  // int64
  at::Tensor positions_BT;         // int64, of the inputs
  at::Tensor segments_BT;          // int64, of the inputs (-1 padding)
  at::Tensor loss_mask_BT;         // float: 1 where target is the same sample's next token
  at::Tensor rows_B;               // int64 row indices into the dataset (always on the host)
  // Decided on the host when the batch is built, so a step reads nothing back from the device:
  int64_t loss_tokens = 0;           // sum of loss_mask_BT
  bool one_sample_per_row = false;   // every row one sample, no padding: plain causal attention
};

// Loss positions (targets that are the same sample's next token) in `rows` of `ds`, on the host.
int64_t count_loss_tokens(const TokenDataset& ds, const std::vector<int64_t>& rows);
// Gathers `rows` (int64 indices) of `ds` into a batch whose token tensors live on `device`.
Batch make_batch(const TokenDataset& ds, const std::vector<int64_t>& rows, at::Device device = at::kCPU);

struct DataCursor {
  int64_t epoch = 0;   // permutation in use
  int64_t offset = 0;  // rows of that permutation already handed out
};

// Hands out row indices in a seeded permutation per epoch (same seed, epoch → same order on any
// machine), wrapping into the next epoch as needed. Callers split the global rows of a step
// among micro-batches and data-parallel ranks, so results do not depend on the dp size.
class DataLoader {
 public:
  DataLoader(int64_t rows, uint64_t seed) : rows_(rows), seed_(seed) {}
  std::vector<int64_t> next_rows(int64_t n);
  DataCursor cursor() const { return cursor_; }
  void set_cursor(DataCursor c) { cursor_ = c; }

 private:
  std::vector<int64_t> permutation(int64_t epoch) const;
  int64_t rows_;
  uint64_t seed_;
  DataCursor cursor_;
  std::vector<int64_t> perm_;
  int64_t perm_epoch_ = -1;
};

}  // namespace lethe
