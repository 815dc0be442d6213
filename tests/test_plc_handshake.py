"""The transport-free handshake: four-phase trigger, result FIFO with ACK and OVERRUN, recipe, watchdog."""

from __future__ import annotations

import random

from inspectd.plc.config import HandshakeConfig
from inspectd.plc.handshake import (
    CommChanged,
    Handshake,
    RecipeRequested,
    Result,
    ResultDropped,
    TriggerMissed,
    TriggerSeen,
)
from inspectd.plc.layout import ErrorCode, PlcInputs


def _hs(**kw: object) -> Handshake:
    hs = Handshake(HandshakeConfig(**kw), now=0.0)
    hs.set_health(True)
    return hs


def _result(part_id: int, ok: bool = True, code: int = 0) -> Result:
    return Result(part_id=part_id, ok=ok, code=code, score=0.25, inspection_ms=12.4, t_ready=0.0)


def test_safe_state_at_start_and_stop() -> None:
    hs = Handshake(HandshakeConfig(), now=0.0)
    out = hs.outputs()  # STARTING: not READY, ERROR with ERROR_CODE 6 until the daemon is up
    assert (out.ready, out.result_valid, out.online, out.error, out.error_code) == (
        False, False, True, True, ErrorCode.NOT_READY)
    hs.set_health(False, ErrorCode.CAMERA)
    assert hs.outputs().error and hs.outputs().error_code == ErrorCode.CAMERA
    hs.set_health(True)
    hs.on_inputs(PlcInputs(trigger_enable=True), 0.0)
    assert hs.outputs().ready
    hs.push_result(_result(1))
    hs.stop()
    out = hs.outputs()
    assert (out.ready, out.result_valid, out.online, out.error, out.error_code) == (
        False, False, False, True, ErrorCode.SHUTDOWN)


def test_four_phase_trigger_and_result_ack() -> None:
    hs = _hs()
    hs.on_inputs(PlcInputs(trigger_enable=True, part_id=42), 0.0)
    assert hs.outputs().ready
    hs.on_inputs(PlcInputs(trigger_enable=True, trigger=True, part_id=42), 0.01)
    assert list(hs.events) == [TriggerSeen(42, 0.01)]
    out = hs.outputs()
    assert out.trigger_ack and out.busy and not out.ready
    hs.on_inputs(PlcInputs(trigger_enable=True, part_id=42), 0.02)  # PLC drops TRIGGER
    out = hs.outputs()
    assert not out.trigger_ack and out.busy and out.ready  # buffer has room: next part may come
    hs.push_result(_result(42, ok=False, code=3))
    out = hs.outputs()
    assert (out.result_valid, out.result_ng, out.result_ok, out.result_part_id, out.result_seq, out.result_code) == (
        True, True, False, 42, 1, 3)
    assert out.done_toggle and not out.busy and out.inspection_ms == 12
    hs.on_inputs(PlcInputs(trigger_enable=True, result_ack=True), 0.03)
    out = hs.outputs()
    assert not out.result_valid and not out.result_ng and out.result_part_id == 42  # fields stay readable


def test_missed_trigger_when_not_ready_and_clear_error() -> None:
    hs = _hs()
    hs.on_inputs(PlcInputs(trigger=True, part_id=5), 0.0)  # TRIGGER_ENABLE missing
    assert list(hs.events) == [TriggerMissed(5, "trigger_not_enabled")]
    assert hs.outputs().missed_trigger
    hs.on_inputs(PlcInputs(trigger_enable=True, clear_error=True), 0.1)
    assert not hs.outputs().missed_trigger


def test_fifo_releases_on_ack_drop_and_overruns_when_full() -> None:
    hs = _hs(buffer_depth=3)
    for pid in (1, 2, 3, 4):  # results not gated by READY (hardware trigger / free run)
        hs.push_result(_result(pid))
    assert [type(e) for e in hs.events] == [ResultDropped]
    out = hs.outputs()
    assert out.overrun and out.result_part_id == 1 and out.results_pending == 2
    seen = []
    for t in range(3):
        out = hs.outputs()
        seen.append((out.result_part_id, out.result_seq))
        hs.on_inputs(PlcInputs(result_ack=True), t + 0.1)
        assert not hs.outputs().result_valid  # the next one waits for the ACK to drop
        hs.on_inputs(PlcInputs(), t + 0.2)
    assert seen == [(1, 1), (2, 2), (3, 3)]


def test_ready_gated_by_buffer_room() -> None:
    hs = _hs(buffer_depth=2)
    for pid in (1, 2):
        hs.on_inputs(PlcInputs(trigger_enable=True, trigger=True, part_id=pid), pid)
        hs.on_inputs(PlcInputs(trigger_enable=True), pid + 0.5)
    assert hs.in_flight == 2 and not hs.outputs().ready
    hs.on_inputs(PlcInputs(trigger_enable=True, trigger=True, part_id=3), 3)
    assert isinstance(hs.events[-1], TriggerMissed) and hs.events[-1].why == "result_buffer_full"


