// Span decoding for the temporal head (CG-DETR): per query, (centre, width) as fractions of the clip
// -> (start, end) in seconds, clamped to [0, duration], optionally rounded to a multiple of round_to
// (half to even, as numpy's round in the CG-DETR post-processor) and clamped again; score =
// softmax(logits)[0] (class 0 is foreground); the top_k windows sorted by score, best first.
//
// One block, one thread per query, no sync: each thread recomputes every query's score (there are
// few) and takes as its rank the number of queries that sort before it. Ties keep the lower query
// index first (a stable sort); a NaN score sorts last.
#include "common.cuh"

struct SpanParams {
    const float* logits;     // [queries, 2] class logits
    const float* spans;      // [queries, 2] (centre, width), fractions of the duration
    float* windows;          // [top_k, 3] out: (start_s, end_s, score), best first
    int* order;              // [top_k] out: query index of each window; null: not written
    float duration;          // clip duration in seconds
    float round_to;          // seconds; 0 leaves the times unrounded
    int queries, top_k;
};

__device__ __forceinline__ float foreground_score(const float* logits, int q) {
    const float a = logits[2 * q], b = logits[2 * q + 1];
    const float m = fmaxf(a, b);
    const float ea = expf(a - m), eb = expf(b - m);
    const float s = ea / (ea + eb);
    return s == s ? s : -1.0f;  // NaN last
}

__device__ __forceinline__ float clamp_time(float t, float duration) { return fminf(fmaxf(t, 0.0f), duration); }

extern "C" __global__ void tpo_span_decode(const SpanParams p) {
    const int q = (int)threadIdx.x;
    if (q >= p.queries) return;
    const float score = foreground_score(p.logits, q);
    int rank = 0;
    for (int j = 0; j < p.queries; ++j) {
        const float other = foreground_score(p.logits, j);
        rank += (other > score || (other == score && j < q)) ? 1 : 0;
    }
    if (rank >= p.top_k) return;

    const float centre = p.spans[2 * q], width = p.spans[2 * q + 1];
    float start = clamp_time((centre - 0.5f * width) * p.duration, p.duration);
    float end = clamp_time((centre + 0.5f * width) * p.duration, p.duration);
    if (p.round_to > 0.0f) {
        start = clamp_time(rintf(start / p.round_to) * p.round_to, p.duration);
        end = clamp_time(rintf(end / p.round_to) * p.round_to, p.duration);
    }
    p.windows[3 * rank] = start;
    p.windows[3 * rank + 1] = end;
    p.windows[3 * rank + 2] = score < 0.0f ? __uint_as_float(0x7fc00000u) : score;
    if (p.order) p.order[rank] = q;
}
