"""Records passed between stages.

Frames and verdicts are frozen: once a stage hands one on, nobody changes it.
A `Part` is the one mutable record; exactly one stage owns it at a time (it
moves through the queues), except for `claim()`, which is how the deadline
keeper and the last stage agree on who issues the verdict.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol, TypeAlias, runtime_checkable

import numpy as np

# The stage names, in data-flow order: the threads (their stamps and queues), and the keys of Part.stage_ms /
# Verdict.stage_ms (journaled). The acquire thread's timed share is "grab": trigger (or grab call) -> frame in host
# memory; the other three time their whole work under their own name.
STAGE_THREADS = ("acquire", "preprocess", "infer", "decide")
STAGE_TIMES = ("grab", "preprocess", "infer", "decide")


class Outcome(str, Enum):
    PASS = "pass"
    REJECT = "reject"
    FAILSAFE = "failsafe"


class Reason(str, Enum):
    """Why a part did not get a normal verdict. Values are journaled and mapped to PLC codes."""

    DEADLINE = "deadline"  # the verdict was not ready within the cycle budget
    OVERFLOW = "overflow"  # the camera outran the pipeline; the part was never inspected
    NO_FRAME = "no_frame"  # a trigger got no frame within its window
    CAMERA_LOST = "camera_lost"
    STAGE_ERROR = "stage_error"  # a stage raised; the log has the traceback
    SHUTDOWN = "shutdown"  # still queued when the daemon was told to stop
    NOT_READY = "not_ready"  # golden check failed or backend not up
    BAD_OUTPUT = "bad_output"  # the model gave a non-finite or mis-shaped output: never a pass
    INTERRUPTED = "interrupted"  # accepted, then the process died before its verdict (journaled at the next start)
    JOURNAL_DOWN = "journal_down"  # journal.on_failure: failsafe and the journal cannot record verdicts


@dataclass(frozen=True, slots=True)
class Frame:
    """One image from a source, with what the source knows about it."""

    image: np.ndarray  # HxW (mono / Bayer) or HxWx3 (RGB8 / BGR8), uint8 or uint16
    pixel_format: str  # GenICam PFNC name: Mono8, Mono10, Mono12, BayerRG8, RGB8, BGR8, ...
    t_grab: float  # time.monotonic() when the frame was in host memory
    frame_id: int = -1  # the camera's own counter, for missed/extra frame detection
    truth: str | None = None  # 'pass' | 'reject' for labelled sources
    meta: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class DeviceTensor(Protocol):
    """A model input made on the GPU (GPU preprocessing) whose kernel has not run yet: the backend says where.

    A backend that launches it into its own input buffer (TensorRT) avoids a copy; any other backend reads it
    through `__array__` (a device-to-host copy), so every backend accepts every `ModelInput`.
    """

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def dtype(self) -> np.dtype: ...

    def enqueue_into(self, dst_ptr: int, stream: Any = None) -> None:
        """Write the tensor at device pointer `dst_ptr`, ordered on `stream` (a CUDA stream or None)."""
        ...

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray: ...


ModelInput: TypeAlias = "np.ndarray | DeviceTensor"  # what a preprocessor returns and a backend's infer takes


@dataclass(frozen=True, slots=True)
class Trigger:
    """A request to inspect one part (from the PLC, a hardware line or free-run)."""

    part_id: int
    t_trigger: float  # time.monotonic()


@dataclass(frozen=True, slots=True)
class Findings:
    """Model outputs turned into named scores."""

    scores: Mapping[str, float]  # class name -> probability
    top_class: str
    extra: Mapping[str, Any] = field(default_factory=dict)  # e.g. the defect heatmap


@dataclass(frozen=True, slots=True)
class Verdict:
    seq: int
    part_id: int
    product: str
    outcome: Outcome
    reason: str  # '' for pass; rule or Reason value otherwise
    result_code: int  # 0 OK; defect class index or fail-safe code (see decide.RESULT_CODES)
    plc_ok: bool  # what the PLC is told: OK bit (pass) or NG bit (reject and, by default, fail-safe)
    score: float  # the deciding score (max defect probability), 0..1
    scores: Mapping[str, float]
    t_trigger: float
    t_verdict: float
    truth: str | None
    model_sha256: str
    stage_ms: Mapping[str, float]
    wall_time: float  # time.time() at verdict, for the journal and archive names
    recipe_no: int = 0  # plc_id of the recipe that judged the part (the one active at its trigger)
    source_ref: str = ""  # where the image came from: replay file name, or GenICam frame id / camera timestamp
    region: tuple[int, int, int, int] | None = None  # anomaly recipes: frame pixels (x, y, w, h) behind the score

    @property
    def latency_ms(self) -> float:
        return (self.t_verdict - self.t_trigger) * 1e3


class Part:
    """A part in flight. Owned by one stage at a time; `claim` decides who issues its verdict."""

    __slots__ = (
        "_claim_lock",
        "_claimed",
        "deadline",
        "findings",
        "frame",
        "outputs",
        "part_id",
        "product",
        "runtime",
        "seq",
        "stage_t",
        "tensor",
        "trigger",
    )

    def __init__(self, seq: int, trigger: Trigger, product: str, deadline: float) -> None:
        self.seq = seq
        self.part_id = trigger.part_id
        self.trigger = trigger
        self.product = product
        self.deadline = deadline
        self.frame: Frame | None = None
        self.tensor: ModelInput | None = None
        self.outputs: dict[str, np.ndarray] | None = None
        self.findings: Findings | None = None
        self.runtime: Any = None  # the ProductRuntime this part is inspected with (fixed at trigger)
        self.stage_t: dict[str, tuple[float, float]] = {}
        self._claimed = False
        self._claim_lock = threading.Lock()

    def claim(self) -> bool:
        """True for exactly one caller: the one that issues this part's verdict."""
        with self._claim_lock:
            if self._claimed:
                return False
            self._claimed = True
            return True

    @property
    def settled(self) -> bool:
        return self._claimed

    def time_left(self, now: float | None = None) -> float:
        return self.deadline - (time.monotonic() if now is None else now)

    def stage_ms(self) -> dict[str, float]:
        return {k: (b - a) * 1e3 for k, (a, b) in self.stage_t.items()}
