"""Schema of the station file and of the per-product recipes.

Cross-field validators start their message with the key they are about ("rules[0].class: ..."),
relative to the model, so the loader can point at that key's line.

Every field has a description: `inspectd check-config` and the README quote them,
so a technician learns what a key means from the message that rejects it.
Plugin configs (cameras, backends, PLC transports) live in their package's `config` module,
apart from the implementations, and are gathered here into discriminated unions on their `type` key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from inspectd.camera.config import CameraConfig
from inspectd.config.anomaly import AnomalyConfig
from inspectd.config.base import Model
from inspectd.infer.config import BackendConfig
from inspectd.outputs.config import MqttConfig, OpcuaConfig
from inspectd.plc.config import PlcConfig

# ----------------------------------------------------------------------------- product (recipe)


class Roi(Model):
    x: int = Field(0, ge=0, description="left edge of the region of interest, pixels")
    y: int = Field(0, ge=0, description="top edge of the region of interest, pixels")
    width: int = Field(0, ge=0, description="ROI width in pixels; 0 = to the right edge of the frame")
    height: int = Field(0, ge=0, description="ROI height in pixels; 0 = to the bottom edge of the frame")

    def box(self, frame_w: int, frame_h: int) -> tuple[int, int, int, int]:
        """(x, y, w, h) in a frame of that size, a 0 width/height resolved to the frame's edge (not clipped)."""
        return self.x, self.y, self.width or frame_w - self.x, self.height or frame_h - self.y


class InputSpec(Model):
    name: str = Field("input", description="name of the model's input tensor")
    width: int = Field(..., gt=0, le=8192, description="model input width, pixels")
    height: int = Field(..., gt=0, le=8192, description="model input height, pixels")
    channels: Literal[1, 3] = Field(3, description="model input channels (1 mono, 3 colour)")
    dtype: Literal["float32", "float16", "uint8"] = Field(
        "float32", description="model input element type; uint8: pixels as they are (0..255, the model normalises "
        "itself): preprocess.scale 1, mean [0], std [1]; CPU preprocessing only")


class ModelRef(Model):
    path: Path = Field(..., description="ONNX model or TensorRT engine, relative to this file")
    input: InputSpec
    scores_output: str = Field("logits", description="name of the output holding per-class scores")
    activation: Literal["softmax", "sigmoid", "none"] = Field(
        "softmax", description="how scores_output becomes probabilities"
    )
    heatmap_output: str | None = Field(None, description="optional output with a per-cell defect map")


class Preprocess(Model):
    roi: Roi = Field(default_factory=Roi, description="crop applied to the camera frame first")
    resize: Literal["area", "stretch", "letterbox", "bilinear", "bicubic", "resize_crop"] = Field(
        "area",
        description="area: box-average downscale that keeps thin defects; stretch: linear to the input "
        "size (OpenCV); letterbox: keep aspect ratio and pad; bilinear / bicubic: PIL's (torchvision's) "
        "antialiased bilinear / bicubic (a=-0.5) to the input size; resize_crop: keep aspect ratio, "
        "antialiased bilinear so the input size is `crop` of the short side, then centre crop",
    )
    crop: float = Field(0.875, gt=0, le=1, description="resize_crop: share of the resized image kept by the centre "
                        "crop (torchvision Resize(256) + CenterCrop(224) = 0.875)")
    color: Literal["rgb", "bgr", "mono"] = Field("rgb", description="channel order the model expects")
    scale: float = Field(1 / 255, gt=0, description="pixel values are multiplied by this before mean/std")
    mean: tuple[float, ...] = Field((0.485, 0.456, 0.406), description="per-channel mean (after scale)")
    std: tuple[float, ...] = Field((0.229, 0.224, 0.225), description="per-channel std (after scale)")

    @model_validator(mode="after")
    def _std_positive(self) -> Preprocess:
        if any(s <= 0 for s in self.std):
            raise ValueError("std: values must all be > 0")
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean: has {len(self.mean)} values but std has {len(self.std)}")
        return self


