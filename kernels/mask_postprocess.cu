// Mask postprocessing in one pass: low-resolution mask logits -> bilinear upsampling to the frame size
// (torch's interpolate(mode="bilinear", align_corners=False)), threshold (logit > threshold is object),
// the mask's box and area through atomics, and optionally the binary mask (1 object, 0 background).
//
// Work split: groups of 32 consecutive threads cover 32 x TPO_MASK_PIXELS_PER_THREAD pixels of one row,
// a thread taking every 32nd pixel (coalesced). A thread reduces its own pixels and touches the
// accumulators only if it saw the object, and skips a max that would not grow.
//
// stats (int32[5], zeroed before launch) hold values that only grow from zero:
//   [0] width - min_x   [1] height - min_y   [2] max_x + 1   [3] max_y + 1   [4] area in pixels
#include "common.cuh"

struct MaskParams {
    const void* logits;      // [logits_height, logits_width] mask logits, TPO_DTYPE_F32 or TPO_DTYPE_F16
    u8* mask;                // [height, width] binary mask out, mask_pitch bytes a row; null: not written
    int* stats;              // int32[5] accumulators, see above
    i64 logits_pitch;        // elements between rows of logits
    i64 mask_pitch;          // bytes between rows of mask
    int logits_height, logits_width;
    int height, width;       // frame size in pixels
    int logits_dtype;
    float threshold;         // logit above which a pixel is object
};

// torch's linear source index for align_corners=False: clamped at 0, lambda in [0, 1].
struct LinearTap {
    int i0, i1;
    float l0, l1;
};

__device__ __forceinline__ LinearTap linear_tap(int dst, float scale, int in_size) {
    LinearTap t;
    const float src = fmaxf(scale * (dst + 0.5f) - 0.5f, 0.0f);
    t.i0 = tpo_min((int)src, in_size - 1);
    t.i1 = t.i0 + (t.i0 < in_size - 1 ? 1 : 0);
    t.l1 = fminf(fmaxf(src - t.i0, 0.0f), 1.0f);
    t.l0 = 1.0f - t.l1;
    return t;
}

__device__ __forceinline__ float load_logit(const MaskParams& p, int y, int x) {
    const i64 i = (i64)y * p.logits_pitch + x;
    if (p.logits_dtype == TPO_DTYPE_F16) return tpo_f16_to_f32(((const u16*)p.logits)[i]);
    return ((const float*)p.logits)[i];
}

extern "C" __global__ void tpo_mask_postprocess(const MaskParams p) {
    const int span = 32 * TPO_MASK_PIXELS_PER_THREAD;
    const i64 t = tpo_global_thread();
    const i64 group = t >> 5;
    const int lane = (int)(t & 31);
    const i64 groups_per_row = (p.width + span - 1) / span;
    const int y = (int)(group / groups_per_row);
    if (y >= p.height) return;
    const int x_begin = (int)(group % groups_per_row) * span + lane;

    const float scale_y = (float)p.logits_height / (float)p.height;
    const float scale_x = (float)p.logits_width / (float)p.width;
    const LinearTap ty = linear_tap(y, scale_y, p.logits_height);
    u8* mask_row = p.mask ? p.mask + (i64)y * p.mask_pitch : 0;

    int count = 0, min_x = p.width, max_x = -1;
    for (int k = 0; k < TPO_MASK_PIXELS_PER_THREAD; ++k) {
        const int x = x_begin + 32 * k;
        if (x >= p.width) break;
        const LinearTap tx = linear_tap(x, scale_x, p.logits_width);
        const float v = ty.l0 * (tx.l0 * load_logit(p, ty.i0, tx.i0) + tx.l1 * load_logit(p, ty.i0, tx.i1)) +
                        ty.l1 * (tx.l0 * load_logit(p, ty.i1, tx.i0) + tx.l1 * load_logit(p, ty.i1, tx.i1));
        const bool on = v > p.threshold;
        if (mask_row) mask_row[x] = on ? 1 : 0;
        if (on) {
            ++count;
            min_x = tpo_min(min_x, x);
            max_x = tpo_max(max_x, x);
        }
    }
    if (count == 0) return;
    atomicAdd(&p.stats[4], count);
    const int grow[4] = {p.width - min_x, p.height - y, max_x + 1, y + 1};
    for (int i = 0; i < 4; ++i)
        if (grow[i] > tpo_load_relaxed(&p.stats[i])) atomicMax(&p.stats[i], grow[i]);
}
