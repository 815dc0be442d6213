"""PLC simulator: plays the line PLC's side of the inspectd handshake and checks every part gets its result.

The simulated PLC program is `FbInspectdVision`, the line-by-line twin of the PLC-side reference program
tools/plc/FB_InspectdVision.st (same sections, step names and transitions; tests/test_plc_programs.py checks
it). It is a client of the shared registers: of the daemon itself (Modbus server mode) or of the PLC's own
server that the daemon also talks to (Modbus client mode: a Modbus server; S7 mode: an S7 server's DB). Per
part it writes PART_ID with TRIGGER when READY, drops TRIGGER on TRIGGER_ACK, latches each new (RUN_EPOCH,
RESULT_SEQ) with RESULT_VALID, matches RESULT_PART_ID against its FIFO of triggered parts, acknowledges, and
gives every part a verdict (a reject when the result is missing, late, or the vision system restarted or
went quiet). `PlcSim` is the line around it; it gives up (exit 2) when the peer never answers.

  # against a running daemon (configs/demo/station-plc.yaml serves 127.0.0.1:5020)
  python tools/plc_sim.py modbus --port 5020 --parts 200
  # the PLC side of an S7 DB that a daemon in s7 mode writes into
  python tools/plc_sim.py s7 --port 102 --db 100 --parts 200
  # figures: verdict ready -> visible at the PLC, p50/p99, with a stand-in daemon (real PlcLink,
  # instant random verdicts) in a second process; modbus_client/s7 need the peers tests/plc builds
  python tools/plc_sim.py bench --transport modbus_server --parts 2000

Latency: `trigger->result` is what the PLC sees end to end (includes inspection). With `bench`, the
stand-in daemon records when each verdict was handed to the link (CLOCK_MONOTONIC is system-wide),
giving `ready->visible`: handed over -> read back by the PLC (includes the PLC's own poll period).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from inspectd.plc.config import LayoutConfig  # noqa: E402
from inspectd.plc.layout import B_WORDS, Layout, bytes_to_words, words_to_bytes  # noqa: E402

# ----------------------------------------------------------------------------- PLC-side register access


class PlcIO(Protocol):
    def read_b(self) -> list[int]: ...
    def write_a(self, words: list[int]) -> None: ...
    def close(self) -> None: ...


class ModbusPlcIO:
    """pymodbus' own sync client: FC03 for block B, FC16 for block A."""

    def __init__(self, host: str, port: int, layout: LayoutConfig, unit: int = 1, timeout: float = 1.0) -> None:
        from pymodbus.client import ModbusTcpClient

        self.c = ModbusTcpClient(host, port=port, timeout=timeout, retries=0)
        self.lay, self.unit = layout, unit

    def read_b(self) -> list[int]:
        rr = self.c.read_holding_registers(self.lay.block_b, count=B_WORDS, device_id=self.unit)
        if rr.isError():
            raise ConnectionError(str(rr))
        return list(rr.registers)

    def write_a(self, words: list[int]) -> None:
        rr = self.c.write_registers(self.lay.block_a, words, device_id=self.unit)
        if rr.isError():
            raise ConnectionError(str(rr))

    def close(self) -> None:
        self.c.close()


class S7PlcIO:
    """python-snap7's sync client on the PLC's DB (the PLC program's own view of it); reconnects after errors."""

    def __init__(self, host: str, port: int, layout: LayoutConfig, db: int = 100) -> None:
        import snap7

        self.c = snap7.Client()
        self.addr, self.lay, self.db = (host, port), layout, db
        self._up = False

    def _client(self) -> Any:  # snap7.Client, imported lazily
        if not self._up:
            self.c.disconnect()
            self.c.connect(self.addr[0], 0, 1, tcp_port=self.addr[1])
            self._up = True
        return self.c

    def read_b(self) -> list[int]:
        try:
            return bytes_to_words(self._client().db_read(self.db, 2 * self.lay.block_b, 2 * B_WORDS))
        except Exception:
            self._up = False
            raise

    def write_a(self, words: list[int]) -> None:
        try:
            self._client().db_write(self.db, 2 * self.lay.block_a, words_to_bytes(words))
        except Exception:
            self._up = False
            raise

    def close(self) -> None:
        self.c.disconnect()


# ----------------------------------------------------------------------------- the PLC program (twin)
# Line-by-line twin of tools/plc/FB_InspectdVision.st: the same sections (§1..§9) in the same order, the
# same step names and values, each ST variable as its snake_case attribute. tests/test_plc_programs.py
# parses the ST with blark and checks names, constants, defaults, sections and step transitions against
# this class. Change both together.

U32 = 0xFFFFFFFF

