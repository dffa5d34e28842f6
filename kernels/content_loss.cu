// content_loss.cu -- one pass over a layer's features F (B, N) and target P:
//   partials[b, block] = sum over the block's elements of (F - P)^2   (float64)
//   grad               = F - P   (stored in F's dtype, computed in float32)
// P is (1, N) broadcast (p_stride = 0) or (B, N) (p_stride = N), same dtype as F.
// The launcher (cuda_ops.content_loss) finishes loss[b] = 1/2 sum of partials
// with sum_partials_f64. The squares are exact in float64 and summed in float64,
// so the loss carries one float32 rounding plus that of the difference.
// Reference: stylegrad.kernels.reference.content_loss_reference.
// Grid: (blocks_per_batch, B); block 256 threads, grid-stride over N.

template <typename T>
__device__ __forceinline__ void content_loss_body(const T* __restrict__ F, const T* __restrict__ P,
                                                  T* __restrict__ grad, double* __restrict__ partials,
                                                  long long N, long long p_stride) {
    const int b = blockIdx.y;
    const T* f = F + (long long)b * N;
    const T* p = P + (long long)b * p_stride;
    T* g = grad + (long long)b * N;
    double s = 0.0;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < N;
         i += (long long)gridDim.x * blockDim.x) {
        const float diff = sg_to_f32(f[i]) - sg_to_f32(p[i]);
        g[i] = sg_from_f32<T>(diff);
        s = fma((double)diff, (double)diff, s);
    }
    sg_store_partial(partials, sg_block_sum(s));
}

#define SG_CONTENT_LOSS(SUFFIX, T)                                                                 \
    extern "C" __global__ void content_loss_##SUFFIX(const T* F, const T* P, T* grad,               \
                                                     double* partials, long long N, long long p_stride) { \
        content_loss_body<T>(F, P, grad, partials, N, p_stride);                                   \
    }
SG_FOR_DTYPES(SG_CONTENT_LOSS)
