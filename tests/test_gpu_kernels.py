"""What of the GPU preprocessing is testable without CUDA.

`kernel_model` below evaluates, in numpy, the same per-pixel arithmetic the generated kernel does (integer
demosaic and gray formulas, float accumulation over the tap tables). Comparing it with the OpenCV path
checks the tap tables and the colour formulas on every chain before any GPU runs; tests/gpu then checks
that the real kernel computes the same as the OpenCV path.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from inspectd.config.schema import InputSpec, Preprocess, Roi
from inspectd.errors import BackendUnavailable
from inspectd.pixels import BAYER, MONO
from inspectd.preprocess import gpu_kernels as gk
from inspectd.preprocess.cpu import CpuPreprocessor
from inspectd.preprocess.plan import Plan, make_plan
from inspectd.types import Frame

# Chains of tests/gpu/test_gpu_preprocess.py: (pixel format, frame w, h, roi, resize, out w, h, channels, colour)
CASES = [
    ("Mono8", 448, 448, (0, 0, 448, 448), "area", 224, 224, 3, "rgb"),  # demo: integer 2:1
    ("Mono8", 2448, 2048, (0, 0, 0, 0), "area", 224, 224, 3, "rgb"),  # fractional 10.9 x 9.1
    ("Mono8", 1280, 1024, (0, 0, 0, 0), "area", 224, 224, 1, "mono"),
    ("Mono8", 640, 480, (40, 30, 500, 400), "letterbox", 224, 224, 3, "rgb"),
    ("Mono8", 640, 480, (0, 0, 0, 0), "stretch", 224, 224, 3, "rgb"),
    ("Mono8", 100, 80, (0, 0, 0, 0), "area", 224, 224, 3, "rgb"),  # area upscale
    ("Mono12", 640, 480, (0, 0, 0, 0), "area", 160, 120, 1, "mono"),
    ("BayerRG8", 2448, 2048, (0, 0, 0, 0), "area", 224, 224, 3, "rgb"),
    ("BayerGB8", 800, 600, (100, 50, 600, 500), "letterbox", 224, 224, 3, "bgr"),
    ("BayerGR8", 640, 480, (0, 0, 0, 0), "stretch", 224, 224, 3, "rgb"),
    ("BayerBG8", 1280, 1024, (0, 0, 0, 0), "area", 224, 224, 1, "mono"),
    ("RGB8", 1280, 1024, (0, 0, 0, 0), "area", 224, 224, 3, "rgb"),
    ("BGR8", 1280, 1024, (64, 32, 896, 896), "area", 224, 224, 3, "rgb"),
    ("RGB8", 640, 480, (0, 0, 0, 0), "letterbox", 224, 224, 3, "bgr"),
    # Pillow's antialiased filters (torchvision on PIL images): the CPU reference runs Pillow itself
    ("Mono8", 2448, 2048, (0, 0, 0, 0), "bilinear", 224, 224, 3, "rgb"),
    ("Mono8", 640, 480, (0, 0, 0, 0), "bicubic", 224, 224, 3, "rgb"),
    ("Mono8", 100, 80, (0, 0, 0, 0), "bicubic", 224, 224, 1, "mono"),  # upscale: plain cubic
    ("RGB8", 640, 480, (0, 0, 0, 0), "resize_crop", 224, 224, 3, "rgb"),
    ("BayerRG8", 1280, 1024, (0, 0, 0, 0), "resize_crop", 224, 224, 3, "bgr"),
    ("Mono12", 640, 480, (0, 0, 0, 0), "bilinear", 160, 120, 1, "mono"),
    ("BayerRG8", 802, 601, (2, 2, 0, 0), "area", 224, 224, 3, "rgb"),  # rows not 16-byte aligned: byte loads
]


def chain(case: tuple, dtype: str = "float32") -> tuple[Preprocess, InputSpec, Frame]:
    fmt, fw, fh, (x, y, w, h), resize, ow, oh, ch, color = case
    pp = Preprocess(roi=Roi(x=x, y=y, width=w, height=h), resize=resize, color=color,
                    mean=(0.485, 0.456, 0.406)[:ch], std=(0.229, 0.224, 0.225)[:ch])
    spec = InputSpec(width=ow, height=oh, channels=ch, dtype=dtype)
    return pp, spec, Frame(image=random_frame(fmt, fw, fh, seed=hash(case) & 0xFFFF), pixel_format=fmt, t_grab=0.0)


def random_frame(fmt: str, w: int, h: int, seed: int = 0) -> np.ndarray:
    """Noise plus thin bright lines (1-pixel scratches), so area vs sampling and demosaic edges matter."""
    rng = np.random.default_rng(seed)
    top = 4095 if fmt == "Mono12" else 255
    shape = (h, w, 3) if fmt in ("RGB8", "BGR8") else (h, w)
    img = rng.integers(0, top + 1, shape, dtype=np.uint16 if top > 255 else np.uint8)
    img[h // 3, :] = top
    img[:, w // 2 + 1] = top
    return img


def dense(t: gk.Taps, ssize: int) -> np.ndarray:
    m = np.zeros((t.idx.shape[0], ssize))
    for i in range(t.idx.shape[0]):
        np.add.at(m[i], t.idx[i], t.w[i].astype(np.float64))
    return m


def _demosaic(raw: np.ndarray, fmt: str) -> np.ndarray:
    rx, ry = gk.BAYER_RED_AT[fmt]
    h, w = raw.shape
    cy, cx = np.meshgrid(np.clip(np.arange(h), 1, h - 2), np.clip(np.arange(w), 1, w - 2), indexing="ij")
    r = raw.astype(np.int32)

    def at(dy: int, dx: int) -> np.ndarray:
        return r[cy + dy, cx + dx]

    c0, n, s, wv, e = at(0, 0), at(-1, 0), at(1, 0), at(0, -1), at(0, 1)
    diag = (at(-1, -1) + at(-1, 1) + at(1, -1) + at(1, 1) + 2) >> 2
    cross = (n + s + wv + e + 2) >> 2
    hz, vt = (wv + e + 1) >> 1, (n + s + 1) >> 1
    px, py = (cx & 1) ^ rx, (cy & 1) ^ ry
    red_site, blue_site = (px == 0) & (py == 0), (px == 1) & (py == 1)
    green_red_row, green_blue_row = (px == 1) & (py == 0), (px == 0) & (py == 1)
    R = np.select([red_site, blue_site, green_red_row, green_blue_row], [c0, diag, hz, vt])
    G = np.where(red_site | blue_site, cross, c0)
    B = np.select([red_site, blue_site, green_red_row, green_blue_row], [diag, c0, vt, hz])
    return np.stack([R, G, B], -1)


def kernel_model(plan: Plan, image: np.ndarray) -> np.ndarray:
    """The generated kernel's arithmetic in numpy (float64): NCHW output."""
    x, y, w, h = plan.roi
    roi = image[y:y + h, x:x + w]
    if plan.pixel_format in MONO:
        chans = [roi.astype(np.int64)]
    else:
        rgb = _demosaic(roi, plan.pixel_format) if plan.pixel_format in BAYER else roi.astype(np.int64)
        if plan.pixel_format == "BGR8":
            rgb = rgb[..., ::-1]
        r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
        if gk.accumulated_channels(plan) == 1:
            chans = [(r * gk.GRAY_R + g * gk.GRAY_G + b * gk.GRAY_B + (1 << (gk.GRAY_SHIFT - 1))) >> gk.GRAY_SHIFT]
        else:
            chans = [r, g, b] if plan.color == "rgb" else [b, g, r]
    tx, ty = gk.resize_taps(plan)
    mx, my = dense(tx, w), dense(ty, h)
    out = np.empty((plan.channels, plan.out_h, plan.out_w))
    for c in range(plan.channels):
        out[c] = plan.bias[c]
        res = my @ chans[c if len(chans) > 1 else 0].astype(np.float64) @ mx.T
        y0, x0 = plan.pad_y, plan.pad_x
        out[c, y0:y0 + plan.fit_h, x0:x0 + plan.fit_w] = res * plan.gain[c] + plan.bias[c]
    return out


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}x{c[2]}-{c[4]}-{c[7]}{c[8]}")
def test_kernel_arithmetic_matches_opencv(case: tuple) -> None:
    pp, spec, frame = chain(case)
    cpu = CpuPreprocessor(pp, spec, ring=1)
    plan = cpu.plan_for(frame)
    ref = cpu(frame)[0].astype(np.float64)
    got = kernel_model(plan, frame.image)
    gain = plan.gain.astype(np.float64).reshape(-1, 1, 1)
    diff_levels = np.abs(got - ref) / gain
    assert diff_levels.max() <= gk.tolerance_levels(plan) + 1e-3, f"max diff {diff_levels.max():.3f} levels"
    # and the GPU's exact average is not a copy of OpenCV's rounding: most pixels differ a little
    if plan.resize == "area" and (plan.roi[2], plan.roi[3]) != (plan.fit_w, plan.fit_h):
        assert diff_levels.mean() > 1e-3


