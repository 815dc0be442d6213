"""Calibration data: real line images through the product's own preprocessing.

The same batches feed ONNX Runtime's static quantiser (explicit Q/DQ, what TensorRT 11 needs) and,
for TensorRT 10's implicit INT8 path, an IInt8EntropyCalibrator2 with a calibration cache.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from inspectd.config.schema import ProductConfig
from inspectd.engines.images import labelled_frames
from inspectd.engines.manifest import atomic_write
from inspectd.preprocess.cpu import CpuPreprocessor
from inspectd.types import Frame


class CalibrationSet:
    """Preprocessed NCHW batches from a folder of images; each batch is a fresh array (safe to keep)."""

    def __init__(self, product: ProductConfig, frames: Sequence[Frame], batch: int = 1,
                 full_only: bool = False) -> None:
        """`full_only`: a model with a fixed batch takes only full batches (a short last one is left out)."""
        if not frames:
            raise ValueError("calibration needs at least one image")
        if full_only and len(frames) < batch:
            raise ValueError(f"the model takes batches of {batch}: calibration needs at least {batch} images")
        self.product, self.frames, self.batch, self.full_only = product, list(frames), batch, full_only
        self.input_name = product.model.input.name

    @classmethod
    def from_folder(cls, product: ProductConfig, folder: Path, *, pixel_format: str | None = None,
                    limit: int | None = None, batch: int = 1, full_only: bool = False) -> CalibrationSet:
        return cls(product, labelled_frames(folder, pixel_format, limit=limit), batch, full_only)

    def __len__(self) -> int:
        if self.full_only:
            return len(self.frames) // self.batch
        return (len(self.frames) + self.batch - 1) // self.batch

    def batches(self) -> Iterator[np.ndarray]:
        pre = CpuPreprocessor(self.product.preprocess, self.product.model.input, ring=2)
        for i in range(0, len(self.frames), self.batch):
            chunk = self.frames[i:i + self.batch]
            if self.full_only and len(chunk) < self.batch:
                return
            yield np.ascontiguousarray(np.concatenate([pre(f) for f in chunk], axis=0))

    def ort_reader(self):
        """An onnxruntime.quantization CalibrationDataReader over these batches."""
        from onnxruntime.quantization import CalibrationDataReader

        outer = self

        class _Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self._it = outer.batches()

            def get_next(self) -> dict[str, np.ndarray] | None:
                batch = next(self._it, None)
                return None if batch is None else {outer.input_name: batch}

            def rewind(self) -> None:
                self._it = outer.batches()

        return _Reader()


class CalibratorFeed:
    """TensorRT-free half of the INT8 entropy calibrator: batch order, upload, cache file.

    `upload` copies a host batch to device memory and returns its device pointer (cuda_buffers does this);
    TensorRT only ever sees pointers, so this logic is tested with any upload function."""

    def __init__(self, data: CalibrationSet, upload: Callable[[np.ndarray], int], cache: Path | None) -> None:
        self.data, self.upload, self.cache = data, upload, cache
        self._it: Iterator[np.ndarray] | None = None
        self.batches_served = 0

    def batch_size(self) -> int:
        return self.data.batch

    def next_pointers(self, names: Sequence[str]) -> list[int] | None:
        if self._it is None:
            self._it = self.data.batches()
        batch = next(self._it, None)
        if batch is None or batch.shape[0] != self.data.batch:  # TensorRT needs full batches
            return None
        unknown = [n for n in names if n != self.data.input_name]
        if unknown:
            raise ValueError(f"calibrator asked for inputs {unknown}; only {self.data.input_name!r} is fed")
        self.batches_served += 1
        return [self.upload(batch)]

    def read_cache(self) -> bytes | None:
        if self.cache is not None and self.cache.is_file() and self.cache.stat().st_size > 0:
            return self.cache.read_bytes()
        return None  # TensorRT then calibrates from the images

    def write_cache(self, data: bytes) -> None:
        if self.cache is not None:
            atomic_write(self.cache, bytes(data))


def make_entropy_calibrator(trt, feed: CalibratorFeed):
    """An IInt8EntropyCalibrator2 (TensorRT 10; removed in TensorRT 11 and absent from TensorRT-RTX)."""
    if not hasattr(trt, "IInt8EntropyCalibrator2"):
        raise RuntimeError(f"{trt.__name__} {trt.__version__} has no IInt8EntropyCalibrator2: use a Q/DQ model "
                           f"from `inspectd quantize` instead")

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)  # the pybind11 trampoline must be initialised explicitly

        def get_batch_size(self) -> int:
            return feed.batch_size()

        def get_batch(self, names: list[str]) -> list[int] | None:
            return feed.next_pointers(names)

        def read_calibration_cache(self) -> bytes | None:
            return feed.read_cache()

        def write_calibration_cache(self, cache) -> None:
            feed.write_cache(bytes(cache))

    return EntropyCalibrator()
