"""CUDA source for one fused preprocessing kernel per chain, and the resize tap tables it reads.

Pure Python + numpy (no CUDA needed), so the tables and the generated source are tested on any machine.

The kernel reads the raw frame once per output pixel's footprint and does, per source pixel: ROI offset,
colour (Mono replicate, bilinear Bayer demosaic, RGB/BGR swap, RGB->gray), then accumulates with separable
resize weights, then normalises (y = x * gain + bias) and writes NCHW float32/float16 into the destination.

Resize weights reproduce OpenCV's cv2.resize (the CPU reference) geometry:
- area (and letterbox) downscale: OpenCV INTER_AREA cell weights (computeResizeAreaTab); for integer factors
  this is the exact box average, so a one-pixel scratch contributes 1/factor of its contrast to the cell
  instead of being skipped as a sampling resize would.
- stretch: INTER_LINEAR (2 taps, pixel-centre aligned, 11-bit fixed-point weights for 8-bit input as OpenCV).
- area with an upscale on either axis: OpenCV's INTER_AREA upscale coefficients (2 taps).
- bilinear, bicubic, resize_crop: Pillow's antialiased filters (float, as Pillow resizes mode F images; the CPU
  path runs Pillow), resize_crop's centre crop as a window of the taps.
Differences from the CPU path are then only OpenCV's rounding of its uint8/uint16 intermediate (the resized
image); the GPU keeps the exact float average (see tolerance_levels and tests/gpu).

Four layouts compute the same function (pick_variant chooses; tools/bench_gpu_preprocess.py times them):
vec16 (aligned Mono8, 16-byte row loads), bayer (Bayer mosaics: the raw footprint tile in shared memory, demosaiced
down each column with a register window), separable (vertical then horizontal pass through shared memory, any
format), gather (one output pixel per thread group; fallback for footprints too wide for shared memory).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from inspectd.pixels import BAYER, COLOUR, MONO
from inspectd.preprocess.plan import FILTERED, Plan, resample_weights

INTER_RESIZE_COEF_SCALE = 2048  # OpenCV's fixed-point scale for 8-bit linear resize weights

# PFNC name -> (x, y) of the red pixel in the 2x2 mosaic cell starting at the ROI origin (ROI x, y are even).
BAYER_RED_AT = {"BayerRG8": (0, 0), "BayerGR8": (1, 0), "BayerGB8": (0, 1), "BayerBG8": (1, 1)}

# OpenCV 4.x RGB2GRAY for 8-bit: fixed point, 15 fractional bits (0.299, 0.587, 0.114), rounded (checked
# bit-exact against cv2.cvtColor on random pixels).
GRAY_R, GRAY_G, GRAY_B, GRAY_SHIFT = 9798, 19235, 3735, 15


@dataclass(frozen=True)
class Taps:
    """Per output index: source indices and weights (padded to a fixed count with weight 0)."""

    idx: np.ndarray  # int32 [n_out, k]
    w: np.ndarray  # float32 [n_out, k]

    @property
    def k(self) -> int:
        return int(self.idx.shape[1])


def _pack(rows: list[list[tuple[int, float]]], ssize: int) -> Taps:
    k = max(len(r) for r in rows)
    idx = np.zeros((len(rows), k), np.int32)
    w = np.zeros((len(rows), k), np.float32)
    for i, r in enumerate(rows):
        for j, (s, a) in enumerate(r):
            idx[i, j], w[i, j] = min(max(s, 0), ssize - 1), a
        idx[i, len(r):] = idx[i, len(r) - 1]  # padding reads a pixel already in cache, weight 0
    return Taps(idx, w)


def area_taps(ssize: int, dsize: int) -> Taps:
    """OpenCV INTER_AREA downscale weights (computeResizeAreaTab), ssize >= dsize."""
    scale = 1.0 / (dsize / ssize)  # as cv::resize computes scale_x
    rows: list[list[tuple[int, float]]] = []
    for dx in range(dsize):
        fsx1 = dx * scale
        fsx2 = fsx1 + scale
        cell = min(scale, ssize - fsx1)
        sx1, sx2 = math.ceil(fsx1), math.floor(fsx2)
        sx2 = min(sx2, ssize - 1)
        sx1 = min(sx1, sx2)
        r: list[tuple[int, float]] = []
        if sx1 - fsx1 > 1e-3:
            r.append((sx1 - 1, (sx1 - fsx1) / cell))
        r.extend((sx, 1.0 / cell) for sx in range(sx1, sx2))
        if fsx2 - sx2 > 1e-3:
            r.append((sx2, min(min(fsx2 - sx2, 1.0), cell) / cell))
        rows.append(r)
    return _pack(rows, ssize)


def linear_taps(ssize: int, dsize: int, area_mode: bool = False, fixed_point: bool = False) -> Taps:
    """OpenCV INTER_LINEAR weights (or INTER_AREA's upscale variant when area_mode)."""
    inv_scale = dsize / ssize
    scale = 1.0 / inv_scale
    rows: list[list[tuple[int, float]]] = []
    for dx in range(dsize):
        if area_mode:
            sx = math.floor(dx * scale)
            fx = float(np.float32((dx + 1) - (sx + 1) * inv_scale))
            fx = 0.0 if fx <= 0 else fx - math.floor(fx)
        else:
            fx = float(np.float32((dx + 0.5) * scale - 0.5))
            sx = math.floor(fx)
            fx -= sx
        if sx < 0:
            fx, sx = 0.0, 0
        if sx >= ssize - 1:
            fx, sx = 0.0, ssize - 1
        w0, w1 = 1.0 - fx, fx
        if fixed_point:  # 8-bit: OpenCV rounds each weight to 1/2048
            w0 = round(w0 * INTER_RESIZE_COEF_SCALE) / INTER_RESIZE_COEF_SCALE
            w1 = round(w1 * INTER_RESIZE_COEF_SCALE) / INTER_RESIZE_COEF_SCALE
        rows.append([(sx, w0), (sx + 1, w1)])
    return _pack(rows, ssize)


def is_linear(plan: Plan) -> bool:
    """True when cv2.resize interpolates (stretch, or area upscaling) rather than averaging cells."""
    _, _, w, h = plan.roi
    sx, sy = w / plan.fit_w, h / plan.fit_h
    if plan.resize in FILTERED:
        return True
    if plan.resize == "stretch":
        return (sx, sy) != (2, 2) and (sx, sy) != (1, 1)
    return sx < 1 or sy < 1


def tolerance_levels(plan: Plan) -> float:
    """Largest difference from the OpenCV path, in raw pixel levels, that this chain's arithmetic allows.

    OpenCV rounds its resized image to the input's integer type (<= 0.5 level); its 8-bit interpolation
    also truncates inside a fixed-point sum (<= 1 level in all). Demosaic and gray formulas are exact."""
    return 1.0 if is_linear(plan) else 0.5


def resize_taps(plan: Plan) -> tuple[Taps, Taps]:
    """(x taps, y taps) from the ROI to the fitted size, chosen as cv2.resize dispatches."""
    _, _, w, h = plan.roi
    fw, fh = plan.fit_w, plan.fit_h
    if plan.resize in FILTERED:  # Pillow's antialiased filters (the CPU path runs Pillow), then the crop window
        bicubic = plan.resize == "bicubic"
        rx = resample_weights(w, plan.scaled_w, bicubic)[plan.crop_x:plan.crop_x + fw]
        ry = resample_weights(h, plan.scaled_h, bicubic)[plan.crop_y:plan.crop_y + fh]
        return _pack(rx, w), _pack(ry, h)
    if (w, h) == (fw, fh):  # the CPU path skips cv2.resize: identity
        return _pack([[(i, 1.0)] for i in range(w)], w), _pack([[(i, 1.0)] for i in range(h)], h)
    interp = "linear" if plan.resize == "stretch" else "area"
    sx, sy = w / fw, h / fh
    if interp == "linear" and sx == 2 and sy == 2:
        interp = "area"  # cv2.resize turns a linear 2:1 downscale into INTER_AREA
    if interp == "area" and sx >= 1 and sy >= 1:
        return area_taps(w, fw), area_taps(h, fh)
    fixed = plan.pixel_format not in ("Mono10", "Mono12", "Mono16")  # OpenCV's fixed point is for 8-bit only
    area_mode = interp == "area"
    return (linear_taps(w, fw, area_mode, fixed), linear_taps(h, fh, area_mode, fixed))


# ----------------------------------------------------------------------------- kernel source

_TEMPLATE = r"""
#include <cuda_fp16.h>

// Chain: {chain}
#define SRC_T {src_t}
#define OUT_T {out_t}
#define ROI_X {roi_x}
#define ROI_W {roi_w}
#define ROI_H {roi_h}
#define OUT_W {out_w}
#define OUT_H {out_h}
#define FIT_W {fit_w}
#define FIT_H {fit_h}
#define PAD_X {pad_x}
#define PAD_Y {pad_y}
#define KX {kx}
#define KY {ky}
#define ROWS {rows}     // gather: threads sharing one output pixel, each summing every ROWS-th row tap
#define CW {cw}         // separable: output columns per block
#define SEP_T {sep_t}   // separable: threads per block
#define SPAN_MAX {span_max}  // separable: most ROI columns one block reads
#define VEC_T {vec_t}   // vec16: threads per block
#define VEC_SPAN {vec_span}  // vec16: shared floats, the footprint in whole 16-byte vectors
#define NC {nc}         // channels accumulated (1 for a mono source replicated to 3 outputs)
#define BAY_T {bay_t}   // bayer: threads per block
#define BAY_CW {bay_cw}   // bayer: output columns per block
#define BAY_ROWS {bay_rows}  // bayer: most raw rows one block reads (footprint + demosaic halo)
#define BAY_WP {bay_words}  // bayer: shared 32-bit words per raw row

__device__ __forceinline__ float ld(const SRC_T* __restrict__ p) {{ return (float)__ldg(p); }}
{helpers}
// Colour of one ROI pixel (cx, cy) into v[0..NC-1], in the model's channel order.
__device__ __forceinline__ void pixel(const SRC_T* __restrict__ src, int pitch, int cx, int cy, float* v) {{
{pixel_body}
}}

{kernel}
"""

_GATHER = r"""
extern "C" __global__ void __launch_bounds__(32 * ROWS)
{name}(const SRC_T* __restrict__ src, int pitch, OUT_T* __restrict__ dst,
       const int* __restrict__ ix, const float* __restrict__ wx,
       const int* __restrict__ iy, const float* __restrict__ wy)
{{
    const int ox = blockIdx.x * 32 + threadIdx.x;
    const int oy = blockIdx.y;
    const int fx = ox - PAD_X, fy = oy - PAD_Y;
    const bool inside = ox < OUT_W && fx >= 0 && fx < FIT_W && fy >= 0 && fy < FIT_H;
    float acc[NC];
    #pragma unroll
    for (int c = 0; c < NC; ++c) acc[c] = 0.f;
    if (inside) {{
        #pragma unroll
        for (int ky = threadIdx.y; ky < KY; ky += ROWS) {{
            const float wyk = __ldg(wy + fy * KY + ky);
            if (wyk == 0.f) continue;
            const int sy = __ldg(iy + fy * KY + ky);
            float row[NC];
            #pragma unroll
            for (int c = 0; c < NC; ++c) row[c] = 0.f;
            #pragma unroll
            for (int kx = 0; kx < KX; ++kx) {{
                const float wxk = __ldg(wx + fx * KX + kx);
                float v[NC];
                pixel(src, pitch, __ldg(ix + fx * KX + kx), sy, v);
                #pragma unroll
                for (int c = 0; c < NC; ++c) row[c] += wxk * v[c];
            }}
            #pragma unroll
            for (int c = 0; c < NC; ++c) acc[c] += wyk * row[c];
        }}
    }}
#if ROWS > 1
    __shared__ float part[ROWS][NC][32];
    #pragma unroll
    for (int c = 0; c < NC; ++c) part[threadIdx.y][c][threadIdx.x] = acc[c];
    __syncthreads();
    if (threadIdx.y != 0) return;
    #pragma unroll
    for (int r = 1; r < ROWS; ++r) {{
        #pragma unroll
        for (int c = 0; c < NC; ++c) acc[c] += part[r][c][threadIdx.x];
    }}
#endif
    if (ox >= OUT_W) return;
    const int plane = OUT_W * OUT_H;
    const int o = oy * OUT_W + ox;
{store}
}}
"""

# One block per (output row, CW output columns). Vertical pass: each thread takes ROI columns of the block's
# footprint (a warp reads consecutive bytes of a row) and sums the KY weighted rows into shared memory; then
# the horizontal pass combines KX of those column sums per output pixel. Each source pixel is converted once
# per output row that covers it, instead of once per (output pixel, tap) pair as in the gather kernel.
_SEPARABLE = r"""
extern "C" __global__ void __launch_bounds__(SEP_T)
{name}(const SRC_T* __restrict__ src, int pitch, OUT_T* __restrict__ dst,
       const int* __restrict__ ix, const float* __restrict__ wx,
       const int* __restrict__ iy, const float* __restrict__ wy)
{{
    __shared__ float cols[NC][SPAN_MAX];
    const int oy = blockIdx.y, fy = oy - PAD_Y, ox0 = blockIdx.x * CW;
    const int fx0 = max(ox0 - PAD_X, 0), fx1 = min(ox0 + CW - PAD_X, FIT_W);  // fit columns in this block
    const bool rows_in = fy >= 0 && fy < FIT_H && fx0 < fx1;
    const int x_lo = rows_in ? __ldg(ix + fx0 * KX) : 0;  // taps ascend: first tap of first column is lowest
    if (rows_in) {{
        const int span = __ldg(ix + (fx1 - 1) * KX + KX - 1) + 1 - x_lo;
        int sy[KY];
        float wyk[KY];
        #pragma unroll
        for (int ky = 0; ky < KY; ++ky) {{ sy[ky] = __ldg(iy + fy * KY + ky); wyk[ky] = __ldg(wy + fy * KY + ky); }}
        for (int i = threadIdx.x; i < span; i += SEP_T) {{
            float col[NC];
            #pragma unroll
            for (int c = 0; c < NC; ++c) col[c] = 0.f;
            #pragma unroll
            for (int ky = 0; ky < KY; ++ky) {{
                if (wyk[ky] == 0.f) continue;  // padding tap (uniform across the block)
                float v[NC];
                pixel(src, pitch, x_lo + i, sy[ky], v);
                #pragma unroll
                for (int c = 0; c < NC; ++c) col[c] += wyk[ky] * v[c];
            }}
            #pragma unroll
            for (int c = 0; c < NC; ++c) cols[c][i] = col[c];
        }}
    }}
"""

# 8-bit mono only: one block per output row; each thread reads 16 consecutive bytes of a row per load
# (uint4), so a warp moves 512 contiguous bytes per request instead of 32. The vertical sums of the whole
# footprint go to shared memory, then the horizontal pass as in the separable kernel.
_VEC16 = r"""
extern "C" __global__ void __launch_bounds__(VEC_T)
{name}(const unsigned char* __restrict__ src, int pitch, OUT_T* __restrict__ dst,
       const int* __restrict__ ix, const float* __restrict__ wx,
       const int* __restrict__ iy, const float* __restrict__ wy)
{{
    __shared__ float cols[VEC_SPAN];
    const int oy = blockIdx.y, fy = oy - PAD_Y;
    const bool row_in = fy >= 0 && fy < FIT_H;
    const int a0 = (ROI_X + __ldg(ix)) & ~15;  // first column read, aligned down to a 16-byte vector
    if (row_in) {{
        const int nvec = (ROI_X + __ldg(ix + FIT_W * KX - 1) + 1 - a0 + 15) >> 4;
        int sy[KY];
        float wyk[KY];
        #pragma unroll
        for (int ky = 0; ky < KY; ++ky) {{ sy[ky] = __ldg(iy + fy * KY + ky); wyk[ky] = __ldg(wy + fy * KY + ky); }}
        for (int t = threadIdx.x; t < nvec; t += VEC_T) {{
            uint4 q[KY];
            #pragma unroll
            for (int ky = 0; ky < KY; ++ky)  // all rows in flight before the first use
                q[ky] = __ldg(reinterpret_cast<const uint4*>(src + sy[ky] * pitch + a0) + t);
            float col[16];
            #pragma unroll
            for (int j = 0; j < 16; ++j) col[j] = 0.f;
            #pragma unroll
            for (int ky = 0; ky < KY; ++ky) {{
                const unsigned int wd[4] = {{q[ky].x, q[ky].y, q[ky].z, q[ky].w}};
                #pragma unroll
                for (int j = 0; j < 16; ++j) col[j] += wyk[ky] * (float)((wd[j >> 2] >> (8 * (j & 3))) & 0xffu);
            }}
            #pragma unroll
            for (int j = 0; j < 16; ++j) cols[t * 16 + j] = col[j];
        }}
    }}
    __syncthreads();
    const int plane = OUT_W * OUT_H;
    for (int ox = threadIdx.x; ox < OUT_W; ox += VEC_T) {{
        const int fx = ox - PAD_X;
        const bool inside = row_in && fx >= 0 && fx < FIT_W;
        float acc[1] = {{0.f}};
        if (inside) {{
            #pragma unroll
            for (int kx = 0; kx < KX; ++kx)
                acc[0] += __ldg(wx + fx * KX + kx) * cols[ROI_X + __ldg(ix + fx * KX + kx) - a0];
        }}
        const int o = oy * OUT_W + ox;
{store}
    }}
}}
"""

# Bayer: one block per (output row, BAY_CW output columns). The footprint's raw rows, with the demosaic's one-pixel
# halo, are read once into shared memory (16-byte loads where rows are aligned). Each thread then walks one 32-bit
# word (4 sites) down those rows with a 3-row register window and demosaics the 4 sites at once in 16-bit lanes
# (even bytes in one word, odd in another: OpenCV's integer rounding exactly), summing each colour in those lanes
# while the row weight stays the same (area: all but the footprint's edge rows) and in float when it changes.
# A warp's branch on the row's mosaic phase is uniform (every thread is on the same row), so it never diverges.
# The horizontal pass is the separable kernel's. Each source byte leaves memory about once.
_BAYER = r"""
#define M16 0x00FF00FFu  // a byte per 16-bit lane
__device__ __forceinline__ unsigned avg2(unsigned a, unsigned b) {{ return ((a + b + 0x00010001u) >> 1) & M16; }}
__device__ __forceinline__ unsigned avg4(unsigned a, unsigned b, unsigned c, unsigned d) {{
    return ((a + b + c + d + 0x00020002u) >> 2) & M16;
}}
// One raw row around word t: even bytes (e), odd bytes (o), the odd byte left of each even one (l), the even
// byte right of each odd one (r); one byte per 16-bit lane.
struct Lanes {{ unsigned e, o, l, r; }};
__device__ __forceinline__ Lanes lanes_at(const unsigned* row) {{
    const unsigned c = row[0];
    Lanes x;
    x.e = __byte_perm(c, 0u, 0x4240);  // bytes 0, 2 (selector 4: a zero byte)
    x.o = __byte_perm(c, 0u, 0x4341);  // bytes 1, 3
    x.l = __funnelshift_l(row[-1], c, 8) & M16;  // bytes -1, 1
    x.r = __funnelshift_r(c, row[1], 16) & M16;  // bytes 2, 4
    return x;
}}

extern "C" __global__ void __launch_bounds__(BAY_T)
{name}(const unsigned char* __restrict__ src, int pitch, OUT_T* __restrict__ dst,
       const int* __restrict__ ix, const float* __restrict__ wx,
       const int* __restrict__ iy, const float* __restrict__ wy)
{{
    __shared__ __align__(16) unsigned raw[BAY_ROWS * BAY_WP];  // 4 pad words, the tile, 4 pad words per row
    __shared__ float cols[NC][SPAN_MAX];  // column sums per demosaic centre column
    const int oy = blockIdx.y, fy = oy - PAD_Y, ox0 = blockIdx.x * BAY_CW;
    const int fx0 = max(ox0 - PAD_X, 0), fx1 = min(ox0 + BAY_CW - PAD_X, FIT_W);  // fit columns in this block
    const bool rows_in = fy >= 0 && fy < FIT_H && fx0 < fx1;
    int c_first = 0, c_last = 0, r_base = 0, nrows = 0, a0 = 0;
    if (rows_in) {{  // bayer_taps: centre columns/rows (clamped as OpenCV's border), ascending, rows merged
        c_first = __ldg(ix + fx0 * KX);
        c_last = __ldg(ix + (fx1 - 1) * KX + KX - 1);
        r_base = __ldg(iy + fy * KY) - 1;
        nrows = __ldg(iy + fy * KY + KY - 1) + 2 - r_base;
        const unsigned char* row0 = src + (size_t)r_base * pitch;
        if ((((size_t)src | (size_t)pitch) & 15) == 0) {{  // whole 16-byte vectors (rows end on one: never past)
            a0 = (ROI_X + c_first - 1) & ~15;
            const int nvec = ((ROI_X + c_last + 17) & ~15) - a0 >> 4;
            for (int k = threadIdx.x >> 5; k < nrows; k += BAY_T >> 5)  // a warp per row
                for (int v = threadIdx.x & 31; v < nvec; v += 32)
                    reinterpret_cast<uint4*>(raw + k * BAY_WP + 4)[v] =
                        __ldg(reinterpret_cast<const uint4*>(row0 + (size_t)k * pitch + a0) + v);
        }} else {{  // e.g. a registered camera buffer with an odd pitch: bytes
            a0 = (ROI_X + c_first - 1) & ~3;
            const int nb = ROI_X + c_last + 2 - a0;
            unsigned char* bytes = reinterpret_cast<unsigned char*>(raw);
            for (int k = threadIdx.x >> 5; k < nrows; k += BAY_T >> 5)
                for (int b = threadIdx.x & 31; b < nb; b += 32)
                    bytes[(k * BAY_WP + 4) * 4 + b] = __ldg(row0 + (size_t)k * pitch + a0 + b);
        }}
    }}
    __syncthreads();
    if (rows_in) {{
        const int t_lo = (ROI_X + c_first - a0) >> 2, t_hi = (ROI_X + c_last - a0) >> 2;
        for (int t = t_lo + threadIdx.x; t <= t_hi; t += BAY_T) {{
            const unsigned* row = raw + 4 + t;
            Lanes n = lanes_at(row), c = lanes_at(row + BAY_WP);
            unsigned se[NC], so[NC];  // lane sums since the last flush
            float col[NC][4];  // bytes 0..3 of the word
            #pragma unroll
            for (int ch = 0; ch < NC; ++ch) {{
                se[ch] = so[ch] = 0u;
                col[ch][0] = col[ch][1] = col[ch][2] = col[ch][3] = 0.f;
            }}
            float wcur = 0.f;
            int run = 0;
            #pragma unroll 3  // the window's three rows rotate through registers instead of being moved
            for (int k = 1; k < nrows - 1; ++k) {{
                const Lanes s = lanes_at(row + (k + 1) * BAY_WP);
                const float wk = __ldg(wy + fy * KY + k - 1);  // the same for the whole block: one broadcast
                if (wk != wcur || run == 256) {{  // flush: lanes hold at most 256 rows of bytes
                    #pragma unroll
                    for (int ch = 0; ch < NC; ++ch) {{
                        col[ch][0] = fmaf(wcur, (float)(se[ch] & 0xffffu), col[ch][0]);
                        col[ch][1] = fmaf(wcur, (float)(so[ch] & 0xffffu), col[ch][1]);
                        col[ch][2] = fmaf(wcur, (float)(se[ch] >> 16), col[ch][2]);
                        col[ch][3] = fmaf(wcur, (float)(so[ch] >> 16), col[ch][3]);
                        se[ch] = so[ch] = 0u;
                    }}
                    wcur = wk;
                    run = 0;
                }}
                if (wk != 0.f) {{
                    const int py = ((r_base + k) & 1) ^ RY;  // 0: a red row, 1: a blue row (same for the block)
                    unsigned re, ge, be, ro, go, bo;
                    if (RX == py) {{  // even bytes red/blue sites, odd bytes green
                        const unsigned cross = avg4(n.e, s.e, c.l, c.o), diag = avg4(n.l, n.o, s.l, s.o);
                        const unsigned hz = avg2(c.e, c.r), vt = avg2(n.o, s.o);
                        ge = cross; go = c.o;
                        if (py == 0) {{ re = c.e; be = diag; ro = hz; bo = vt; }}
                        else {{ be = c.e; re = diag; ro = vt; bo = hz; }}
                    }} else {{  // even bytes green, odd bytes red/blue sites
                        const unsigned cross = avg4(n.o, s.o, c.e, c.r), diag = avg4(n.e, n.r, s.e, s.r);
                        const unsigned hz = avg2(c.l, c.o), vt = avg2(n.e, s.e);
                        ge = c.e; go = cross;
                        if (py == 0) {{ re = hz; be = vt; ro = c.o; bo = diag; }}
                        else {{ re = vt; be = hz; bo = c.o; ro = diag; }}
                    }}
{lane_out}
                    ++run;
                }}
                n = c; c = s;
            }}
            #pragma unroll
            for (int ch = 0; ch < NC; ++ch) {{
                col[ch][0] = fmaf(wcur, (float)(se[ch] & 0xffffu), col[ch][0]);
                col[ch][1] = fmaf(wcur, (float)(so[ch] & 0xffffu), col[ch][1]);
                col[ch][2] = fmaf(wcur, (float)(se[ch] >> 16), col[ch][2]);
                col[ch][3] = fmaf(wcur, (float)(so[ch] >> 16), col[ch][3]);
            }}
            #pragma unroll
            for (int j = 0; j < 4; ++j) {{
                const int cx = a0 + 4 * t + j - ROI_X;  // the ROI column of byte j
                if (cx >= c_first && cx <= c_last) {{
                    #pragma unroll
                    for (int ch = 0; ch < NC; ++ch) cols[ch][cx - c_first] = col[ch][j];
                }}
            }}
        }}
    }}
"""


# The horizontal pass shared by the separable and bayer layouts: each output column combines KX of the column sums
# the block left in cols[] (COLS_FIRST: the ROI column of cols[0]); padding outside the fit gets the bias.
_HORIZONTAL = r"""
    __syncthreads();
    const int plane = OUT_W * OUT_H;
    for (int j = threadIdx.x; j < COLS_CW; j += COLS_T) {{
        const int ox = ox0 + j;
        if (ox >= OUT_W) break;
        const int fx = ox - PAD_X;
        const bool inside = rows_in && fx >= fx0 && fx < fx1;
        float acc[NC];
        #pragma unroll
        for (int c = 0; c < NC; ++c) acc[c] = 0.f;
        if (inside) {{
            #pragma unroll
            for (int kx = 0; kx < KX; ++kx) {{
                const float w = __ldg(wx + fx * KX + kx);
                const int s = __ldg(ix + fx * KX + kx) - COLS_FIRST;
                #pragma unroll
                for (int c = 0; c < NC; ++c) acc[c] += w * cols[c][s];
            }}
        }}
        const int o = oy * OUT_W + ox;
{store}
    }}
}}
"""
_SEPARABLE += _HORIZONTAL.replace("COLS_CW", "CW").replace("COLS_T", "SEP_T").replace("COLS_FIRST", "x_lo")
_BAYER += _HORIZONTAL.replace("COLS_CW", "BAY_CW").replace("COLS_T", "BAY_T").replace("COLS_FIRST", "c_first")

SEP_COLUMNS, SEP_THREADS = 32, 128
BAY_COLUMNS = 32
SMEM_LIMIT = 48 * 1024  # static shared memory per block without opting in


def vec16_span(plan: Plan, taps_x: Taps) -> int:
    """Shared-memory floats of the vec16 kernel: the whole footprint in whole 16-byte vectors."""
    a0 = (plan.roi[0] + int(taps_x.idx[0, 0])) & ~15
    return -(-(plan.roi[0] + int(taps_x.idx[-1, -1]) + 1 - a0) // 16) * 16


def vec16_threads(plan: Plan, taps_x: Taps) -> int:
    return min(256, -(-vec16_span(plan, taps_x) // 16 // 32) * 32)


def vec16_applies(plan: Plan, taps_x: Taps, pitch_bytes: int | None) -> bool:
    """8-bit mono source, rows 16-byte aligned, footprint within shared memory."""
    return (plan.pixel_format == "Mono8" and accumulated_channels(plan) == 1 and pitch_bytes is not None
            and pitch_bytes % 16 == 0 and vec16_span(plan, taps_x) * 4 <= SMEM_LIMIT)


def span_max(plan: Plan, taps_x: Taps, cw: int = SEP_COLUMNS) -> int:
    """Most ROI columns any separable block reads (its shared-memory row length)."""
    best = 1
    for ox0 in range(0, plan.out_w, cw):
        fx0, fx1 = max(ox0 - plan.pad_x, 0), min(ox0 + cw - plan.pad_x, plan.fit_w)
        if fx0 < fx1:
            best = max(best, int(taps_x.idx[fx1 - 1, -1]) + 1 - int(taps_x.idx[fx0, 0]))
    return best


def bayer_taps(plan: Plan, taps_x: Taps, taps_y: Taps) -> tuple[Taps, Taps]:
    """The bayer kernel's tables: taps moved onto the demosaic centres OpenCV's border uses (clamped one pixel
    inwards), and per output row the consecutive centre rows with their merged weights (0 where none)."""
    _, _, w, h = plan.roi
    cx = np.clip(taps_x.idx, 1, w - 2)
    cy = np.clip(taps_y.idx, 1, h - 2)
    rows: list[list[tuple[int, float]]] = []
    for idx, wt in zip(cy, taps_y.w, strict=True):
        lo = int(idx.min())
        merged = np.zeros(int(idx.max()) + 1 - lo, np.float64)
        np.add.at(merged, idx - lo, wt.astype(np.float64))
        rows.append([(lo + k, float(m)) for k, m in enumerate(merged)])
    return Taps(cx.astype(np.int32), taps_x.w), _pack(rows, h)


def taps_for(plan: Plan, variant: str, resized: tuple[Taps, Taps] | None = None) -> tuple[Taps, Taps]:
    """(x taps, y taps) as the variant's kernel reads them; `resized`: the plan's resize_taps, if already made."""
    tx, ty = resized or resize_taps(plan)
    return bayer_taps(plan, tx, ty) if variant == "bayer" else (tx, ty)


def bayer_tile(plan: Plan, taps_x: Taps, taps_y: Taps, cw: int) -> tuple[int, int, int]:
    """(rows, 32-bit words per row, centre columns) the bayer kernel's largest block holds: footprint rows with the
    demosaic halo; the tile row in whole 16-byte vectors from its aligned-down start, plus 4 pad words each side;
    the columns whose sums it keeps."""
    x, _, w, h = plan.roi
    cy = np.clip(taps_y.idx, 1, h - 2)
    rows = int((cy.max(1) - cy.min(1)).max()) + 3
    words = span = 4
    for ox0 in range(0, plan.out_w, cw):
        fx0, fx1 = max(ox0 - plan.pad_x, 0), min(ox0 + cw - plan.pad_x, plan.fit_w)
        if fx0 < fx1:
            c_first = min(max(int(taps_x.idx[fx0, 0]), 1), w - 2)
            c_last = min(max(int(taps_x.idx[fx1 - 1, -1]), 1), w - 2)
            a0, a1 = (x + c_first - 1) & ~15, (x + c_last + 17) & ~15
            words = max(words, (a1 - a0) // 4 + 8)
            span = max(span, c_last + 1 - c_first)
    return rows, words, span


def bayer_threads(plan: Plan, taps_x: Taps, taps_y: Taps, cw: int) -> int:
    """A thread per word of centre columns in the widest block (whole warps, 64..256): none idles down the rows."""
    span = bayer_tile(plan, taps_x, taps_y, cw)[2]
    return min(256, max(64, -(-(span // 4 + 2) // 32) * 32))


def bayer_columns(plan: Plan, taps_x: Taps, taps_y: Taps) -> int | None:
    """Output columns per block of the bayer kernel: the most (up to BAY_COLUMNS) whose tile fits in shared memory;
    None where even 4 do not (a downscale too steep: the gather kernel takes it)."""
    if plan.pixel_format not in BAYER or min(plan.roi[2:]) < 3:
        return None
    cw = BAY_COLUMNS
    while cw >= 4:
        rows, words, span = bayer_tile(plan, taps_x, taps_y, cw)
        if 4 * (rows * words + accumulated_channels(plan) * span) <= SMEM_LIMIT:
            return cw
        cw //= 2
    return None


def pick_variant(plan: Plan, taps_x: Taps, taps_y: Taps, pitch_bytes: int | None = None) -> str:
    """vec16 for aligned Mono8; bayer for Bayer mosaics; separable where its column sums fit in shared memory (all
    usual chains); else gather. (Measured: tools/bench_gpu_preprocess.py, README "GPU preprocessing".)"""
    if vec16_applies(plan, taps_x, pitch_bytes):
        return "vec16"
    if bayer_columns(plan, taps_x, taps_y) is not None:
        return "bayer"
    fits = accumulated_channels(plan) * span_max(plan, taps_x) * 4 <= SMEM_LIMIT
    return "separable" if fits else "gather"


def _demosaic_helpers(pixel_format: str, color: str, channels: int) -> str:
    """Device functions of the bilinear demosaic (OpenCV's integer rounding), shared by every layout."""
    rx, ry = BAYER_RED_AT[pixel_format]
    return "\n".join([
        f"#define RX {rx}",
        f"#define RY {ry}",
        "// OpenCV fills the outermost row/column with its neighbour's result: centres are clamped inwards.",
        "__device__ __forceinline__ int clampc(int x) { return min(max(x, 1), ROI_W - 2); }",
        "__device__ __forceinline__ int clampr(int y) { return min(max(y, 1), ROI_H - 2); }",
        "// Colour of a site from its 3x3 neighbourhood (centre c0; px, py: its column/row parity against red).",
        "__device__ __forceinline__ void demosaic(int c0, int n, int s, int w, int e, int nw, int ne, int sw, "
        "int se, int px, int py, float* v) {",
        "    int r, g, b;",
        "    if (px == py) {  // red or blue site: green from the cross, the other colour from the diagonals",
        "        const int diag = (nw + ne + sw + se + 2) >> 2;",
        "        g = (n + s + w + e + 2) >> 2;",
        "        if (px == 0) { r = c0; b = diag; } else { b = c0; r = diag; }",
        "    } else {  // green site: red/blue from the row or column neighbours",
        "        const int hz = (w + e + 1) >> 1, vt = (n + s + 1) >> 1;",
        "        g = c0;",
        "        if (py == 0) { r = hz; b = vt; } else { r = vt; b = hz; }",
        "    }",
        _colour_out("r", "g", "b", color, channels),
        "}",
        "",
    ])


def _bayer_body() -> str:
    return "\n".join([
        "    cx = clampc(cx); cy = clampr(cy);",
        "    const SRC_T* p = src + cy * pitch + ROI_X + cx;",
        "    demosaic((int)__ldg(p), (int)__ldg(p - pitch), (int)__ldg(p + pitch), (int)__ldg(p - 1),",
        "             (int)__ldg(p + 1), (int)__ldg(p - pitch - 1), (int)__ldg(p - pitch + 1),",
        "             (int)__ldg(p + pitch - 1), (int)__ldg(p + pitch + 1), (cx & 1) ^ RX, (cy & 1) ^ RY, v);",
    ])


def _colour_out(r: str, g: str, b: str, color: str, channels: int) -> str:
    if channels == 1 or color == "mono":
        gray = f"({r} * {GRAY_R} + {g} * {GRAY_G} + {b} * {GRAY_B} + {1 << (GRAY_SHIFT - 1)}) >> {GRAY_SHIFT}"
        return f"    v[0] = (float)(({gray}));"
    first, last = (r, b) if color == "rgb" else (b, r)
    return f"    v[0] = (float){first}; v[1] = (float){g}; v[2] = (float){last};"


def _lane_out(plan: Plan) -> str:
    """The bayer kernel's per-row sums: each colour's even and odd lanes into se/so, in the model's order."""
    pad = " " * 20
    if accumulated_channels(plan) == 1:
        half = 1 << (GRAY_SHIFT - 1)

        def gray(sfx: str) -> str:
            lo = f"((r{sfx} & 0xffffu) * {GRAY_R}u + (g{sfx} & 0xffffu) * {GRAY_G}u + (b{sfx} & 0xffffu) * {GRAY_B}u"
            hi = f"((r{sfx} >> 16) * {GRAY_R}u + (g{sfx} >> 16) * {GRAY_G}u + (b{sfx} >> 16) * {GRAY_B}u"
            return f"({lo} + {half}u) >> {GRAY_SHIFT}) | ({hi} + {half}u) >> {GRAY_SHIFT} << 16)"

        return f"{pad}se[0] += {gray('e')};\n{pad}so[0] += {gray('o')};"
    order = "rgb" if plan.color == "rgb" else "bgr"
    return "\n".join(f"{pad}se[{i}] += {c}e; so[{i}] += {c}o;" for i, c in enumerate(order))


def _pixel_body(plan: Plan) -> str:
    fmt = plan.pixel_format
    if fmt in MONO:
        return "    v[0] = ld(src + cy * pitch + ROI_X + cx);"
    if fmt in BAYER:
        return _bayer_body()
    assert fmt in COLOUR
    first, last = ("r", "b") if fmt == "RGB8" else ("b", "r")
    return "\n".join([
        "    const SRC_T* p = src + cy * pitch + 3 * (ROI_X + cx);",
        f"    const int {first} = (int)__ldg(p), g = (int)__ldg(p + 1), {last} = (int)__ldg(p + 2);",
        _colour_out("r", "g", "b", plan.color, plan.channels),
    ])


def accumulated_channels(plan: Plan) -> int:
    """Channels the kernel sums: a mono or gray source is summed once and replicated on output."""
    if plan.pixel_format in MONO or plan.channels == 1 or plan.color == "mono":
        return 1
    return 3


def kernel_name(plan: Plan) -> str:
    return f"pp_{plan.pixel_format.lower()}_{plan.color}{plan.channels}_{plan.resize}_{plan.dtype}"


def row_split(taps_y: Taps) -> int:
    """Threads per output pixel: more threads in flight for the long footprints of a large downscale."""
    return max(1, min(4, taps_y.k))


def kernel_source(plan: Plan, taps_x: Taps, taps_y: Taps, rows: int | None = None, variant: str | None = None) -> str:
    """CUDA C++ for `plan`'s fused kernel: everything per chain is a compile-time constant."""
    nc = accumulated_channels(plan)
    rows = rows if rows is not None else row_split(taps_y)
    variant = variant or pick_variant(plan, taps_x, taps_y)
    body = {"separable": _SEPARABLE, "gather": _GATHER, "vec16": _VEC16, "bayer": _BAYER}[variant]
    bay_cw = bayer_columns(plan, taps_x, taps_y) or BAY_COLUMNS
    bay_rows, bay_words, bay_span = bayer_tile(plan, taps_x, taps_y, bay_cw) if variant == "bayer" else (1, 16, 1)
    helpers = _demosaic_helpers(plan.pixel_format, plan.color, plan.channels) if plan.pixel_format in BAYER else ""
    out_t = "__half" if plan.dtype == "float16" else "float"
    cvt = "__float2half_rn" if plan.dtype == "float16" else ""
    store = []
    for c in range(plan.channels):
        a = c if nc > 1 else 0
        g, b = float(plan.gain[c]), float(plan.bias[c])
        store.append(f"    dst[{c} * plane + o] = {cvt}(inside ? fmaf(acc[{a}], {g!r}f, {b!r}f) : {b!r}f);")
    x, y, w, h = plan.roi
    chain = (f"{plan.pixel_format} roi=({x},{y},{w},{h}) -> {plan.color} {plan.resize} {plan.fit_w}x{plan.fit_h} "
             f"in {plan.out_w}x{plan.out_h}x{plan.channels} {plan.dtype}")
    return _TEMPLATE.format(
        chain=chain, src_t="unsigned short" if plan.pixel_format in MONO[1:] else "unsigned char", out_t=out_t,
        roi_x=x, roi_w=w, roi_h=h, out_w=plan.out_w, out_h=plan.out_h, fit_w=plan.fit_w, fit_h=plan.fit_h,
        pad_x=plan.pad_x, pad_y=plan.pad_y, kx=taps_x.k, ky=taps_y.k, rows=rows, nc=nc,
        cw=SEP_COLUMNS, sep_t=SEP_THREADS, span_max=bay_span if variant == "bayer" else span_max(plan, taps_x),
        bay_t=bayer_threads(plan, taps_x, taps_y, bay_cw), bay_cw=bay_cw, bay_rows=bay_rows, bay_words=bay_words,
        helpers=helpers,
        vec_t=vec16_threads(plan, taps_x), vec_span=vec16_span(plan, taps_x),
        pixel_body=_pixel_body(plan),
        kernel=body.format(name=kernel_name(plan),
                           store="\n".join(("" if variant == "gather" else "    ") + ln for ln in store),
                           lane_out=_lane_out(plan) if variant == "bayer" else ""),
    )


def launch_shape(plan: Plan, source_rows: int, variant: str = "gather", taps_x: Taps | None = None,
                 taps_y: Taps | None = None) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(grid, block) for kernel_source's layouts, one block row per output row. gather: 32 output columns x
    `source_rows` threads per block; separable: SEP_COLUMNS output columns, SEP_THREADS threads; vec16: the
    whole row, vec16_threads threads; bayer: bayer_columns output columns, bayer_threads threads."""
    if variant == "vec16":
        assert taps_x is not None
        return (1, plan.out_h, 1), (vec16_threads(plan, taps_x), 1, 1)
    if variant == "bayer":
        assert taps_x is not None and taps_y is not None
        cw = bayer_columns(plan, taps_x, taps_y)
        assert cw is not None, "bayer kernel does not apply to this chain"
        return (-(-plan.out_w // cw), plan.out_h, 1), (bayer_threads(plan, taps_x, taps_y, cw), 1, 1)
    if variant == "separable":
        return (-(-plan.out_w // SEP_COLUMNS), plan.out_h, 1), (SEP_THREADS, 1, 1)
    return (-(-plan.out_w // 32), plan.out_h, 1), (32, source_rows, 1)
