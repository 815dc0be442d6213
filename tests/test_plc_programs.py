"""The PLC-side reference programs (tools/plc/) and their Python twin (tools/plc_sim.FbInspectdVision).

- Every program parses with blark, a real IEC 61131-3 parser; the SCL files after `scl.to_iec` removes TIA's
  notations (the parser is not fooled: a broken program fails).
- The SCL function block is generated from the portable one and up to date.
- The example callers (CODESYS program, S7 station block) pass only inputs the blocks declare and read only
  their outputs.
- Twin: the ST and the Python class have the same constants, variables, input defaults, section titles and
  step transitions, read mechanically from blark's tree and Python's ast.
- Behaviour of the twin against the daemon's real handshake state machine (inspectd.plc.handshake): one
  verdict per part, restart (new RUN_EPOCH, RESULT_SEQ repeating), vision heartbeat lost, result timeout,
  recipe load and a recipe mismatch, a part gone before its trigger; and (hypothesis) never a pass verdict
  that a valid OK result with code 0 for that triggered part did not justify, whatever block B says.
- `make plc-demo` on a fresh clone (no var/) finishes, and the simulator gives up on a dead port.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from blark import parse as blark_parse  # type: ignore[import-untyped]  # blark ships no py.typed
from blark import transform as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inspectd.plc.config import HandshakeConfig, S7Config
from inspectd.plc.handshake import CountingSeq, Handshake, RecipeRequested, Result, TriggerSeen
from inspectd.plc.layout import Layout
from tools import plc_sim
from tools.plc import scl
from tools.plc_sim import FbInspectdVision

REPO = Path(__file__).resolve().parents[1]
PLC = REPO / "tools" / "plc"
FB_ST = PLC / "FB_InspectdVision.st"
ST_FILES = [FB_ST, PLC / "codesys" / "GVL_Vision.st", PLC / "codesys" / "PRG_VisionStation.st"]
SCL_FILES = sorted((PLC / "siemens").glob("*.scl"))
STEP_VARS = ("LnkStep", "TrgStep", "ResStep", "RcpStep", "ClrStep")


@functools.cache
def _parse(text: str, name: str) -> tf.SourceCode:
    """blark's Earley parser takes ~20 s for the FB on a busy 2-core box: each text is parsed once per session."""
    res = blark_parse.parse_source_code(text, fn=name)
    assert res.exception is None, f"{name}: {res.exception}"
    return res.transform()


