// Stand-ins for the CUDA built-ins, so the kernels' .cu sources compile with g++ and run on the CPU.
//
// Included before the .cu files by the driver that kernels/emulation.py generates. Each emulated
// launch runs the kernel body once per (block, thread), blocks spread over a few host threads;
// threadIdx/blockIdx are thread-local. Atomics are real atomics, so blocks may run concurrently.
// __syncthreads, shared memory and warp shuffles are deliberately absent: the kernels use none.
#ifndef TPO_CPU_EMULATION_H
#define TPO_CPU_EMULATION_H
#define TPO_CPU_EMULATION 1

#include <math.h>
#include <string.h>

#include <atomic>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))

struct dim3 {
    unsigned int x, y, z;
};
static thread_local dim3 threadIdx, blockIdx;
static thread_local dim3 blockDim, gridDim;

void __syncthreads() __attribute__((error("tpo kernels run without block-level sync: __syncthreads cannot be emulated")));

static inline float __uint_as_float(unsigned int u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline unsigned int __float_as_uint(float f) {
    unsigned int u;
    memcpy(&u, &f, 4);
    return u;
}

static inline int atomicAdd(int* a, int v) { return __atomic_fetch_add(a, v, __ATOMIC_RELAXED); }
static inline int atomicMax(int* a, int v) {
    int old = __atomic_load_n(a, __ATOMIC_RELAXED);
    while (old < v && !__atomic_compare_exchange_n(a, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    return old;
}
static inline int tpo_load_relaxed(const int* p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }

// float -> IEEE half bits, round to nearest even (what cvt.rn.f16.f32 does), with inf/NaN and subnormals.
static inline unsigned short tpo_f32_to_f16(float f) {
    const unsigned int x = __float_as_uint(f);
    const unsigned int sign = (x >> 16) & 0x8000u;
    const unsigned int abs = x & 0x7fffffffu;
    if (abs >= 0x7f800000u) return (unsigned short)(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0u));
    if (abs >= 0x477ff000u) return (unsigned short)(sign | 0x7c00u);  // rounds to >= 65520: inf
    if (abs < 0x38800000u) {                                           // below 2^-14: half subnormal or zero
        if (abs < 0x33000000u) return (unsigned short)sign;            // below 2^-25: rounds to zero
        const unsigned int mant = (abs & 0x7fffffu) | 0x800000u;
        const int shift = 126 - (int)(abs >> 23);  // 14..24
        const unsigned int half = mant >> shift;
        const unsigned int rest = mant & ((1u << shift) - 1u);
        const unsigned int mid = 1u << (shift - 1);
        return (unsigned short)(sign | (half + (rest > mid || (rest == mid && (half & 1u)))));
    }
    const unsigned int rebiased = abs - 0x38000000u;  // exponent 127 -> 15
    const unsigned int half = rebiased >> 13;
    const unsigned int rest = rebiased & 0x1fffu;
    return (unsigned short)(sign | (half + (rest > 0x1000u || (rest == 0x1000u && (half & 1u)))));
}

static inline float tpo_f16_to_f32(unsigned short h) {
    const unsigned int sign = (unsigned int)(h & 0x8000u) << 16;
    const unsigned int exp = (h >> 10) & 0x1fu;
    const unsigned int mant = h & 0x3ffu;
    if (exp == 0x1fu) return __uint_as_float(sign | 0x7f800000u | (mant << 13));
    if (exp == 0) {
        const float v = (float)mant * (1.0f / 16777216.0f);  // mant x 2^-24
        return sign ? -v : v;
    }
    return __uint_as_float(sign | ((exp + 112u) << 23) | (mant << 13));
}

// Runs kernel(params) over a grid (x, y, z blocks of x, y, z threads) on `workers` host threads.
template <typename Params>
static void tpo_emulate_grid(void (*kernel)(Params), const unsigned int grid[3], const unsigned int block[3],
                             const Params* params, int workers) {
    const long long blocks = (long long)grid[0] * grid[1] * grid[2];
    std::atomic<long long> next(0);
    auto work = [&]() {
        gridDim = dim3{grid[0], grid[1], grid[2]};
        blockDim = dim3{block[0], block[1], block[2]};
        for (long long b = next++; b < blocks; b = next++) {
            blockIdx = dim3{(unsigned int)(b % grid[0]), (unsigned int)(b / grid[0] % grid[1]),
                            (unsigned int)(b / grid[0] / grid[1])};
            for (unsigned int tz = 0; tz < block[2]; ++tz)
                for (unsigned int ty = 0; ty < block[1]; ++ty)
                    for (unsigned int tx = 0; tx < block[0]; ++tx) {
                        threadIdx = dim3{tx, ty, tz};
                        kernel(*params);
                    }
        }
    };
    if (workers <= 1 || blocks <= 1) {
        work();
        return;
    }
    std::vector<std::thread> pool;
    for (int i = 0; i < workers; ++i) pool.emplace_back(work);
    for (auto& t : pool) t.join();
}

#endif  // TPO_CPU_EMULATION_H
