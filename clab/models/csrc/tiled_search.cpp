// The tiled position-first search's top-k (clab/models/temporal_roi_align.py, _top_of_tiles) in one pass
// over the table tiles.
//
// For each point and 128-column tile, the point's 16-tap bag stays in registers; the point's
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
// against the torch ops on the running build before using it (clab/models/native.py).
//
// The kernels come in two instruction sets, from one vector code (tiled_search_simd.inc): AVX-512 (16
// lanes: a tile's bag in 8 registers) and AVX2 with FMA (8 lanes: a tile's bag in two halves of 8
// registers). Each is compiled for its set alone (target attributes, no machine-wide flags) and runs only
// where the CPU has it (`supports`); the caller names the set. A lane's fma is the same operation in both,
// so tiled_top gives the same bits in both; bag_logits' dot products sum over 16 or 8 lanes and differ
// between the sets within rounding. Elsewhere Python keeps the torch ops.
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
#include <string>
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

// The vector code for each instruction set: tiled_search_simd.inc, included once per namespace below with
// that set's register type and operations.
#define CLAB_TARGET __attribute__((target("avx512f")))
namespace avx512 {
using Vec = __m512;
constexpr int64_t kLanes = 16;
CLAB_TARGET inline Vec zero() { return _mm512_setzero_ps(); }
CLAB_TARGET inline Vec load(const float* p) { return _mm512_loadu_ps(p); }
CLAB_TARGET inline void store(float* p, Vec x) { _mm512_storeu_ps(p, x); }
CLAB_TARGET inline Vec set1(float x) { return _mm512_set1_ps(x); }
CLAB_TARGET inline Vec fmadd(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
CLAB_TARGET inline Vec add(Vec a, Vec b) { return _mm512_add_ps(a, b); }
CLAB_TARGET inline uint64_t above_mask(Vec x, Vec bar) {
    return static_cast<uint64_t>(_mm512_cmp_ps_mask(x, bar, _CMP_NLE_UQ));
}
CLAB_TARGET inline float sum(Vec x) { return _mm512_reduce_add_ps(x); }
#include "tiled_search_simd.inc"
}  // namespace avx512
#undef CLAB_TARGET

#define CLAB_TARGET __attribute__((target("avx2,fma")))
namespace avx2 {
using Vec = __m256;
constexpr int64_t kLanes = 8;
CLAB_TARGET inline Vec zero() { return _mm256_setzero_ps(); }
CLAB_TARGET inline Vec load(const float* p) { return _mm256_loadu_ps(p); }
CLAB_TARGET inline void store(float* p, Vec x) { _mm256_storeu_ps(p, x); }
CLAB_TARGET inline Vec set1(float x) { return _mm256_set1_ps(x); }
CLAB_TARGET inline Vec fmadd(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
CLAB_TARGET inline Vec add(Vec a, Vec b) { return _mm256_add_ps(a, b); }
CLAB_TARGET inline uint64_t above_mask(Vec x, Vec bar) {
    return static_cast<uint64_t>(static_cast<uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(x, bar, _CMP_NLE_UQ))));
}
CLAB_TARGET inline float sum(Vec x) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    s = _mm_hadd_ps(s, s);
    return _mm_cvtss_f32(_mm_hadd_ps(s, s));
}
#include "tiled_search_simd.inc"
}  // namespace avx2
#undef CLAB_TARGET

// The instruction sets the kernels come in, best first, and whether this CPU runs one.
enum class Isa { kAvx512, kAvx2 };

Isa parse_isa(const std::string& name) {
    TORCH_CHECK(name == "avx512" || name == "avx2", "isa must be 'avx512' or 'avx2', not '", name, "'");
    return name == "avx512" ? Isa::kAvx512 : Isa::kAvx2;
}

bool runs(Isa isa) {
    if (isa == Isa::kAvx512) return __builtin_cpu_supports("avx512f");
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

// The set named `name` for the kernel `kernel`, refused where the name is unknown or this CPU does not run it.
Isa runnable_isa(const std::string& name, const char* kernel) {
    const Isa set = parse_isa(name);
    TORCH_CHECK(runs(set), kernel, ": this CPU does not run ", name);
    return set;
}

}  // namespace

bool supports(const std::string& isa) { return runs(parse_isa(isa)); }

// table: Tensor[n_tiles, U, 128] float32 (tile t holds columns 128 t .. 128 t + 127); index: Tensor[P, T]
// int64 rows of the table (< U); weight: Tensor[P, T] float32; kept: between 1 and n_tiles * 128.
// Returns values Tensor[P, kept] (descending) and columns Tensor[P, kept] int64: per point, the kept
// largest of sum_k weight[p, k] * table[t, index[p, k], :] over all columns, equal values in column order.
std::vector<torch::Tensor> tiled_top(torch::Tensor table, torch::Tensor index, torch::Tensor weight,
                                     int64_t kept, const std::string& isa) {
    const auto tile_points =
        runnable_isa(isa, "tiled_top") == Isa::kAvx512 ? avx512::points_of_tile : avx2::points_of_tile;
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
            tile_points(tab + t * units * kTile, range_index.data(), range_weight.data(), count.data(), taps, p0,
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
                         torch::Tensor bias, torch::Tensor key, int64_t blocks, const std::string& isa) {
    const auto block_logit =
        runnable_isa(isa, "bag_logits") == Isa::kAvx512 ? avx512::bag_block_logit : avx2::bag_block_logit;
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
                o[p * blocks + block] = block_logit(tab, channels, idx, w, off[p], end, b, k + p * channels,
                                                        block * width, width);
        }
    });
    return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("supports", &supports, "whether this CPU runs the kernels of an instruction set ('avx512', 'avx2')");
    m.def("tiled_top", &tiled_top,
          "per point, the kept largest values of its weighted bag of table rows over all tiles, and their columns");
    m.def("bag_logits", &bag_logits,
          "per bag and block of channels, the dot product of the bag (plus a bias) with the bag's key row");
}
