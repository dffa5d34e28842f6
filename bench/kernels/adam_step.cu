// adam_step.cu -- fused Adam update, in place on param, exp_avg, exp_avg_sq
// (all float32, n elements), matching torch.optim.Adam without weight decay,
// amsgrad or maximize:
//   m = lerp(m, g, 1-beta1); v = beta2 v + (1-beta2) g^2
//   p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps),  bc_k = 1 - beta_k^step
// CUDA-graph capturable: step (and optionally lr) are read from device memory
// each launch, so a captured graph replays with the updated values. A null
// pointer means "use the value argument instead".
// Why one_minus_beta* are separate arguments: 1 - beta2 for beta2 = 0.999 is
// computed on the host in double and then rounded, because 1 - (float)0.999
// carries a 1.3e-5 relative error that would show up in every update. The bias
// corrections use bc = -expm1(step * log1p(-(1-beta))) for the same reason
// (1 - powf(beta, step) cancels catastrophically for small step).
// Reference: stylegrad.kernels.reference.adam_step_reference.

extern "C" __global__ void adam_step_f32(float* __restrict__ param, const float* __restrict__ grad,
                                         float* __restrict__ exp_avg,
                                         float* __restrict__ exp_avg_sq,
                                         const float* __restrict__ step_ptr, float step_value,
                                         const float* __restrict__ lr_ptr, float lr_value,
                                         float beta2, float one_minus_beta1,
                                         float one_minus_beta2, float eps, long long n) {
    const float step = step_ptr != nullptr ? *step_ptr : step_value;
    const float lr = lr_ptr != nullptr ? *lr_ptr : lr_value;
    const float bc1 = -expm1f(step * log1pf(-one_minus_beta1));
    const float bc2 = -expm1f(step * log1pf(-one_minus_beta2));
    const float step_size = lr / bc1;
    const float bc2_sqrt = sqrtf(bc2);
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        const float g = grad[i];
        float m = exp_avg[i];
        m = fmaf(one_minus_beta1, g - m, m);  // torch: exp_avg.lerp_(grad, 1 - beta1)
        const float v = fmaf(one_minus_beta2 * g, g, beta2 * exp_avg_sq[i]);
        exp_avg[i] = m;
        exp_avg_sq[i] = v;
        const float denom = sqrtf(v) / bc2_sqrt + eps;
        param[i] = param[i] - step_size * (m / denom);
    }
}
