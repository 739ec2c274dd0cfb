// The tiled position-first search's top-k (clab/models/temporal_roi_align.py, _top_of_tiles) in one pass
// over the table tiles.
//
// For each point and 128-column tile, the point's 16-tap bag stays in 8 AVX-512 registers; the point's
// running top `kept` (values and columns) is updated only from the tile's 64-column groups whose maximum
// beats its current kept-th value, and then only from the columns that beat it. Nothing of the bags is
// written. The torch version writes every bag (embedding_bag), reads them back for the group maxima
// (amax), then sums the best groups' bags again and runs three top-k calls.
//
// Each column is the chain acc = fma(w_t, row_t[c], acc) over the taps in order, from acc = 0: the
// operations of embedding_bag's sum with per-sample weights, so the values are its values bit for bit
// (taps of weight 0 are skipped: they add exactly nothing where the table is finite; a table with an
// infinity or NaN in a row of weight 0 is the one case where embedding_bag's NaN does not appear here).
// Columns are visited in increasing order and a value enters only when it ranks above the kept-th, so
// equal values keep the lowest column first (the order of a stable sort); a NaN ranks above every number,
// as in torch.topk, so NaN features give NaN values here too. Python checks the result
// against the torch ops on the running build before using it (clab/models/native.py). The kernel is
// AVX-512 code, compiled for that instruction set alone and called only on CPUs that have it
// (`available()`); elsewhere Python keeps the torch ops.
//
// bag_logits is TRoI's attention logit of the cached path (TemporalRoIAlign._logits_by_maps): per output
// point the embed gathered as a bag of embed-tap rows, plus the bias, dotted with the key's embed per block
// of channels, without writing the embeds (torch: embedding_bag, add_, mul_, sum). Its bags are
// embedding_bag's sums; its dot products sum in another order than torch's sum, so it is checked against
// the torch ops within float rounding.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace {

constexpr int64_t kTile = 128;   // columns of a tile (CPU_TABLE_TILE)
constexpr int64_t kGroup = 64;   // columns of a group (TOPK_GROUP)
constexpr int64_t kAhead = 2;   // bags ahead whose rows bag_logits prefetches

// x ranks above y: larger, or NaN above any number (torch.topk's order; NaN does not rank above NaN).
inline bool above(float x, float y) { return x > y || (x != x && y == y); }

// Insert (x, col) into the descending top list `values` / `columns` holding `have` of at most `kept`
// entries, if it belongs there; returns the new count. Equal values: the earlier entry stays first.
inline int64_t insert(float x, int64_t col, float* values, int64_t* columns, int64_t have, int64_t kept) {
    if (have == kept && !above(x, values[kept - 1])) return have;
    int64_t q = have < kept ? have++ : kept - 1;
    while (q > 0 && above(x, values[q - 1])) {
        values[q] = values[q - 1];
        columns[q] = columns[q - 1];
        --q;
    }
    values[q] = x;
    columns[q] = col;
    return have;
}

// The 64 values of one group (4 registers, columns first_column ..) into the running top of one point.
__attribute__((target("avx512f"))) inline int64_t update(__m512 q0, __m512 q1, __m512 q2, __m512 q3,
                                                         int64_t first_column, float* values, int64_t* columns,
                                                         int64_t have, int64_t kept, float* member) {
    if (have < kept) {
        _mm512_store_ps(member, q0);
        _mm512_store_ps(member + 16, q1);
        _mm512_store_ps(member + 32, q2);
        _mm512_store_ps(member + 48, q3);
        for (int64_t k = 0; k < kGroup; ++k) have = insert(member[k], first_column + k, values, columns, have, kept);
        return have;
    }
    // only the columns that may rank above the kept-th value: larger, or unordered (a NaN on either side);
    // the bar rises as they enter, and insert checks each again. Usually none.
    const __m512 bar = _mm512_set1_ps(values[kept - 1]);
    uint64_t mask = static_cast<uint64_t>(_mm512_cmp_ps_mask(q0, bar, _CMP_NLE_UQ)) |
                    static_cast<uint64_t>(_mm512_cmp_ps_mask(q1, bar, _CMP_NLE_UQ)) << 16 |
                    static_cast<uint64_t>(_mm512_cmp_ps_mask(q2, bar, _CMP_NLE_UQ)) << 32 |
                    static_cast<uint64_t>(_mm512_cmp_ps_mask(q3, bar, _CMP_NLE_UQ)) << 48;
    if (!mask) return have;
    _mm512_store_ps(member, q0);
    _mm512_store_ps(member + 16, q1);
    _mm512_store_ps(member + 32, q2);
    _mm512_store_ps(member + 48, q3);
    while (mask) {
        const int b = __builtin_ctzll(mask);
        mask &= mask - 1;
        have = insert(member[b], first_column + b, values, columns, have, kept);
    }
    return have;
}

