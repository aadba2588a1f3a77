#include "eval/dp_split.h"

#include <ATen/ATen.h>

#include <algorithm>

namespace lethe {

DpBlock dp_block(const Mesh& mesh, size_t n) {
  const auto dp = static_cast<size_t>(mesh.dp_size()), r = static_cast<size_t>(mesh.dp_rank());
  const size_t per = (n + dp - 1) / dp;
  return {std::min(n, r * per), std::min(n, (r + 1) * per), per};
}

at::Tensor dp_gather_rows(const Mesh& mesh, const at::Tensor& rows, size_t n) {
  if (mesh.dp_size() == 1) return rows;
  const auto per = static_cast<int64_t>(dp_block(mesh, n).per_rank);
  std::vector<int64_t> shape = rows.sizes().vec();
  shape[0] = per;
  at::Tensor padded = at::zeros(shape, rows.options());
  padded.narrow(0, 0, rows.size(0)).copy_(rows);
  shape[0] = per * mesh.dp_size();
  at::Tensor all = at::empty(shape, rows.options());
  mesh.dp().all_gather(all, padded);
  return all.narrow(0, 0, static_cast<int64_t>(n));
}

}  // namespace lethe
