"""Block A/B encode/decode: round trips, bit numbering, 32-bit orders, and the S7 byte mapping."""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from snap7.util import get_bool, get_dint, get_real, get_word

from inspectd.plc.config import ControlBits, LayoutConfig, ModbusServerConfig
from inspectd.plc.layout import A_WORDS, B_WORDS, Layout, PlcInputs, VisionOutputs, bytes_to_words, words_to_bytes

T = TypeVar("T")
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
f32 = st.floats(width=32, allow_nan=False)
orders = st.sampled_from(["big", "little"])
inputs = st.builds(PlcInputs, *(st.booleans() for _ in range(6)), plc_heartbeat=u16, part_id=u32, recipe_no=u16)
outputs = st.builds(VisionOutputs, *(st.booleans() for _ in range(13)), vision_heartbeat=u16, result_part_id=u32,
                    result_seq=u16, result_code=u16, error_code=u16, active_recipe=u16, score=f32,
                    inspection_ms=u16, results_pending=u16)


def _round_trips(encode: Callable[[T], list[int]], decode: Callable[[list[int]], T], value: T, n_words: int) -> None:
    words = encode(value)
    assert len(words) == n_words and all(0 <= w <= 0xFFFF for w in words)
    assert decode(words) == value


@given(inputs, orders, orders)
def test_block_a_round_trip(a: PlcInputs, wo: str, bo: str) -> None:
    lay = Layout(LayoutConfig(word_order=wo, byte_order=bo))
    _round_trips(lay.encode_a, lay.decode_a, a, A_WORDS)


@given(outputs, orders, orders)
def test_block_b_round_trip(b: VisionOutputs, wo: str, bo: str) -> None:
    lay = Layout(LayoutConfig(word_order=wo, byte_order=bo))
    _round_trips(lay.encode_b, lay.decode_b, b, B_WORDS)


def test_default_layout_matches_documented_table() -> None:
    lay = Layout()
    words = lay.encode_b(VisionOutputs(ready=True, online=True, result_valid=True, result_ng=True,
                                       result_part_id=0x00012345, result_seq=7, result_code=3, score=0.5,
                                       inspection_ms=12, results_pending=2, done_toggle=True))
    assert words[0] == (1 << 0) | (1 << 9) | (1 << 3) | (1 << 5) | (1 << 12)
    assert words[2:4] == [0x0001, 0x2345]  # RESULT_PART_ID, high word first
    assert words[4:8] == [7, 3, 0, 0]
    assert struct.pack(">HH", *words[8:10]) == struct.pack(">f", 0.5)
    assert words[10:12] == [12, 2]
    a = lay.decode_a([0b10_0011, 9, 0, 42, 7] + [0] * 5)
    assert (a.trigger_enable, a.trigger, a.result_ack, a.set_offline) == (True, True, False, True)
    assert (a.plc_heartbeat, a.part_id, a.recipe_no) == (9, 42, 7)


@pytest.mark.parametrize(("wo", "bo", "expect"), [("big", "big", [0x1234, 0x5678]), ("little", "big", [0x5678, 0x1234]),
                                                  ("big", "little", [0x3412, 0x7856]),
                                                  ("little", "little", [0x7856, 0x3412])])
def test_32bit_orders(wo: str, bo: str, expect: list[int]) -> None:
    assert Layout(LayoutConfig(word_order=wo, byte_order=bo)).u32_words(0x12345678) == expect


@given(outputs)
def test_s7_bytes_read_with_snap7_util(b: VisionOutputs) -> None:
    """The DB image decodes with snap7's own helpers: STATUS bit n is DBX(1).n / DBX(0).(n-8), DINT and REAL."""
    data = words_to_bytes(Layout().encode_b(b))
    assert get_word(data, 0) == Layout().encode_b(b)[0]
    assert get_bool(data, 1, 0) == b.ready and get_bool(data, 1, 3) == b.result_valid
    assert get_bool(data, 0, 1) == b.online and get_bool(data, 0, 4) == b.done_toggle
    assert get_dint(data, 4) & 0xFFFFFFFF == b.result_part_id
    assert struct.pack(">f", get_real(data, 16)) == struct.pack(">f", b.score)
    assert bytes_to_words(data) == Layout().encode_b(b)


def test_custom_bits_and_validation() -> None:
    lay = Layout(LayoutConfig(control_bits=ControlBits(trigger=8, trigger_enable=15)))
    a = lay.decode_a([(1 << 8) | (1 << 15)] + [0] * 9)
    assert a.trigger and a.trigger_enable and not a.result_ack
    with pytest.raises(ValidationError, match="both use bit 0"):
        ControlBits(trigger=0)
    with pytest.raises(ValidationError, match="overlap"):
        LayoutConfig(block_a=95, block_b=100)
    with pytest.raises(ValidationError):
        ModbusServerConfig(type="modbus_server", allow=["not-an-ip"])
