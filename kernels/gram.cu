// gram.cu -- G[b] = F[b] F[b]^T for F of shape (B, C, M), row-major, M contiguous.
// Inputs float32 / bfloat16 / float16; accumulation and output float32.
// Reference: stylegrad.kernels.reference.gram_reference (float64 torch).
//
// gram_tiled_*: 64x64 output tiles; only tiles on or above the diagonal are computed
// (symmetry halves the FLOPs) and each off-diagonal tile is also stored mirrored. M is split
// into `chunk`-column slices across gridDim.y (split-K) so that small C still fills the GPU.
// With one split the tile goes straight to G. With S > 1 splits, split s stores its partial
// Gram into slice s of a workspace W (S, B, C, C) and gram_sum_splits_f32 adds the S slices in
// order (in float64, one rounding to float32). No atomics: the result is the same bits on
// every run. A development variant (gram_naive) lives in bench/kernels/.
// Grid: (tile pairs, S, B); block 256 (__launch_bounds__).

#define SG_GT 64   // output tile edge
#define SG_GK 32   // slice of M staged in shared memory per iteration
// 256 threads. Thread (ty, tx) = (tid / 16, tid % 16) owns rows ty + 16 r and
// columns tx + 16 c (r, c < 4) of the tile: strided rather than contiguous 4x4
// so that the shared-memory reads of a warp hit distinct banks or broadcast.

template <typename T>
__device__ __forceinline__ void gram_tiled_body(const T* __restrict__ F, float* __restrict__ G,
                                                int C, long long M, long long chunk) {
    // G: the output (one split) or the workspace W (S, B, C, C), of which this block writes
    // slice (blockIdx.y, b); every element of the slice is written by exactly one thread.
    __shared__ float As[SG_GK][SG_GT + 1];  // +1: conflict-free transposed stores
    __shared__ float Bs[SG_GK][SG_GT + 1];

    const int b = blockIdx.z;
    const int nt = (C + SG_GT - 1) / SG_GT;
    // blockIdx.x enumerates tile pairs (ti <= tj) row by row of the upper triangle.
    int p = blockIdx.x, ti = 0;
    while (p >= nt - ti) { p -= nt - ti; ++ti; }
    const int tj = ti + p;

    const long long k_begin = (long long)blockIdx.y * chunk;
    const long long k_end = min(k_begin + chunk, M);

    const int tid = threadIdx.x;
    const int ty = tid >> 4, tx = tid & 15;
    const int kk = tid & 31, r0 = tid >> 5;  // loader: lane -> k, warp -> row
    const T* Fb = F + (long long)b * C * M;

    float acc[4][4];
#pragma unroll
    for (int r = 0; r < 4; ++r)
#pragma unroll
        for (int c = 0; c < 4; ++c) acc[r][c] = 0.0f;

    for (long long k0 = k_begin; k0 < k_end; k0 += SG_GK) {
        const long long gk = k0 + kk;
        const bool k_ok = gk < k_end;
#pragma unroll
        for (int q = 0; q < SG_GT / 8; ++q) {
            const int row = r0 + 8 * q;
            const int ra = ti * SG_GT + row, rb = tj * SG_GT + row;
            As[kk][row] = (k_ok && ra < C) ? sg_to_f32(Fb[(long long)ra * M + gk]) : 0.0f;
            Bs[kk][row] = (k_ok && rb < C) ? sg_to_f32(Fb[(long long)rb * M + gk]) : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int k = 0; k < SG_GK; ++k) {
            float a[4], bv[4];
#pragma unroll
            for (int r = 0; r < 4; ++r) a[r] = As[k][ty + 16 * r];
#pragma unroll
            for (int c = 0; c < 4; ++c) bv[c] = Bs[k][tx + 16 * c];
#pragma unroll
            for (int r = 0; r < 4; ++r)
#pragma unroll
                for (int c = 0; c < 4; ++c) acc[r][c] = fmaf(a[r], bv[c], acc[r][c]);
        }
        __syncthreads();
    }

    float* Gb = G + ((long long)blockIdx.y * gridDim.z + b) * C * C;
#pragma unroll
    for (int r = 0; r < 4; ++r) {
        const int gi = ti * SG_GT + ty + 16 * r;
#pragma unroll
        for (int c = 0; c < 4; ++c) {
            const int gj = tj * SG_GT + tx + 16 * c;
            if (gi < C && gj < C) {
                Gb[(long long)gi * C + gj] = acc[r][c];
                // A diagonal tile already computes both of its triangles.
                if (ti != tj) Gb[(long long)gj * C + gi] = acc[r][c];
            }
        }
    }
}

#define SG_GRAM_TILED(SUFFIX, T)                                                      \
    extern "C" __global__ void __launch_bounds__(256)                                 \
        gram_tiled_##SUFFIX(const T* F, float* G, int C, long long M, long long chunk) { \
        gram_tiled_body<T>(F, G, C, M, chunk);                                        \
    }
SG_FOR_DTYPES(SG_GRAM_TILED)

// G[i] = sum over s < S of W[s * n + i], in float64, in order of s; n = B*C*C. 1-D grid-stride.
extern "C" __global__ void gram_sum_splits_f32(const float* __restrict__ W, float* __restrict__ G,
                                               long long n, int S) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        double s = 0.0;
        for (int k = 0; k < S; ++k) s += (double)W[(long long)k * n + i];
        G[i] = (float)s;
    }
}
