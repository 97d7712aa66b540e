// Frame preprocessing: one uint8 frame -> up to two normalised CHW model inputs in one launch.
//
// Each output is the frame converted to RGB, resized with antialiased bicubic exactly as torch's
// interpolate(mode="bicubic", antialias=True) on float32 computes it (PIL's filter, a = -0.5, support
// scaled by the downscale factor), clamped to [0, 255] and rounded half to even back to uint8 (what
// torchvision's resize of a uint8 tensor does on the GPU), then /255, minus mean, over std, written
// as fp32 or fp16 (or as the rounded uint8 itself, for checks). An output with round_u8 = 0 skips the
// clamp and the rounding: the resize stays in float (the same as resizing the /255 float image, up to
// float rounding), as SAM2's mask image encoder takes it.
//
// Work split: blocks [0, out[0].blocks) serve output 0, the rest output 1. A thread computes
// TPO_PREPROCESS_ROWS vertically adjacent pixels of one column: it sums each source row of their
// joint window horizontally once and adds it into every row whose window holds it.
#include "common.cuh"

struct PreprocessOutput {
    void* data;              // element (c=0, y=0, x=0) of a [3, height, width] tensor, RGB planes
    i64 channel_stride;      // elements between the channel planes (height*width for a plain CHW tensor)
    int height, width;       // output size in pixels
    int dtype;               // TPO_DTYPE_F32, TPO_DTYPE_F16 or TPO_DTYPE_U8 (rounded resize, no normalisation)
    int blocks;              // thread blocks of the grid that serve this output (0: output unused)
    int round_u8;            // 1: clamp and round the resize to uint8 before normalising; 0: keep it in
                             // float (no clamp, no rounding; not with TPO_DTYPE_U8)
    int pad_;
};

struct PreprocessParams {
    const u8* src;           // first byte of the frame (of the Y plane for NV12)
    const u8* src_uv;        // NV12: first byte of the interleaved U, V plane; otherwise unused
    i64 pitch;               // bytes between rows of src
    i64 uv_pitch;            // bytes between rows of src_uv
    PreprocessOutput out[2];
    float mean[3];           // per RGB channel, on the [0, 1] scale
    float std[3];
    int width, height;       // frame size in pixels
    int format;              // TPO_FORMAT_*
    int pad_;
};

// PIL's bicubic filter with a = -0.5, as torch's antialiased bicubic uses it.
__device__ __forceinline__ float aa_cubic(float x) {
    const float a = -0.5f;
    x = fabsf(x);
    if (x < 1.0f) return ((a + 2.0f) * x - (a + 3.0f)) * x * x + 1.0f;
    if (x < 2.0f) return ((a * x - 5.0f * a) * x + 8.0f * a) * x - 4.0f * a;
    return 0.0f;
}

// Source window of output index i along one axis (torch's _compute_weights_aa): taps
// [start, start + size), weight of tap j = aa_cubic((j + start - center + 0.5) * invscale) / total.
struct AaWindow {
    int start, size;
    float start_m_center, invscale, total;
};

__device__ __forceinline__ AaWindow aa_window(int i, float scale, int in_size) {
    AaWindow w;
    const float support = scale >= 1.0f ? 2.0f * scale : 2.0f;
    const float center = scale * (i + 0.5f);
    w.invscale = scale >= 1.0f ? 1.0f / scale : 1.0f;
    w.start = tpo_max((int)(center - support + 0.5f), 0);
    w.size = tpo_min((int)(center + support + 0.5f), in_size) - w.start;
    w.start_m_center = w.start - center;
    float total = 0.0f;
    for (int j = 0; j < w.size; ++j) total += aa_cubic((j + w.start_m_center + 0.5f) * w.invscale);
    w.total = total;
    return w;
}

__device__ __forceinline__ float aa_weight(const AaWindow& w, int j) {
    const float v = aa_cubic((j + w.start_m_center + 0.5f) * w.invscale);
    return w.total != 0.0f ? v / w.total : v;
}

// OpenCV's BT.601 limited-range YUV -> RGB in 20-bit fixed point (cv::COLOR_YUV2RGB_NV12), bit-exact.
__device__ __forceinline__ u32 yuv_clamp(int v) { return (u32)(v < 0 ? 0 : (v > 255 ? 255 : v)); }

template <int FORMAT>
__device__ __forceinline__ void load_rgb(const u8* row, const u8* uv_row, int x, float& r, float& g, float& b) {
    if (FORMAT == TPO_FORMAT_BGR) {
        const u8* p = row + 3 * x;
        b = tpo_u8_to_f32(p[0]), g = tpo_u8_to_f32(p[1]), r = tpo_u8_to_f32(p[2]);
    } else if (FORMAT == TPO_FORMAT_RGB) {
        const u8* p = row + 3 * x;
        r = tpo_u8_to_f32(p[0]), g = tpo_u8_to_f32(p[1]), b = tpo_u8_to_f32(p[2]);
    } else if (FORMAT == TPO_FORMAT_BGRA) {
        const u8* p = row + 4 * x;
        b = tpo_u8_to_f32(p[0]), g = tpo_u8_to_f32(p[1]), r = tpo_u8_to_f32(p[2]);
    } else {  // NV12: pixel x takes the U, V pair x / 2 of its chroma row
        const int yy = tpo_max((int)row[x] - 16, 0) * 1220542;
        const u8* uv = uv_row + 2 * (x >> 1);
        const int u = (int)uv[0] - 128, v = (int)uv[1] - 128;
        const int half = 1 << 19;
        r = tpo_u8_to_f32(yuv_clamp((yy + half + 1673527 * v) >> 20));
        g = tpo_u8_to_f32(yuv_clamp((yy + half - 852492 * v - 409993 * u) >> 20));
        b = tpo_u8_to_f32(yuv_clamp((yy + half + 2116026 * u) >> 20));
    }
}

