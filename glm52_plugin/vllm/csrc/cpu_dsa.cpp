// DSA on CPU over vLLM's paged caches: the lightning indexer's causal top-k and the sparse
// absorbed-MLA attention over the selected latent rows, one call each per layer and step.
//
// The math is glm52_plugin/reference/layers.py (indexer_topk, sparse_attention) in fp32; the
// eager twin in glm52_plugin/vllm/sparse_mla.py is the fallback and the tests' peer. A step's
// queries are addressed the way vLLM lays them out: request r owns the query rows
// query_start_loc[r] .. query_start_loc[r + 1] - 1 and its key position j lives in cache slot
// block_table[r][j / block_size] * block_size + j % block_size. The point is the op count: the
// eager path costs ~30 small torch ops per layer (5-60 us each at decode sizes), this one call.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <vector>

namespace {

inline float bf16_to_float(uint16_t bits) {
  uint32_t wide = static_cast<uint32_t>(bits) << 16;
  float out;
  std::memcpy(&out, &wide, sizeof(out));
  return out;
}

// A [N, D] cache (bf16 or fp32, contiguous rows), read row by row into fp32. The pointer, stride
// and dtype are taken once: Tensor accessors cost ~10-20 ns each, per row that adds up.
struct Rows {
  const void* base;
  int64_t stride;
  bool bf16;
  explicit Rows(const at::Tensor& cache)
      : base(cache.data_ptr()), stride(cache.stride(0)),
        bf16(cache.scalar_type() == at::kBFloat16) {}
  void load(int64_t row, int64_t d, float* dst) const {
    if (bf16) {
      const auto* src = static_cast<const uint16_t*>(base) + row * stride;
#pragma omp simd
      for (int64_t i = 0; i < d; ++i) dst[i] = bf16_to_float(src[i]);
    } else {
      std::memcpy(dst, static_cast<const float*>(base) + row * stride, d * sizeof(float));
    }
  }
};

inline float dot(const float* a, const float* b, int64_t n) {
  float acc = 0.f;
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < n; ++i) acc += a[i] * b[i];
  return acc;
}

struct Paging {
  const int32_t* table;
  int64_t table_stride;
  int64_t block_size;
  int64_t slot(int64_t request, int64_t pos) const {
    return static_cast<int64_t>(table[request * table_stride + pos / block_size]) * block_size +
           pos % block_size;
  }
};

Paging paging(const at::Tensor& block_table, int64_t block_size) {
  TORCH_CHECK(block_table.dim() == 2 && block_table.scalar_type() == at::kInt,
              "glm52 cpu_dsa: block_table must be int32 [R, blocks]");
  TORCH_CHECK(block_table.stride(1) == 1, "glm52 cpu_dsa: block_table rows must be contiguous");
  TORCH_CHECK(block_size > 0, "glm52 cpu_dsa: block_size must be positive");
  return {block_table.data_ptr<int32_t>(), block_table.stride(0), block_size};
}

// query_start_loc's data after checking it is int32 [R + 1] for R block-table rows.
const int32_t* query_starts(const at::Tensor& starts, int64_t num_requests) {
  TORCH_CHECK(starts.dim() == 1 && starts.scalar_type() == at::kInt &&
                  starts.size(0) == num_requests + 1,
              "glm52 cpu_dsa: query_start_loc must be int32 [R + 1] for R block-table rows");
  return starts.data_ptr<int32_t>();
}

// Request of every query row in [first, last): starts is query_start_loc (int32, R + 1).
std::vector<int64_t> request_of_rows(const at::Tensor& starts, int64_t num_requests) {
  const int32_t* s = query_starts(starts, num_requests);
  std::vector<int64_t> owner;
  owner.reserve(s[num_requests] - s[0]);
  for (int64_t r = 0; r < num_requests; ++r)
    for (int32_t t = s[r]; t < s[r + 1]; ++t) owner.push_back(r);
  return owner;
}

