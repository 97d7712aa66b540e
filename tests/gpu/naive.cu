// Naive multi-launch versions of the fused kernels, the baseline run_gpu_checks.py times them against.
//
// Written the obvious way, one step per launch with float intermediates in device memory:
// preprocess = unpack to planar float RGB, horizontal resize, vertical resize, round + normalise
// (1 + 3 launches per output); mask = upsample to float, threshold, box by per-pixel atomics.
// All take one NaiveParams; unused fields are ignored.
#include "common.cuh"

struct NaiveParams {
    const void* src;
    void* dst;
    int* stats;              // naive_box: int32[5], encoded as in mask_postprocess.cu
    i64 src_pitch;           // naive_unpack: bytes between frame rows; others: unused
    i64 dst_stride;          // naive_normalize: elements between output channel planes
    const u8* src_uv;        // naive_unpack, nv12
    i64 uv_pitch;
    int in_w, in_h, out_w, out_h;
    int format, dtype;
    float mean[3];
    float std[3];
    float threshold;
    int pad_;
};

__device__ __forceinline__ float naive_cubic(float x) {
    const float a = -0.5f;
    x = fabsf(x);
    if (x < 1.0f) return ((a + 2.0f) * x - (a + 3.0f)) * x * x + 1.0f;
    if (x < 2.0f) return ((a * x - 5.0f * a) * x + 8.0f * a) * x - 4.0f * a;
    return 0.0f;
}

// One output sample along a line of `in_size` floats `step` apart (antialiased bicubic, as torch).
__device__ float naive_resample(const float* line, int step, int in_size, int out_size, int i) {
    const float scale = (float)in_size / (float)out_size;
    const float support = scale >= 1.0f ? 2.0f * scale : 2.0f;
    const float invscale = scale >= 1.0f ? 1.0f / scale : 1.0f;
    const float center = scale * (i + 0.5f);
    const int start = tpo_max((int)(center - support + 0.5f), 0);
    const int stop = tpo_min((int)(center + support + 0.5f), in_size);
    float total = 0.0f, sum = 0.0f;
    for (int j = start; j < stop; ++j) total += naive_cubic((j - start + (start - center) + 0.5f) * invscale);
    for (int j = start; j < stop; ++j) {
        const float w = naive_cubic((j - start + (start - center) + 0.5f) * invscale);
        sum += (total != 0.0f ? w / total : w) * line[(i64)j * step];
    }
    return sum;
}

extern "C" __global__ void naive_unpack(const NaiveParams p) {  // frame -> float [3][in_h][in_w]
    const i64 t = tpo_global_thread();
    if (t >= (i64)p.in_w * p.in_h) return;
    const int x = (int)(t % p.in_w), y = (int)(t / p.in_w);
    const u8* row = (const u8*)p.src + y * p.src_pitch;
    int r, g, b;
    if (p.format == TPO_FORMAT_NV12) {
        const u8* uv = p.src_uv + (y >> 1) * p.uv_pitch + 2 * (x >> 1);
        const int yy = tpo_max((int)row[x] - 16, 0) * 1220542, u = (int)uv[0] - 128, v = (int)uv[1] - 128;
        r = (yy + (1 << 19) + 1673527 * v) >> 20;
        g = (yy + (1 << 19) - 852492 * v - 409993 * u) >> 20;
        b = (yy + (1 << 19) + 2116026 * u) >> 20;
        r = tpo_min(tpo_max(r, 0), 255), g = tpo_min(tpo_max(g, 0), 255), b = tpo_min(tpo_max(b, 0), 255);
    } else {
        const int bpp = p.format == TPO_FORMAT_BGRA ? 4 : 3;
        const u8* px = row + bpp * x;
        const bool rgb = p.format == TPO_FORMAT_RGB;
        r = px[rgb ? 0 : 2], g = px[1], b = px[rgb ? 2 : 0];
    }
    float* dst = (float*)p.dst;
    const i64 plane = (i64)p.in_w * p.in_h;
    dst[t] = (float)r, dst[plane + t] = (float)g, dst[2 * plane + t] = (float)b;
}