class Rule(Model):
    """Reject when the named class's score reaches min_score (a probability; an anomaly recipe's own units)."""

    name: str = Field(..., min_length=1, description="reject reason written to the journal and logs")
    class_name: str = Field(..., alias="class", description="class whose score the rule looks at")
    min_score: float = Field(
        ..., allow_inf_nan=False, description="reject when the class score is >= this: a probability (0, 1] "
        "for a classifier with activation softmax/sigmoid; the raw score (any finite value, e.g. a logit) with "
        "activation: none; the score's own units (> 0) for kind: anomaly (divided there by anomaly.sensitivity)")
    result_code: int = Field(1, ge=1, le=999, description="RESULT_CODE sent to the PLC for this reject")


class GoldenImage(Model):
    image: Path = Field(..., description="reference image, relative to the product file")
    expect: Literal["pass", "reject"] = Field(..., description="verdict this image must get")


class ProductConfig(Model):
    name: str = Field(..., min_length=1, description="product name; also the file's stem by convention")
    kind: Literal["classifier", "anomaly"] = Field(
        "classifier", description="classifier: per-class probabilities; anomaly: one score from a model taught "
        "on good parts only (inspectd fit-anomaly, or an anomalib export)")
    plc_id: int = Field(..., ge=0, le=65535, description="RECIPE_NO the PLC uses to select this product")
    model: ModelRef
    preprocess: Preprocess = Field(default_factory=Preprocess)
    classes: list[str] = Field(..., min_length=1, description="class names in model output order; "
                               "[anomaly] for kind: anomaly")
    rules: list[Rule] = Field(..., min_length=1, description="reject rules, checked in order")
    failsafe: Literal["reject", "pass"] = Field(
        "reject", description="what the PLC is told when no verdict is ready in time (keep reject)"
    )
    camera_features: dict[str, float | int | str | bool] = Field(
        default_factory=dict, description="GenICam SFNC features applied when this product is active"
    )
    golden: list[GoldenImage] = Field(
        default_factory=list, description="reference images checked at start and after every change"
    )
    anomaly: AnomalyConfig | None = Field(None, description="kind: anomaly only: score format, sensitivity, "
                                          "calibration record")

    def threshold(self, rule: Rule) -> float:
        """The score at which `rule` rejects: min_score; an anomaly recipe's sensitivity moves it (see
        AnomalyConfig.threshold)."""
        return self.anomaly.threshold(rule.min_score) if self.anomaly is not None else rule.min_score

    @model_validator(mode="after")
    def _kind_fits(self) -> ProductConfig:
        if self.kind == "classifier":
            if self.anomaly is not None:
                raise ValueError("anomaly: only for kind: anomaly")
            if len(self.classes) < 2:
                raise ValueError(f"classes: a classifier needs at least 2 classes (got {self.classes})")
            for i, rule in enumerate(self.rules):
                if self.model.activation == "none":
                    continue  # raw scores (logits): the threshold is in their units, any finite value
                if rule.min_score <= 0:
                    raise ValueError(f"rules[{i}].min_score: must be > 0 (got {rule.min_score:g})")
                if rule.min_score > 1:
                    raise ValueError(f"rules[{i}].min_score: must be <= 1 for a classifier's probabilities (got "
                                     f"{rule.min_score:g}); raw scores (logits) need model.activation: none")
            return self
        if self.classes != ["anomaly"]:
            raise ValueError(f"classes: kind: anomaly has one score: [anomaly] (got {self.classes})")
        if self.model.activation != "none":
            raise ValueError("model.activation: an anomaly score is used in its own units: none")
        for i, rule in enumerate(self.rules):
            if rule.min_score <= 0:
                raise ValueError(f"rules[{i}].min_score: must be > 0 (got {rule.min_score:g})")
        return self

    @model_validator(mode="after")
    def _uint8_input_is_raw(self) -> ProductConfig:
        pp = self.preprocess
        if self.model.input.dtype == "uint8" and (pp.scale != 1 or any(pp.mean) or any(s != 1 for s in pp.std)):
            raise ValueError("model.input.dtype: uint8 takes the pixels as they are (0..255; the model normalises): "
                             "set preprocess.scale: 1, mean: [0], std: [1]")
        return self

    @model_validator(mode="after")
    def _rules_name_classes(self) -> ProductConfig:
        for i, rule in enumerate(self.rules):
            if rule.class_name not in self.classes:
                raise ValueError(f"rules[{i}].class: {rule.class_name!r} is not one of the classes {self.classes}")
        channels = self.model.input.channels
        if len(self.preprocess.mean) not in (1, channels):
            raise ValueError(f"preprocess.mean: needs 1 or {channels} values for a {channels}-channel input")
        return self


