"""Siemens SCL from the portable Structured Text, and back.

`to_scl` turns tools/plc/FB_InspectdVision.st into the TIA Portal external source
tools/plc/siemens/FB_InspectdVision.scl: the block name quoted, the block attribute and VERSION lines,
BEGIN between the declarations and the code, and `#` before every name the block declares (TIA's
notation for locals). Nothing else changes, so the SCL block is the same state machine.

`to_iec` undoes exactly those SCL notations (and quotes around global names) so blark, an IEC 61131-3
parser of the Beckhoff/CODESYS dialect, can parse any of the SCL files in tools/plc/siemens/.

  python tools/plc/scl.py           # regenerate siemens/FB_InspectdVision.scl
  python tools/plc/scl.py --check   # exit 1 if it is out of date (tests do the same)
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "FB_InspectdVision.st"
TARGET = HERE / "siemens" / "FB_InspectdVision.scl"

# comments, strings, identifiers, anything else: enough of the ST lexicon to edit names outside comments
_TOKEN = re.compile(r"\(\*.*?\*\)|//[^\n]*|'[^']*'|\"[^\"]*\"|[A-Za-z_][A-Za-z0-9_]*|\s+|.", re.S)
_DECL_BLOCK = re.compile(r"^\s*VAR(_INPUT|_OUTPUT|_IN_OUT|_TEMP)?(\s+CONSTANT)?\s*$")
_DECL_NAME = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*:")
_HEADER = ("// GENERATED from tools/plc/FB_InspectdVision.st by tools/plc/scl.py -- edit that file, then run\n"
           "// `python tools/plc/scl.py`. TIA Portal: External source files > Add new external file, then\n"
           "// \"Generate blocks from source\" (tools/plc/README.md).\n")


def declared_names(st: str) -> set[str]:
    """Every name declared in the VAR sections of the (single) POU in `st`."""
    names, inside = set(), False
    for line in _strip_comments(st).splitlines():
        if _DECL_BLOCK.match(line):
            inside = True
        elif line.strip().upper().startswith("END_VAR"):
            inside = False
        elif inside and (m := _DECL_NAME.match(line)):
            names.add(m.group(1))
    return names


def _strip_comments(st: str) -> str:
    return "".join(_blank(t) if t.startswith(("(*", "//")) else t for t in _TOKEN.findall(st))


def _blank(comment: str) -> str:
    """A comment replaced by its newlines only, so line structure survives."""
    return "\n" * comment.count("\n")


def to_scl(st: str) -> str:
    """The portable FB as a TIA Portal SCL external source."""
    names = declared_names(st)
    m = re.search(r"^FUNCTION_BLOCK\s+([A-Za-z_][A-Za-z0-9_]*)\s*$", st, re.M)
    if not m:
        raise ValueError("no FUNCTION_BLOCK line")
    last_end_var = max(mm.end() for mm in re.finditer(r"^\s*END_VAR\s*$", st, re.M))
    head, body = st[:last_end_var], st[last_end_var:]
    head = (head[:m.start()] + f'FUNCTION_BLOCK "{m.group(1)}"\n{{ S7_Optimized_Access := \'TRUE\' }}\n'
            f"VERSION : 0.1" + head[m.end():])
    out, prev = [], ""
    for tok in _TOKEN.findall(body):
        if tok in names and prev not in (".", "#"):
            tok = "#" + tok
        out.append(tok)
        if not tok.isspace():
            prev = tok[-1] if len(tok) == 1 else tok
    return _HEADER + head + "\n\nBEGIN" + "".join(out)


def to_iec(scl: str) -> str:
    """SCL external source -> the Structured Text blark parses: drop VERSION/BEGIN/NON_RETAIN lines, `#name` ->
    `name`, `"name"` -> `name`. Block attributes `{ ... }` stay: blark ignores them as pragmas."""
    out = []
    for tok in _TOKEN.findall(scl):
        if tok.startswith('"') and re.fullmatch(r'"[A-Za-z_][A-Za-z0-9_]*"', tok):
            tok = tok[1:-1]
        out.append(tok)
    text = "".join(out)
    text = re.sub(r"(?<![A-Za-z0-9_])#(?=[A-Za-z_])", "", text)
    return re.sub(r"^\s*(VERSION\s*:\s*[0-9.]+|BEGIN|NON_RETAIN)\s*$", "", text, flags=re.M)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="only check that the SCL file is up to date")
    args = p.parse_args(argv)
    want = to_scl(SOURCE.read_text())
    if args.check:
        if TARGET.read_text() != want:
            print(f"{TARGET}: out of date; run python tools/plc/scl.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(want)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