void check_rows(const at::Tensor& t, const char* name, int64_t dim) {
  TORCH_CHECK(t.dim() == dim, "glm52 cpu_dsa: ", name, " must have ", dim, " dims");
  TORCH_CHECK(t.is_contiguous(), "glm52 cpu_dsa: ", name, " must be contiguous");
}

void check_cache(const at::Tensor& cache, const char* name, int64_t width) {
  TORCH_CHECK(cache.dim() == 2 && cache.stride(1) == 1 && cache.size(1) == width,
              "glm52 cpu_dsa: ", name, " must be [slots, ", width, "] with contiguous rows");
  TORCH_CHECK(cache.scalar_type() == at::kBFloat16 || cache.scalar_type() == at::kFloat,
              "glm52 cpu_dsa: ", name, " must be bf16 or fp32");
}

// out[i * out_stride] = alpha * a[i, :] . b for the m rows of a[m, d] (row-major). Four rows
// share each load of b and keep four independent vector sums: a single dot of 128-576 floats
// is bound by the latency of its one accumulator chain.
inline void dots(const float* a, int64_t m, const float* b, int64_t d, float alpha, float* out,
                 int64_t out_stride) {
  int64_t i = 0;
  for (; i + 4 <= m; i += 4) {
    const float *a0 = a + i * d, *a1 = a0 + d, *a2 = a1 + d, *a3 = a2 + d;
    float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
    for (int64_t x = 0; x < d; ++x) {
      const float bx = b[x];
      s0 += a0[x] * bx;
      s1 += a1[x] * bx;
      s2 += a2[x] * bx;
      s3 += a3[x] * bx;
    }
    out[i * out_stride] = s0 * alpha;
    out[(i + 1) * out_stride] = s1 * alpha;
    out[(i + 2) * out_stride] = s2 * alpha;
    out[(i + 3) * out_stride] = s3 * alpha;
  }
  for (; i < m; ++i) out[i * out_stride] = dot(a + i * d, b, d) * alpha;
}

// Row-major out[m, n] = alpha * a[m, d] . b[n, d]^T.
inline void gemm_abt(int64_t m, int64_t n, int64_t d, float alpha, const float* a,
                     const float* b, float* out) {
  for (int64_t j = 0; j < n; ++j) dots(a, m, b + j * d, d, alpha, out + j, n);
}

// Row-major out[m, c] = a[m, n] . b[n, :c] for b with rows of ld_b >= c floats.
inline void gemm_ab(int64_t m, int64_t n, int64_t c, const float* a, const float* b,
                    int64_t ld_b, float* out) {
  std::fill(out, out + m * c, 0.f);
  for (int64_t j = 0; j < n; ++j) {
    const float* bj = b + j * ld_b;
    for (int64_t i = 0; i < m; ++i) {
      const float w = a[i * n + j];
      if (w == 0.f) continue;
      float* oi = out + i * c;
#pragma omp simd
      for (int64_t x = 0; x < c; ++x) oi[x] += w * bj[x];
    }
  }
}

// Query rows per indexer work item: bounds its [rows * H_I, keys] score block to ~16 MB.
constexpr int64_t kScoreElements = int64_t{1} << 22;

