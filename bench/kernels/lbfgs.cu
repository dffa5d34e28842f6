// lbfgs.cu -- device-resident pieces of the L-BFGS two-loop recursion, so no
// scalar has to come back to the host inside an iteration.
//   lbfgs_dots_f32: out[k] += sum_i V[k, i] x[i] for k < K    (out (K,) zeroed)
//       grid (blocks_per_row, K), block 256, grid-stride over n.
//   lbfgs_axpy_f32: y[i] += alpha[0] x[i]; alpha is read from device memory.
// Reference: stylegrad.kernels.reference.lbfgs_dots_reference / lbfgs_axpy_reference.

extern "C" __global__ void lbfgs_dots_f32(const float* __restrict__ V, const float* __restrict__ x,
                                          float* __restrict__ out, long long n) {
    const int k = blockIdx.y;
    const float* v = V + (long long)k * n;
    float s = 0.0f;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x)
        s = fmaf(v[i], x[i], s);
    s = sg_block_sum(s);
    if (threadIdx.x == 0) atomicAdd(out + k, s);
}

extern "C" __global__ void lbfgs_axpy_f32(float* __restrict__ y, const float* __restrict__ alpha,
                                          const float* __restrict__ x, long long n) {
    const float a = *alpha;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x)
        y[i] = fmaf(a, x[i], y[i]);
}