# step values (FB_InspectdVision VAR CONSTANT)
LNK_WAIT, LNK_UP, LNK_LOST = 0, 1, 2
TRG_IDLE, TRG_WAIT_ACK, TRG_WAIT_DROP = 0, 1, 2
RES_WAIT, RES_ACK = 0, 1
RCP_IDLE, RCP_WAIT, RCP_WAIT_DROP = 0, 1, 2
CLR_IDLE, CLR_PULSE, CLR_REST = 0, 1, 2
# PLC-side reject codes in VerdictCode (the vision system's own codes are 0..1999)
REJ_TIMEOUT = 2001
REJ_VISION_LOST = 2002
REJ_RESTART = 2003
REJ_NOT_TRIGGERED = 2004
REJ_REFUSED = 2005
REJ_SKIPPED = 2006
REJ_RECIPE = 2007
REJ_BAD_RESULT = 2008
FIFO_SIZE = 32
MAX_IN_FLIGHT = 16
# STATUS bits (block B word 0) and CONTROL bits (block A word 0), default layout
M_READY = 0x0001
M_TRIGGER_ACK = 0x0002
M_RESULT_VALID = 0x0008
M_RESULT_OK = 0x0010
M_RESULT_NG = 0x0020
M_ERROR = 0x0040
M_RECIPE_ACK = 0x0080
M_RECIPE_FAIL = 0x0100
M_ONLINE = 0x0200
M_OVERRUN = 0x0400
M_MISSED_TRIGGER = 0x0800
C_TRIGGER_ENABLE = 0x0001
C_TRIGGER = 0x0002
C_RESULT_ACK = 0x0004
C_CLEAR_ERROR = 0x0008
C_LOAD_RECIPE = 0x0010


def _ms(now: int, since: int) -> int:
    """`NowMs - X` in UDINT arithmetic: wraps modulo 2^32, so a clock wrap fires no timeout."""
    return (now - since) & U32