def _snake(name: str) -> str:
    """PascalCase ST name -> the twin's attribute: RPartId -> r_part_id, bReady -> b_ready, BlockB -> block_b."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


# ----------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("path", ST_FILES + SCL_FILES, ids=lambda p: p.name)
def test_programs_parse_with_blark(path: Path) -> None:
    text = path.read_text()
    code = _parse(scl.to_iec(text) if path.suffix == ".scl" else text, path.name)
    assert code.items, path


def test_blark_rejects_a_broken_program() -> None:
    text = FB_ST.read_text()
    broken = text.replace("END_VAR\nVAR_OUTPUT", "VAR_OUTPUT", 1)  # early, so the parser fails fast
    assert broken != text
    assert blark_parse.parse_source_code(broken, fn="broken.st").exception is not None


def test_scl_block_is_generated_from_the_portable_one() -> None:
    assert scl.main(["--check"]) == 0
    gen = scl.to_scl(FB_ST.read_text())
    assert re.search(r'^FUNCTION_BLOCK "FB_InspectdVision"$', gen, re.M) and "\nBEGIN\n" in gen
    assert "#TrgStep := #TRG_WAIT_ACK;" in gen and "#FifoPart[#k] := #EnqPart;" in gen
    # back to plain ST it is the same program: the same tokens, comments and layout aside
    assert _tokens(scl.to_iec(gen)) == _tokens(FB_ST.read_text())


def _tokens(text: str) -> list[str]:
    """Tokens without comments and `{...}` pragmas (both ignored by the parser)."""
    return [t for t in re.findall(r"\(\*.*?\*\)|//[^\n]*|\{[^}]*\}|'[^']*'|\"[^\"]*\"|\w+|\S", text, re.S)
            if not t.startswith(("(*", "//", "{"))]


def test_s7_db_matches_the_daemons_default_s7_layout() -> None:
    text = (PLC / "siemens" / "DB_Vision.db").read_text()
    assert "S7_Optimized_Access := 'FALSE'" in text  # PUT/GET needs byte offsets
    arrays = re.findall(r"^\s*(\w+)\s*:\s*Array\[0\.\.(\d+)\] of Word;", text, re.M)
    assert arrays == [("BlockA", "9"), ("BlockB", "19")]
    lay = S7Config(type="s7", host="127.0.0.1").layout
    assert (lay.block_a, lay.block_b) == (0, 10)  # words: BlockA at DBB0, BlockB right after it at DBB20


# ----------------------------------------------------------------------------- the twin relation


def _fb() -> tf.FunctionBlock:
    (fb,) = [i for i in _parse(FB_ST.read_text(), FB_ST.name).items if isinstance(i, tf.FunctionBlock)]
    return fb


def _pous(path: Path) -> list[Any]:
    text = path.read_text()
    return list(_parse(scl.to_iec(text) if path.suffix == ".scl" else text, path.name).items)


def _calls(node: Any) -> Iterator[tf.FunctionCallStatement]:
    if isinstance(node, tf.FunctionCallStatement):
        yield node
    if dataclasses.is_dataclass(node):
        for f in dataclasses.fields(node):
            if f.name != "meta":
                yield from _calls(getattr(node, f.name))
    elif isinstance(node, (list, tuple)):
        for x in node:
            yield from _calls(x)


@pytest.mark.parametrize("caller", [PLC / "codesys" / "PRG_VisionStation.st", PLC / "siemens" / "FB_VisionStation.scl"],
                         ids=lambda p: p.name)
def test_example_callers_use_the_blocks_real_interface(caller: Path) -> None:
    """Every parameter a caller passes and every output it reads exists on the block it calls (blark's tree)."""
    blocks = {str(fb.name): _declarations(fb) for path in [FB_ST, PLC / "siemens" / "FB_InspectdMbClient.scl"]
              for fb in _pous(path) if isinstance(fb, tf.FunctionBlock)}
    (pou,) = _pous(caller)
    instances = {v: t for v, t in re.findall(r"^\s*(\w+)\s*:\s*(\w+)\s*;", scl.to_iec(caller.read_text()), re.M)
                 if t in blocks}
    assert "FB_InspectdVision" in instances.values()
    checked = 0
    for call in _calls(pou.body):
        decl = blocks.get(instances.get(str(call.name), ""))
        if decl is None:
            continue
        settable = set(decl["VAR_INPUT"]) | set(decl.get("InputOutputDeclarations", {}))
        for param in call.parameters:
            assert str(param.name) in settable, f"{caller.name}: {call.name}({param.name} := ...) is no input"
            checked += 1
    for inst, member in re.findall(r"\b(\w+)\.(\w+)\b", scl.to_iec(caller.read_text())):
        if inst in instances:
            decl = blocks[instances[inst]]
            assert member in set(decl["VAR_OUTPUT"]) | set(decl["VAR_INPUT"]), f"{caller.name}: {inst}.{member}"
            checked += 1
    assert checked >= 10


def _declarations(fb: tf.FunctionBlock) -> dict[str, dict[str, str | None]]:
    """Per VAR section kind ('VAR_INPUT', 'VAR_OUTPUT', 'VAR', 'VAR CONSTANT'): name -> init value text."""
    out: dict[str, dict[str, str | None]] = {}
    for block in fb.declarations:
        kind = {"InputDeclarations": "VAR_INPUT", "OutputDeclarations": "VAR_OUTPUT",
                "VariableDeclarations": "VAR"}.get(type(block).__name__, type(block).__name__)
        if kind == "VAR" and block.attrs is not None and "CONSTANT" in str(block.attrs).upper():
            kind = "VAR CONSTANT"
        for decl in block.items:
            init = getattr(decl.init, "value", None)
            for var in decl.variables:
                out.setdefault(kind, {})[str(var.variable.name)] = None if init is None else str(init)
    return out


def _value(text: str) -> int:
    return int(text.replace("16#", ""), 16) if text.startswith("16#") else int(text)


def test_twin_has_the_same_constants_variables_and_defaults() -> None:
    decl = _declarations(_fb())
    assert set(decl) == {"VAR_INPUT", "VAR_OUTPUT", "VAR", "VAR CONSTANT"}, set(decl)
    for name, val in decl["VAR CONSTANT"].items():
        assert getattr(plc_sim, name) == _value(str(val)), name
    twin = FbInspectdVision()
    loop_indices = {"i", "k"}  # FOR counters and slot indices: plain locals in Python
    assert loop_indices <= set(decl["VAR"])
    for kind in ("VAR_INPUT", "VAR_OUTPUT", "VAR"):
        for name, init in decl[kind].items():
            if name in loop_indices:
                continue
            assert hasattr(twin, _snake(name)), f"{kind} {name}: no {_snake(name)} in FbInspectdVision"
            if init is not None:
                assert getattr(twin, _snake(name)) == _value(init), name
    declared = {_snake(n) for k in ("VAR_INPUT", "VAR_OUTPUT", "VAR") for n in decl[k]} - loop_indices
    assert set(vars(twin)) == declared  # nothing in the twin the FB does not have


def _st_transitions() -> dict[str, set[tuple[str, str]]]:
    """(from, to) per step variable: assignments `XStep := S` inside `IF/ELSIF XStep = F THEN` branches."""
    found: dict[str, set[tuple[str, str]]] = {v: set() for v in STEP_VARS}

    def walk(node: Any, branch: dict[str, str]) -> None:
        if isinstance(node, tf.IfStatement):
            clauses = [(node.if_expression, node.statements)] + [(c.if_expression, c.statements) for c in node.else_ifs]
            for cond, stmts in clauses:
                m = re.fullmatch(r"(\w+Step) = (\w+)", str(cond))
                walk(stmts, {**branch, m.group(1): m.group(2)} if m else branch)
            if node.else_clause is not None:
                walk(node.else_clause, branch)
            return
        if isinstance(node, tf.AssignmentStatement):
            target, value = str(node.variables[0]), str(node.expression)  # str(node) carries its comments
            if target in found:
                assert target in branch and re.fullmatch(r"\w+", value), f"{node}: outside a branch on {target}"
                found[target].add((branch[target], value))
            return
        if dataclasses.is_dataclass(node):
            for f in dataclasses.fields(node):
                if f.name != "meta":
                    walk(getattr(node, f.name), branch)
        elif isinstance(node, (list, tuple)):
            for x in node:
                walk(x, branch)

    walk(_fb().body, {})
    return found


def _py_transitions() -> dict[str, set[tuple[str, str]]]:
    src = Path(plc_sim.__file__).read_text()
    cls = next(n for n in ast.walk(ast.parse(src)) if isinstance(n, ast.ClassDef) and n.name == "FbInspectdVision")
    scan = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "scan")
    attr = {_snake(v): v for v in STEP_VARS}
    found: dict[str, set[tuple[str, str]]] = {v: set() for v in STEP_VARS}

    def walk(stmts: list[ast.stmt], branch: dict[str, str]) -> None:
        for s in stmts:
            if isinstance(s, ast.If):
                t = s.test
                if (isinstance(t, ast.Compare) and isinstance(t.left, ast.Attribute) and t.left.attr in attr
                        and isinstance(t.ops[0], ast.Eq) and isinstance(t.comparators[0], ast.Name)):
                    walk(s.body, {**branch, attr[t.left.attr]: t.comparators[0].id})
                else:
                    walk(s.body, branch)
                walk(s.orelse, branch)
            elif isinstance(s, ast.Assign) and isinstance(s.targets[0], ast.Attribute) and s.targets[0].attr in attr:
                var = attr[s.targets[0].attr]
                assert isinstance(s.value, ast.Name) and var in branch, ast.unparse(s)
                found[var].add((branch[var], s.value.id))
            elif isinstance(s, (ast.For, ast.While, ast.With)):
                walk(s.body, branch)

    walk(scan.body, {})
    return found


