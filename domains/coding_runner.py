"""Runs inside the sandbox (standard library only): call a solution's entry point on every input.

Usage: python -s -S coding_runner.py solution.py ENTRY inputs.marshal results.jsonl

inputs.marshal: ``marshal`` of {"inputs": [[arg, ...], ...], "shapes": [...] | None, "limits": [seconds per
input]}, written by the harness (marshal reads without importing anything; the data is the harness's own).

For each input it writes one JSON line: {"i": index, "ok": true, "out": <encoding>, "s": seconds} where the
encoding is the canonical text of the returned value (or {"sha256": ...} of it when longer than 1 Mi
characters, so a 700 MB output never travels whole), or {"i": index, "ok": false, "error": "..."} on an
exception or a timeout. A value nested deeper than MAX_DEPTH is an error (the harness decodes no deeper).
The parent decodes and compares; nothing in here is trusted (``domains/coding_protocol.py``).

Startup is most of a judgement: the interpreter runs without ``site`` (-S) and this file imports only
built-in modules (no json, re, enum, copy or hashlib at startup: ~25 ms a run).
"""

import marshal
import os
import signal
import sys
import time

try:  # json's own C string encoder, without importing json (which imports re and enum)
    from _json import encode_basestring_ascii as quote
except ImportError:  # another Python implementation
    from json import dumps as quote

INLINE_LIMIT = 1 << 20  # characters
MAX_DEPTH = 100  # = domains.coding_protocol.MAX_DEPTH


def _scalar(x):
    """The text of a value of an exact built-in scalar type, or None (the common case, without a call to
    ``encode``: outputs of millions of items are mostly these)."""
    t = type(x)
    if t is int:
        return "i%d;" % x
    if t is str:
        return "s%d:%s" % (len(x), x)
    if t is float:
        return "f%r;" % x
    if x is None:
        return "N"
    if t is bool:
        return "T" if x else "F"
    return None


def encode(x, out, depth=0):
    """Canonical, type-tagged text of a value, streamed in pieces to ``out``."""
    text = _scalar(x)
    if text is not None:
        out(text)
    elif isinstance(x, int):  # an int subclass (IntEnum...)
        out("i%d;" % x)
    elif isinstance(x, float):
        out("f%r;" % x)
    elif isinstance(x, complex):
        out("c%r;%r;" % (x.real, x.imag))
    elif isinstance(x, str):
        out("s%d:" % len(x))
        out(x)
    elif isinstance(x, (bytes, bytearray)):
        out("b%d:" % len(x))
        out(bytes(x).hex())
    elif isinstance(x, (list, tuple, set, frozenset, dict)):
        if depth >= MAX_DEPTH:
            raise ValueError("the output is nested deeper than %d levels" % MAX_DEPTH)
        if isinstance(x, (list, tuple)):
            out("l[" if isinstance(x, list) else "t[")
            for item in x:
                t = type(item)
                if t is int:  # the two commonest items, inline
                    out("i%d;" % item)
                elif t is str:
                    out("s%d:%s" % (len(item), item))
                else:
                    encode(item, out, depth + 1)
        elif isinstance(x, (set, frozenset)):
            out("S[" if isinstance(x, set) else "Z[")
            for piece in sorted(to_text(item, depth + 1) for item in x):
                out(piece)
        else:
            out("d[")
            for k, v in sorted((to_text(k, depth + 1), to_text(v, depth + 1)) for k, v in x.items()):
                out(k)
                out(v)
        out("]")
    else:
        text = repr(x)
        out("r%d:" % len(text))
        out(text)


def to_text(x, depth=0):
    parts = []
    encode(x, parts.append, depth)
    return "".join(parts)


