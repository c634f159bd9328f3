// y = x @ w.T (+ bias) for float32 on CPUs with AVX2 and FMA (AVX-512 where the CPU has it), for a few rows of x.
//
// A verify forward feeds 2-32 tokens. BLAS treats that as a matrix product and, on the CPUs we
// measured, costs about twice a one-token (matrix-vector) forward, although both are bound by
// reading the weights. This kernel reads each weight row once from memory for all rows of x:
// 4 input rows x 3 weight rows (AVX2) or 4 (AVX-512) share the vector accumulators while the weights further
// on are asked into L2 (small_rows_tiles.inc). Into L2, not L1: an L1 prefetch holds one of the core's few
// L1 miss slots until its line lands, which capped the weight stream. scripts/kernel_bench.py times a
// forward of the default model.
//
// Invariants: x is [M, K], w is [N, K], both contiguous float32, K % 8 == 0 (the caller checks and
// falls back to torch otherwise). Each output is a sum of the same products as x @ w.T, in another
// order fixed by the instruction set: results differ from BLAS by float32 rounding only, and a row's
// result never depends on the other rows or the thread count.

#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>

namespace {

constexpr int64_t FLOATS_PER_LINE = 16;  // a 64-byte cache line
constexpr int64_t PREFETCH_BLOCKS = 2;

namespace avx2 {
using V = __m256;
constexpr int64_t LANES = 8;
constexpr int NB = 3;  // 4 x 3 accumulators + 3 weight vectors + 1 input vector of the 16 registers
constexpr bool SPREAD_PREFETCH = false;
inline V vzero() { return _mm256_setzero_ps(); }
inline V vload(const float* p) { return _mm256_loadu_ps(p); }
inline V vload_half(const float*) { return _mm256_setzero_ps(); }  // never called: LANES == 8 divides K
inline V vfmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
inline float vsum(V v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
template <int NBT>
inline void store_sums(const V* acc, float* out) {
  for (int j = 0; j < NBT; ++j) out[j] = vsum(acc[j]);
}
#include "small_rows_tiles.inc"
}  // namespace avx2

#pragma GCC push_options
#pragma GCC target("avx512f")
namespace avx512 {
using V = __m512;
constexpr int64_t LANES = 16;
constexpr int NB = 4;  // 4 x 4 accumulators of the 32 registers: more gave nothing measurable
constexpr bool SPREAD_PREFETCH = true;
inline V vzero() { return _mm512_setzero_ps(); }
inline V vload(const float* p) { return _mm512_loadu_ps(p); }
inline V vload_half(const float* p) { return _mm512_maskz_loadu_ps(0x00FF, p); }
inline V vfmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
// Each sum: halves added (lanes i + 8), then quarters (i + 4), then (i + 2), then (i + 1); vsum4 adds four
// vectors' lanes in that same order, with a third of the instructions of four vsums.
inline float vsum(V v) {
  const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
  __m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  q = _mm_add_ps(q, _mm_permute_ps(q, _MM_SHUFFLE(1, 0, 3, 2)));
  q = _mm_add_ps(q, _mm_permute_ps(q, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm_cvtss_f32(q);
}
inline void vsum4(const V* acc, float* out) {
  // [a.q0 + a.q2, a.q1 + a.q3, b.q0 + b.q2, b.q1 + b.q3] and the same for c, d (qi: a vector's quarters)
  const V ab = _mm512_add_ps(_mm512_shuffle_f32x4(acc[0], acc[1], 0x44), _mm512_shuffle_f32x4(acc[0], acc[1], 0xEE));
  const V cd = _mm512_add_ps(_mm512_shuffle_f32x4(acc[2], acc[3], 0x44), _mm512_shuffle_f32x4(acc[2], acc[3], 0xEE));
  // quarter j: vector j's (q0 + q2) + (q1 + q3)
  V s = _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, 0x88), _mm512_shuffle_f32x4(ab, cd, 0xDD));
  s = _mm512_add_ps(s, _mm512_permute_ps(s, _MM_SHUFFLE(1, 0, 3, 2)));
  s = _mm512_add_ps(s, _mm512_permute_ps(s, _MM_SHUFFLE(2, 3, 0, 1)));
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, s);
  for (int j = 0; j < 4; ++j) out[j] = lanes[4 * j];
}
template <int NBT>
inline void store_sums(const V* acc, float* out) {
  if constexpr (NBT == 4) {
    vsum4(acc, out);
  } else {
    for (int j = 0; j < NBT; ++j) out[j] = vsum(acc[j]);
  }
}
#include "small_rows_tiles.inc"
}  // namespace avx512
#pragma GCC pop_options

bool cpu_has_avx512() { return __builtin_cpu_supports("avx512f"); }

}  // namespace

// lanes: 16 (AVX-512), 8 (AVX2), or 0 for the widest the CPU has.
torch::Tensor small_rows_linear(const torch::Tensor& x, const torch::Tensor& w, const c10::optional<torch::Tensor>& bias,
                                int64_t lanes) {
  TORCH_CHECK(x.dim() == 2 && w.dim() == 2 && x.size(1) == w.size(1), "small_rows_linear: shapes");
  TORCH_CHECK(x.scalar_type() == at::kFloat && w.scalar_type() == at::kFloat, "small_rows_linear: float32 only");
  TORCH_CHECK(x.is_contiguous() && w.is_contiguous() && x.size(1) % 8 == 0, "small_rows_linear: layout");
  if (lanes == 0) lanes = cpu_has_avx512() ? 16 : 8;
  TORCH_CHECK(lanes == 8 || (lanes == 16 && cpu_has_avx512()), "small_rows_linear: lanes must be 8, or 16 on an AVX-512 CPU");
  const int64_t M = x.size(0), K = x.size(1), N = w.size(0);
  auto y = torch::empty({M, N}, x.options());
  if (lanes == 16) {
    avx512::linear(x.data_ptr<float>(), w.data_ptr<float>(), y.data_ptr<float>(), M, K, N);
  } else {
    avx2::linear(x.data_ptr<float>(), w.data_ptr<float>(), y.data_ptr<float>(), M, K, N);
  }
  if (bias.has_value()) y.add_(*bias);
  return y;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("small_rows_linear", &small_rows_linear, "x @ w.T (+ bias) for a few float32 rows (AVX2/FMA or AVX-512)",
        pybind11::arg("x"), pybind11::arg("w"), pybind11::arg("bias"), pybind11::arg("lanes") = 0);
  m.def("widest_lanes", []() { return cpu_has_avx512() ? 16 : 8; }, "the lanes small_rows_linear uses by default");
}
