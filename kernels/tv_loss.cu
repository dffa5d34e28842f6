// tv_loss.cu -- total variation of an image x (B, C, H, W) float32, value and
// gradient in one pass:
//   partials[b, block] = sum (x[i+1,j] - x[i,j])^2 + sum (x[i,j+1] - x[i,j])^2
//                        over the block's pixels (float64)
//   grad[i,j] = 2 (x[i,j]-x[i-1,j]) - 2 (x[i+1,j]-x[i,j])
//             + 2 (x[i,j]-x[i,j-1]) - 2 (x[i,j+1]-x[i,j])   (missing terms = 0)
// Each thread owns one pixel: it adds the squares of its own forward
// differences to the loss and reads its four neighbours for the gradient, so
// every difference is counted once in the loss and twice in the gradient.
// The launcher (cuda_ops.tv_loss) finishes loss[b] with sum_partials_f64.
// Reference: stylegrad.kernels.reference.tv_loss_reference.
// Grid: (blocks_per_batch, B); block 256 threads, grid-stride over C*H*W.

extern "C" __global__ void tv_loss_f32(const float* __restrict__ x, float* __restrict__ grad,
                                       double* __restrict__ partials, int H, int W, long long CHW) {
    const int b = blockIdx.y;
    const float* xb = x + (long long)b * CHW;
    float* gb = grad + (long long)b * CHW;
    double s = 0.0;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < CHW;
         idx += (long long)gridDim.x * blockDim.x) {
        const int j = (int)(idx % W);
        const int i = (int)((idx / W) % H);
        const float v = xb[idx];
        const float down = (i + 1 < H) ? xb[idx + W] - v : 0.0f;
        const float up = (i > 0) ? v - xb[idx - W] : 0.0f;
        const float right = (j + 1 < W) ? xb[idx + 1] - v : 0.0f;
        const float left = (j > 0) ? v - xb[idx - 1] : 0.0f;
        s = fma((double)down, (double)down, fma((double)right, (double)right, s));
        gb[idx] = 2.0f * ((up - down) + (left - right));
    }
    sg_store_partial(partials, sg_block_sum(s));
}