def test_twin_has_the_same_step_transitions() -> None:
    st_tr, py_tr = _st_transitions(), _py_transitions()
    assert st_tr == py_tr
    assert st_tr["TrgStep"] == {("TRG_IDLE", "TRG_WAIT_ACK"), ("TRG_WAIT_ACK", "TRG_WAIT_DROP"),
                                ("TRG_WAIT_DROP", "TRG_IDLE")}
    assert ("LNK_UP", "LNK_LOST") in st_tr["LnkStep"] and ("LNK_LOST", "LNK_UP") in st_tr["LnkStep"]


def test_twin_has_the_same_sections_in_the_same_order() -> None:
    st_sections = re.findall(r"^\(\* (§\d [^:\n]*)", FB_ST.read_text(), re.M)
    py_sections = re.findall(r"^\s*# (§\d [^:\n]*)", Path(plc_sim.__file__).read_text(), re.M)
    assert [s.split()[0] for s in st_sections] == [f"§{i}" for i in range(1, 10)]
    assert st_sections == py_sections


# ----------------------------------------------------------------------------- behaviour, against the real handshake


class Bench:
    """FbInspectdVision wired to the daemon's own handshake state machine; time in integer milliseconds."""

    def __init__(self, epoch: int = 7, *, depth: int = 8) -> None:
        self.lay = Layout()
        self.cfg = HandshakeConfig(buffer_depth=depth, heartbeat_ms=200, plc_heartbeat_ms=0)
        self.t = 0
        self.alive = True
        self.hs = self._handshake(epoch, 0)
        self.fb = FbInspectdVision()
        self.fb.enable = True
        self.verdicts: dict[int, tuple[bool, int]] = {}
        self.triggered: list[int] = []  # part ids the daemon acknowledged, in order
        self.recipe_asked: list[int] = []

    def _handshake(self, epoch: int, last_seq: int) -> Handshake:
        hs = Handshake(self.cfg, self.t / 1e3, seqs=CountingSeq(epoch, last_seq), alive=lambda: self.alive)
        hs.set_health(True)
        return hs

    def restart(self, epoch: int) -> None:
        """A new daemon process: a new RUN_EPOCH, RESULT_SEQ counting from 1 again."""
        self.hs = self._handshake(epoch, 0)
        self.triggered.clear()

    def scan(self, n: int = 1, ms: int = 1) -> None:
        for _ in range(n):
            self.t += ms
            now = self.t / 1e3
            self.hs.tick(now)
            self.fb.block_b = self.lay.encode_b(self.hs.outputs())
            self.fb.now_ms = self.t & plc_sim.U32
            self.fb.scan()
            if self.fb.verdict_new:
                assert self.fb.verdict_part_id not in self.verdicts, "two verdicts for one part"
                self.verdicts[self.fb.verdict_part_id] = (self.fb.verdict_pass, self.fb.verdict_code)
            self.hs.on_inputs(self.lay.decode_a(self.fb.block_a), now)
            while self.hs.events:
                ev = self.hs.events.popleft()
                if isinstance(ev, TriggerSeen):
                    self.triggered.append(ev.part_id)
                elif isinstance(ev, RecipeRequested):
                    self.recipe_asked.append(ev.recipe_no)

    def until(self, cond: Any, limit_ms: int = 10_000) -> None:
        end = self.t + limit_ms
        while not cond():
            assert self.t < end, "condition not reached"
            self.scan()

    def part(self, pid: int) -> None:
        """A part arrives at the camera and waits there until the FB has taken it."""
        fb = self.fb
        fb.part_request, fb.part_id = True, pid
        self.until(lambda: fb.part_taken)
        fb.part_request = False
        self.scan()

    def result(self, pid: int, ok: bool, code: int = 0, recipe: int = 0) -> None:
        self.hs.push_result(Result(pid, ok, code, 0.5, 3.0, self.t / 1e3, recipe))

    def up(self) -> None:
        self.until(lambda: self.fb.vision_up)


