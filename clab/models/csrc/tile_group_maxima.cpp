// Pass 1 of the tiled position-first search (clab/models/temporal_roi_align.py, _top_of_tiles) in one pass
// over each table tile: every point's 16-tap bag over the tile's 128 columns stays in registers and only
// the maxima of its two 64-column groups are written. torch's embedding_bag writes the whole
// (points x 128) block and a second op reads it back for the maxima.
//
// Each column is the chain acc = fma(w_t, row_t[c], acc) over the taps in order, from acc = 0: the
// operations of embedding_bag's sum with per-sample weights. Python checks the result bitwise against
// embedding_bag + amax on the running build before using it (clab/models/native.py) and keeps the torch
// ops where it differs. The kernel is AVX-512 code (8 registers hold a bag's 128 columns), compiled for
// that instruction set alone and called only on CPUs that have it (`available()`); elsewhere Python
// keeps the torch ops.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

namespace {

constexpr int64_t kTile = 128;   // columns of a tile (CPU_TABLE_TILE)
constexpr int64_t kGroup = 64;   // columns of a top-k group (TOPK_GROUP)

__attribute__((target("avx512f")))
void points_of_tile(const float* rows, const int64_t* index, const float* weight, int64_t taps, int64_t p0,
                    int64_t p1, float* maxima, int64_t groups, int64_t first_group) {
    for (int64_t p = p0; p < p1; ++p) {
        const int64_t* idx = index + p * taps;
        const float* w = weight + p * taps;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
        for (int64_t t = 0; t < taps; ++t) {
            const float* row = rows + idx[t] * kTile;
            const __m512 wt = _mm512_set1_ps(w[t]);
            a0 = _mm512_fmadd_ps(wt, _mm512_loadu_ps(row), a0);
            a1 = _mm512_fmadd_ps(wt, _mm512_loadu_ps(row + 16), a1);
            a2 = _mm512_fmadd_ps(wt, _mm512_loadu_ps(row + 32), a2);
            a3 = _mm512_fmadd_ps(wt, _mm512_loadu_ps(row + 48), a3);
            a4 = _mm512_fmadd_ps(wt, _mm512_loadu_ps(row + 64), a4);
            a5 = _mm512_fmadd_ps(wt, _mm512_loadu_ps(row + 80), a5);
            a6 = _mm512_fmadd_ps(wt, _mm512_loadu_ps(row + 96), a6);
            a7 = _mm512_fmadd_ps(wt, _mm512_loadu_ps(row + 112), a7);
        }
        // the maximum is exact in any order: columns 0-63, then 64-127
        float* out = maxima + p * groups + first_group;
        out[0] = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(a0, a1), _mm512_max_ps(a2, a3)));
        out[1] = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(a4, a5), _mm512_max_ps(a6, a7)));
    }
}

}  // namespace

// table: Tensor[n_tiles, U, 128] float32; index: Tensor[P, T] int64 rows of the table (< U);
// weight: Tensor[P, T] float32. Returns Tensor[P, n_tiles * 2]: entry (p, 2 * t + g) is the maximum over
// columns 64 g .. 64 g + 63 of tile t of sum_k weight[p, k] * table[t, index[p, k], :].
bool available() { return __builtin_cpu_supports("avx512f"); }

torch::Tensor tile_group_maxima(torch::Tensor table, torch::Tensor index, torch::Tensor weight) {
    TORCH_CHECK(available(), "tile_group_maxima needs a CPU with AVX-512");
    TORCH_CHECK(table.dim() == 3 && table.size(2) == kTile, "table must be Tensor[n_tiles, U, 128]");
    TORCH_CHECK(table.scalar_type() == torch::kFloat && weight.scalar_type() == torch::kFloat,
                "table and weight must be float32");
    TORCH_CHECK(index.scalar_type() == torch::kLong, "index must be int64");
    TORCH_CHECK(index.dim() == 2 && weight.sizes() == index.sizes(), "index and weight must be Tensor[P, T]");
    TORCH_CHECK(table.device().is_cpu() && index.device().is_cpu() && weight.device().is_cpu(),
                "tile_group_maxima runs on CPU tensors");
    table = table.contiguous();
    index = index.contiguous();
    weight = weight.contiguous();
    const int64_t tiles = table.size(0), units = table.size(1);
    const int64_t points = index.size(0), taps = index.size(1);
    const int64_t groups = tiles * (kTile / kGroup);
    if (points > 0 && units > 0) {
        const int64_t lo = index.min().item<int64_t>(), hi = index.max().item<int64_t>();
        TORCH_CHECK(lo >= 0 && hi < units, "index holds rows outside the table");
    }
    auto maxima = torch::empty({points, groups}, table.options());
    const float* tab = table.data_ptr<float>();
    const int64_t* idx = index.data_ptr<int64_t>();
    const float* w = weight.data_ptr<float>();
    float* out = maxima.data_ptr<float>();
    // each thread takes a range of points through every tile in turn, so that a tile (1.2 MB at U = 2,394)
    // stays in its core's cache while the range's bags read it
    at::parallel_for(0, points, 64, [&](int64_t p0, int64_t p1) {
        for (int64_t t = 0; t < tiles; ++t)
            points_of_tile(tab + t * units * kTile, idx, w, taps, p0, p1, out, groups, t * (kTile / kGroup));
    });
    return maxima;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("available", &available, "whether this CPU runs the kernel (AVX-512)");
    m.def("tile_group_maxima", &tile_group_maxima,
          "per point and tile, the maxima of the two 64-column groups of its weighted bag of table rows");
}