class FbInspectdVision:
    """FB_InspectdVision in Python. Set the inputs, call `scan()` once per PLC scan, read the outputs."""

    def __init__(self) -> None:
        # VAR_INPUT
        self.enable = False
        self.now_ms = 0
        self.part_request = False
        self.part_id = 0
        self.recipe_load = False
        self.recipe_no = 0
        self.clear_error = False
        self.ack_inhibit = False
        self.result_timeout_ms = 2000
        self.vision_hb_timeout_ms = 1000
        self.ack_timeout_ms = 1000
        self.recipe_timeout_ms = 30000
        self.plc_hb_period_ms = 100
        self.clear_pulse_ms = 100
        self.block_b = [0] * 20
        # VAR_OUTPUT
        self.block_a = [0] * 10
        self.ready = False
        self.part_taken = False
        self.verdict_new = False
        self.verdict_part_id = 0
        self.verdict_pass = False
        self.verdict_code = 0
        self.verdict_recipe = 0
        self.recipe_busy = False
        self.recipe_done = False
        self.recipe_error = False
        self.active_recipe = 0
        self.vision_up = False
        self.vision_error = False
        self.vision_error_code = 0
        self.in_flight = 0
        self.passed = 0
        self.rejected = 0
        self.unknown_results = 0
        self.seq_gaps = 0
        self.restarts = 0
        self.link_losses = 0
        self.missed_count = 0
        self.overrun_count = 0
        self.lost_parts = 0
        # VAR
        self.lnk_step = LNK_WAIT
        self.trg_step = TRG_IDLE
        self.res_step = RES_WAIT
        self.rcp_step = RCP_IDLE
        self.clr_step = CLR_IDLE
        self.status = 0
        self.vis_hb = 0
        self.r_part_id = 0
        self.r_seq = 0
        self.r_code = 0
        self.r_recipe = 0
        self.epoch = 0
        self.b_ready = self.b_trig_ack = self.b_valid = self.b_ok = self.b_ng = self.b_error = False
        self.b_recipe_ack = self.b_recipe_fail = self.b_online = self.b_overrun = self.b_missed = False
        self.first_done = False
        self.last_vis_hb = 0
        self.vis_hb_ms = 0
        self.hb_changed = False
        self.seen_epoch = 0
        self.reject_all_code = 0
        self.latch_epoch = 0
        self.latch_seq = 0
        self.latch_part_id = 0
        self.latch_ok = False
        self.latch_code = 0
        self.latched = 0
        self.prev_part_request = False
        self.req_pending = False
        self.req_part_id = 0
        self.trg_part_id = 0
        self.trg_slot = 0
        self.trg_ms = 0
        self.trg_missed_before = False
        self.enq_now = False
        self.enq_part = 0
        self.enq_code = 0
        self.expect_recipe = 0
        self.prev_recipe_load = False
        self.rcp_no = 0
        self.rcp_ms = 0
        self.rcp_ok = False
        self.prev_clear_error = False
        self.clr_request = False
        self.clr_ms = 0
        self.prev_missed = False
        self.prev_overrun = False
        self.plc_hb = 0
        self.plc_hb_ms = 0
        self.ctrl = 0
        self.unresolved = 0
        self.fifo_head = 0
        self.fifo_count = 0
        self.fifo_part = [0] * FIFO_SIZE
        self.fifo_trig_ms = [0] * FIFO_SIZE
        self.fifo_recipe = [0] * FIFO_SIZE
        self.fifo_done = [False] * FIFO_SIZE
        self.fifo_pass = [False] * FIFO_SIZE
        self.fifo_code = [0] * FIFO_SIZE
        self.fifo_res_recipe = [0] * FIFO_SIZE
        self.match = 0

    def scan(self) -> None:
        b = self.block_b
        # §1 block B: decode the words the vision system wrote (README "PLC interface", block B)
        self.status = b[0]
        self.vis_hb = b[1]
        self.r_part_id = b[2] * 65536 + b[3]  # high word first
        self.r_seq = b[4]
        self.r_code = b[5]
        self.vision_error_code = b[6]
        self.active_recipe = b[7]
        self.r_recipe = b[12]
        self.epoch = b[13]
        self.b_ready = (self.status & M_READY) != 0
        self.b_trig_ack = (self.status & M_TRIGGER_ACK) != 0
        self.b_valid = (self.status & M_RESULT_VALID) != 0
        self.b_ok = (self.status & M_RESULT_OK) != 0
        self.b_ng = (self.status & M_RESULT_NG) != 0
        self.b_error = (self.status & M_ERROR) != 0
        self.b_recipe_ack = (self.status & M_RECIPE_ACK) != 0
        self.b_recipe_fail = (self.status & M_RECIPE_FAIL) != 0
        self.b_online = (self.status & M_ONLINE) != 0
        self.b_overrun = (self.status & M_OVERRUN) != 0
        self.b_missed = (self.status & M_MISSED_TRIGGER) != 0
        self.vision_error = self.b_error
        self.verdict_new = False
        if self.b_missed and not self.prev_missed:
            self.missed_count += 1
        if self.b_overrun and not self.prev_overrun:
            self.overrun_count += 1
        self.prev_missed = self.b_missed
        self.prev_overrun = self.b_overrun

        # §2 vision alive: VISION_HEARTBEAT must change within VisionHbTimeoutMs, and ONLINE must be set.
        # A new RUN_EPOCH means the vision system restarted: parts it had taken will never get a result.
        self.hb_changed = self.first_done and self.vis_hb != self.last_vis_hb
        if self.hb_changed or not self.first_done:
            self.last_vis_hb = self.vis_hb
            self.vis_hb_ms = self.now_ms
        self.first_done = True
        if self.epoch != 0:
            if self.seen_epoch != 0 and self.epoch != self.seen_epoch:
                self.reject_all_code = REJ_RESTART
                self.restarts += 1
            self.seen_epoch = self.epoch
        if self.lnk_step == LNK_WAIT:
            if self.hb_changed and self.b_online:
                self.lnk_step = LNK_UP
        elif self.lnk_step == LNK_UP:
            if _ms(self.now_ms, self.vis_hb_ms) >= self.vision_hb_timeout_ms or not self.b_online:
                self.lnk_step = LNK_LOST
                self.link_losses += 1
                self.reject_all_code = REJ_VISION_LOST
        elif self.lnk_step == LNK_LOST:  # noqa: SIM102 -- nested as in the ST, line for line
            if self.hb_changed and self.b_online:
                self.lnk_step = LNK_UP
        self.vision_up = self.lnk_step == LNK_UP

        # §3 restart or vision lost: every part still waiting for a result is rejected now. A result that
        # still comes for one of them later finds no unresolved entry and is only acknowledged (§4).
        if self.reject_all_code != 0:
            for i in range(self.fifo_count):
                k = (self.fifo_head + i) % FIFO_SIZE
                if not self.fifo_done[k]:
                    self.fifo_done[k] = True
                    self.fifo_pass[k] = False
                    self.fifo_code[k] = self.reject_all_code
            self.unresolved = 0
            self.reject_all_code = 0

        # §4 result: latch each new (RUN_EPOCH, RESULT_SEQ) once, match RESULT_PART_ID against the FIFO,
        # then RESULT_ACK as a level: "the result shown is one I latched". A result shown again with the same
        # pair (the vision system rewrites block B after a reconnect) is acknowledged without latching again.
        if self.res_step == RES_WAIT:
            if self.b_valid:
                if self.r_seq != self.latch_seq or self.epoch != self.latch_epoch:
                    if (self.epoch == self.latch_epoch and self.latch_seq != 0
                            and self.r_seq != self.latch_seq % 65535 + 1):
                        self.seq_gaps += 1
                    self.latch_epoch = self.epoch
                    self.latch_seq = self.r_seq
                    self.latch_part_id = self.r_part_id
                    self.latch_ok = self.b_ok and not self.b_ng and self.r_code == 0
                    self.latch_code = self.r_code
                    self.latched += 1
                    # results come in trigger order: the first unresolved entry should be this part
                    self.match = -1
                    for i in range(self.fifo_count):
                        k = (self.fifo_head + i) % FIFO_SIZE
                        if not self.fifo_done[k] and self.fifo_part[k] == self.r_part_id:
                            self.match = i
                            break
                    if self.match < 0:
                        self.unknown_results += 1
                    else:
                        # unresolved parts triggered before this one lost their results: reject them
                        for i in range(self.match):
                            k = (self.fifo_head + i) % FIFO_SIZE
                            if not self.fifo_done[k]:
                                self.fifo_done[k] = True
                                self.fifo_pass[k] = False
                                self.fifo_code[k] = REJ_SKIPPED
                                self.unresolved -= 1
                        k = (self.fifo_head + self.match) % FIFO_SIZE
                        self.fifo_done[k] = True
                        self.fifo_res_recipe[k] = self.r_recipe
                        self.unresolved -= 1
                        if self.b_ok == self.b_ng or (self.b_ok and self.r_code != 0):
                            self.fifo_pass[k] = False
                            self.fifo_code[k] = REJ_BAD_RESULT
                        elif self.fifo_recipe[k] != 0 and self.r_recipe != 0 and self.r_recipe != self.fifo_recipe[k]:
                            self.fifo_pass[k] = False
                            self.fifo_code[k] = REJ_RECIPE
                        else:
                            self.fifo_pass[k] = self.latch_ok
                            self.fifo_code[k] = self.r_code
                if not self.ack_inhibit:
                    self.res_step = RES_ACK
        elif self.res_step == RES_ACK:  # noqa: SIM102 -- nested as in the ST, line for line
            # hold RESULT_ACK until RESULT_VALID drops; a different result shown meanwhile (a restarted vision
            # system) needs a fresh rising edge, so drop the ACK and latch it in RES_WAIT
            if not self.b_valid or self.r_seq != self.latch_seq or self.epoch != self.latch_epoch:
                self.res_step = RES_WAIT

        # §5 result timeout: a part without a result after ResultTimeoutMs is rejected (the reject gate
        # cannot wait longer). A later result for it counts in UnknownResults.
        for i in range(self.fifo_count):
            k = (self.fifo_head + i) % FIFO_SIZE
            if not self.fifo_done[k] and _ms(self.now_ms, self.fifo_trig_ms[k]) >= self.result_timeout_ms:
                self.fifo_done[k] = True
                self.fifo_pass[k] = False
                self.fifo_code[k] = REJ_TIMEOUT
                self.unresolved -= 1

        # §6 recipe: RECIPE_NO with LOAD_RECIPE, held until RECIPE_ACK (with ACTIVE_RECIPE = RECIPE_NO) or
        # RECIPE_FAIL; then dropped, and the FB waits until both drop. No part is triggered
        # while a load is under way (§7 waits for RCP_IDLE), so the recipe boundary is clear for both sides.
        if self.recipe_load and not self.prev_recipe_load and self.rcp_step == RCP_IDLE:
            self.rcp_no = self.recipe_no
            self.recipe_busy = True
            self.recipe_done = False
            self.recipe_error = False
        self.prev_recipe_load = self.recipe_load
        if self.rcp_step == RCP_IDLE:
            if self.recipe_busy and self.trg_step == TRG_IDLE:
                self.rcp_ms = self.now_ms
                self.rcp_step = RCP_WAIT
        elif self.rcp_step == RCP_WAIT:
            if self.b_recipe_ack and self.active_recipe == self.rcp_no:
                self.rcp_ok = True
                self.expect_recipe = self.rcp_no
                self.rcp_step = RCP_WAIT_DROP
            elif (self.b_recipe_fail or _ms(self.now_ms, self.rcp_ms) >= self.recipe_timeout_ms
                  or self.lnk_step != LNK_UP):
                self.rcp_ok = False
                self.rcp_step = RCP_WAIT_DROP
        elif self.rcp_step == RCP_WAIT_DROP:  # noqa: SIM102 -- nested as in the ST, line for line
            if (not self.b_recipe_ack and not self.b_recipe_fail) or self.lnk_step != LNK_UP:
                self.recipe_busy = False
                self.recipe_done = self.rcp_ok
                self.recipe_error = not self.rcp_ok
                self.rcp_step = RCP_IDLE

        # §7 trigger: a part waits at the camera (PartRequest) until READY; then PART_ID and TRIGGER go out
        # together, TRIGGER is held until TRIGGER_ACK, then dropped; the next part waits until TRIGGER_ACK has
        # dropped (in the same scan it drops, if READY). The part enters the FIFO when TRIGGER rises.
        self.enq_now = False
        if not self.part_request:
            self.part_taken = False
            if self.req_pending:
                # the part left the camera window before it could be triggered
                self.req_pending = False
                self.enq_part = self.req_part_id
                self.enq_code = REJ_NOT_TRIGGERED
                self.enq_now = True
        elif not self.prev_part_request:
            self.req_pending = True
            self.req_part_id = self.part_id
        self.prev_part_request = self.part_request
        if self.trg_step == TRG_WAIT_DROP:  # noqa: SIM102 -- nested as in the ST, line for line
            if not self.b_trig_ack:
                self.trg_step = TRG_IDLE
        if self.trg_step == TRG_IDLE:
            if (self.req_pending and self.enable and self.lnk_step == LNK_UP and self.b_ready and not self.b_trig_ack
                    and self.rcp_step == RCP_IDLE and not self.recipe_busy and self.unresolved < MAX_IN_FLIGHT
                    and self.fifo_count < FIFO_SIZE):
                self.req_pending = False
                self.part_taken = True
                self.trg_part_id = self.req_part_id
                self.trg_slot = (self.fifo_head + self.fifo_count) % FIFO_SIZE
                self.enq_part = self.req_part_id
                self.enq_code = 0
                self.enq_now = True
                self.trg_ms = self.now_ms
                self.trg_missed_before = self.b_missed
                self.trg_step = TRG_WAIT_ACK
        elif self.trg_step == TRG_WAIT_ACK:
            if self.b_trig_ack:
                self.trg_step = TRG_WAIT_DROP
            elif ((self.b_missed and not self.trg_missed_before) or _ms(self.now_ms, self.trg_ms) >= self.ack_timeout_ms
                  or self.lnk_step != LNK_UP):
                # refused: the vision system will not inspect this part
                if not self.fifo_done[self.trg_slot]:
                    self.fifo_done[self.trg_slot] = True
                    self.fifo_pass[self.trg_slot] = False
                    self.fifo_code[self.trg_slot] = REJ_REFUSED
                    self.unresolved -= 1
                self.trg_step = TRG_WAIT_DROP
        if self.enq_now:
            if self.fifo_count < FIFO_SIZE:
                k = (self.fifo_head + self.fifo_count) % FIFO_SIZE
                self.fifo_part[k] = self.enq_part
                self.fifo_trig_ms[k] = self.now_ms
                self.fifo_recipe[k] = self.expect_recipe
                self.fifo_done[k] = self.enq_code != 0
                self.fifo_pass[k] = False
                self.fifo_code[k] = self.enq_code
                self.fifo_res_recipe[k] = 0
                self.fifo_count += 1
                if self.enq_code == 0:
                    self.unresolved += 1
            else:
                self.lost_parts += 1
        self.ready = (self.lnk_step == LNK_UP and self.b_ready and self.enable and self.trg_step == TRG_IDLE
                      and self.rcp_step == RCP_IDLE and not self.recipe_busy)
        self.in_flight = self.unresolved

        # §8 CLEAR_ERROR: on the operator's ClearError edge, and by itself while MISSED_TRIGGER or OVERRUN is
        # latched (this FB has already rejected the parts concerned; both only inform). Pulse, then rest, so
        # the vision system sees a fresh rising edge each time. ERROR (e.g. code 5 PLC comm lost) is cleared
        # only by the operator.
        if self.clear_error and not self.prev_clear_error:
            self.clr_request = True
        self.prev_clear_error = self.clear_error
        if self.clr_step == CLR_IDLE:
            if self.clr_request or self.b_missed or self.b_overrun:
                self.clr_request = False
                self.clr_ms = self.now_ms
                self.clr_step = CLR_PULSE
        elif self.clr_step == CLR_PULSE:
            if _ms(self.now_ms, self.clr_ms) >= self.clear_pulse_ms:
                self.clr_ms = self.now_ms
                self.clr_step = CLR_REST
        elif self.clr_step == CLR_REST:  # noqa: SIM102 -- nested as in the ST, line for line
            if _ms(self.now_ms, self.clr_ms) >= self.clear_pulse_ms:
                self.clr_step = CLR_IDLE

        # §9 outputs: one verdict per scan from the FIFO head, PLC_HEARTBEAT, and block A as one whole.
        if self.fifo_count > 0:  # noqa: SIM102 -- nested as in the ST, line for line
            if self.fifo_done[self.fifo_head]:
                self.verdict_new = True
                self.verdict_part_id = self.fifo_part[self.fifo_head]
                self.verdict_pass = self.fifo_pass[self.fifo_head]
                self.verdict_code = self.fifo_code[self.fifo_head]
                self.verdict_recipe = self.fifo_res_recipe[self.fifo_head]
                if self.verdict_pass:
                    self.passed += 1
                else:
                    self.rejected += 1
                self.fifo_head = (self.fifo_head + 1) % FIFO_SIZE
                self.fifo_count -= 1
        if _ms(self.now_ms, self.plc_hb_ms) >= self.plc_hb_period_ms:
            self.plc_hb_ms = self.now_ms
            if self.plc_hb == 65535:
                self.plc_hb = 0
            else:
                self.plc_hb += 1
        self.ctrl = 0x0000
        if self.enable:
            self.ctrl |= C_TRIGGER_ENABLE
        if self.trg_step == TRG_WAIT_ACK:
            self.ctrl |= C_TRIGGER
        if self.res_step == RES_ACK:
            self.ctrl |= C_RESULT_ACK
        if self.clr_step == CLR_PULSE:
            self.ctrl |= C_CLEAR_ERROR
        if self.rcp_step == RCP_WAIT:
            self.ctrl |= C_LOAD_RECIPE
        for i in range(5, 10):
            self.block_a[i] = 0x0000
        self.block_a[4] = self.rcp_no
        self.block_a[3] = self.trg_part_id % 65536
        self.block_a[2] = self.trg_part_id // 65536
        self.block_a[1] = self.plc_hb
        self.block_a[0] = self.ctrl  # CONTROL last