# ----------------------------------------------------------------------------- station


class PipelineConfig(Model):
    queue_depth: int = Field(2, ge=1, le=64, description="parts that may wait between two stages")
    overflow: Literal["failsafe_newest", "failsafe_oldest", "block"] = Field(
        "failsafe_newest",
        description="when the camera outruns the pipeline: the new part (failsafe_newest) or the oldest "
        "waiting part (failsafe_oldest) gets a fail-safe verdict; block waits for room (deadline still applies)",
    )
    grab_timeout_ms: float = Field(1000, gt=0, description="a trigger with no frame after this is 'no_frame'")
    max_in_flight: int | None = Field(
        None, ge=1, le=64,
        description="admit a new part only while fewer than this are in flight (sources that can wait: synthetic, "
        "replay); keeps queues short so latency stays at the sum of the stages. null: no limit")
    admission_lead_ms: float = Field(
        0.3, ge=0, le=100,
        description="with max_in_flight: admit the next part this much before the stage it would wait for "
        "frees up (covers thread wake-up); larger raises throughput, smaller lowers latency")
    decide_thread: bool = Field(
        True,
        description="postprocess and rules on their own thread; false: on the inference thread right after the "
        "model, one thread hand-off less per part (a wake-up, ~0.15 ms on a 16-core GPU host) for the "
        "inference stage's time (parts/s), where latency matters more than throughput")
    gil_switch_ms: float = Field(
        0.2, ge=0.05, le=100,
        description="CPython's switch interval while the pipeline runs (process-wide): how long a thread holding "
        "the interpreter runs before a waiting one gets it. 0.2 bounds how long a stage hand-off can wait; GPU "
        "stations with sub-ms models ran faster at CPython's own 5 (README 'ONNX Runtime on the GPU')")

    @property
    def parts_inside(self) -> int:
        """Most parts the pipeline holds at once: its three queues of `queue_depth` and its four stage threads.
        Buffers handed from stage to stage (the preprocessors' output rings) are sized from this one number."""
        return 3 * self.queue_depth + 4


class TriggerConfig(Model):
    source: Literal["free_run", "plc", "hardware"] = Field(
        "free_run",
        description="free_run: inspect every frame the camera delivers; plc: the PLC's TRIGGER bit starts "
        "each part; hardware: the camera is triggered by a line and PART_ID comes from the PLC",
    )


class JournalConfig(Model):
    path: Path = Field(Path("var/journal.sqlite"), description="SQLite verdict journal (WAL mode)")
    batch: int = Field(64, ge=1, le=10000, description="rows per transaction")
    queue: int = Field(100_000, ge=100, description="verdicts that may wait for the writer")
    retention_days: float | None = Field(90, gt=0, description="delete rows older than this; null keeps all")
    max_mb: float | None = Field(2048, gt=0, description="delete oldest rows beyond this size; null: no cap")
    on_failure: Literal["failsafe", "alarm"] = Field(
        "failsafe", description="while verdicts cannot be journaled: failsafe = every part gets the fail-safe "
        "verdict journal_down (no pass without a record); alarm = keep inspecting, raise the alarm only")
    backlog: int = Field(50_000, ge=100, description="rows kept in memory and retried while writes fail; "
                         "beyond, the oldest are lost (counted)")
    min_free_mb: float = Field(8, ge=0, description="refuse to start (exit 72, restartable) with less free space "
                               "than this on the journal's filesystem")
    disk_full_wait_s: float = Field(120, ge=0, le=150, description="on a full disk at start, wait up to this long "
                                    "for room before exiting 72 (so systemd's restarts do not hit their start limit)")


