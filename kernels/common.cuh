// common.cuh -- shared device helpers, prepended textually to every kernel
// source by kernels/loader.py (NVRTC gets no include path: we ship no CUDA
// headers and need no toolkit at run time, so half/bfloat16 are handled as raw
// 16-bit storage converted with PTX cvt instructions, available on sm_80+).
// The CPU emulator (kernels/emulator/) compiles this same text with g++; its
// header defines SG_EMULATOR and software versions of the three conversions.

struct sg_bf16 { unsigned short x; };
struct sg_f16 { unsigned short x; };

#ifndef SG_EMULATOR
__device__ __forceinline__ float sg_cvt_f32_f16(unsigned short h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}
__device__ __forceinline__ unsigned short sg_cvt_rn_f16_f32(float v) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
    return h;
}
__device__ __forceinline__ unsigned short sg_cvt_rn_bf16_f32(float v) {
    unsigned short h;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(v));
    return h;
}
#endif

__device__ __forceinline__ float sg_to_f32(float v) { return v; }
__device__ __forceinline__ float sg_to_f32(sg_bf16 v) {
    // bfloat16 is the top half of an IEEE float32: widening is exact.
    return __uint_as_float(((unsigned int)v.x) << 16);
}
__device__ __forceinline__ float sg_to_f32(sg_f16 v) { return sg_cvt_f32_f16(v.x); }

template <typename T> __device__ __forceinline__ T sg_from_f32(float v);
template <> __device__ __forceinline__ float sg_from_f32<float>(float v) { return v; }
template <> __device__ __forceinline__ sg_bf16 sg_from_f32<sg_bf16>(float v) {
    sg_bf16 r;
    r.x = sg_cvt_rn_bf16_f32(v);
    return r;
}
template <> __device__ __forceinline__ sg_f16 sg_from_f32<sg_f16>(float v) {
    sg_f16 r;
    r.x = sg_cvt_rn_f16_f32(v);
    return r;
}

// Sum of v over the warp; every lane gets the total. The butterfly's order is
// fixed, so the result does not depend on timing (deterministic).
template <typename T>
__device__ __forceinline__ T sg_warp_sum(T v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Sum of v over the block (blockDim.x a multiple of 32, at most 1024), in a
// fixed order; the result is valid in thread 0 only. 32 T of shared memory.
template <typename T>
__device__ __forceinline__ T sg_block_sum(T v) {
    __shared__ T partial[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = sg_warp_sum(v);
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    const int nwarps = (blockDim.x + 31) >> 5;
    v = (threadIdx.x < nwarps) ? partial[threadIdx.x] : T(0);
    if (warp == 0) v = sg_warp_sum(v);
    return v;
}

// Deterministic reductions across blocks: a kernel writes one float64 partial
// per block into partials[b * gridDim.x + blockIdx.x] (see sg_store_partial)
// and sum_partials.cu adds them in index order in a second launch. No atomics:
// the result is the same bits on every run and in every CUDA graph replay.
__device__ __forceinline__ void sg_store_partial(double* partials, double block_total) {
    if (threadIdx.x == 0) partials[(long long)blockIdx.y * gridDim.x + blockIdx.x] = block_total;
}

// Instantiate a templated kernel under three unmangled extern "C" names
// (NAME_f32, NAME_bf16, NAME_f16) so the loader can fetch them by name.
#define SG_FOR_DTYPES(MACRO) MACRO(f32, float) MACRO(bf16, sg_bf16) MACRO(f16, sg_f16)