# ----------------------------------------------------------------------------- the line around the PLC


@dataclass
class SimReport:
    triggered: list[int] = field(default_factory=list)  # part ids in trigger order (TRIGGER raised)
    results: dict[int, tuple[bool, int]] = field(default_factory=dict)  # part id -> (ok, code) as latched
    order: list[int] = field(default_factory=list)  # part ids in the order results were latched
    t_trigger: dict[int, float] = field(default_factory=dict)
    t_seen: dict[int, float] = field(default_factory=dict)
    verdicts: dict[int, tuple[bool, int]] = field(default_factory=dict)  # the FB's verdict: part id -> (pass, code)
    missed_seen: int = 0  # MISSED_TRIGGER rising edges
    overrun_seen: int = 0  # OVERRUN rising edges
    recipe: dict[int, bool] = field(default_factory=dict)  # recipe no -> acked
    io_errors: int = 0
    seq_gaps: int = 0  # RESULT_SEQ jumped by more than 1 within a RUN_EPOCH: a result shown and replaced unseen
    unknown_results: int = 0  # results for parts the FB no longer waited for

    @property
    def missing(self) -> list[int]:
        return [p for p in self.triggered if p not in self.results]


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


class NoPeer(ConnectionError):
    """The PLC's peer (daemon or memory server) never answered within `connect_timeout_s`."""


