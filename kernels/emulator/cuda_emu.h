// cuda_emu.h -- the part of the CUDA C++ language our kernels use, for the host compiler.
//
// The emulator (kernels/emulator/__init__.py) compiles exactly the text the NVRTC loader
// compiles (common.cuh + <name>.cu, from loader.read_source) with g++, after this header and
// before runtime.inc. Every thread of a block is a fiber with its own stack; the scheduler in
// runtime.inc runs each fiber until it reaches a barrier (__syncthreads, a warp shuffle or
// __syncwarp) or returns, then resumes the waiting threads in the order of the chosen schedule.
// Blocks run one after another, in the schedule's block order. One OS thread runs everything,
// so plain C++ read-modify-writes are atomic here.
//
// What differs from a GPU (the things this cannot verify):
//   * No floating-point contraction (-ffp-contract=off): NVRTC fuses a*b+c into an FMA by
//     default; explicit fmaf() is fused in both.
//   * sqrtf / division are IEEE-correct in both (NVRTC's defaults prec-sqrt/prec-div); expm1f,
//     log1pf, expf... come from glibc here and from CUDA's libdevice there (both within ~2 ulp).
//   * Inter-block concurrency: blocks never overlap, so races BETWEEN blocks are not observed;
//     races inside a block are, through the schedule order (run at least two schedules).
//   * Memory: no caches, coalescing, bank conflicts or speed; the 48 KiB static shared-memory
//     limit is not checked.
#pragma once

#define SG_EMULATOR 1

#include <math.h>
#include <stdint.h>
#include <string.h>

#include <type_traits>

// ------------------------------------------------------------------ keywords
#define __global__
#define __device__
#define __host__
#define __noinline__ __attribute__((noinline))
#define __forceinline__ inline __attribute__((always_inline))
#ifndef SG_EMU_KEEP_LAUNCH_BOUNDS  // kept only when the build reads the bounds (g++ -E)
#define __launch_bounds__(...)
#endif
#define __constant__
// A __shared__ variable is one object per block. Blocks run one at a time on one OS thread, so
// a function-local static is exactly that. Its contents are NOT reset between blocks (a GPU
// does not reset shared memory either): a kernel that reads shared memory before writing it
// sees the previous block's values, which the schedules then expose.
#define __shared__ static

struct uint3 { unsigned int x, y, z; };
struct dim3 { unsigned int x, y, z; };

namespace sg_emu {

struct Fiber;
extern Fiber* g_cur;  // the running thread (defined in runtime.inc)
extern uint3 g_block_idx;
extern dim3 g_block_dim, g_grid_dim;
const uint3& thread_idx(const Fiber* f);

void syncthreads(const char* file, int line);
void syncwarp(unsigned mask, const char* file, int line);
// A warp collective: every lane named in mask deposits `value` (8 bytes) and a source lane;
// when all of them have arrived, each gets the value of its source lane (kind 0) or, for
// ballot-style kinds, the combined result.
enum WarpOp { kShfl = 0, kBallot = 1 };
uint64_t warp_collective(WarpOp op, unsigned mask, uint64_t value, int src_lane, const char* file, int line);
int lane_id();

}  // namespace sg_emu

#define threadIdx (::sg_emu::thread_idx(::sg_emu::g_cur))
#define blockIdx (::sg_emu::g_block_idx)
#define blockDim (::sg_emu::g_block_dim)
#define gridDim (::sg_emu::g_grid_dim)
#define warpSize 32

#define __syncthreads() ::sg_emu::syncthreads(__FILE__, __LINE__)
#define __syncwarp(...) ::sg_emu::syncwarp(sg_emu_syncwarp_mask(__VA_ARGS__), __FILE__, __LINE__)
inline unsigned sg_emu_syncwarp_mask() { return 0xffffffffu; }
inline unsigned sg_emu_syncwarp_mask(unsigned m) { return m; }

