// content_loss.cu -- one pass over a layer's features F (B, N) and target P:
//   loss[b] += 1/2 sum (F - P)^2   (float32, loss must be zeroed)
//   grad     = F - P               (stored in F's dtype, computed in float32)
// P is (1, N) broadcast (p_stride = 0) or (B, N) (p_stride = N), same dtype as F.
// Reference: stylegrad.kernels.reference.content_loss_reference.
// Grid: (blocks_per_batch, B); block 256 threads, grid-stride over N.

template <typename T>
__device__ __forceinline__ void content_loss_body(const T* __restrict__ F, const T* __restrict__ P,
                                                  T* __restrict__ grad, float* __restrict__ loss,
                                                  long long N, long long p_stride) {
    const int b = blockIdx.y;
    const T* f = F + (long long)b * N;
    const T* p = P + (long long)b * p_stride;
    T* g = grad + (long long)b * N;
    float s = 0.0f;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < N;
         i += (long long)gridDim.x * blockDim.x) {
        const float diff = sg_to_f32(f[i]) - sg_to_f32(p[i]);
        g[i] = sg_from_f32<T>(diff);
        s = fmaf(diff, diff, s);
    }
    s = sg_block_sum(s);
    if (threadIdx.x == 0) atomicAdd(loss + b, 0.5f * s);
}

#define SG_CONTENT_LOSS(SUFFIX, T)                                                             \
    extern "C" __global__ void content_loss_##SUFFIX(const T* F, const T* P, T* grad, float* loss, \
                                                     long long N, long long p_stride) {        \
        content_loss_body<T>(F, P, grad, loss, N, p_stride);                                   \
    }
SG_FOR_DTYPES(SG_CONTENT_LOSS)
