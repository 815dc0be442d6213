"""The register/DB map of the handshake: pure encode/decode of block A (PLC -> vision) and block B (vision -> PLC).

Both blocks are lists of 16-bit words. Modbus serves them as holding registers at the configured
start addresses; S7 stores the same words big-endian in a DB (word n = DBW 2n), so bit b of a word
at DBW k is DBX(k+1).b for b < 8 and DBXk.(b-8) otherwise -- what a Modbus register shows.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, fields
from enum import IntEnum

from inspectd.plc.config import LayoutConfig

A_WORDS = 10  # CONTROL, PLC_HEARTBEAT, PART_ID (2), RECIPE_NO, 5 reserved
B_WORDS = 20  # STATUS .. RUN_EPOCH (14), 6 reserved

# word offsets inside the blocks (fixed; a station moves a whole block with its start address)
A_CONTROL, A_HEARTBEAT, A_PART_ID, A_RECIPE_NO = 0, 1, 2, 4
(B_STATUS, B_HEARTBEAT, B_PART_ID, B_SEQ, B_CODE, B_ERROR, B_RECIPE, B_SCORE, B_MS,
 B_PENDING, B_RESULT_RECIPE, B_RUN_EPOCH) = 0, 1, 2, 4, 5, 6, 7, 8, 10, 11, 12, 13


class ErrorCode(IntEnum):
    """ERROR_CODE values. The daemon passes its own health codes through `set_ready(False, code)`."""

    NONE = 0
    CAMERA = 1
    MODEL = 2
    TIMEOUT = 3
    RECIPE = 4  # LOAD_RECIPE refused
    PLC_COMM_LOST = 5  # PLC_HEARTBEAT unchanged for 3 periods (latched until CLEAR_ERROR)
    NOT_READY = 6  # STARTING (models loading, golden check) or not up: the daemon's set_ready(False) default
    SHUTDOWN = 7  # the daemon stopped (safe state)
    JOURNAL = 8  # verdicts cannot be journaled (disk full, I/O error): daemon.journal.healthy is False


@dataclass(frozen=True, slots=True)
class PlcInputs:
    """Block A decoded."""

    trigger_enable: bool = False
    trigger: bool = False
    result_ack: bool = False
    clear_error: bool = False
    load_recipe: bool = False
    set_offline: bool = False
    plc_heartbeat: int = 0
    part_id: int = 0
    recipe_no: int = 0


@dataclass(frozen=True, slots=True)
class VisionOutputs:
    """Block B decoded."""

    ready: bool = False
    trigger_ack: bool = False
    busy: bool = False
    result_valid: bool = False
    result_ok: bool = False
    result_ng: bool = False
    error: bool = False
    recipe_ack: bool = False
    recipe_fail: bool = False
    online: bool = False
    overrun: bool = False
    missed_trigger: bool = False
    done_toggle: bool = False
    vision_heartbeat: int = 0
    result_part_id: int = 0
    result_seq: int = 0
    result_code: int = 0
    error_code: int = 0
    active_recipe: int = 0
    score: float = 0.0
    inspection_ms: int = 0
    results_pending: int = 0
    result_recipe: int = 0  # RECIPE_NO that judged the result shown (ACTIVE_RECIPE may already be the next one)
    run_epoch: int = 0  # changes with every daemon start (1..65535, persisted): (RUN_EPOCH, RESULT_SEQ) is unique


_CONTROL_NAMES = ("trigger_enable", "trigger", "result_ack", "clear_error", "load_recipe", "set_offline")
_STATUS_NAMES = tuple(f.name for f in fields(VisionOutputs))[:13]


def _u16(v: int) -> int:
    return min(max(int(v), 0), 0xFFFF)


class Layout:
    """Encode/decode with a station's bit numbering and 32-bit word/byte order."""

    def __init__(self, cfg: LayoutConfig | None = None) -> None:
        self.cfg = cfg or LayoutConfig()
        self._cbits = {n: getattr(self.cfg.control_bits, n) for n in _CONTROL_NAMES}
        self._sbits = {n: getattr(self.cfg.status_bits, n) for n in _STATUS_NAMES}
        self._swap_words = self.cfg.word_order == "little"
        self._swap_bytes = self.cfg.byte_order == "little"

    # -- 32-bit values as two words
    def _pack32(self, raw: bytes) -> list[int]:
        hi, lo = struct.unpack(">HH", raw)
        if self._swap_bytes:
            hi, lo = _bswap(hi), _bswap(lo)
        return [lo, hi] if self._swap_words else [hi, lo]

    def _unpack32(self, w0: int, w1: int) -> bytes:
        hi, lo = (w1, w0) if self._swap_words else (w0, w1)
        if self._swap_bytes:
            hi, lo = _bswap(hi), _bswap(lo)
        return struct.pack(">HH", hi, lo)

    def u32_words(self, v: int) -> list[int]:
        return self._pack32(struct.pack(">I", v & 0xFFFFFFFF))

    def words_u32(self, w0: int, w1: int) -> int:
        return struct.unpack(">I", self._unpack32(w0, w1))[0]

    def f32_words(self, v: float) -> list[int]:
        return self._pack32(struct.pack(">f", v))

    def words_f32(self, w0: int, w1: int) -> float:
        return struct.unpack(">f", self._unpack32(w0, w1))[0]

    # -- block A
    def decode_a(self, words: list[int]) -> PlcInputs:
        ctrl = words[A_CONTROL]
        bits = {n: bool(ctrl >> b & 1) for n, b in self._cbits.items()}
        return PlcInputs(**bits, plc_heartbeat=words[A_HEARTBEAT],
                         part_id=self.words_u32(words[A_PART_ID], words[A_PART_ID + 1]),
                         recipe_no=words[A_RECIPE_NO])

    def encode_a(self, a: PlcInputs) -> list[int]:
        """What a PLC writes (simulator, tests)."""
        words = [0] * A_WORDS
        words[A_CONTROL] = sum(1 << b for n, b in self._cbits.items() if getattr(a, n))
        words[A_HEARTBEAT] = a.plc_heartbeat & 0xFFFF
        words[A_PART_ID:A_PART_ID + 2] = self.u32_words(a.part_id)
        words[A_RECIPE_NO] = a.recipe_no & 0xFFFF
        return words

    # -- block B
    def encode_b(self, b: VisionOutputs) -> list[int]:
        words = [0] * B_WORDS
        words[B_STATUS] = sum(1 << bit for n, bit in self._sbits.items() if getattr(b, n))
        words[B_HEARTBEAT] = b.vision_heartbeat & 0xFFFF
        words[B_PART_ID:B_PART_ID + 2] = self.u32_words(b.result_part_id)
        words[B_SEQ] = b.result_seq & 0xFFFF
        words[B_CODE] = _u16(b.result_code)
        words[B_ERROR] = _u16(b.error_code)
        words[B_RECIPE] = _u16(b.active_recipe)
        words[B_SCORE:B_SCORE + 2] = self.f32_words(b.score)
        words[B_MS] = _u16(round(b.inspection_ms))
        words[B_PENDING] = _u16(b.results_pending)
        words[B_RESULT_RECIPE] = _u16(b.result_recipe)
        words[B_RUN_EPOCH] = _u16(b.run_epoch)
        return words

    def decode_b(self, words: list[int]) -> VisionOutputs:
        st = words[B_STATUS]
        bits = {n: bool(st >> b & 1) for n, b in self._sbits.items()}
        return VisionOutputs(
            **bits, vision_heartbeat=words[B_HEARTBEAT],
            result_part_id=self.words_u32(words[B_PART_ID], words[B_PART_ID + 1]),
            result_seq=words[B_SEQ], result_code=words[B_CODE], error_code=words[B_ERROR],
            active_recipe=words[B_RECIPE], score=self.words_f32(words[B_SCORE], words[B_SCORE + 1]),
            inspection_ms=words[B_MS], results_pending=words[B_PENDING],
            result_recipe=words[B_RESULT_RECIPE], run_epoch=words[B_RUN_EPOCH])

    def status_mask(self, *names: str) -> int:
        return sum(1 << self._sbits[n] for n in names)

    def control_mask(self, *names: str) -> int:
        return sum(1 << self._cbits[n] for n in names)


def _bswap(w: int) -> int:
    return (w >> 8) | ((w & 0xFF) << 8)


def words_to_bytes(words: list[int]) -> bytearray:
    """S7: the words of a block as they sit in the DB (big-endian, like S7 WORD/DINT/REAL)."""
    return bytearray(struct.pack(f">{len(words)}H", *words))


def bytes_to_words(data: bytes | bytearray) -> list[int]:
    return list(struct.unpack(f">{len(data) // 2}H", bytes(data)))