// Weighted sum over one source row of the horizontal window: h = sum_j w_j * pixel(start + j).
template <int FORMAT, bool STORED>
__device__ __forceinline__ void sum_row(const u8* row, const u8* uv_row, const AaWindow& wx, const float* weights,
                                        float h[3]) {
    h[0] = h[1] = h[2] = 0.0f;
    for (int j = 0; j < wx.size; ++j) {
        const float w = STORED ? weights[j] : aa_weight(wx, j);
        float r, g, b;
        load_rgb<FORMAT>(row, uv_row, wx.start + j, r, g, b);
        h[0] += w * r, h[1] += w * g, h[2] += w * b;
    }
}

__device__ __forceinline__ void store(const PreprocessParams& p, const PreprocessOutput& o, int oy, int ox,
                                      const float acc[3]) {
    const i64 at = (i64)oy * o.width + ox;
    for (int c = 0; c < 3; ++c) {
        // torchvision: clamp, round half to even (round_u8); the float path keeps the resize as it is
        const float v = o.round_u8 ? rintf(fminf(fmaxf(acc[c], 0.0f), 255.0f)) : acc[c];
        const i64 i = c * o.channel_stride + at;
        if (o.dtype == TPO_DTYPE_U8) {
            ((u8*)o.data)[i] = (u8)v;
        } else {
            const float n = (v / 255.0f - p.mean[c]) / p.std[c];
            if (o.dtype == TPO_DTYPE_F16)
                ((u16*)o.data)[i] = tpo_f32_to_f16(n);
            else
                ((float*)o.data)[i] = n;
        }
    }
}

template <int FORMAT, bool STORED>
__device__ void resample_strip(const PreprocessParams& p, const PreprocessOutput& o, int ox, int oy0) {
    const int R = TPO_PREPROCESS_ROWS;
    const float scale_x = (float)p.width / (float)o.width;
    const float scale_y = (float)p.height / (float)o.height;
    const AaWindow wx = aa_window(ox, scale_x, p.width);
    float weights[STORED ? TPO_PREPROCESS_MAX_TAPS : 1];
    if (STORED)
        for (int j = 0; j < wx.size; ++j) weights[j] = aa_weight(wx, j);

    AaWindow wy[R];
    float acc[R][3];
    int row_begin = p.height, row_end = 0;
#pragma unroll
    for (int r = 0; r < R; ++r) {
        acc[r][0] = acc[r][1] = acc[r][2] = 0.0f;
        if (oy0 + r < o.height) {
            wy[r] = aa_window(oy0 + r, scale_y, p.height);
        } else {  // past the last output row: an empty window
            wy[r].start = 0, wy[r].size = 0, wy[r].start_m_center = 0.0f, wy[r].invscale = 1.0f, wy[r].total = 1.0f;
        }
        if (wy[r].size > 0) {
            row_begin = tpo_min(row_begin, wy[r].start);
            row_end = tpo_max(row_end, wy[r].start + wy[r].size);
        }
    }
    for (int sy = row_begin; sy < row_end; ++sy) {
        const u8* row = p.src + (i64)sy * p.pitch;
        const u8* uv_row = FORMAT == TPO_FORMAT_NV12 ? p.src_uv + (i64)(sy >> 1) * p.uv_pitch : row;
        float h[3];
        sum_row<FORMAT, STORED>(row, uv_row, wx, weights, h);
#pragma unroll
        for (int r = 0; r < R; ++r) {
            const int j = sy - wy[r].start;
            if (j >= 0 && j < wy[r].size) {
                const float w = aa_weight(wy[r], j);
                acc[r][0] += w * h[0], acc[r][1] += w * h[1], acc[r][2] += w * h[2];
            }
        }
    }
#pragma unroll
    for (int r = 0; r < R; ++r)
        if (oy0 + r < o.height) store(p, o, oy0 + r, ox, acc[r]);
}

template <int FORMAT>
__device__ __forceinline__ void resample(const PreprocessParams& p, const PreprocessOutput& o, int ox, int oy0) {
    const float scale_x = (float)p.width / (float)o.width;
    // Window width bound: 2 * support + 2 taps (support = 2 * scale when downscaling).
    if (4.0f * fmaxf(scale_x, 1.0f) + 2.0f <= (float)TPO_PREPROCESS_MAX_TAPS)
        resample_strip<FORMAT, true>(p, o, ox, oy0);
    else
        resample_strip<FORMAT, false>(p, o, ox, oy0);
}

extern "C" __global__ void tpo_preprocess(const PreprocessParams p) {
    const bool second = blockIdx.x >= (unsigned int)p.out[0].blocks;
    const PreprocessOutput o = second ? p.out[1] : p.out[0];
    const i64 t = (i64)(blockIdx.x - (second ? p.out[0].blocks : 0)) * blockDim.x + threadIdx.x;
    const i64 strips = (o.height + TPO_PREPROCESS_ROWS - 1) / TPO_PREPROCESS_ROWS;
    if (t >= strips * o.width) return;
    const int ox = (int)(t % o.width);
    const int oy0 = (int)(t / o.width) * TPO_PREPROCESS_ROWS;
    switch (p.format) {
        case TPO_FORMAT_BGR: resample<TPO_FORMAT_BGR>(p, o, ox, oy0); break;
        case TPO_FORMAT_RGB: resample<TPO_FORMAT_RGB>(p, o, ox, oy0); break;
        case TPO_FORMAT_BGRA: resample<TPO_FORMAT_BGRA>(p, o, ox, oy0); break;
        case TPO_FORMAT_NV12: resample<TPO_FORMAT_NV12>(p, o, ox, oy0); break;
        default: break;  // refused before launch
    }
}