// out[t, :] = the top-k key positions of query row t (int64, -1 past the visible keys):
// I[j] = sum_h weights[t, h] * relu(scale * q[t, h] . key[j]) for j <= positions[t], sorted by
// I descending with ties to the earlier position (the reference's stable sort); positions after
// the query score -inf there and are never attended, so they are left out here.
void index_topk(at::Tensor& out, const at::Tensor& q, const at::Tensor& weights,
                const at::Tensor& keys, const at::Tensor& block_table,
                const at::Tensor& query_start_loc, const at::Tensor& positions,
                int64_t block_size, double scale) {
  check_rows(q, "q", 3);
  check_rows(weights, "weights", 2);
  check_rows(out, "out", 2);
  TORCH_CHECK(q.scalar_type() == at::kFloat && weights.scalar_type() == at::kFloat &&
                  out.scalar_type() == at::kLong && positions.scalar_type() == at::kLong,
              "glm52 cpu_dsa: index_topk wants fp32 q and weights, int64 positions and out");
  const int64_t heads = q.size(1), dim = q.size(2), k = out.size(1);
  check_cache(keys, "index keys", dim);
  const Paging pages = paging(block_table, block_size);
  const int32_t* starts = query_starts(query_start_loc, block_table.size(0));
  const float* qd = q.data_ptr<float>();
  const float* wd = weights.data_ptr<float>();
  const int64_t* pos = positions.data_ptr<int64_t>();
  int64_t* od = out.data_ptr<int64_t>();
  const float s = static_cast<float>(scale);
  const Rows key_cache(keys);

  // work items: (request, first query row, query rows), a request's rows cut to bound scores
  struct Item { int64_t request, first, rows; };
  std::vector<Item> items;
  for (int64_t r = 0; r < block_table.size(0); ++r) {
    const int64_t lo = starts[r], hi = starts[r + 1];
    if (hi <= lo) continue;
    const int64_t keys_max = pos[hi - 1] + 1;
    const int64_t step = std::max<int64_t>(1, kScoreElements / std::max<int64_t>(heads * keys_max, 1));
    for (int64_t t = lo; t < hi; t += step) items.push_back({r, t, std::min(step, hi - t)});
  }

  at::parallel_for(0, static_cast<int64_t>(items.size()), 1, [&](int64_t lo, int64_t hi) {
    std::vector<float> key_rows, scores, index;
    std::vector<int64_t> order;
    for (int64_t i = lo; i < hi; ++i) {
      const Item& item = items[i];
      const int64_t last = item.first + item.rows - 1;
      const int64_t n_keys = std::max<int64_t>(pos[last], pos[item.first]) + 1;
      key_rows.resize(n_keys * dim);
      // keys 0..n_keys-1 in order: walk the request's blocks instead of dividing per key
      const int32_t* blocks = pages.table + item.request * pages.table_stride;
      for (int64_t j0 = 0; j0 < n_keys; j0 += pages.block_size) {
        const int64_t first_slot = static_cast<int64_t>(blocks[j0 / pages.block_size]) * pages.block_size;
        const int64_t end = std::min(n_keys - j0, pages.block_size);
        for (int64_t o = 0; o < end; ++o)
          key_cache.load(first_slot + o, dim, key_rows.data() + (j0 + o) * dim);
      }
      scores.resize(item.rows * heads * n_keys);
      gemm_abt(item.rows * heads, n_keys, dim, s, qd + item.first * heads * dim, key_rows.data(),
               scores.data());
      index.resize(n_keys);
      order.resize(n_keys);
      for (int64_t row = 0; row < item.rows; ++row) {
        const int64_t t = item.first + row, n = std::min(pos[t] + 1, n_keys);
        std::fill(index.begin(), index.begin() + n, 0.f);
        for (int64_t h = 0; h < heads; ++h) {
          const float w = wd[t * heads + h];
          const float* sh = scores.data() + (row * heads + h) * n_keys;
#pragma omp simd
          for (int64_t j = 0; j < n; ++j) index[j] += w * std::max(sh[j], 0.f);
        }
        std::iota(order.begin(), order.begin() + n, 0);
        const int64_t keep = std::min(k, n);
        std::partial_sort(order.begin(), order.begin() + keep, order.begin() + n,
                          [&](int64_t a, int64_t b) {
                            return index[a] > index[b] || (index[a] == index[b] && a < b);
                          });
        int64_t* dst = od + t * k;
        std::copy(order.begin(), order.begin() + keep, dst);
        std::fill(dst + keep, dst + k, int64_t{-1});
      }
    }
  });
}