// Points p0 .. p1 of one tile. index / weight hold each point's taps from p0 on, `taps` slots a point, of
// which the first count[p - p0] are used.
__attribute__((target("avx512f")))
void points_of_tile(const float* rows, const int64_t* index, const float* weight, const int64_t* count,
                    int64_t taps, int64_t p0, int64_t p1, int64_t first_column, int64_t kept, float* values,
                    int64_t* columns, int64_t* have) {
    alignas(64) float member[kGroup];
    for (int64_t p = p0; p < p1; ++p) {
        const int64_t* idx = index + (p - p0) * taps;
        const float* w = weight + (p - p0) * taps;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
        for (int64_t t = 0; t < count[p - p0]; ++t) {
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
        float* v = values + p * kept;
        int64_t* c = columns + p * kept;
        int64_t h = update(a0, a1, a2, a3, first_column, v, c, have[p], kept, member);
        have[p] = update(a4, a5, a6, a7, first_column + kGroup, v, c, h, kept, member);
    }
}

// One part of V * 16 channels (from column `part`) of a bag's block logit: the bag's part in V registers
// (bag = sum_e weight[e] * table[index[e]], the fma chain in entry order from 0, as embedding_bag), plus
// the bias, times the key, added into `dot`.
template <int V>
__attribute__((target("avx512f"))) inline __m512 bag_part(const float* table, int64_t channels,
                                                          const int64_t* index, const float* weight, int64_t e0,
                                                          int64_t e1, const float* bias, const float* key,
                                                          int64_t part, __m512 dot) {
    __m512 acc[V];
    for (int v = 0; v < V; ++v) acc[v] = _mm512_setzero_ps();
    for (int64_t e = e0; e < e1; ++e) {
        const float* row = table + index[e] * channels + part;
        const __m512 w = _mm512_set1_ps(weight[e]);
        for (int v = 0; v < V; ++v) acc[v] = _mm512_fmadd_ps(w, _mm512_loadu_ps(row + 16 * v), acc[v]);
    }
    for (int v = 0; v < V; ++v) {
        __m512 x = acc[v];
        if (bias) x = _mm512_add_ps(x, _mm512_loadu_ps(bias + part + 16 * v));
        dot = _mm512_fmadd_ps(x, _mm512_loadu_ps(key + part + 16 * v), dot);
    }
    return dot;
}

// The attention logit of one bag and one block of `width` channels (a multiple of 16) from column c0:
// sum over c of (bias[c] + bag[c]) * key[c], taken 128 channels at a time, so that the accumulators stay
// in 8 registers while the bag's rows stream through.
__attribute__((target("avx512f")))
float bag_block_logit(const float* table, int64_t channels, const int64_t* index, const float* weight, int64_t e0,
                      int64_t e1, const float* bias, const float* key, int64_t c0, int64_t width) {
    __m512 dot = _mm512_setzero_ps();
    for (int64_t part = c0; part < c0 + width; part += kTile) {
        switch (std::min<int64_t>(kTile, c0 + width - part) / 16) {
            case 8: dot = bag_part<8>(table, channels, index, weight, e0, e1, bias, key, part, dot); break;
            case 7: dot = bag_part<7>(table, channels, index, weight, e0, e1, bias, key, part, dot); break;
            case 6: dot = bag_part<6>(table, channels, index, weight, e0, e1, bias, key, part, dot); break;
            case 5: dot = bag_part<5>(table, channels, index, weight, e0, e1, bias, key, part, dot); break;
            case 4: dot = bag_part<4>(table, channels, index, weight, e0, e1, bias, key, part, dot); break;
            case 3: dot = bag_part<3>(table, channels, index, weight, e0, e1, bias, key, part, dot); break;
            case 2: dot = bag_part<2>(table, channels, index, weight, e0, e1, bias, key, part, dot); break;
            default: dot = bag_part<1>(table, channels, index, weight, e0, e1, bias, key, part, dot); break;
        }
    }
    return _mm512_reduce_add_ps(dot);
}

}  // namespace

bool available() { return __builtin_cpu_supports("avx512f"); }