class PlcSim:
    """The line around FB_InspectdVision: one scan per loop (read block B, FbInspectdVision.scan(), write block
    A when it changed). Parts arrive at the camera one after another, at most every `period_s` (an indexing
    station: a part waits until it is taken). A station layout with other bit numbers, block starts or word
    order is translated to the FB's default layout here, as a PLC programmer would edit the FB's masks.

    While the PLC's peer does not answer (the PLC's own memory server killed or frozen in the tests) the
    simulated PLC counts as halted: no scans, and its millisecond clock stands still.
    """

    def __init__(self, io: PlcIO, layout: LayoutConfig | None = None, *, seed: int = 1, first_part: int = 1,
                 ack_delay_s: tuple[float, float] = (0.0, 0.0), recipes: dict[int, int] | None = None,
                 scan_s: float = 0.0005, hb_period_s: float = 0.1, period_s: float = 0.0,
                 connect_timeout_s: float = 10.0, vision_hb_timeout_s: float = 3.0, ack_timeout_s: float = 5.0,
                 result_timeout_s: float = 10.0) -> None:
        self.io, self.lay, self.std = io, Layout(layout), Layout()
        a, b = self.lay.cfg, self.std.cfg  # block starts are the IO's business; bits and word order the FB's
        self.same_words = (a.control_bits, a.status_bits, a.word_order, a.byte_order) == (
            b.control_bits, b.status_bits, b.word_order, b.byte_order)
        self.rng = random.Random(seed)
        self.next_part = first_part
        self.ack_delay = ack_delay_s
        self.recipes = dict(recipes or {})  # before the k-th trigger (0-based), load this recipe
        self.scan, self.period = scan_s, period_s  # period: least time between two parts (the line's pitch)
        self.connect_timeout = connect_timeout_s
        self.fb = FbInspectdVision()
        self.fb.enable = True
        self.fb.plc_hb_period_ms = max(1, round(hb_period_s * 1e3))
        # longer than the FB's defaults (1 s, 1 s, 2 s): the simulator shares a busy 2-core machine with the daemon
        self.fb.vision_hb_timeout_ms = round(vision_hb_timeout_s * 1e3)
        self.fb.ack_timeout_ms = round(ack_timeout_s * 1e3)
        self.fb.result_timeout_ms = round(result_timeout_s * 1e3)
        self.report = SimReport()
        self.pause_ack = threading.Event()  # set: hold results unacknowledged (to force an overrun)
        self.stop = threading.Event()

    def run(self, parts: int, timeout_s: float = 60.0, settle_s: float = 2.0) -> SimReport:
        """Run `parts` parts; raises NoPeer if the first read of block B never succeeds."""
        rep, fb = self.report, self.fb
        written: list[int] | None = None
        presented, t_present, recipe_no = 0, -1e9, 0
        ack_at: float | None = None
        halted = 0.0  # seconds the PLC was halted (its clock stands still meanwhile)
        connected = False
        t0 = time.monotonic()
        t_end, t_done = t0 + timeout_s, None
        while not self.stop.is_set() and (now := time.monotonic()) < t_end:
            try:
                words = self.io.read_b()
            except Exception:
                rep.io_errors += 1
                written = None
                if not connected and now - t0 > self.connect_timeout:
                    raise NoPeer(f"no answer from the PLC peer within {self.connect_timeout:.0f} s") from None
                time.sleep(0.05)
                halted += time.monotonic() - now
                continue
            connected = True
            t_read = time.monotonic()
            fb.block_b = words if self.same_words else self.std.encode_b(self.lay.decode_b(words))
            fb.now_ms = round((t_read - t0 - halted) * 1e3) & U32
            # the line: a part arrives at the camera and waits there until the FB has taken it; PartRequest
            # stays low for at least one scan between two parts (the FB reacts to its rising edge)
            if fb.part_request and fb.part_taken:
                fb.part_request = False
            elif fb.recipe_load and not fb.recipe_busy:
                rep.recipe[recipe_no] = fb.recipe_done
                fb.recipe_load = False
            elif not fb.recipe_load and not fb.part_request and presented in self.recipes:
                recipe_no = self.recipes.pop(presented)
                fb.recipe_load, fb.recipe_no = True, recipe_no
            elif (not fb.recipe_load and not fb.part_request and presented < parts and fb.rcp_step == RCP_IDLE
                  and now - t_present >= self.period):
                fb.part_request, fb.part_id = True, self.next_part
                self.next_part, presented, t_present = self.next_part + 1, presented + 1, now
            fb.ack_inhibit = self.pause_ack.is_set() or (self.ack_delay[1] > 0 and (ack_at is None or now < ack_at))
            trg_before, latched_before = fb.trg_step, fb.latched
            fb.scan()
            if fb.trg_step == TRG_WAIT_ACK and trg_before != TRG_WAIT_ACK:
                rep.triggered.append(fb.trg_part_id)
                rep.t_trigger[fb.trg_part_id] = t_read
            if fb.latched != latched_before:
                rep.results[fb.latch_part_id] = (fb.latch_ok, fb.latch_code)
                rep.order.append(fb.latch_part_id)
                rep.t_seen.setdefault(fb.latch_part_id, t_read)
            # the ACK delay starts when a result waits to be acknowledged: a new one, or one shown again
            if fb.res_step == RES_ACK:
                ack_at = None
            elif fb.b_valid and ack_at is None:
                ack_at = now + self.rng.uniform(*self.ack_delay)
            if fb.verdict_new:
                rep.verdicts[fb.verdict_part_id] = (fb.verdict_pass, fb.verdict_code)
            rep.missed_seen, rep.overrun_seen = fb.missed_count, fb.overrun_count
            rep.seq_gaps, rep.unknown_results = fb.seq_gaps, fb.unknown_results
            out = list(fb.block_a) if self.same_words else self.lay.encode_a(self.std.decode_a(fb.block_a))
            if out != written:
                try:
                    self.io.write_a(out)
                    written = out
                except Exception:
                    rep.io_errors += 1
                    written = None
            if (presented >= parts and presented not in self.recipes and not fb.part_request and not fb.recipe_load
                    and fb.trg_step == TRG_IDLE):
                if not rep.missing or (t_done is not None and now - t_done > settle_s):
                    break
                t_done = t_done or now
            time.sleep(self.scan)
        return rep


