// sum_partials.cu -- second pass of the deterministic loss reductions:
//   out[b] = (float)(scale * sum_{i < n} partials[b * n + i])       (float64 sum)
// partials (B, n) float64 were written by one block each (sg_store_partial).
// Thread t adds i = t, t + 256, ... in order, then the block sum's fixed tree:
// the same order on every launch, so the loss is bit-for-bit reproducible.
// Reference: the float64 references of the losses that use it.
// Grid: (1, B); block 256.

extern "C" __global__ void sum_partials_f64(const double* __restrict__ partials, float* __restrict__ out,
                                            long long n, double scale) {
    const int b = blockIdx.y;
    const double* p = partials + (long long)b * n;
    double s = 0.0;
    for (long long i = threadIdx.x; i < n; i += blockDim.x) s += p[i];
    s = sg_block_sum(s);
    if (threadIdx.x == 0) out[b] = (float)(scale * s);
}