// table: Tensor[n_tiles, U, 128] float32 (tile t holds columns 128 t .. 128 t + 127); index: Tensor[P, T]
// int64 rows of the table (< U); weight: Tensor[P, T] float32; kept: between 1 and n_tiles * 128.
// Returns values Tensor[P, kept] (descending) and columns Tensor[P, kept] int64: per point, the kept
// largest of sum_k weight[p, k] * table[t, index[p, k], :] over all columns, equal values in column order.
std::vector<torch::Tensor> tiled_top(torch::Tensor table, torch::Tensor index, torch::Tensor weight,
                                     int64_t kept) {
    TORCH_CHECK(available(), "tiled_top needs a CPU with AVX-512");
    TORCH_CHECK(table.dim() == 3 && table.size(2) == kTile, "table must be Tensor[n_tiles, U, 128]");
    TORCH_CHECK(table.scalar_type() == torch::kFloat && weight.scalar_type() == torch::kFloat,
                "table and weight must be float32");
    TORCH_CHECK(index.scalar_type() == torch::kLong, "index must be int64");
    TORCH_CHECK(index.dim() == 2 && weight.sizes() == index.sizes(), "index and weight must be Tensor[P, T]");
    TORCH_CHECK(table.device().is_cpu() && index.device().is_cpu() && weight.device().is_cpu(),
                "tiled_top runs on CPU tensors");
    const int64_t tiles = table.size(0), units = table.size(1);
    const int64_t points = index.size(0), taps = index.size(1);
    TORCH_CHECK(kept >= 1 && kept <= tiles * kTile, "kept must be between 1 and the number of columns");
    TORCH_CHECK(taps >= 1, "index must hold at least one tap per point");
    table = table.contiguous();
    index = index.contiguous();
    weight = weight.contiguous();
    if (points > 0) {
        TORCH_CHECK(units > 0, "index holds rows outside the table");
        const int64_t lo = index.min().item<int64_t>(), hi = index.max().item<int64_t>();
        TORCH_CHECK(lo >= 0 && hi < units, "index holds rows outside the table");
    }
    auto values = torch::empty({points, kept}, table.options());
    auto columns = torch::empty({points, kept}, index.options());
    std::vector<int64_t> have(points, 0);
    const float* tab = table.data_ptr<float>();
    const int64_t* idx = index.data_ptr<int64_t>();
    const float* w = weight.data_ptr<float>();
    float* vp = values.data_ptr<float>();
    int64_t* cp = columns.data_ptr<int64_t>();
    // each thread takes a range of points through every tile in turn, so that a tile (1.2 MB at U = 2,394)
    // stays in its core's cache while the range's bags read it
    at::parallel_for(0, points, 64, [&](int64_t p0, int64_t p1) {
        // the range's taps of nonzero weight, in their order: a zero-weight tap adds nothing to a finite sum
        // (fma(0, x, acc) is acc), so the bags are those of all taps bit for bit while the loads of rows
        // that weigh nothing (the RoIAlign taps merged by the caller, samples outside the map) are skipped
        std::vector<int64_t> range_index((p1 - p0) * taps), count(p1 - p0, 0);
        std::vector<float> range_weight((p1 - p0) * taps);
        for (int64_t p = p0; p < p1; ++p) {
            int64_t c = 0;
            for (int64_t t = 0; t < taps; ++t) {
                const float wt = w[p * taps + t];
                if (wt == 0.0f) continue;
                range_index[(p - p0) * taps + c] = idx[p * taps + t];
                range_weight[(p - p0) * taps + c] = wt;
                ++c;
            }
            count[p - p0] = c;
        }
        for (int64_t t = 0; t < tiles; ++t)
            points_of_tile(tab + t * units * kTile, range_index.data(), range_weight.data(), count.data(), taps, p0,
                           p1, t * kTile, kept, vp, cp, have.data());
    });
    return {values, columns};
}

