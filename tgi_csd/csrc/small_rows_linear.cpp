// y = x @ w.T (+ bias) for float32 on CPUs with AVX2 and FMA, for a few rows of x.
//
// A verify forward feeds 2-16 tokens. BLAS treats that as a matrix product and, on the CPUs we
// measured, costs about twice a one-token (matrix-vector) forward, although both are bound by
// reading the weights. This kernel reads each weight row once from memory for all rows of x:
// 3 weight rows x 4 input rows share 12 AVX accumulators, and the next weight rows are prefetched
// into L2 while these are used, so up to about 8 rows cost about what one row does. Into L2, not L1:
// an L1 prefetch holds one of the core's few L1 miss slots until its line lands, which capped the
// weight stream (here a 16-token forward of the default model took 100 ms with L1 prefetches, 84 ms
// with L2 ones; 8 tokens 77 and 53 ms: scripts/kernel_bench.py).
//
// Invariants: x is [M, K], w is [N, K], both contiguous float32, K % 8 == 0 (the caller checks and
// falls back to torch otherwise). Each output is a sum of the same products as x @ w.T, in another
// order: results differ from BLAS by float32 rounding only.

#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

namespace {

inline float horizontal_sum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Rows [0, MB) of x against weight rows [n, n + NB): y[m, n + j] = dot(x[m], w[n + j]).
template <int MB, int NB>
inline void tile(const float* x, const float* w, float* y, int64_t K, int64_t N, int64_t n) {
  __m256 acc[MB][NB];
  for (int i = 0; i < MB; ++i)
    for (int j = 0; j < NB; ++j) acc[i][j] = _mm256_setzero_ps();
  for (int64_t k = 0; k < K; k += 8) {
    __m256 wv[NB];
    for (int j = 0; j < NB; ++j) {
      _mm_prefetch(reinterpret_cast<const char*>(w + (n + j + NB) * K + k), _MM_HINT_T1);
      wv[j] = _mm256_loadu_ps(w + (n + j) * K + k);
    }
    for (int i = 0; i < MB; ++i) {
      const __m256 xv = _mm256_loadu_ps(x + i * K + k);
      for (int j = 0; j < NB; ++j) acc[i][j] = _mm256_fmadd_ps(xv, wv[j], acc[i][j]);
    }
  }
  for (int i = 0; i < MB; ++i)
    for (int j = 0; j < NB; ++j) y[i * N + n + j] = horizontal_sum(acc[i][j]);
}

// All M rows of x against weight rows [n, n + NB); the weight rows stay in L1 across row tiles.
template <int NB>
void weight_block(const float* x, const float* w, float* y, int64_t M, int64_t K, int64_t N, int64_t n) {
  int64_t m = 0;
  for (; m + 4 <= M; m += 4) tile<4, NB>(x + m * K, w, y + m * N, K, N, n);
  switch (M - m) {
    case 3: tile<3, NB>(x + m * K, w, y + m * N, K, N, n); break;
    case 2: tile<2, NB>(x + m * K, w, y + m * N, K, N, n); break;
    case 1: tile<1, NB>(x + m * K, w, y + m * N, K, N, n); break;
    default: break;
  }
}

}  // namespace

torch::Tensor small_rows_linear(const torch::Tensor& x, const torch::Tensor& w, const c10::optional<torch::Tensor>& bias) {
  TORCH_CHECK(x.dim() == 2 && w.dim() == 2 && x.size(1) == w.size(1), "small_rows_linear: shapes");
  TORCH_CHECK(x.scalar_type() == at::kFloat && w.scalar_type() == at::kFloat, "small_rows_linear: float32 only");
  TORCH_CHECK(x.is_contiguous() && w.is_contiguous() && x.size(1) % 8 == 0, "small_rows_linear: layout");
  const int64_t M = x.size(0), K = x.size(1), N = w.size(0);
  auto y = torch::empty({M, N}, x.options());
  const float* xp = x.data_ptr<float>();
  const float* wp = w.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  constexpr int64_t NB = 3;
  const int64_t blocks = (N + NB - 1) / NB;
  // Threads split the weight rows; each block is independent, so results do not depend on threads.
  at::parallel_for(0, blocks, 64, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t n = b * NB;
      if (n + NB <= N) {
        weight_block<NB>(xp, wp, yp, M, K, N, n);
      } else {
        for (int64_t r = n; r < N; ++r) weight_block<1>(xp, wp, yp, M, K, N, r);
      }
    }
  });
  if (bias.has_value()) y.add_(*bias);
  return y;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("small_rows_linear", &small_rows_linear, "x @ w.T (+ bias) for a few float32 rows (AVX2/FMA)");
}