def test_recipe_ack_and_fail() -> None:
    hs = _hs()
    hs.on_inputs(PlcInputs(load_recipe=True, recipe_no=7), 0.0)
    assert list(hs.events) == [RecipeRequested(7)]
    hs.recipe_answer(7, True)
    assert hs.outputs().recipe_ack and hs.outputs().active_recipe == 7
    hs.on_inputs(PlcInputs(), 0.1)
    assert not hs.outputs().recipe_ack
    hs.on_inputs(PlcInputs(load_recipe=True, recipe_no=9), 0.2)
    hs.recipe_answer(9, False)
    out = hs.outputs()
    assert out.recipe_fail and out.error_code == ErrorCode.RECIPE and out.active_recipe == 7


def test_heartbeats() -> None:
    hs = _hs(heartbeat_ms=200, plc_heartbeat_ms=100)
    hs.on_inputs(PlcInputs(plc_heartbeat=0), 0.0)
    hs.on_inputs(PlcInputs(plc_heartbeat=1), 0.0)  # the first change arms the watchdog
    hs.tick(0.25)
    assert hs.outputs().vision_heartbeat == 1
    hs.tick(0.29)
    assert not hs.events
    hs.tick(0.31)  # 3 periods without change
    assert list(hs.events) == [CommChanged(lost=True)]
    assert hs.outputs().error and hs.outputs().error_code == ErrorCode.PLC_COMM_LOST
    hs.on_inputs(PlcInputs(plc_heartbeat=2), 0.4)
    assert hs.events[-1] == CommChanged(lost=False) and hs.outputs().error  # latched
    hs.on_inputs(PlcInputs(plc_heartbeat=2, clear_error=True), 0.45)
    assert not hs.outputs().error


def test_random_parts_every_result_shown_once_in_order() -> None:
    """A PLC that follows the handshake sees every result exactly once, in verdict order."""
    rng = random.Random(3)
    hs = _hs(buffer_depth=8)
    t, seen, pending, pid = 0.0, [], [], 0
    plc = dict(trigger_enable=True)
    last_seq = 0
    for _ in range(5000):
        t += 0.001
        out = hs.outputs()
        if out.result_valid and out.result_seq != last_seq:
            seen.append(out.result_part_id)
            last_seq = out.result_seq
            plc["result_ack"] = True
        elif not out.result_valid and plc.get("result_ack"):
            plc["result_ack"] = False
        if out.ready and not plc.get("trigger") and rng.random() < 0.5:
            pid += 1
            plc.update(trigger=True, part_id=pid)
        elif plc.get("trigger") and out.trigger_ack:
            plc["trigger"] = False
        hs.on_inputs(PlcInputs(**plc), t)
        for e in list(hs.events):
            if isinstance(e, TriggerSeen):
                pending.append(e.part_id)
        hs.events.clear()
        while pending and rng.random() < 0.4:
            hs.push_result(_result(pending.pop(0), ok=rng.random() < 0.7))
    assert pid > 300 and seen == list(range(1, len(seen) + 1)) and len(seen) >= pid - 8


def test_set_offline_and_unbuffered_results() -> None:
    hs = _hs()
    hs.on_inputs(PlcInputs(trigger_enable=True, set_offline=True), 0.0)
    out = hs.outputs()
    assert not out.online and not out.ready
    hs.on_inputs(PlcInputs(trigger_enable=True, set_offline=True, trigger=True, part_id=3), 0.1)
    assert hs.events[-1] == TriggerMissed(3, "offline")
    nb = _hs(result_ack=False, buffer_depth=2)  # no RESULT_ACK: each result replaces the last, nothing overruns
    for pid in (1, 2, 3, 4):
        nb.push_result(_result(pid))
    out = nb.outputs()
    assert (out.result_part_id, out.result_seq, out.result_valid, out.overrun) == (4, 4, True, False)
    assert not out.done_toggle  # flipped four times


def test_plc_watchdog_arms_on_the_first_heartbeat_change() -> None:
    """No PLC_COMM_LOST latched at start: the watchdog waits for PLC_HEARTBEAT to change once."""
    hs = _hs(plc_heartbeat_ms=100)
    hs.on_inputs(PlcInputs(plc_heartbeat=7), 0.0)  # whatever sits in block A at start: not a heartbeat yet
    for t in (0.5, 5.0, 50.0):
        hs.tick(t)
    assert not hs.events and hs.outputs().error_code == 0 and not hs.outputs().error
    hs.on_inputs(PlcInputs(plc_heartbeat=8), 50.0)  # first change: armed
    hs.tick(50.29)
    assert not hs.events
    hs.tick(50.31)
    assert list(hs.events) == [CommChanged(lost=True)] and hs.outputs().error_code == ErrorCode.PLC_COMM_LOST


