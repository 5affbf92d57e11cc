"""Runs inside the sandbox (standard library only): call a solution's entry point on every input.

Usage: python coding_runner.py solution.py ENTRY inputs.json results.jsonl

inputs.json: {"inputs": [[arg, ...], ...], "shapes": [...] | null, "limits": [seconds per input]}

For each input it writes one JSON line: {"i": index, "ok": true, "out": <encoding>} where the encoding is
the canonical text of the returned value (or {"sha256": ...} of it when longer than 1 MB, so a 700 MB
output never travels whole), or {"i": index, "ok": false, "error": "..."} on an exception or a timeout.
The parent decodes and compares; nothing in here is trusted.
"""

import copy
import hashlib
import json
import os
import signal
import sys
import time

INLINE_LIMIT = 1 << 20


def encode(x, out):
    """Canonical, type-tagged text of a value, streamed in pieces to ``out``."""
    if x is None:
        out("N")
    elif x is True:
        out("T")
    elif x is False:
        out("F")
    elif isinstance(x, int):
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
    elif isinstance(x, (list, tuple)):
        out("l[" if isinstance(x, list) else "t[")
        for item in x:
            encode(item, out)
        out("]")
    elif isinstance(x, (set, frozenset)):
        out("S[" if isinstance(x, set) else "Z[")
        for piece in sorted(to_text(item) for item in x):
            out(piece)
        out("]")
    elif isinstance(x, dict):
        out("d[")
        for k, v in sorted((to_text(k), to_text(v)) for k, v in x.items()):
            out(k)
            out(v)
        out("]")
    else:
        text = repr(x)
        out("r%d:" % len(text))
        out(text)


def to_text(x):
    parts = []
    encode(x, parts.append)
    return "".join(parts)


class _Sink:
    """Keeps the text while short; past INLINE_LIMIT keeps only a running sha256."""

    def __init__(self):
        self.parts, self.size, self.h = [], 0, hashlib.sha256()

    def __call__(self, s):
        b = s.encode("utf-8", "surrogatepass")
        self.h.update(b)
        if self.parts is not None:
            self.size += len(b)
            if self.size > INLINE_LIMIT:
                self.parts = None
            else:
                self.parts.append(s)

    def result(self):
        return "".join(self.parts) if self.parts is not None else {"sha256": self.h.hexdigest()}


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
    with open(inputs_path) as fh:
        spec = json.load(fh)
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
        results.write(json.dumps({"i": -1, "ok": False, "error": "load: %s: %s" % (type(exc).__name__, exc)}) + "\n")
        results.close()
        return
    for i, args in enumerate(inputs):
        try:
            call_args = copy.deepcopy(args)
            t0 = time.perf_counter()
            signal.setitimer(signal.ITIMER_REAL, limits[i])
            value = fn(*call_args)
            signal.setitimer(signal.ITIMER_REAL, 0)
            elapsed = time.perf_counter() - t0
            sink = _Sink()
            encode(value, sink)
            rec = {"i": i, "ok": True, "out": sink.result(), "s": elapsed}
        except _Timeout:
            rec = {"i": i, "ok": False, "error": "timeout"}
        except BaseException as exc:  # noqa: BLE001 - the same, per input
            signal.setitimer(signal.ITIMER_REAL, 0)
            rec = {"i": i, "ok": False, "error": "%s: %s" % (type(exc).__name__, str(exc)[:200])}
        results.write(json.dumps(rec) + "\n")
        results.flush()
    results.close()


if __name__ == "__main__":
    main()
