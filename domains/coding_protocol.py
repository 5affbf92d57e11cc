"""What leaves the coding sandbox, parsed as hostile: the runner's result records and output encodings.

The model's code runs in the same interpreter as ``coding_runner.py``: it can rewrite the results file,
replace ``json.dumps`` or write any bytes it likes. So nothing read back is trusted. A record line is
size-capped, checked for nesting before ``json.loads`` (the C decoder recurses once per bracket: 3000
nested lists raise RecursionError in the harness) and held to a strict schema; an output encoding is
decoded without recursion, to a bounded depth. Any violation raises ``ProtocolViolation``, which the
judge turns into the program's failure (``invalid_action`` for a model, a harness error for a reference),
never into an exception elsewhere.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_LINE = 16 << 20  # one record: an inline output is at most 1 Mi characters, up to 12 bytes each escaped
MAX_DEPTH = 100  # nesting of a returned value; the runner refuses to encode deeper ones (the same number)
MAX_ERROR = 300  # characters of an error message kept in a verdict's detail

_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_INT = re.compile(r"-?[0-9]+")
_LENGTH = re.compile(r"[0-9]+")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class ProtocolViolation(ValueError):
    """Something read back from the sandbox breaks the result protocol (one line: what and where)."""


class Opaque(str):
    """A value only known by its repr (an object of another type): compared by that text."""


# -- result records -------------------------------------------------------------------------------------
def _reject_constant(name: str) -> Any:
    raise ProtocolViolation(f"{name} is not a JSON number")


def _loads_flat(line: bytes) -> Any:
    """``json.loads`` of a line whose nesting, outside strings, is at most that of a record (2)."""
    if line.count(b"{") + line.count(b"[") > 2:  # brackets may be inside strings: look closer
        skeleton = _JSON_STRING.sub(b"", line)
        if skeleton.count(b"{") + skeleton.count(b"[") > 2:
            raise ProtocolViolation("nested deeper than a result record")
    try:
        return json.loads(line, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise ProtocolViolation(f"not a JSON record ({str(exc)[:80]})") from None


def _is_number(x: Any) -> bool:
    return type(x) in (int, float) and math.isfinite(x)


def check_record(rec: Any, n: int) -> dict:
    """A record of the runner's schema (see coding_runner.py), its output decoded into ``value``."""
    if not isinstance(rec, dict):
        raise ProtocolViolation(f"a record is a JSON {type(rec).__name__}, not an object")
    i, ok = rec.get("i"), rec.get("ok")
    if type(i) is not int or not -1 <= i < n:
        raise ProtocolViolation(f"record index {str(i)[:40]!r} is not an integer in [-1, {n})")
    if type(ok) is not bool:
        raise ProtocolViolation(f"record {i}: 'ok' is {str(ok)[:40]!r}, not true or false")
    want = {"i", "ok", "out", "s"} if ok else {"i", "ok", "error"}
    if set(rec) != want:
        raise ProtocolViolation(f"record {i}: keys {sorted(rec)[:6]}, expected {sorted(want)}")
    if not ok:
        if not isinstance(rec["error"], str):
            raise ProtocolViolation(f"record {i}: 'error' is not a string")
        return {"i": i, "ok": False, "error": rec["error"][:MAX_ERROR]}
    if i == -1:
        raise ProtocolViolation("record -1 (the program failed to load) cannot be a success")
    if not _is_number(rec["s"]) or rec["s"] < 0:
        raise ProtocolViolation(f"record {i}: 's' is not a finite number of seconds")
    return {"i": i, "ok": True, "out": rec["out"], "s": rec["s"], "value": decode_output(rec["out"])}


def parse_records(raw: bytes | None, n: int) -> list[dict]:
    """The records of a results file for ``n`` inputs, in file order. A last line without its newline was
    cut by a kill (the rest never ran) and is dropped; every complete line must be a valid record, and no
    index may repeat."""
    if not raw:
        return []
    records, seen, pos, number = [], set(), 0, 0
    while pos < len(raw):
        end = raw.find(b"\n", pos, pos + MAX_LINE + 1)
        number += 1
        if end == -1:
            if len(raw) - pos > MAX_LINE:
                raise ProtocolViolation(f"results line {number}: longer than {MAX_LINE} bytes")
            break  # the unterminated last line
        line, pos = raw[pos:end], end + 1
        try:
            rec = check_record(_loads_flat(line), n)
        except ProtocolViolation as exc:
            raise ProtocolViolation(f"results line {number}: {exc}") from None
        if rec["i"] in seen:
            raise ProtocolViolation(f"results line {number}: a second record for input {rec['i']}")
        seen.add(rec["i"])
        records.append(rec)
    return records


