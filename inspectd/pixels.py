"""Camera pixel formats (GenICam PFNC names): the one list of what sources deliver and preprocessing accepts.

Packed formats (Mono10p, Mono12Packed, ...) are absent on purpose: they would need unpacking first.
"""

from __future__ import annotations

from typing import Literal, get_args

MonoFormat = Literal["Mono8", "Mono10", "Mono12", "Mono16"]
BayerFormat = Literal["BayerRG8", "BayerGB8", "BayerGR8", "BayerBG8"]
ColourFormat = Literal["RGB8", "BGR8"]
PixelFormat = Literal[MonoFormat, BayerFormat, ColourFormat]

MONO: tuple[str, ...] = get_args(MonoFormat)
BAYER: tuple[str, ...] = get_args(BayerFormat)
COLOUR: tuple[str, ...] = get_args(ColourFormat)
PIXEL_FORMATS: tuple[str, ...] = get_args(PixelFormat)

_BITS = {"Mono10": 10, "Mono12": 12, "Mono16": 16}


def pixel_bits(pixel_format: str) -> int:
    """Significant bits per sample (stored in uint16 above 8)."""
    return _BITS.get(pixel_format, 8)


def pixel_max(pixel_format: str) -> int:
    return (1 << pixel_bits(pixel_format)) - 1