def test_every_part_gets_its_own_verdict_and_only_an_ok_result_passes() -> None:
    b = Bench()
    b.up()
    for pid in range(1, 41):
        b.part(pid)
        b.until(lambda pid=pid: pid in b.triggered)
        b.result(pid, ok=pid % 3 != 0, code=0 if pid % 3 else 4)
    b.until(lambda: len(b.verdicts) == 40)
    assert b.verdicts == {p: (p % 3 != 0, 0 if p % 3 else 4) for p in range(1, 41)}
    assert (b.fb.passed, b.fb.rejected, b.fb.unknown_results, b.fb.seq_gaps) == (27, 13, 0, 0)
    b.until(lambda: b.fb.ready)  # TRIGGER_ACK of the last part dropped: the next part would go at once
    assert b.fb.in_flight == 0


def test_restart_rejects_parts_in_flight_and_seq_1_of_the_new_run_is_latched() -> None:
    b = Bench(epoch=7)
    b.up()
    b.part(1)
    b.until(lambda: 1 in b.triggered)
    b.result(1, ok=True)
    b.until(lambda: 1 in b.verdicts)
    for pid in (2, 3):
        b.part(pid)
        b.until(lambda pid=pid: pid in b.triggered)
    assert b.fb.latch_seq == 1  # part 1 was shown with RESULT_SEQ 1
    b.restart(epoch=8)  # parts 2 and 3 will never get a result; the new process counts from 1 again
    b.until(lambda: {2, 3} <= set(b.verdicts))
    assert b.verdicts[2] == b.verdicts[3] == (False, plc_sim.REJ_RESTART) and b.fb.restarts == 1
    b.up()
    b.part(4)
    b.until(lambda: 4 in b.triggered)
    b.result(4, ok=True)  # RESULT_SEQ 1 again, RUN_EPOCH 8: a new result, not "already latched"
    b.until(lambda: 4 in b.verdicts)
    assert b.verdicts[4] == (True, 0) and (b.fb.latch_epoch, b.fb.latch_seq) == (8, 1)


