"""Camera configs, one model per source type, gathered into `CameraConfig` on `type`.

Kept apart from the sources themselves so the station schema can name them without importing a source
(GenICam's harvesters, OpenCV's image reading); `camera.registry` maps each config to its source.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from inspectd.camera.genicam_features import FeatureValue
from inspectd.config.base import Model
from inspectd.pixels import BayerFormat, ColourFormat, PixelFormat


class SyntheticConfig(Model):
    type: Literal["synthetic"]
    size: int = Field(448, ge=32, le=8192, description="square frame edge, pixels")
    pixel_format: PixelFormat = Field("Mono8", description="PFNC pixel format of the frames")
    defect_rate: float = Field(0.3, ge=0, le=1, description="fraction of defective parts")
    seed: int = Field(0, description="same seed, same sequence of parts")
    bank: int = Field(64, ge=1, le=100_000, description="distinct parts generated at open and served in turn")
    rate_hz: float | None = Field(None, gt=0, description="frames per second; null = as fast as asked")
    software_trigger: bool = Field(False, description="deliver a frame only after fire()")


PASS_LABELS = ("pass", "good", "ok")
REJECT_LABELS = ("reject", "defect", "ng", "bad")


class LabelsConfig(Model):
    """Where a replay folder's truth comes from: the labels file, and for the images it does not list the
    ImageFolder layout: `good/` (or any pass label), `defect/<kind>/` (or any reject label, kind optional), or
    `<class>/` with the class named in pass_labels or reject_labels. Any other label is an error (file:line)."""

    file: str = Field("labels.csv", min_length=1, description="labels file, relative to the replay folder (a "
                      "string, not resolved against the station file); used when it exists")
    delimiter: str = Field(",", min_length=1, max_length=1, description="column separator of the labels file")
    header: bool | None = Field(None, description="first row names the columns; null: it does when its label "
                                "cell is not a known label")
    file_column: str | int = Field("file", description="column of the image path (relative to the folder, or "
                                   "a bare file name): its header name, or 0-based index")
    label_column: str | int = Field("label", description="column of the label: header name or 0-based index")
    class_column: str | int | None = Field(None, description="optional column of the class-level truth (e.g. "
                                           "the defect kind); default: the label itself")
    pass_labels: list[str] = Field(list(PASS_LABELS), min_length=1, description="labels (and folder names) "
                                   "of good parts, matched without regard to case")
    reject_labels: list[str] = Field(list(REJECT_LABELS), min_length=1, description="labels (and folder names) "
                                     "of defective parts, matched without regard to case")


class ReplayConfig(Model):
    type: Literal["replay"]
    folder: Path = Field(..., description="folder of images (relative to the station file)")
    pixel_format: Literal["Mono8", "Mono16", ColourFormat, BayerFormat] = Field(
        "Mono8", description="how the files are presented to preprocessing (image files hold 8 or 16 bits; a "
        "16-bit file in an 8-bit format is refused)")
    rate_hz: float | None = Field(None, gt=0, description="frames per second, a free-running camera that does "
                                  "not wait (too fast gives overflow fail-safes); null = as fast as the "
                                  "pipeline takes them, never an overflow")
    loop: bool = Field(False, description="start again after the last image; false: the daemon stops with a "
                       "summary (exit 0) once every image has its verdict")
    labels: LabelsConfig = Field(default_factory=LabelsConfig, description="truth: labels file or folder layout")


class GenICamConfig(Model):
    type: Literal["genicam"]
    producers: list[Path] = Field(default_factory=list, description="GenTL producer .cti files (vendor SDK); "
                                  "searched before the folders in GENICAM_GENTL64_PATH")
    use_env_path: bool = Field(True, description="also load the producers found in GENICAM_GENTL64_PATH")
    serial: str | None = Field(None, description="camera serial number (give this or user_id)")
    user_id: str | None = Field(None, description="camera user-defined name, DeviceUserID (give this or serial)")
    trigger: Literal["free_run", "software", "hardware"] = Field(
        "software", description="free_run: the camera streams; software: fire() executes TriggerSoftware; "
        "hardware: a line triggers the camera and frames are matched to parts in order")
    trigger_line: str = Field("Line1", description="TriggerSource for the hardware trigger")
    trigger_activation: str | None = Field("RisingEdge", description="TriggerActivation for the hardware "
                                           "trigger; null leaves the camera's setting")
    features: dict[str, FeatureValue] = Field(default_factory=dict, description="station-wide SFNC features "
                                              "set before each product's camera_features")
    hardware_max_age_s: float = Field(0.5, gt=0, description="hardware trigger: a frame that arrived longer than "
                                      "this before the PLC's trigger is read had no part behind it (a stray line "
                                      "pulse): discarded and counted as extra. Keep it under the part spacing")
    wait_for_camera: bool = Field(False, description="start without the camera and connect in the background "
                                  "(triggers get camera_lost verdicts meanwhile) instead of failing to start")
    num_buffers: int = Field(8, ge=2, le=256, description="GenTL buffers announced to the stream")
    frame_pool: int | None = Field(
        None, ge=0, le=1024, description="frames held at once in the source's frame pool (long-lived, page-locked "
        "by GPU preprocessing: frames go to the GPU without a second copy). Beyond, a frame is copied into fresh "
        "memory (counted: inspectd_camera_pool_full_total). null: num_buffers + 24 (32 by default: the "
        "pipeline's parts in flight, 3 x queue_depth + 4 = 10 by default, frames the hardware trigger holds for "
        "parts, the console's latest frame, rejects waiting for the archive writer); 0: no pool")
    lost_after_timeouts: int = Field(3, ge=1, le=1000, description="triggered modes: consecutive grab timeouts "
                                     "that declare the camera lost (a failed register probe declares it at once)")
    free_run_stall_s: float = Field(5.0, gt=0, description="free-run: no frame for this long declares the camera "
                                    "lost even while it answers register reads; keep it above the frame period")
    reconnect_min_s: float = Field(0.5, gt=0, description="first wait between reconnection attempts")
    reconnect_max_s: float = Field(10.0, gt=0, description="longest wait between reconnection attempts")

    @property
    def pool_slots(self) -> int:
        return self.num_buffers + 24 if self.frame_pool is None else self.frame_pool

    @model_validator(mode="after")
    def _one_identity(self) -> GenICamConfig:
        if (self.serial is None) == (self.user_id is None):
            raise ValueError("give exactly one of serial or user_id (cameras are never chosen by list index)")
        return self


CameraConfig = SyntheticConfig | ReplayConfig | GenICamConfig