# ----------------------------------------------------------------------------- stand-in daemon


class Responder:
    """Plays the pipeline: answers each PLC trigger with a random verdict after `inspect_s`."""

    def __init__(self, link: object, *, seed: int = 2, reject_rate: float = 0.3,
                 inspect_s: tuple[float, float] = (0.0, 0.0)) -> None:
        self.link = link
        self.rng = random.Random(seed)
        self.reject_rate, self.inspect_s = reject_rate, inspect_s
        self.t_ready: dict[int, float] = {}
        self.sent: dict[int, tuple[bool, int]] = {}
        self.seq = 0
        self.max_submit_s = 0.0  # the pipeline's view: how long handing a verdict to the link took
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="responder", daemon=True)

    def start(self) -> Responder:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def verdict(self, part_id: int, t_trigger: float, ok: bool | None = None):  # -> Verdict
        from inspectd.types import Outcome, Verdict

        if ok is None:
            ok = self.rng.random() >= self.reject_rate
        self.seq += 1
        code = 0 if ok else self.rng.randint(1, 5)
        now = time.monotonic()
        self.sent[part_id] = (ok, code)
        self.t_ready[part_id] = now
        return Verdict(seq=self.seq, part_id=part_id, product="sim", outcome=Outcome.PASS if ok else Outcome.REJECT,
                       reason="" if ok else "sim_defect", result_code=code, plc_ok=ok, score=self.rng.random(),
                       scores={}, t_trigger=t_trigger, t_verdict=now, truth=None, model_sha256="", stage_ms={},
                       wall_time=time.time())

    def _run(self) -> None:
        while not self._stop.is_set():
            trig = self.link.next_trigger(0.05)  # type: ignore[attr-defined]
            if trig is None:
                continue
            if self.inspect_s[1] > 0:
                time.sleep(self.rng.uniform(*self.inspect_s))
            self.submit(self.verdict(trig.part_id, trig.t_trigger))

    def submit(self, verdict: Any) -> None:  # a Verdict
        t0 = time.perf_counter()
        self.link.submit(verdict, None)  # type: ignore[attr-defined]
        self.max_submit_s = max(self.max_submit_s, time.perf_counter() - t0)


