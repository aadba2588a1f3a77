#include "runtime/param_buckets.h"

#include <algorithm>

namespace lethe {

std::vector<ParamBucket> layout_buckets(const std::vector<int64_t>& numels, const std::vector<bool>& tp_sharded,
                                        int64_t bucket_elements, int dp) {
  std::vector<ParamBucket> out;
  for (bool sharded : {true, false}) {
    int64_t filled = 0;
    bool open = false;
    for (size_t r = 0; r < numels.size(); ++r) {
      const size_t i = numels.size() - 1 - r;
      if (tp_sharded[i] != sharded) continue;
      if (!open || (filled > 0 && filled + numels[i] > bucket_elements)) {
        out.emplace_back();
        out.back().tp_sharded = sharded;
        filled = 0;
        open = true;
      }
      out.back().params.push_back(i);
      out.back().offsets.push_back(filled);
      filled += numels[i];
      out.back().shard_size = (filled + dp - 1) / dp;
    }
  }
  return out;
}

std::vector<BucketSlot> bucket_slots(const std::vector<ParamBucket>& buckets, size_t num_params) {
  std::vector<BucketSlot> slots(num_params);
  for (size_t b = 0; b < buckets.size(); ++b) {
    for (size_t j = 0; j < buckets[b].params.size(); ++j) slots[buckets[b].params[j]] = {b, buckets[b].offsets[j]};
  }
  return slots;
}

}  // namespace lethe