def test_stale_vision_heartbeat_rejects_parts_and_stops_triggering() -> None:
    b = Bench()
    b.up()
    b.part(1)
    b.until(lambda: 1 in b.triggered)
    b.alive = False  # the pipeline stalls: the daemon stops its heartbeat
    b.until(lambda: 1 in b.verdicts, limit_ms=3000)
    assert b.verdicts[1] == (False, plc_sim.REJ_VISION_LOST) and b.fb.lnk_step == plc_sim.LNK_LOST
    b.fb.part_request, b.fb.part_id = True, 2
    b.scan(500)
    assert not b.fb.part_taken and 2 not in b.triggered  # no trigger while the vision system is lost
    b.result(1, ok=True)  # the late result is acknowledged, counted, and changes nothing
    b.alive = True
    b.until(lambda: b.fb.part_taken)
    assert b.verdicts[1] == (False, plc_sim.REJ_VISION_LOST) and b.fb.unknown_results == 1


def test_part_without_result_times_out_and_a_late_result_is_only_acknowledged() -> None:
    b = Bench()
    b.fb.result_timeout_ms = 300
    b.up()
    b.part(1)
    b.until(lambda: 1 in b.verdicts, limit_ms=1000)
    assert b.verdicts[1] == (False, plc_sim.REJ_TIMEOUT)
    b.result(1, ok=True)
    b.until(lambda: b.fb.unknown_results == 1)
    b.until(lambda: not b.hs.outputs().result_valid)  # acknowledged all the same: the buffer moves on


def test_part_gone_before_its_trigger_is_rejected() -> None:
    b = Bench()  # the vision system never comes up (no heartbeat change yet): nothing can be triggered
    b.fb.part_request, b.fb.part_id = True, 5
    b.scan(3)
    b.fb.part_request = False
    b.scan(2)
    assert b.verdicts == {5: (False, plc_sim.REJ_NOT_TRIGGERED)} and b.triggered == []


def test_recipe_load_ack_fail_and_a_result_judged_by_another_recipe() -> None:
    b = Bench()
    b.up()
    b.fb.recipe_load, b.fb.recipe_no = True, 3
    b.until(lambda: b.recipe_asked == [3])
    b.hs.recipe_answer(3, True)
    b.until(lambda: not b.fb.recipe_busy)
    b.fb.recipe_load = False
    assert b.fb.recipe_done and not b.fb.recipe_error and b.fb.expect_recipe == 3
    for pid, judged_by in ((1, 3), (2, 9)):
        b.part(pid)
        b.until(lambda pid=pid: pid in b.triggered)
        b.result(pid, ok=True, recipe=judged_by)
    b.until(lambda: len(b.verdicts) == 2)
    assert b.verdicts == {1: (True, 0), 2: (False, plc_sim.REJ_RECIPE)}
    b.scan()
    b.fb.recipe_load, b.fb.recipe_no = True, 99
    b.until(lambda: b.recipe_asked == [3, 99])
    b.hs.recipe_answer(99, False)
    b.until(lambda: not b.fb.recipe_busy)
    assert b.fb.recipe_error and not b.fb.recipe_done and b.fb.expect_recipe == 3


