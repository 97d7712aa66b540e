// Shared definitions of the tpo.kernels CUDA sources.
//
// The same sources are compiled two ways: by NVRTC for the GPU, and by g++ for the CPU tests with
// cpu_emulation.h included first (it defines TPO_CPU_EMULATION and stands in for the CUDA built-ins).
// No system header is included here: NVRTC from pip ships none.
//
// Rules the kernels follow so that the CPU emulation is exact:
//   - no __syncthreads, shared memory or warp shuffles: threads meet only through atomics;
//   - every kernel takes one parameter struct by value; its layout is mirrored by a ctypes
//     Structure in the kernel's Python module (tests/kernels checks the offsets with g++);
//   - constants below are read by kernels/sources.py, so Python never keeps a second copy.
#ifndef TPO_COMMON_CUH
#define TPO_COMMON_CUH

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef long long i64;

// Frame formats of the preprocess kernel (bytes per pixel in brackets).
#define TPO_FORMAT_BGR 0   // [3] B, G, R
#define TPO_FORMAT_RGB 1   // [3] R, G, B
#define TPO_FORMAT_BGRA 2  // [4] B, G, R, A (alpha ignored)
#define TPO_FORMAT_NV12 3  // [1] Y plane, then a half-height plane of interleaved U, V pairs

// Element types of kernel inputs and outputs.
#define TPO_DTYPE_F32 0
#define TPO_DTYPE_F16 1
#define TPO_DTYPE_U8 2

// Output rows one preprocess thread computes; rows share the horizontal sums of their source rows.
#ifndef TPO_PREPROCESS_ROWS
#define TPO_PREPROCESS_ROWS 4
#endif
// Horizontal taps kept per thread; wider windows (downscale over about 23x) recompute weights per row.
#ifndef TPO_PREPROCESS_MAX_TAPS
#define TPO_PREPROCESS_MAX_TAPS 96
#endif
// Pixels of one row one mask thread handles, 32 apart, so a group of 32 threads covers 32 x this.
#ifndef TPO_MASK_PIXELS_PER_THREAD
#define TPO_MASK_PIXELS_PER_THREAD 32
#endif

#ifndef TPO_CPU_EMULATION
// GPU versions of the few helpers the CPU emulation replaces.
__device__ __forceinline__ u16 tpo_f32_to_f16(float f) {
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}
__device__ __forceinline__ float tpo_f16_to_f32(u16 h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}
__device__ __forceinline__ int tpo_load_relaxed(const int* p) { return *(const volatile int*)p; }
#endif

__device__ __forceinline__ int tpo_min(int a, int b) { return a < b ? a : b; }
__device__ __forceinline__ int tpo_max(int a, int b) { return a > b ? a : b; }

// Exact uint8 -> float with one integer OR and one float add (no int-to-float conversion unit).
__device__ __forceinline__ float tpo_u8_to_f32(u32 b) { return __uint_as_float(0x4B000000u | b) - 8388608.0f; }

// Global index of this thread in a 1-D grid.
__device__ __forceinline__ i64 tpo_global_thread() { return (i64)blockIdx.x * blockDim.x + threadIdx.x; }

#endif  // TPO_COMMON_CUH