// ------------------------------------------------------------------ warp shuffles
// Source lane rules of the PTX shfl instruction within segments of `width` lanes; a source
// outside the segment (up/down past its end) returns the caller's own value.
namespace sg_emu {
template <typename T>
T shfl(unsigned mask, T v, int src, const char* file, int line) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffle of a type wider than 8 bytes");
    uint64_t bits = 0;
    memcpy(&bits, &v, sizeof(T));
    uint64_t got = warp_collective(kShfl, mask, bits, src, file, line);
    T out;
    memcpy(&out, &got, sizeof(T));
    return out;
}
inline int seg_base(int lane, int width) { return lane & ~(width - 1); }
}  // namespace sg_emu

#define __shfl_sync(mask, v, src, ...) sg_emu_shfl_idx(mask, v, src, ##__VA_ARGS__, __FILE__, __LINE__)
#define __shfl_xor_sync(mask, v, lm, ...) sg_emu_shfl_xor(mask, v, lm, ##__VA_ARGS__, __FILE__, __LINE__)
#define __shfl_down_sync(mask, v, d, ...) sg_emu_shfl_down(mask, v, d, ##__VA_ARGS__, __FILE__, __LINE__)
#define __shfl_up_sync(mask, v, d, ...) sg_emu_shfl_up(mask, v, d, ##__VA_ARGS__, __FILE__, __LINE__)

template <typename T>
T sg_emu_shfl_idx(unsigned mask, T v, int src, int width, const char* f, int l) {
    const int lane = sg_emu::lane_id();
    return sg_emu::shfl(mask, v, sg_emu::seg_base(lane, width) + (src & (width - 1)), f, l);
}
template <typename T>
T sg_emu_shfl_idx(unsigned mask, T v, int src, const char* f, int l) { return sg_emu_shfl_idx(mask, v, src, 32, f, l); }
template <typename T>
T sg_emu_shfl_xor(unsigned mask, T v, int lm, int width, const char* f, int l) {
    const int lane = sg_emu::lane_id();
    int src = lane ^ lm;
    if (src >= sg_emu::seg_base(lane, width) + width) src = lane;
    return sg_emu::shfl(mask, v, src, f, l);
}
template <typename T>
T sg_emu_shfl_xor(unsigned mask, T v, int lm, const char* f, int l) { return sg_emu_shfl_xor(mask, v, lm, 32, f, l); }
template <typename T>
T sg_emu_shfl_down(unsigned mask, T v, unsigned d, int width, const char* f, int l) {
    const int lane = sg_emu::lane_id();
    int src = lane + (int)d;
    if (src >= sg_emu::seg_base(lane, width) + width) src = lane;
    return sg_emu::shfl(mask, v, src, f, l);
}
template <typename T>
T sg_emu_shfl_down(unsigned mask, T v, unsigned d, const char* f, int l) { return sg_emu_shfl_down(mask, v, d, 32, f, l); }
template <typename T>
T sg_emu_shfl_up(unsigned mask, T v, unsigned d, int width, const char* f, int l) {
    const int lane = sg_emu::lane_id();
    int src = lane - (int)d;
    if (src < sg_emu::seg_base(lane, width)) src = lane;
    return sg_emu::shfl(mask, v, src, f, l);
}
template <typename T>
T sg_emu_shfl_up(unsigned mask, T v, unsigned d, const char* f, int l) { return sg_emu_shfl_up(mask, v, d, 32, f, l); }

#define __ballot_sync(mask, pred) \
    ((unsigned)::sg_emu::warp_collective(::sg_emu::kBallot, mask, (pred) ? 1u : 0u, -1, __FILE__, __LINE__))
#define __any_sync(mask, pred) (__ballot_sync(mask, pred) != 0u)
#define __all_sync(mask, pred) (__ballot_sync(mask, pred) == (mask))

// ------------------------------------------------------------------ atomics
// One OS thread runs every fiber and a fiber only yields at a barrier, so these are atomic.
template <typename T>
inline T atomicAdd(T* address, T val) {
    static_assert(std::is_same<T, float>::value || std::is_same<T, double>::value || std::is_same<T, int>::value ||
                      std::is_same<T, unsigned int>::value || std::is_same<T, unsigned long long>::value,
                  "atomicAdd: type CUDA does not support");
    const T old = *address;
    *address = old + val;
    return old;
}
inline void __threadfence() {}
inline void __threadfence_block() {}