def _standin(args: argparse.Namespace) -> None:
    """A stand-in daemon: the real PlcLink from a JSON `plc:` config, verdicts from a Responder."""
    import logging

    import structlog
    from pydantic import TypeAdapter

    from inspectd.plc.config import PlcConfig
    from inspectd.plc.registry import make_plc_link

    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr),
                        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    cfg = TypeAdapter(PlcConfig).validate_python(json.loads(args.plc))
    link = make_plc_link(cfg, on_recipe=lambda n: True)
    link.start()
    link.set_ready(True)
    resp = Responder(link, inspect_s=(0.0, args.inspect_ms / 1e3)).start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    print("standin ready", flush=True)
    done.wait(args.duration)
    resp.stop()
    s = link.stats
    Path(args.out).write_text(json.dumps({
        "t_ready": resp.t_ready, "published": s.published, "reconnects": s.reconnects,
        "link_p50_ms": s.latency_ms(0.5), "link_p99_ms": s.latency_ms(0.99)}))
    link.stop()


def _bench(args: argparse.Namespace) -> int:
    """Stand-in daemon in a second process + this PLC; peers for the client modes from tests/plc."""
    import tempfile

    from tests.plc import peers

    port = peers.free_port()
    peer = None
    polls = {} if args.daemon_poll_ms is None else {"poll_ms": args.daemon_poll_ms}  # else the config defaults
    if args.transport == "modbus_server":
        plc = {"type": "modbus_server", "port": port, "handshake": {"plc_heartbeat_ms": 0}}
    elif args.transport == "modbus_client":
        peer = peers.lmb_server(port).start()
        plc = {"type": "modbus_client", "host": "127.0.0.1", "port": port, **polls,
               "handshake": {"plc_heartbeat_ms": 0}}
    else:
        peer = peers.s7_server(port, native=args.native).start()
        plc = {"type": "s7", "host": "127.0.0.1", "port": port, **polls, "handshake": {"plc_heartbeat_ms": 0}}
    out = Path(tempfile.mkstemp(suffix=".json")[1])
    daemon = subprocess.Popen([sys.executable, __file__, "standin", "--plc", json.dumps(plc), "--out", str(out),
                               "--duration", str(args.timeout + 30)], stdout=subprocess.PIPE, text=True)
    try:
        assert daemon.stdout is not None and "standin ready" in daemon.stdout.readline()
        if args.transport == "modbus_server":
            peers.wait_port(port)
        lay = LayoutConfig(block_a=0, block_b=10) if args.transport == "s7" else LayoutConfig()
        io: PlcIO = S7PlcIO("127.0.0.1", port, lay) if args.transport == "s7" else ModbusPlcIO("127.0.0.1", port, lay)
        rep = PlcSim(io, lay, scan_s=args.scan_ms / 1e3, period_s=args.period_ms / 1e3).run(
            args.parts, timeout_s=args.timeout)
        io.close()
    finally:
        daemon.terminate()
        daemon.wait(20)
        if peer:
            peer.stop()
    stats = json.loads(out.read_text())
    t_ready = {int(k): v for k, v in stats["t_ready"].items()}
    vis = [(rep.t_seen[p] - t_ready[p]) * 1e3 for p in rep.t_seen if p in t_ready]
    _print(rep, args.transport)
    within = sum(v <= 2.0 for v in vis) / max(1, len(vis)) * 100
    print(f"  ready->visible at PLC: p50 {pct(vis, 0.5):.3f} ms  p99 {pct(vis, 0.99):.3f} ms  {within:.1f}% <= 2 ms "
          f"(n={len(vis)}, PLC "
          f"scan {args.scan_ms} ms, pitch {args.period_ms} ms)")
    print(f"  ready->block B written (link stats): p50 {stats['link_p50_ms']:.3f} ms  "
          f"p99 {stats['link_p99_ms']:.3f} ms")
    ts = sorted(rep.t_trigger.values())
    pitch = (ts[-1] - ts[0]) / (len(ts) - 1) * 1e3 if len(ts) > 1 else float("nan")
    load = os.getloadavg()
    print(f"  achieved pitch {pitch:.2f} ms (asked {args.period_ms} ms); load average {load[0]:.2f} {load[1]:.2f} "
          f"on {os.cpu_count()} CPUs")
    return 0 if not rep.missing else 1


