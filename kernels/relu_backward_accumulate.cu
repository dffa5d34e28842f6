// relu_backward_accumulate.cu -- g = (g_above + g_loss) * (activation > 0), one pass.
// Either gradient pointer may be null (absent). All tensors share one dtype;
// the sum is formed in float32 and rounded once on store.
// Reference: stylegrad.kernels.reference.relu_backward_accumulate_reference.
// Grid: 1-D grid-stride over n elements, 256 threads.

template <typename T>
__device__ __forceinline__ void relu_bwd_body(const T* __restrict__ g_above,
                                              const T* __restrict__ g_loss,
                                              const T* __restrict__ act, T* __restrict__ out,
                                              long long n) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        float g = 0.0f;
        if (g_above != nullptr) g += sg_to_f32(g_above[i]);
        if (g_loss != nullptr) g += sg_to_f32(g_loss[i]);
        // A NaN activation counts as inactive (NaN > 0 is false), as in the spec
        // (act > 0); torch's threshold_backward (act <= 0 ? 0 : g) would pass it.
        out[i] = sg_from_f32<T>(sg_to_f32(act[i]) > 0.0f ? g : 0.0f);
    }
}

#define SG_RELU_BWD(SUFFIX, T)                                                             \
    extern "C" __global__ void relu_backward_accumulate_##SUFFIX(                          \
        const T* g_above, const T* g_loss, const T* act, T* out, long long n) {            \
        relu_bwd_body<T>(g_above, g_loss, act, out, n);                                    \
    }
SG_FOR_DTYPES(SG_RELU_BWD)
