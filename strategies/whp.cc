// WHP, the paper's pipeline (Eldan & Russinovich 2023, "Who's Harry Potter?"): θ is fine-tuned
// on the forget text with generic labels, the argmax of
//   v_g = v_ref(translated) − α · ReLU(v_reinf(original) − v_ref(translated)),
// v_reinf the reinforced model's logits on the original text and v_ref the reference model's on
// the text with its anchored terms replaced by generic translations (translate_row), aligned to
// the original's positions. The labels are fixed data: computed for every request's forget set
// before the first one (prepare), kept in the strategy's state and checkpoints, so the reference
// and the reinforced model are freed before θ trains and never loaded on resume. Without an
// anchor dictionary nothing is translated and v_ref runs on the original text (the tokens whose
// reinforced logits rose most are pushed down). docs/strategies.md states the alignment.
#include <ATen/ATen.h>

#include <map>

#include "base/check.h"
#include "base/log.h"
#include "eval/dp_split.h"
#include "runtime/tp_ops.h"
#include "strategies/strategies.h"

namespace lethe {

TranslatedRow translate_row(const std::vector<int64_t>& ids, const std::vector<Anchor>& anchors, const Tokenizer& tok) {
  const size_t n = ids.size();
  TranslatedRow out;
  out.replaced.assign(anchors.size(), 0);
  out.skipped.assign(anchors.size(), 0);
  out.ids = ids;
  out.position.resize(n);
  for (size_t i = 0; i < n; ++i) out.position[i] = static_cast<int64_t>(i);
  if (anchors.empty()) return out;
  // Each token's bytes [start, end) of the decoded text, from decoding every prefix.
  std::vector<int> prefix;
  std::vector<size_t> start(n), end(n);
  for (size_t i = 0; i < n; ++i) {
    prefix.push_back(static_cast<int>(ids[i]));
    end[i] = tok.decode(prefix).size();
    start[i] = i ? end[i - 1] : 0;
    if (end[i] < start[i]) return out;  // a prefix that decodes shorter (a split UTF-8 byte): left as it is
  }
  const std::string text = tok.decode(prefix);
  const std::vector<AnchorMatch> matches = find_anchors(text, anchors);
  if (matches.empty()) return out;

  std::vector<int64_t> t;           // the translated tokens so far
  std::vector<int> t_int;           // the same, for decoding
  std::string expected;             // what they decode to
  std::vector<int64_t> position(n, -1);
  size_t i = 0;                     // the next original token to place
  auto copy_until = [&](size_t stop) {
    for (; i < stop; ++i) {
      position[i] = static_cast<int64_t>(t.size());
      t.push_back(ids[i]);
      t_int.push_back(static_cast<int>(ids[i]));
    }
  };
  for (const AnchorMatch& m : matches) {
    size_t i0 = i;
    while (i0 < n && end[i0] <= m.begin) ++i0;
    size_t i1 = i0;
    while (i1 < n && start[i1] < m.end) ++i1;
    // A space the tokenizer split off as a token of its own ("▁" before a word it has no "▁word"
    // for) joins the span, so that the translation tokenizes as a word start.
    auto blank = [&](size_t k) { return end[k] > start[k] && text.find_first_not_of(' ', start[k]) >= end[k]; };
    while (i0 > i && i0 < i1 && start[i0] == m.begin && blank(i0 - 1)) --i0;
    if (i0 >= i1 || start[i0] > m.begin) {  // its first byte shares a token with an earlier occurrence
      ++out.skipped[m.anchor];
      continue;
    }
    // The tokens' text with the term replaced, tokenized on its own: the leading space a token
    // carries (▁) comes back as the tokenizer's word-start prefix.
    std::string span = text.substr(start[i0], end[i1 - 1] - start[i0]);
    span.replace(m.begin - start[i0], m.end - m.begin, anchors[m.anchor].generic);
    const bool space = !span.empty() && span[0] == ' ';
    const std::vector<int> r = tok.encode(space ? span.substr(1) : span);
    const std::string before = expected + text.substr(start[i], start[i0] - start[i]);
    std::vector<int> candidate(t_int);
    for (size_t k = i; k < i0; ++k) candidate.push_back(static_cast<int>(ids[k]));
    candidate.insert(candidate.end(), r.begin(), r.end());
    if (r.empty() || tok.decode(candidate) != before + span) {  // e.g. a term glued to what precedes it
      ++out.skipped[m.anchor];
      continue;
    }
    copy_until(i0);
    for (int id : r) {
      t.push_back(id);
      t_int.push_back(id);
    }
    position[i1 - 1] = static_cast<int64_t>(t.size()) - 1;  // the term's last token predicts what follows it
    i = i1;                                                 // its earlier tokens predict nothing
    expected = before + span;
    ++out.replaced[m.anchor];
  }
  copy_until(n);
  out.ids = std::move(t);
  out.position = std::move(position);
  return out;
}

namespace {

constexpr const char* kLabelPrefix = "whp_labels/";

// The reference's logits on the translations of `rows` of `f`, gathered back to the original rows'
// inputs, fp32 [B, T, v]. `position` [B, T] (−1 on entry) receives the translated input standing
// for each input: one whose prediction has a successor in the original row and an input in the
// translated one. `counts` adds each anchor's translated, then left, occurrences.
at::Tensor translated_logits(const Llama& ref, const TokenDataset& f, const std::vector<int64_t>& rows,
                             const std::vector<Anchor>& anchors, const Tokenizer& tok, at::Tensor& position,
                             std::vector<int64_t>& counts) {
  const int64_t T = f.seq_len;
  auto pos = position.accessor<int64_t, 2>();
  std::vector<std::vector<int64_t>> translated;
  for (size_t k = 0; k < rows.size(); ++k) {
    const at::Tensor row = f.tokens[rows[k]].masked_select(f.segments[rows[k]].ge(0)).contiguous();
    TranslatedRow tr = translate_row(std::vector<int64_t>(row.data_ptr<int64_t>(), row.data_ptr<int64_t>() + row.numel()), anchors, tok);
    for (size_t a = 0; a < anchors.size(); ++a) {
      counts[a] += tr.replaced[a];
      counts[anchors.size() + a] += tr.skipped[a];
    }
    for (int64_t t = 0; t + 1 < static_cast<int64_t>(tr.position.size()) && t < T; ++t) {
      if (tr.position[t] < T) pos[static_cast<int64_t>(k)][t] = tr.position[t];
    }
    translated.push_back(std::move(tr.ids));
  }
  const TokenDataset td = pack_rows(f.name + "-translated", translated, std::vector<int64_t>(rows.size(), 0), T, tok.pad());
  const at::Tensor v = ref.logits(ref.hidden(make_batch(td, all_rows(td.rows()), ref.device()))).to(at::kFloat);
  return v.gather(1, position.clamp_min(0).to(ref.device()).unsqueeze(-1).expand({-1, -1, v.size(-1)}));
}

class Whp : public BasicStrategy {
 public:
  using BasicStrategy::BasicStrategy;
  std::string_view name() const override { return "whp"; }
  bool needs_reference() const override { return true; }
  bool keeps_reference() const override { return false; }
  bool needs_reinforced() const override { return true; }

