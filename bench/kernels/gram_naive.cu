// gram_naive.cu -- development variant of gram.cu (not shipped: the engine runs gram_tiled).
// G[b] = F[b] F[b]^T, one thread per output element, a full M-term float32 chain per element.
// Slow, obviously correct; kept as a second opinion for the bench. Its single chain of M
// rounding errors cannot meet the "<= 2x torch's error" rule at large M: the bench holds it to
// the bound derived from the number of terms instead (see bench/kernels/variants.py).
// Reference: stylegrad.kernels.reference.gram_reference. Grid (ceil(C*C/256), B), block 256.

template <typename T>
__device__ __forceinline__ void gram_naive_body(const T* __restrict__ F, float* __restrict__ G,
                                                int C, long long M) {
    const int b = blockIdx.y;
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)C * C) return;
    const int i = (int)(idx / C), j = (int)(idx % C);
    const T* fi = F + ((long long)b * C + i) * M;
    const T* fj = F + ((long long)b * C + j) * M;
    float acc = 0.0f;
    for (long long k = 0; k < M; ++k) acc = fmaf(sg_to_f32(fi[k]), sg_to_f32(fj[k]), acc);
    G[(long long)b * C * C + idx] = acc;
}

#define SG_GRAM_NAIVE(SUFFIX, T)                                                             \
    extern "C" __global__ void gram_naive_##SUFFIX(const T* F, float* G, int C, long long M) { \
        gram_naive_body<T>(F, G, C, M);                                                      \
    }
SG_FOR_DTYPES(SG_GRAM_NAIVE)