// ------------------------------------------------------------------ math and bit casts
template <typename A, typename B>
inline typename std::common_type<A, B>::type min(A a, B b) {
    using C = typename std::common_type<A, B>::type;
    return (C)b < (C)a ? (C)b : (C)a;
}
template <typename A, typename B>
inline typename std::common_type<A, B>::type max(A a, B b) {
    using C = typename std::common_type<A, B>::type;
    return (C)a < (C)b ? (C)b : (C)a;
}
inline float min(float a, float b) { return fminf(a, b); }  // CUDA: min/max on floats are fminf/fmaxf
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }

inline float __uint_as_float(unsigned int u) { float f; memcpy(&f, &u, 4); return f; }
inline unsigned int __float_as_uint(float f) { unsigned int u; memcpy(&u, &f, 4); return u; }
inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
inline int __float_as_int(float f) { int i; memcpy(&i, &f, 4); return i; }
inline double __longlong_as_double(long long i) { double d; memcpy(&d, &i, 8); return d; }
inline long long __double_as_longlong(double d) { long long i; memcpy(&i, &d, 8); return i; }
inline float __fdividef(float a, float b) { return a / b; }
inline float __saturatef(float x) { return x != x ? 0.0f : (x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x)); }

// ------------------------------------------------------------------ 16-bit float conversions
// Software versions of the PTX instructions common.cuh uses on the GPU (its #ifndef
// SG_EMULATOR branch): cvt.f32.f16 (exact), cvt.rn.f16.f32 and cvt.rn.bf16.f32 (round to
// nearest even, overflow to infinity, NaN to the canonical NaN 0x7fff). Checked against
// torch's conversions, all 65536 half inputs and hundreds of thousands of floats, in
// tests/kernels/test_emulator.py.
inline float sg_cvt_f32_f16(unsigned short h) {
    const unsigned sign = (unsigned)(h & 0x8000u) << 16;
    const unsigned exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    unsigned bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13);
    } else if (exp != 0) {
        bits = sign | ((exp + 112u) << 23) | (man << 13);
    } else if (man == 0) {
        bits = sign;
    } else {  // subnormal half: value man * 2^-24, exact in float
        float f = (float)man * 5.9604644775390625e-8f;
        bits = sign | __float_as_uint(f);
    }
    return __uint_as_float(bits);
}
inline unsigned short sg_cvt_rn_f16_f32(float v) {
    const unsigned u = __float_as_uint(v);
    const unsigned short sign = (unsigned short)((u >> 16) & 0x8000u);
    const unsigned au = u & 0x7fffffffu;
    if (au > 0x7f800000u) return 0x7fff;             // NaN
    if (au >= 0x477ff000u) return sign | 0x7c00u;    // >= 65520: rounds to infinity
    if (au >= 0x38800000u) {                         // normal half (>= 2^-14)
        unsigned r = au - 0x38000000u;               // rebias exponent 127 -> 15
        unsigned lower = r & 0x1fffu;
        unsigned h = r >> 13;
        if (lower > 0x1000u || (lower == 0x1000u && (h & 1u))) ++h;
        return sign | (unsigned short)h;
    }
    // subnormal half or zero: value = q * 2^-24 with q = round_even(|v| * 2^24), exact scaling
    const float scaled = __uint_as_float(au) * 16777216.0f;
    float q = nearbyintf(scaled);  // default rounding mode: to nearest even
    return sign | (unsigned short)q;
}
inline unsigned short sg_cvt_rn_bf16_f32(float v) {
    const unsigned u = __float_as_uint(v);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fff;  // NaN
    const unsigned lower = u & 0xffffu;
    unsigned h = u >> 16;
    if (lower > 0x8000u || (lower == 0x8000u && (h & 1u))) ++h;  // carries into the exponent: ok
    return (unsigned short)h;
}
