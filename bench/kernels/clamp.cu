// clamp.cu -- x = min(max(x, 0), 1) in place, float32. Written with
// comparisons so NaN stays NaN, as torch.clamp_ does (fminf/fmaxf would map
// NaN to a bound and hide a diverged optimisation).
// Reference: stylegrad.kernels.reference.clamp_reference.

extern "C" __global__ void clamp_f32(float* __restrict__ x, long long n) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        const float v = x[i];
        x[i] = v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v);
    }
}
