// style_loss.cu -- one pass over a layer's Gram matrix G (B, C, C) float32:
//   partials[b, block] = sum over the block's elements of (G - A)^2   (float64)
//   D                  = grad_scale * (G - A)
// A is the target Gram, (1, C, C) broadcast (a_stride = 0) or (B, C, C)
// (a_stride = C*C). The launcher (cuda_ops.style_loss) finishes
// loss[b] = loss_scale * sum of partials with sum_partials_f64. The feature
// gradient D F is NOT done here: it is a plain batched matmul and goes to
// cuBLAS via torch.bmm (see cuda_ops.style_feature_grad).
// Reference: stylegrad.kernels.reference.style_loss_reference.
// Grid: (blocks_per_batch, B); block 256 threads, grid-stride over C*C.

extern "C" __global__ void style_loss_f32(const float* __restrict__ G, const float* __restrict__ A,
                                          float* __restrict__ D, double* __restrict__ partials,
                                          long long CC, long long a_stride, float grad_scale) {
    const int b = blockIdx.y;
    const float* g = G + (long long)b * CC;
    const float* a = A + (long long)b * a_stride;
    float* d = D + (long long)b * CC;
    double s = 0.0;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < CC;
         i += (long long)gridDim.x * blockDim.x) {
        const float diff = g[i] - a[i];
        d[i] = grad_scale * diff;
        s = fma((double)diff, (double)diff, s);
    }
    sg_store_partial(partials, sg_block_sum(s));
}