def test_results_lost_in_between_reject_the_skipped_parts() -> None:
    b = Bench()
    b.up()
    for pid in (1, 2, 3):
        b.part(pid)
        b.until(lambda pid=pid: pid in b.triggered)
    b.result(3, ok=True)  # results of 1 and 2 never come: 3's result proves they are lost
    b.until(lambda: len(b.verdicts) == 3)
    assert b.verdicts == {1: (False, plc_sim.REJ_SKIPPED), 2: (False, plc_sim.REJ_SKIPPED), 3: (True, 0)}


# ----------------------------------------------------------------------------- never a wrong pass


_STATUS_BITS = st.integers(0, 0x1FFF)


@st.composite
def _block_b(draw: st.DrawFn) -> list[int]:
    words = [0] * 20
    words[0] = draw(_STATUS_BITS)
    words[1] = draw(st.integers(0, 3))  # heartbeat: few values, so it sometimes stalls
    words[2], words[3] = 0, draw(st.integers(1, 4))  # RESULT_PART_ID among the parts the test triggers
    words[4] = draw(st.integers(0, 5))
    words[5] = draw(st.sampled_from([0, 0, 3, 1005]))
    words[12] = draw(st.integers(0, 2))
    words[13] = draw(st.integers(0, 2))
    return words


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_block_b(), st.booleans(), st.integers(0, 400)), min_size=1, max_size=60))
def test_never_a_pass_without_a_valid_ok_result_for_that_triggered_part(
        steps: list[tuple[list[int], bool, int]]) -> None:
    """Whatever block B shows (random words, random timing), a pass verdict for part P needs: P was sent with
    TRIGGER, and some block B seen afterwards had RESULT_VALID, OK, not NG, code 0 and RESULT_PART_ID P."""
    fb = FbInspectdVision()
    fb.enable = True
    t, next_pid = 0, 1
    triggered: set[int] = set()
    justified: set[int] = set()
    for words, request, dt in steps:
        t += dt
        if request and not fb.part_request and next_pid <= 4:
            fb.part_request, fb.part_id, next_pid = True, next_pid, next_pid + 1
        elif fb.part_request and fb.part_taken:
            fb.part_request = False
        fb.block_b, fb.now_ms = words, t
        s = words[0]
        ok_shown = s & plc_sim.M_RESULT_VALID and s & plc_sim.M_RESULT_OK and not s & plc_sim.M_RESULT_NG
        if ok_shown and words[5] == 0 and words[3] in triggered:
            justified.add(words[3])
        fb.scan()
        if fb.block_a[0] & plc_sim.C_TRIGGER:
            triggered.add(fb.block_a[2] * 65536 + fb.block_a[3])
        if fb.verdict_new and fb.verdict_pass:
            assert fb.verdict_part_id in justified, (fb.verdict_part_id, justified)
            assert fb.verdict_code == 0


# ----------------------------------------------------------------------------- make plc-demo


def test_simulator_gives_up_on_a_dead_port_with_a_clear_message() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    r = subprocess.run([sys.executable, str(REPO / "tools" / "plc_sim.py"), "modbus", "--port", str(port),
                        "--parts", "3", "--connect-timeout", "1"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"127.0.0.1:{port}" in r.stderr and "no answer" in r.stderr and "Traceback" not in r.stderr


@pytest.fixture
def fresh_clone(tmp_path: Path) -> Iterator[Path]:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=120)
    # the working tree's tools and Makefile (a clone has the committed ones; the test checks this tree's)
    for rel in ("Makefile", "tools/plc_sim.py"):
        shutil.copy2(REPO / rel, clone / rel)
    yield clone


@pytest.mark.slow
def test_make_plc_demo_finishes_on_a_fresh_clone(fresh_clone: Path) -> None:
    assert not (fresh_clone / "var").exists()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = fresh_clone / "configs" / "demo" / "station-plc.yaml"
    station = yaml.safe_load(cfg.read_text())
    station["plc"]["port"] = port
    station["metrics"] = {"enabled": False}  # 9108 may be taken on a shared machine
    cfg.write_text(yaml.safe_dump(station, sort_keys=False))
    venv = Path(sys.executable).parent.parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    r = subprocess.run(["make", "-o", f"{venv}/.installed", f"VENV={venv}", "plc-demo", "PARTS=20",
                        f"PLC_DEMO_PORT={port}"], cwd=fresh_clone, capture_output=True, text=True, timeout=300,
                       env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "20 parts triggered, 20 results, missing 0" in r.stdout, r.stdout
    assert (fresh_clone / "var" / "plc-demo.log").stat().st_size > 0