def test_integer_area_is_exact_box_average_and_keeps_thin_lines() -> None:
    t = gk.area_taps(448, 224)
    assert t.k == 2 and np.all(t.w == 0.5) and np.all(t.idx[:, 0] == np.arange(0, 448, 2))
    img = np.zeros((448, 448))
    img[:, 301] = 255.0  # a one-pixel scratch
    out = dense(gk.area_taps(448, 224), 448) @ img @ dense(t, 448).T
    assert np.allclose(out[:, 150], 127.5) and out.sum() == pytest.approx(img.sum() / 4)


def test_fractional_area_weights_cover_every_source_pixel_once() -> None:
    t = gk.area_taps(2448, 224)
    coverage = dense(t, 2448).sum(0) * (2448 / 224)
    assert np.allclose(coverage, 1.0, atol=1e-4)  # nothing skipped, nothing counted twice
    assert np.allclose(t.w.sum(1), 1.0, atol=1e-5)


@pytest.mark.parametrize("variant", ["gather", "separable"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("case", [CASES[1], CASES[7], CASES[8], CASES[12]], ids=lambda c: c[0])
def test_kernel_source_bakes_the_chain(case: tuple, dtype: str, variant: str) -> None:
    pp, spec, frame = chain(case, dtype)
    plan = make_plan(pp, spec, frame.image.shape[1], frame.image.shape[0], frame.pixel_format)
    tx, ty = gk.resize_taps(plan)
    src = gk.kernel_source(plan, tx, ty, variant=variant)
    name = gk.kernel_name(plan)
    bounds = "SEP_T" if variant == "separable" else "32 * ROWS"
    assert f'extern "C" __global__ void __launch_bounds__({bounds})\n{name}(' in src
    assert f"#define KX {tx.k}" in src and f"#define KY {ty.k}" in src
    assert f"#define ROI_X {plan.roi[0]}" in src and f"#define ROI_W {plan.roi[2]}" in src
    assert ("__float2half_rn(" in src) == (dtype == "float16")
    assert ("__ldg(p - pitch - 1)" in src) == (plan.pixel_format in BAYER)
    for c in range(plan.channels):
        assert f"dst[{c} * plane + o]" in src and repr(float(plan.gain[c])) in src
    assert src.count("{") == src.count("}")  # template braces all escaped
    grid, block = gk.launch_shape(plan, gk.row_split(ty), variant)
    assert grid[1] == plan.out_h
    if variant == "separable":  # every output column has a block, every block's footprint fits its buffer
        assert grid[0] * gk.SEP_COLUMNS >= plan.out_w and block == (gk.SEP_THREADS, 1, 1)
        assert f"#define SPAN_MAX {gk.span_max(plan, tx)}" in src
        assert gk.pick_variant(plan, tx, ty) == ("bayer" if plan.pixel_format in BAYER else "separable")
    else:
        assert grid[0] * 32 >= plan.out_w and block == (32, gk.row_split(ty), 1)


def test_vec16_only_for_aligned_mono8_and_reads_within_the_row() -> None:
    for case in CASES:
        pp, spec, frame = chain(case)
        plan = make_plan(pp, spec, frame.image.shape[1], frame.image.shape[0], frame.pixel_format)
        tx, ty = gk.resize_taps(plan)
        pitch = frame.image.strides[0]
        applies = gk.vec16_applies(plan, tx, pitch)
        assert applies == (case[0] == "Mono8" and pitch % 16 == 0)
        other = "bayer" if case[0] in BAYER else "separable"
        assert gk.pick_variant(plan, tx, ty, pitch) == ("vec16" if applies else other)
        if applies:
            a0 = (plan.roi[0] + int(tx.idx[0, 0])) & ~15
            assert a0 + gk.vec16_span(plan, tx) <= pitch  # whole 16-byte loads never cross the row end
            src = gk.kernel_source(plan, tx, ty, variant="vec16")
            assert "reinterpret_cast<const uint4*>" in src
            assert f"#define VEC_SPAN {gk.vec16_span(plan, tx)}" in src
            assert gk.launch_shape(plan, 1, "vec16", tx) == ((1, plan.out_h, 1), (gk.vec16_threads(plan, tx), 1, 1))


def test_separable_footprint_bound_covers_every_block() -> None:
    pp, spec, frame = chain(CASES[8])  # letterbox: blocks over padding read nothing
    plan = make_plan(pp, spec, frame.image.shape[1], frame.image.shape[0], frame.pixel_format)
    tx, _ = gk.resize_taps(plan)
    bound = gk.span_max(plan, tx)
    for ox0 in range(0, plan.out_w, gk.SEP_COLUMNS):
        fx = [ox - plan.pad_x for ox in range(ox0, ox0 + gk.SEP_COLUMNS) if 0 <= ox - plan.pad_x < plan.fit_w]
        if fx:
            assert tx.idx[fx].max() - tx.idx[fx].min() + 1 <= bound and tx.idx[fx].min() == tx.idx[fx[0], 0]


def _cuda_usable() -> bool:
    try:
        import pycuda.driver as cuda

        cuda.init()
        return cuda.Device.count() > 0
    except Exception:
        return False


@pytest.mark.skipif(_cuda_usable(), reason="this machine has CUDA: tests/gpu covers the working path")
def test_station_asking_for_gpu_without_cuda_gets_a_clear_error(tmp_path) -> None:
    from inspectd.config.load import load_config
    from inspectd.pipeline.runtime import build_runtime
    from tests.conftest import write_station

    cfg = load_config(write_station(tmp_path, {"preprocess": "gpu"}))
    with pytest.raises(BackendUnavailable, match=r"`preprocess: gpu`.*set `preprocess: cpu` in the station file"):
        build_runtime(cfg.station, cfg.products["disc-a"])


def test_missing_pycuda_message_names_the_cause_and_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    from inspectd.preprocess import gpu

    monkeypatch.setattr(gpu, "_cuda", None)
    monkeypatch.setattr(gpu, "_cuda_import_error", "ModuleNotFoundError: No module named 'pycuda'")
    with pytest.raises(BackendUnavailable, match=r"pycuda cannot be imported \(ModuleNotFoundError.*'tensorrt' extra"):
        gpu.require_cuda()


def test_pillow_filters_antialias_and_centre_crop_geometry() -> None:
    """bilinear is Pillow's antialiased one (a 1-pixel line at 10:1 keeps ~1/10 of its contrast instead of
    vanishing between samples as OpenCV's stretch may); resize_crop is torchvision Resize(short) + CenterCrop."""
    img = np.zeros((100, 1000), np.uint8)
    img[:, 500] = 250  # one column, between OpenCV's 10:1 linear samples (at 494.5 and 504.5)
    frame = Frame(image=img, pixel_format="Mono8", t_grab=0.0)
    spec = InputSpec(width=100, height=10, channels=1)
    got = {}
    for mode in ("bilinear", "stretch"):
        pp = Preprocess(resize=mode, color="mono", scale=1.0, mean=(0.0,), std=(1.0,))
        got[mode] = CpuPreprocessor(pp, spec, ring=1)(frame)[0, 0].max()
    assert 10 < got["bilinear"] < 30 and got["stretch"] < 1  # every source column counts, or none does
    pp = Preprocess(resize="resize_crop", crop=0.875)
    plan = make_plan(pp, InputSpec(width=224, height=224), 640, 480, "Mono8")
    # torchvision: Resize(256) on 640x480 -> 341x256, CenterCrop(224) at (round(117 / 2), round(32 / 2))
    assert (plan.scaled_w, plan.scaled_h, plan.crop_x, plan.crop_y) == (341, 256, 58, 16)
    tx, ty = gk.resize_taps(plan)
    assert tx.idx.shape[0] == 224 and ty.idx.shape[0] == 224


def test_bayer_tables_are_the_clamped_taps_merged() -> None:
    """The bayer kernel's row table (centre rows, merged weights) is the same linear map as the resize taps read
    through OpenCV's border clamp; its column taps are the clamped ones."""
    rng = np.random.default_rng(3)
    for case in [c for c in CASES if c[0] in BAYER]:
        pp, spec, frame = chain(case)
        plan = make_plan(pp, spec, frame.image.shape[1], frame.image.shape[0], frame.pixel_format)
        tx, ty = gk.resize_taps(plan)
        bx, by = gk.taps_for(plan, "bayer")
        _, _, w, h = plan.roi
        v = rng.normal(size=h)
        want = (ty.w * v[np.clip(ty.idx, 1, h - 2)]).sum(1)
        assert np.allclose((by.w * v[by.idx]).sum(1), want, atol=1e-5)
        assert np.all(np.diff(by.idx, axis=1) >= 0) and by.idx.min() >= 1 and by.idx.max() <= h - 2
        assert np.array_equal(bx.idx, np.clip(tx.idx, 1, w - 2)) and np.array_equal(bx.w, tx.w)


def test_bayer_tile_holds_every_blocks_footprint_and_halo() -> None:
    for case in [c for c in CASES if c[0] in BAYER]:
        pp, spec, frame = chain(case)
        plan = make_plan(pp, spec, frame.image.shape[1], frame.image.shape[0], frame.pixel_format)
        tx, ty = gk.taps_for(plan, "bayer")
        cw = gk.bayer_columns(plan, tx, ty)
        assert cw is not None and gk.pick_variant(plan, *gk.resize_taps(plan)) == "bayer"
        rows, words, span = gk.bayer_tile(plan, tx, ty, cw)
        assert 4 * (rows * words + gk.accumulated_channels(plan) * span) <= gk.SMEM_LIMIT
        assert rows >= int((ty.idx[:, -1] - ty.idx[:, 0]).max()) + 3  # centre rows and the rows above/below
        x = plan.roi[0]
        threads = gk.launch_shape(plan, 1, "bayer", tx, ty)[1][0]
        for ox0 in range(0, plan.out_w, cw):
            fx = [ox - plan.pad_x for ox in range(ox0, ox0 + cw) if 0 <= ox - plan.pad_x < plan.fit_w]
            if not fx:
                continue
            c_first, c_last = int(tx.idx[fx[0], 0]), int(tx.idx[fx[-1], -1])
            assert c_first == tx.idx[fx].min() and c_last == tx.idx[fx].max()
            a0 = (x + c_first - 1) & ~15
            assert ((x + c_last + 17) & ~15) - a0 <= 4 * (words - 8)  # the vectors, with the halo byte each side
            assert c_last + 1 - c_first <= span
            assert (x + c_last - a0) // 4 - (x + c_first - a0) // 4 < threads  # one word per thread


def _lanes(row: np.ndarray, t: int) -> tuple[np.ndarray, ...]:
    """lanes_at of the bayer kernel in numpy (uint32 words of a raw row)."""
    m16 = np.uint32(0x00FF00FF)
    c, prev, nxt = row[t], row[t - 1], row[t + 1]
    e, o = c & m16, (c >> np.uint32(8)) & m16
    left = ((c << np.uint32(8)) | (prev >> np.uint32(24))) & m16  # __funnelshift_l(prev, c, 8)
    right = ((c >> np.uint32(16)) | (nxt << np.uint32(16))) & m16  # __funnelshift_r(c, next, 16)
    return e, o, left, right


def test_bayer_lane_arithmetic_is_opencvs_integer_rounding() -> None:
    """The 16-bit-lane demosaic sums (avg2/avg4 on two sites per word) equal the per-site integer formulas, for
    every byte value pattern drawn, including 255s (no carry crosses a lane)."""
    rng = np.random.default_rng(11)
    m16 = np.uint32(0x00FF00FF)
    for trial in range(200):
        raw = rng.integers(0, 256, (3, 12), dtype=np.uint8) if trial else np.full((3, 12), 255, np.uint8)
        words = raw.view("<u4").astype(np.uint32)  # 3 rows x 3 words
        n, c, s = (_lanes(words[r], 1) for r in range(3))
        b = raw.astype(np.int64)

        def lane(v: np.uint32, i: int) -> int:
            return int((v >> np.uint32(16 * i)) & np.uint32(0xFFFF))

        def avg2(a: np.uint32, bb: np.uint32) -> np.uint32:
            return ((a + bb + np.uint32(0x00010001)) >> np.uint32(1)) & m16

        def avg4(a: np.uint32, bb: np.uint32, cc: np.uint32, d: np.uint32) -> np.uint32:
            return ((a + bb + cc + d + np.uint32(0x00020002)) >> np.uint32(2)) & m16

        for i in range(2):  # even site at byte 4 + 2i, odd site at byte 5 + 2i
            xe, xo = 4 + 2 * i, 5 + 2 * i
            cross_e = (b[0, xe] + b[2, xe] + b[1, xe - 1] + b[1, xe + 1] + 2) >> 2
            diag_e = (b[0, xe - 1] + b[0, xe + 1] + b[2, xe - 1] + b[2, xe + 1] + 2) >> 2
            cross_o = (b[0, xo] + b[2, xo] + b[1, xo - 1] + b[1, xo + 1] + 2) >> 2
            diag_o = (b[0, xo - 1] + b[0, xo + 1] + b[2, xo - 1] + b[2, xo + 1] + 2) >> 2
            assert lane(avg4(n[0], s[0], c[2], c[1]), i) == cross_e
            assert lane(avg4(n[2], n[1], s[2], s[1]), i) == diag_e
            assert lane(avg4(n[1], s[1], c[0], c[3]), i) == cross_o
            assert lane(avg4(n[0], n[3], s[0], s[3]), i) == diag_o
            assert lane(avg2(c[2], c[1]), i) == (b[1, xe - 1] + b[1, xe + 1] + 1) >> 1  # hz at an even site
            assert lane(avg2(c[0], c[3]), i) == (b[1, xo - 1] + b[1, xo + 1] + 1) >> 1  # hz at an odd site
            assert lane(avg2(n[0], s[0]), i) == (b[0, xe] + b[2, xe] + 1) >> 1  # vt


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH (CUDA toolkit): the GPU tests compile them")
@pytest.mark.parametrize("arch", ["sm_87", "sm_75"])  # Jetson Orin, T4: where the station runs
def test_kernel_sources_compile_for_the_station_gpus(arch: str, tmp_path) -> None:
    """Every layout's generated source compiles with nvcc, with no GPU needed: a CUDA syntax or type error in a
    template shows in CI, not first on a station."""
    chosen = {"vec16": CASES[1], "bayer": CASES[7], "separable": CASES[12], "gather": CASES[8]}
    for variant, case in chosen.items():
        for dtype in ("float32", "float16"):
            pp, spec, frame = chain(case, dtype)
            plan = make_plan(pp, spec, frame.image.shape[1], frame.image.shape[0], frame.pixel_format)
            tx, ty = gk.taps_for(plan, variant)
            src = tmp_path / f"{variant}_{dtype}.cu"
            src.write_text(gk.kernel_source(plan, tx, ty, variant=variant))
            r = subprocess.run(["nvcc", f"-arch={arch}", "-O3", "-cubin", "-o", str(src.with_suffix(".cubin")),
                                str(src)], capture_output=True, text=True, timeout=300)
            assert r.returncode == 0, f"{variant} {dtype}: {r.stderr[-2000:]}"
