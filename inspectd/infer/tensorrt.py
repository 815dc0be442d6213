"""TensorRT backend (production path). Placeholder config: the runtime is built in the TensorRT issue."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from inspectd.config.base import Model


class TensorRTConfig(Model):
    type: Literal["tensorrt"]
    contexts: int = Field(1, ge=1, le=64, description="execution contexts (one per camera)")
