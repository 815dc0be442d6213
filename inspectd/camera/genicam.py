"""GenICam camera through harvesters and a vendor GenTL producer (.cti).

Placeholder config: the acquisition itself is built in the GenICam issue.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from inspectd.config.base import Model


class GenICamConfig(Model):
    type: Literal["genicam"]
    producers: list[Path] = Field(default_factory=list, description="GenTL producer .cti files")
    serial: str | None = Field(None, description="camera serial number")
    user_id: str | None = Field(None, description="camera user-defined name (DeviceUserID)")