# -- output encodings -----------------------------------------------------------------------------------
def _number(text: str, conv) -> Any:
    try:
        return conv(text)
    except (ValueError, OverflowError) as exc:  # an int over Python's 4300-digit conversion limit, "1.2.3"
        raise ProtocolViolation(f"bad number {text[:40]!r} ({str(exc)[:60]})") from None


def _container(tag: str, items: list) -> Any:
    if tag == "l":
        return items
    if tag == "t":
        return tuple(items)
    try:
        if tag == "d":
            if len(items) % 2:
                raise ProtocolViolation("a dict encoding with a key but no value")
            return dict(zip(items[0::2], items[1::2]))
        return set(items) if tag == "S" else frozenset(items)
    except TypeError:  # an unhashable member or key
        raise ProtocolViolation(f"unhashable item in a {'dict' if tag == 'd' else 'set'} encoding") from None


def _decode_text(t: str) -> Any:
    """The runner's type-tagged text (``coding_runner.encode``), decoded with an explicit stack."""
    stack: list[tuple[str, list]] = []
    i, n = 0, len(t)
    while True:
        if i >= n:
            raise ProtocolViolation("truncated output encoding")
        tag = t[i]
        i += 1
        if tag in "ltSZd":
            if t[i : i + 1] != "[":
                raise ProtocolViolation(f"container tag {tag!r} without '['")
            if len(stack) >= MAX_DEPTH:
                raise ProtocolViolation(f"output nested deeper than {MAX_DEPTH} levels")
            stack.append((tag, []))
            i += 1
            continue
        if tag == "]":
            if not stack:
                raise ProtocolViolation("']' closes no container")
            value = _container(*stack.pop())
        elif tag == "N":
            value = None
        elif tag in "TF":
            value = tag == "T"
        elif tag in "ifc":
            parts = []
            for _ in range(2 if tag == "c" else 1):
                j = t.find(";", i)
                if j == -1:
                    raise ProtocolViolation("truncated number")
                parts.append(t[i:j])
                i = j + 1
            if tag == "i":
                if not _INT.fullmatch(parts[0]):
                    raise ProtocolViolation(f"bad integer {parts[0][:40]!r}")
                value = _number(parts[0], int)
            elif tag == "f":
                value = _number(parts[0], float)
            else:
                value = complex(_number(parts[0], float), _number(parts[1], float))
        elif tag in "sbr":
            j = t.find(":", i, i + 24)
            if j == -1 or not _LENGTH.fullmatch(t[i:j]):
                raise ProtocolViolation("bad length in a string encoding")
            size = int(t[i:j]) * (2 if tag == "b" else 1)
            i = j + 1
            if i + size > n:
                raise ProtocolViolation("string encoding runs past the end")
            text, i = t[i : i + size], i + size
            value = text if tag == "s" else Opaque(text) if tag == "r" else _number(text, bytes.fromhex)
        else:
            raise ProtocolViolation(f"unknown output encoding tag {tag!r}")
        if not stack:
            if i != n:
                raise ProtocolViolation("trailing text after the output encoding")
            return value
        stack[-1][1].append(value)


def decode_output(enc: Any) -> Any:
    """A value from its encoding: the tagged text, or ``{"sha256": hex}`` for an output too long to travel
    (compared as is)."""
    if isinstance(enc, dict):
        if set(enc) != {"sha256"} or not isinstance(enc["sha256"], str) or not _SHA256.fullmatch(enc["sha256"]):
            raise ProtocolViolation("an output digest is not {\"sha256\": 64 hex digits}")
        return {"sha256": enc["sha256"]}
    if not isinstance(enc, str):
        raise ProtocolViolation(f"an output encoding is a JSON {type(enc).__name__}, not a string")
    return _decode_text(enc)