  // Each dp rank labels its block of every forget set in batches of the step's rows per rank.
  Status prepare(const PrepareContext& ctx) override {
    at::NoGradGuard no_grad;
    const Llama& ref = *ctx.reference;
    const Llama& reinf = *ctx.reinforced;
    const Mesh& mesh = ref.mesh();
    const std::vector<Anchor> none;
    const std::vector<Anchor>& anchors = ctx.anchors ? *ctx.anchors : none;
    std::vector<int64_t> counts(2 * anchors.size(), 0);  // per anchor: translated, then left as it is
    const size_t batch = static_cast<size_t>(std::max<int64_t>(1, cfg_.forget_batch / mesh.dp_size()));
    for (const TokenDataset* f : ctx.forget_sets) {
      const DpBlock block = dp_block(mesh, static_cast<size_t>(f->rows()));
      std::vector<at::Tensor> parts = {at::empty({0, f->seq_len}, at::kLong)};
      for (size_t i = block.first; i < block.last; i += batch) {
        const std::vector<int64_t> rows = row_range(static_cast<int64_t>(i), static_cast<int64_t>(std::min(block.last, i + batch)));
        Batch original = make_batch(*f, rows, ref.device());
        const auto B = static_cast<int64_t>(rows.size());
        at::Tensor v_ref, position;  // per input of `original`: the reference's input that stands for it
        if (anchors.empty()) {
          v_ref = ref.logits(ref.hidden(original)).to(at::kFloat);
          position = at::arange(f->seq_len, at::kLong).expand({B, f->seq_len});
        } else {
          position = at::full({B, f->seq_len}, -1, at::kLong);
          v_ref = translated_logits(ref, *f, rows, anchors, *ctx.tokenizer, position, counts);
        }
        const at::Tensor v_reinf = reinf.logits(reinf.hidden(original));
        at::Tensor labels = vocab_parallel_argmax(generic_logits(v_ref, v_reinf, cfg_.whp_alpha), ref.vocab_start(), ref.tp()).cpu();
        const at::Tensor valid = position.ge(0).logical_and(original.loss_mask_BT.cpu().gt(0));
        parts.push_back(labels.masked_fill(valid.logical_not(), -1));
      }
      labels_[f->name] = dp_gather_rows(mesh, at::cat(parts), static_cast<size_t>(f->rows()));
      ctx.cost->forward_tokens += 2 * f->rows() * f->seq_len;  // the reference's and the reinforced model's
    }
    report(anchors, counts, mesh);
    return Status::ok();
  }

