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


class ReplayConfig(Model):
    type: Literal["replay"]
    folder: Path = Field(..., description="folder of images (relative to the station file)")
    pixel_format: Literal["Mono8", "Mono16", ColourFormat, BayerFormat] = Field(
        "Mono8", description="how the files are presented to preprocessing (image files hold 8 or 16 bits)")
    rate_hz: float | None = Field(None, gt=0, description="frames per second; null = as fast as asked")
    loop: bool = Field(True, description="start again after the last image")


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
    lost_after_timeouts: int = Field(3, ge=1, le=1000, description="triggered modes: consecutive grab timeouts "
                                     "that declare the camera lost (a failed register probe declares it at once)")
    free_run_stall_s: float = Field(5.0, gt=0, description="free-run: no frame for this long declares the camera "
                                    "lost even while it answers register reads; keep it above the frame period")
    reconnect_min_s: float = Field(0.5, gt=0, description="first wait between reconnection attempts")
    reconnect_max_s: float = Field(10.0, gt=0, description="longest wait between reconnection attempts")

    @model_validator(mode="after")
    def _one_identity(self) -> GenICamConfig:
        if (self.serial is None) == (self.user_id is None):
            raise ValueError("give exactly one of serial or user_id (cameras are never chosen by list index)")
        return self


CameraConfig = SyntheticConfig | ReplayConfig | GenICamConfig