// table: Tensor[R, C] float32; index: Tensor[E] int64 rows of the table; weight: Tensor[E] float32; offsets:
// Tensor[P] int64, bag p holds entries offsets[p] .. offsets[p + 1] - 1 (the last up to E); bias: Tensor[C]
// float32 or an empty tensor (none); key: Tensor[P, C] float32; blocks: B, dividing C into blocks of C / B
// channels, a multiple of 16. Returns Tensor[P, B]: entry (p, b) = sum over the channels c of block b of
// (bias[c] + bag_p[c]) * key[p, c], bag_p = sum_e weight[e] * table[index[e]] over bag p's entries: the
// logits of embedding_bag (mode sum, per-sample weights) plus the bias, against the key, without writing
// the bags. The bags are embedding_bag's sums; the products are summed in another order than torch's
// (x * key).sum(), so the logits differ from those by float rounding.
torch::Tensor bag_logits(torch::Tensor table, torch::Tensor index, torch::Tensor weight, torch::Tensor offsets,
                         torch::Tensor bias, torch::Tensor key, int64_t blocks) {
    TORCH_CHECK(available(), "bag_logits needs a CPU with AVX-512");
    TORCH_CHECK(table.dim() == 2 && key.dim() == 2 && table.size(1) == key.size(1),
                "table must be Tensor[R, C] and key Tensor[P, C]");
    TORCH_CHECK(table.scalar_type() == torch::kFloat && weight.scalar_type() == torch::kFloat &&
                key.scalar_type() == torch::kFloat, "table, weight and key must be float32");
    TORCH_CHECK(index.scalar_type() == torch::kLong && offsets.scalar_type() == torch::kLong,
                "index and offsets must be int64");
    TORCH_CHECK(index.dim() == 1 && weight.dim() == 1 && index.size(0) == weight.size(0),
                "index and weight must be Tensor[E]");
    TORCH_CHECK(offsets.dim() == 1 && offsets.size(0) == key.size(0), "offsets must be Tensor[P], one per key row");
    const int64_t channels = table.size(1), points = key.size(0), entries = index.size(0);
    TORCH_CHECK(blocks >= 1 && channels % blocks == 0 && (channels / blocks) % 16 == 0,
                "blocks must divide the channels into blocks of a multiple of 16");
    const bool with_bias = bias.numel() > 0;
    TORCH_CHECK(!with_bias || (bias.scalar_type() == torch::kFloat && bias.numel() == channels),
                "bias must be Tensor[C] float32 or empty");
    TORCH_CHECK(table.device().is_cpu() && index.device().is_cpu() && weight.device().is_cpu() &&
                offsets.device().is_cpu() && bias.device().is_cpu() && key.device().is_cpu(),
                "bag_logits runs on CPU tensors");
    table = table.contiguous();
    index = index.contiguous();
    weight = weight.contiguous();
    offsets = offsets.contiguous();
    bias = bias.contiguous();
    key = key.contiguous();
    if (entries > 0) {
        const int64_t lo = index.min().item<int64_t>(), hi = index.max().item<int64_t>();
        TORCH_CHECK(lo >= 0 && hi < table.size(0), "index holds rows outside the table");
    }
    const int64_t* off = offsets.data_ptr<int64_t>();
    for (int64_t p = 0; p < points; ++p) {
        const int64_t end = p + 1 < points ? off[p + 1] : entries;
        TORCH_CHECK(off[p] >= 0 && off[p] <= end && end <= entries, "offsets must rise from 0 to at most E");
    }
    auto out = torch::empty({points, blocks}, key.options());
    const float* tab = table.data_ptr<float>();
    const int64_t* idx = index.data_ptr<int64_t>();
    const float* w = weight.data_ptr<float>();
    const float* b = with_bias ? bias.data_ptr<float>() : nullptr;
    const float* k = key.data_ptr<float>();
    float* o = out.data_ptr<float>();
    const int64_t width = channels / blocks;
    at::parallel_for(0, points, 16, [&](int64_t p0, int64_t p1) {
        for (int64_t p = p0; p < p1; ++p) {
            const int64_t end = p + 1 < points ? off[p + 1] : entries;
            if (p + kAhead < p1) {
                const int64_t a0 = off[p + kAhead], a1 = p + kAhead + 1 < points ? off[p + kAhead + 1] : entries;
                for (int64_t e = a0; e < a1; ++e) {
                    const char* row = reinterpret_cast<const char*>(tab + idx[e] * channels);
                    for (int64_t line = 0; line < channels * 4; line += 64) _mm_prefetch(row + line, _MM_HINT_T1);
                }
            }
            for (int64_t block = 0; block < blocks; ++block)
                o[p * blocks + block] = bag_block_logit(tab, channels, idx, w, off[p], end, b, k + p * channels,
                                                        block * width, width);
        }
    });
    return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("available", &available, "whether this CPU runs the kernel (AVX-512)");
    m.def("tiled_top", &tiled_top,
          "per point, the kept largest values of its weighted bag of table rows over all tiles, and their columns");
    m.def("bag_logits", &bag_logits,
          "per bag and block of channels, the dot product of the bag (plus a bias) with the bag's key row");
}