extern "C" __global__ void naive_resize_h(const NaiveParams p) {  // [3][in_h][in_w] -> [3][in_h][out_w]
    const i64 t = tpo_global_thread();
    if (t >= 3LL * p.in_h * p.out_w) return;
    const int x = (int)(t % p.out_w);
    const i64 line = t / p.out_w;  // c * in_h + y
    ((float*)p.dst)[t] = naive_resample((const float*)p.src + line * p.in_w, 1, p.in_w, p.out_w, x);
}

extern "C" __global__ void naive_resize_v(const NaiveParams p) {  // [3][in_h][w] -> [3][out_h][w], w = out_w
    const i64 t = tpo_global_thread();
    if (t >= 3LL * p.out_h * p.out_w) return;
    const int x = (int)(t % p.out_w), y = (int)(t / p.out_w % p.out_h), c = (int)(t / p.out_w / p.out_h);
    const float* column = (const float*)p.src + (i64)c * p.in_h * p.out_w + x;
    ((float*)p.dst)[t] = naive_resample(column, p.out_w, p.in_h, p.out_h, y);
}

extern "C" __global__ void naive_normalize(const NaiveParams p) {  // float [3][h][w] -> output dtype
    const i64 t = tpo_global_thread();
    const i64 plane = (i64)p.out_h * p.out_w;
    if (t >= 3 * plane) return;
    const int c = (int)(t / plane);
    const i64 i = c * p.dst_stride + t % plane;
    const float v = rintf(fminf(fmaxf(((const float*)p.src)[t], 0.0f), 255.0f));
    const float n = (v / 255.0f - p.mean[c]) / p.std[c];
    if (p.dtype == TPO_DTYPE_U8)
        ((u8*)p.dst)[i] = (u8)v;
    else if (p.dtype == TPO_DTYPE_F16)
        ((u16*)p.dst)[i] = tpo_f32_to_f16(n);
    else
        ((float*)p.dst)[i] = n;
}

extern "C" __global__ void naive_upsample(const NaiveParams p) {  // float [in_h][in_w] -> float [out_h][out_w]
    const i64 t = tpo_global_thread();
    if (t >= (i64)p.out_w * p.out_h) return;
    const int x = (int)(t % p.out_w), y = (int)(t / p.out_w);
    const float sy = fmaxf(((float)p.in_h / p.out_h) * (y + 0.5f) - 0.5f, 0.0f);
    const float sx = fmaxf(((float)p.in_w / p.out_w) * (x + 0.5f) - 0.5f, 0.0f);
    const int y0 = tpo_min((int)sy, p.in_h - 1), x0 = tpo_min((int)sx, p.in_w - 1);
    const int y1 = tpo_min(y0 + 1, p.in_h - 1), x1 = tpo_min(x0 + 1, p.in_w - 1);
    const float ly = fminf(sy - y0, 1.0f), lx = fminf(sx - x0, 1.0f);
    const float* s = (const float*)p.src;
    const float top = (1.0f - lx) * s[(i64)y0 * p.in_w + x0] + lx * s[(i64)y0 * p.in_w + x1];
    const float bottom = (1.0f - lx) * s[(i64)y1 * p.in_w + x0] + lx * s[(i64)y1 * p.in_w + x1];
    ((float*)p.dst)[t] = (1.0f - ly) * top + ly * bottom;
}

extern "C" __global__ void naive_threshold(const NaiveParams p) {  // float [h][w] -> u8 0/1
    const i64 t = tpo_global_thread();
    if (t >= (i64)p.out_w * p.out_h) return;
    ((u8*)p.dst)[t] = ((const float*)p.src)[t] > p.threshold ? 1 : 0;
}

extern "C" __global__ void naive_box(const NaiveParams p) {  // u8 mask [h][w] -> stats, one atomic set per pixel
    const i64 t = tpo_global_thread();
    if (t >= (i64)p.out_w * p.out_h || !((const u8*)p.src)[t]) return;
    const int x = (int)(t % p.out_w), y = (int)(t / p.out_w);
    atomicAdd(&p.stats[4], 1);
    atomicMax(&p.stats[0], p.out_w - x);
    atomicMax(&p.stats[1], p.out_h - y);
    atomicMax(&p.stats[2], x + 1);
    atomicMax(&p.stats[3], y + 1);
}