class _Sink:
    """Keeps the text while short; past INLINE_LIMIT characters keeps only a running sha256 (of the UTF-8
    text, surrogates passed through), fed in chunks: a 1.6-million-tuple output is millions of pieces, and
    one hash update each would cost more than computing it. hashlib is imported only for long outputs."""

    CHUNK = 1 << 14  # pieces joined per hash update

    def __init__(self):
        self.parts, self.size, self.h = [], 0, None

    def __call__(self, s):
        self.parts.append(s)
        if self.h is None:
            self.size += len(s)
            if self.size <= INLINE_LIMIT:
                return
            import hashlib  # only for long outputs: its import (OpenSSL) costs milliseconds

            self.h = hashlib.sha256()
        if len(self.parts) >= self.CHUNK:
            self._flush()

    def _flush(self):
        self.h.update("".join(self.parts).encode("utf-8", "surrogatepass"))
        self.parts = []

    def result(self):
        if self.h is None:
            return "".join(self.parts)
        self._flush()
        return {"sha256": self.h.hexdigest()}


def record(i, value, elapsed):
    """The JSON line of a result, written without the json module."""
    sink = _Sink()
    encode(value, sink)
    out = sink.result()
    text = '{"sha256": "%s"}' % out["sha256"] if isinstance(out, dict) else quote(out)
    return '{"i": %d, "ok": true, "out": %s, "s": %r}\n' % (i, text, elapsed)


def failure(i, error):
    return '{"i": %d, "ok": false, "error": %s}\n' % (i, quote(error))


def reshape(value, shape):
    """Give a JSON value back the container types the task's example call uses."""
    if shape is None:
        return value
    t, e = shape["t"], shape.get("e")
    if t in ("int", "float", "complex"):
        if isinstance(value, str) and value.strip():
            for conv in ((int, float, complex) if t == "int" else (float, complex) if t == "float" else (complex,)):
                try:
                    return conv(value)
                except ValueError:
                    continue
        return value
    if t == "dict" and isinstance(value, dict):
        return {k: reshape(v, e) for k, v in value.items()}
    if isinstance(value, (list, tuple)) and t in ("tuple", "list", "set"):
        # a nested list deeper than the example shows takes the innermost container type shown
        deeper = e if e is not None and e["t"] in ("tuple", "list", "set") else shape
        items = [reshape(v, deeper if isinstance(v, list) else e) for v in value]
        return {"tuple": tuple, "list": list, "set": set}[t](items) if t in ("tuple", "list", "set") else items
    return value


def _try_reshape(args, shapes):
    if not shapes or len(shapes) != len(args):
        return args
    try:
        return [reshape(a, s) for a, s in zip(args, shapes)]
    except TypeError:  # unhashable items for a set: keep JSON's types
        return args


class _Timeout(BaseException):
    pass


def _alarm(signum, frame):
    raise _Timeout()


def main():
    sol_path, entry, inputs_path, results_path = sys.argv[1:5]
    with open(inputs_path, "rb") as fh:
        spec = marshal.load(fh)
    inputs = [_try_reshape(args, spec.get("shapes")) for args in spec["inputs"]]
    limits = [float(x) for x in spec["limits"]]
    results = open(results_path, "w")
    # what the solution prints is not judged (as in EvalPlus); keep it out of the pipes
    sys.stdout = sys.stderr = open(os.devnull, "w")
    namespace = {"__name__": "__solution__"}
    try:
        with open(sol_path) as fh:
            code = compile(fh.read(), "solution.py", "exec")
        signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, max(limits + [1.0]) * 2)
        exec(code, namespace)
        signal.setitimer(signal.ITIMER_REAL, 0)
        fn = namespace[entry]
    except BaseException as exc:  # noqa: BLE001 - the solution may raise anything, SystemExit included
        results.write(failure(-1, "load: %s: %s" % (type(exc).__name__, exc)))
        results.close()
        return
    # each input's arguments are fresh objects (one run, one call per input): no copy needed
    for i, args in enumerate(inputs):
        try:
            t0 = time.perf_counter()
            signal.setitimer(signal.ITIMER_REAL, limits[i])
            value = fn(*args)
            signal.setitimer(signal.ITIMER_REAL, 0)
            line = record(i, value, time.perf_counter() - t0)
        except _Timeout:
            line = failure(i, "timeout")
        except BaseException as exc:  # noqa: BLE001 - the same, per input
            signal.setitimer(signal.ITIMER_REAL, 0)
            line = failure(i, "%s: %s" % (type(exc).__name__, str(exc)[:200]))
        results.write(line)
        results.flush()
    results.close()


if __name__ == "__main__":
    main()