def test_vision_heartbeat_counts_only_while_up_and_alive() -> None:
    alive = [True]
    hs = Handshake(HandshakeConfig(heartbeat_ms=100), now=0.0, alive=lambda: alive[0])
    t = 0.0

    def beats(seconds: float) -> int:
        nonlocal t
        before = hs.outputs().vision_heartbeat
        end = t + seconds
        while t < end:
            t += 0.01
            hs.tick(t)
        return (hs.outputs().vision_heartbeat - before) & 0xFFFF

    assert beats(1.0) == 0  # STARTING: the daemon has not said it is up
    hs.set_health(True)
    assert beats(1.0) >= 9
    alive[0] = False  # pipeline stalled: the PLC sees the heartbeat stand still
    assert beats(1.0) == 0
    alive[0] = True
    hs.set_health(False, ErrorCode.CAMERA)  # a fault the daemon reports: alive, says what is wrong
    assert beats(1.0) >= 9 and hs.outputs().error_code == ErrorCode.CAMERA and not hs.outputs().ready

    def broken() -> bool:
        raise RuntimeError("probe failed")

    hs2 = Handshake(HandshakeConfig(heartbeat_ms=100), now=0.0, alive=broken)
    hs2.set_health(True)
    hs2.tick(1.0)
    assert hs2.outputs().vision_heartbeat == 0  # a failing probe never looks alive
    hs.stop()
    assert beats(1.0) == 0


def test_error_bit_always_agrees_with_error_code() -> None:
    """Random walks through health codes, comm loss, recipe answers, clear, stop: ERROR == (ERROR_CODE != 0)."""
    rng = random.Random(12)
    for _ in range(200):
        hs = _hs(plc_heartbeat_ms=100)
        t, hb, a = 0.0, 0, PlcInputs(trigger_enable=True)
        for _ in range(60):
            t += rng.choice((0.01, 0.2, 0.5))
            op = rng.randrange(7)
            if op == 0:
                hs.set_health(rng.random() < 0.5, rng.choice((0, 1, 2, 3, 6, 8)))
            elif op == 1:
                hb += 1
            elif op == 2:
                a = PlcInputs(trigger_enable=True, load_recipe=True, recipe_no=rng.randrange(5), plc_heartbeat=hb)
            elif op == 3:
                hs.recipe_answer(a.recipe_no, rng.random() < 0.5)
            elif op == 4:
                a = PlcInputs(trigger_enable=True, clear_error=not a.clear_error, plc_heartbeat=hb)
            elif op == 5:
                a = PlcInputs(trigger_enable=True, plc_heartbeat=hb)
            elif rng.random() < 0.05:
                hs.stop()
            hs.on_inputs(PlcInputs(**{**{f: getattr(a, f) for f in a.__slots__}, "plc_heartbeat": hb}), t)
            hs.tick(t)
            out = hs.outputs()
            assert out.error == (out.error_code != 0), out
            assert not (out.ready and out.error_code in (1, 2, 3, 6, 7, 8)), out
    # RECIPE_FAIL in particular: ERROR with code 4 (READY untouched: the old recipe keeps inspecting)
    hs = _hs()
    hs.on_inputs(PlcInputs(trigger_enable=True, load_recipe=True, recipe_no=9), 0.0)
    hs.recipe_answer(9, False)
    out = hs.outputs()
    assert (out.recipe_fail, out.error, out.error_code, out.ready) == (True, True, ErrorCode.RECIPE, True)
    hs.on_inputs(PlcInputs(trigger_enable=True), 0.1)
    out = hs.outputs()
    assert (out.recipe_fail, out.error, out.error_code) == (False, False, 0)


def test_result_carries_its_recipe_and_the_run_epoch() -> None:
    from inspectd.plc.handshake import CountingSeq

    hs = Handshake(HandshakeConfig(), now=0.0, seqs=CountingSeq(epoch=4711, last=65534))
    hs.set_health(True)
    hs.on_inputs(PlcInputs(trigger_enable=True, recipe_no=3), 0.0)
    hs.set_active_recipe(5)
    hs.push_result(Result(part_id=1, ok=True, code=0, score=0.1, inspection_ms=1.0, t_ready=0.0, recipe_no=3))
    out = hs.outputs()
    assert (out.result_recipe, out.active_recipe, out.run_epoch, out.result_seq) == (3, 5, 4711, 65535)
    hs.on_inputs(PlcInputs(trigger_enable=True, result_ack=True), 0.1)
    hs.on_inputs(PlcInputs(trigger_enable=True), 0.2)
    hs.push_result(Result(part_id=2, ok=False, code=2, score=0.9, inspection_ms=1.0, t_ready=0.0, recipe_no=5))
    out = hs.outputs()
    assert (out.result_recipe, out.result_seq) == (5, 1)  # 65535 wraps to 1: 0 stays "none yet"