def _print(rep: SimReport, label: str) -> None:
    lat = [(rep.t_seen[p] - rep.t_trigger[p]) * 1e3 for p in rep.t_seen if p in rep.t_trigger]
    print(f"{label}: {len(rep.triggered)} parts triggered, {len(rep.results)} results, missing "
          f"{len(rep.missing)}{' ' + str(rep.missing[:10]) if rep.missing else ''}, missed-trigger "
          f"{rep.missed_seen}, overrun {rep.overrun_seen}, io errors {rep.io_errors}")
    print(f"  trigger->result at PLC: p50 {pct(lat, 0.5):.3f} ms  p99 {pct(lat, 0.99):.3f} ms")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("modbus", "s7"):
        s = sub.add_parser(name, help=f"run the PLC side over {name} against a running daemon / PLC server")
        s.add_argument("--host", default="127.0.0.1")
        s.add_argument("--port", type=int, default=5020 if name == "modbus" else 102)
        s.add_argument("--parts", type=int, default=100)
        s.add_argument("--ack-delay-ms", type=float, default=0.0, help="max random delay before RESULT_ACK")
        s.add_argument("--recipe", type=int, action="append", default=[], help="load this RECIPE_NO mid-run")
        s.add_argument("--timeout", type=float, default=120.0)
        s.add_argument("--connect-timeout", type=float, default=10.0,
                       help="give up when the peer has not answered once within this many seconds")
        s.add_argument("--block-a", type=int, default=0)
        s.add_argument("--block-b", type=int, default=100 if name == "modbus" else 10)
        if name == "modbus":
            s.add_argument("--unit", type=int, default=1)
        else:
            s.add_argument("--db", type=int, default=100)
    b = sub.add_parser("bench", help="stand-in daemon + PLC: verdict ready -> visible at the PLC")
    b.add_argument("--transport", choices=["modbus_server", "modbus_client", "s7"], default="modbus_server")
    b.add_argument("--parts", type=int, default=2000)
    b.add_argument("--scan-ms", type=float, default=0.5, help="PLC scan (poll) period")
    b.add_argument("--period-ms", type=float, default=20.0, help="least time between triggers (part pitch)")
    b.add_argument("--daemon-poll-ms", type=int, default=None,
                   help="client modes: the daemon's idle poll_ms (default: the config's; fast_poll_ms stays)")
    b.add_argument("--native", action="store_true", help="s7: the native Snap7 server as the PLC")
    b.add_argument("--timeout", type=float, default=300.0)
    st = sub.add_parser("standin", help=argparse.SUPPRESS)
    st.add_argument("--plc", required=True)
    st.add_argument("--out", required=True)
    st.add_argument("--duration", type=float, default=600)
    st.add_argument("--inspect-ms", type=float, default=0.0)
    args = p.parse_args(argv)
    if args.cmd == "standin":
        _standin(args)
        return 0
    if args.cmd == "bench":
        return _bench(args)
    lay = LayoutConfig(block_a=args.block_a, block_b=args.block_b)
    io: PlcIO = (ModbusPlcIO(args.host, args.port, lay, args.unit) if args.cmd == "modbus"
                 else S7PlcIO(args.host, args.port, lay, args.db))
    recipes = {(i + 1) * args.parts // (len(args.recipe) + 1): r for i, r in enumerate(args.recipe)}
    sim = PlcSim(io, lay, ack_delay_s=(0.0, args.ack_delay_ms / 1e3), recipes=recipes,
                 connect_timeout_s=args.connect_timeout)
    signal.signal(signal.SIGINT, lambda *_: sim.stop.set())
    where = f"{args.cmd} {args.host}:{args.port}"
    try:
        rep = sim.run(args.parts, timeout_s=args.timeout)
    except NoPeer as e:
        print(f"plc_sim: {where}: {e} (is the daemon running and serving this port?)", file=sys.stderr)
        return 2
    finally:
        io.close()
    _print(rep, where)
    for no, ok in rep.recipe.items():
        print(f"  recipe {no}: {'ACK' if ok else 'FAIL'}")
    if len(rep.triggered) < args.parts:
        print(f"plc_sim: {where}: only {len(rep.triggered)} of {args.parts} parts triggered within "
              f"{args.timeout:.0f} s", file=sys.stderr)
        return 1
    return 0 if not rep.missing else 1


if __name__ == "__main__":
    sys.exit(main())