// out[t, h, :] = softmax_k(scale * q[t, h] . latent[k]) @ latent[k, :kv_rank] over the keys of
// topk[t] (key positions, -1 = none), latent rows read from the paged cache; fp32 throughout.
void sparse_mla(at::Tensor& out, const at::Tensor& q, const at::Tensor& latent,
                const at::Tensor& block_table, const at::Tensor& query_start_loc,
                const at::Tensor& topk, int64_t block_size, double scale) {
  check_rows(q, "q", 3);
  check_rows(topk, "topk", 2);
  check_rows(out, "out", 3);
  TORCH_CHECK(q.scalar_type() == at::kFloat && out.scalar_type() == at::kFloat &&
                  topk.scalar_type() == at::kLong,
              "glm52 cpu_dsa: sparse_mla wants fp32 q and out, int64 topk");
  const int64_t heads = q.size(1), width = q.size(2), rank = out.size(2), k = topk.size(1);
  TORCH_CHECK(out.size(1) == heads && rank <= width, "glm52 cpu_dsa: out must be [T, H, C <= D]");
  check_cache(latent, "latent cache", width);
  const Paging pages = paging(block_table, block_size);
  const std::vector<int64_t> owner = request_of_rows(query_start_loc, block_table.size(0));
  const int64_t first = query_start_loc.data_ptr<int32_t>()[0];
  const float* qd = q.data_ptr<float>();
  const int64_t* kd = topk.data_ptr<int64_t>();
  float* od = out.data_ptr<float>();
  const float s = static_cast<float>(scale);
  const Rows latent_cache(latent);

  at::parallel_for(0, static_cast<int64_t>(owner.size()), 1, [&](int64_t lo, int64_t hi) {
    std::vector<float> rows(k * width), p(heads * k);
    for (int64_t i = lo; i < hi; ++i) {
      const int64_t t = first + i, r = owner[i];
      int64_t n = 0;  // selected rows, gathered once for all heads
      for (int64_t j = 0; j < k; ++j) {
        const int64_t key_pos = kd[t * k + j];
        if (key_pos < 0) continue;
        latent_cache.load(pages.slot(r, key_pos), width, rows.data() + n * width);
        ++n;
      }
      float* ot = od + t * heads * rank;
      if (n == 0) {
        std::fill(ot, ot + heads * rank, 0.f);
        continue;
      }
      gemm_abt(heads, n, width, s, qd + t * heads * width, rows.data(), p.data());
      for (int64_t h = 0; h < heads; ++h) {
        float* ph = p.data() + h * n;
        const float top = *std::max_element(ph, ph + n);
        float total = 0.f;
        for (int64_t j = 0; j < n; ++j) total += (ph[j] = std::exp(ph[j] - top));
        // weights under 2^-100 of the largest add nothing an fp32 sum keeps; as denormals
        // they would cost ~100 cycles per multiply in the product below
        const float inv = 1.f / total, floor = 7.9e-31f;
        for (int64_t j = 0; j < n; ++j) ph[j] = ph[j] < floor ? 0.f : ph[j] * inv;
      }
      gemm_ab(heads, n, rank, p.data(), rows.data(), width, ot);
    }
  });
}

}  // namespace

TORCH_LIBRARY(glm52_cpu_dsa, m) {
  m.def(
      "index_topk(Tensor(a!) out, Tensor q, Tensor weights, Tensor keys, Tensor block_table, "
      "Tensor query_start_loc, Tensor positions, int block_size, float scale) -> ()");
  m.def(
      "sparse_mla(Tensor(a!) out, Tensor q, Tensor latent, Tensor block_table, "
      "Tensor query_start_loc, Tensor topk, int block_size, float scale) -> ()");
}

TORCH_LIBRARY_IMPL(glm52_cpu_dsa, CPU, m) {
  m.impl("index_topk", index_topk);
  m.impl("sparse_mla", sparse_mla);
}