class ArchiveConfig(Model):
    enabled: bool = Field(True, description="save rejected and fail-safe parts")
    path: Path = Field(Path("var/archive"), description="folder for archived images")
    sample_pass: float = Field(0.0, ge=0, le=1, description="fraction of passed parts archived too")
    quota_mb: float = Field(1024, gt=0, description="size cap of the whole archive")
    product_quota_mb: float | None = Field(None, gt=0, description="size cap per product")
    queue: int = Field(32, ge=1, description="images that may wait for the writer; beyond, dropped and counted")
    min_free_mb: float = Field(1024, ge=0, description="free-space floor: the archive stops before its "
                               "filesystem has less than this left (the journal may share it)")
    resume_free_mb: float | None = Field(None, ge=0, description="after stopping at the floor (or on a full "
                                         "disk), resume only above this much free space; null: 1.25 x the floor")


class MetricsConfig(Model):
    enabled: bool = Field(True, description="serve Prometheus metrics, /healthz and /readyz")
    address: str = Field("127.0.0.1", description="bind address (localhost by default)")
    port: int = Field(9108, ge=0, le=65535, description="TCP port; 0 picks a free one")
    cache_s: float = Field(0.0, ge=0, le=60, description="serve a /metrics render this long to every scraper "
                           "(bounds the cost of many scrapers); 0: render per scrape")


class ConsoleConfig(Model):
    enabled: bool = Field(True, description="serve the technician console at / on the metrics port")
    token_file: Path | None = Field(None, description="file holding the operator token that recipe changes and "
                                    "false-reject marks need; null: the console is read-only")
    max_clients: int = Field(32, ge=0, le=1000, description="open live streams at most; more get 503")
    live_fps: float = Field(2.0, ge=0, le=10, description="live frames rendered per second at most")
    status_every_s: float = Field(0.5, gt=0, le=60, description="how often status and live view are pushed")
    shift_starts: list[int] = Field([6, 14, 22], min_length=1, description="local hours at which shifts begin")

    @field_validator("shift_starts")
    @classmethod
    def _hours(cls, v: list[int]) -> list[int]:
        if any(not 0 <= h <= 23 for h in v):
            raise ValueError("hours must be 0..23")
        return v


class LogConfig(Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = Field("json", description="json for journald, console for people")
    every_part: bool = Field(True, description="one log line per verdict")


class WatchdogConfig(Model):
    stall_s: float = Field(5.0, gt=0, description="a stage busy with one part longer than this is stalled")
    keep_warm_s: float | None = Field(
        None, gt=0, description="run a dummy inference after this long without parts, none on its way (null: off)"
    )


class StationConfig(Model):
    name: str = Field(..., min_length=1, description="station name, shown in logs and metrics")
    cycle_budget_ms: float = Field(50, gt=0, le=60_000, description="time from trigger to verdict per part")
    products_dir: Path = Field(Path("products"), description="folder of product recipes, relative to this file")
    product: str = Field(..., description="product active at start (file stem in products_dir)")
    camera: Annotated[CameraConfig, Field(discriminator="type")]
    backend: Annotated[BackendConfig, Field(discriminator="type")]
    preprocess: Literal["cpu", "gpu"] = Field("cpu", description="where preprocessing runs")
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    trigger: TriggerConfig = Field(default_factory=TriggerConfig)
    plc: Annotated[PlcConfig, Field(discriminator="type")] = Field(
        default_factory=lambda: {"type": "none"}, validate_default=True
    )
    journal: JournalConfig = Field(default_factory=JournalConfig)
    archive: ArchiveConfig = Field(default_factory=ArchiveConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    console: ConsoleConfig = Field(default_factory=ConsoleConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    watchdog: WatchdogConfig = Field(default_factory=WatchdogConfig)
    mqtt: MqttConfig | None = Field(None, description="publish verdicts, state and counters to an MQTT broker")
    opcua: OpcuaConfig | None = Field(None, description="serve station variables over OPC UA")

    @model_validator(mode="after")
    def _trigger_modes_agree(self) -> StationConfig:
        # A GenICam camera must be set up for the trigger the station uses, or parts would pair with wrong frames.
        want = {"free_run": "free_run", "plc": "software", "hardware": "hardware"}[self.trigger.source]
        cam = getattr(self.camera, "trigger", None)
        if self.camera.type == "genicam" and cam != want:
            raise ValueError(f"trigger.source: {self.trigger.source} needs camera.trigger: {want} (got {cam})")
        if self.trigger.source == "plc" and self.plc.type == "none":
            raise ValueError("trigger.source: plc needs a plc section (type modbus_server, modbus_client or s7)")
        return self