  LossTerms loss(const Llama& model, const UnlearnBatch& b) override {
    auto cached = labels_.find(ctx_.data.forget->name);
    LETHE_CHECK_MSG(cached != labels_.end(), "whp: no generic labels for " + ctx_.data.forget->name);
    const at::Tensor labels = cached->second.index_select(0, b.forget.rows_B);
    Batch f = b.forget;
    const at::Tensor valid = labels.ge(0);
    f.target_BT = labels.clamp_min(0).to(model.device());
    f.loss_mask_BT = valid.to(at::kFloat).to(model.device());
    f.loss_tokens = valid.sum().item<int64_t>();
    LossTerms t;
    t.add("forget_whp", cfg_.forget_weight * mean_nll(model, f));
    return t;
  }

  StateTensors state() const override {
    StateTensors s;
    for (const auto& [name, l] : labels_) s[kLabelPrefix + name] = l;
    return s;
  }

  Status set_state(const StateTensors& s) override {
    std::map<std::string, at::Tensor> cached;
    for (const auto& [key, t] : s) {
      if (key.rfind(kLabelPrefix, 0) == 0) cached[key.substr(std::char_traits<char>::length(kLabelPrefix))] = t.to(at::kLong);
    }
    const TokenDataset& f = *ctx_.data.forget;
    auto it = cached.find(f.name);
    if (it == cached.end() || it->second.dim() != 2 || it->second.size(0) != f.rows() || it->second.size(1) != f.seq_len) {
      return Status::error("state/strategy/" + std::string(kLabelPrefix) + f.name + ": missing, or not [" + std::to_string(f.rows()) +
                           ", " + std::to_string(f.seq_len) + "] generic labels (one per forget token)");
    }
    labels_ = std::move(cached);
    return Status::ok();
  }

 private:
  // Logs what the translation did, summed over dp ranks: a warning for every anchor that never
  // occurs, and how many occurrences could not be aligned.
  static void report(const std::vector<Anchor>& anchors, const std::vector<int64_t>& per_rank, const Mesh& mesh) {
    if (anchors.empty()) {
      log().info("whp: no anchor dictionary: the reference labels the original text");
      return;
    }
    at::Tensor counts = at::tensor(per_rank, at::kLong);
    mesh.dp().host().all_reduce(counts, ReduceOp::kSum);
    const auto* c = counts.data_ptr<int64_t>();
    const size_t n = anchors.size();
    int64_t translated = 0, left = 0;
    for (size_t a = 0; a < n; ++a) {
      translated += c[a];
      left += c[n + a];
      if (c[a] + c[n + a] == 0) log().warn("whp: anchor \"{}\" never occurs in the forget set (unlearn.whp_anchors)", anchors[a].term);
    }
    log().info("whp: {} anchored term(s) translated in the forget set, {} left as they are (not alignable)", translated, left);
  }

  std::map<std::string, at::Tensor> labels_;  // forget set name → [rows, seq_len] generic label ids (−1: no loss), host
};

}  // namespace

std::unique_ptr<Strategy> make_whp(const UnlearnConfig& cfg) { return std::make_unique<Whp>(cfg); }

}  // namespace lethe
