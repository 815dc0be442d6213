"""PLC transport configs. Placeholder: the handshake and transports are built in the PLC issue."""

from __future__ import annotations

from typing import Literal

from inspectd.config.base import Model


class NoPlcConfig(Model):
    type: Literal["none"]


PlcConfig = NoPlcConfig
