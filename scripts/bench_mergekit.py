#!/usr/bin/env python
"""``cycleqd merge`` against mergekit: parity (float32) and whole-process speed and peak RSS (bf16).

Both tools run as subprocesses; mergekit lives only in its own environment (``--mk-venv``, holding
``mergekit-yaml``) and is never imported here or by the harness. The orchestrating process imports no torch,
so each child's ``ru_maxrss`` (from ``os.wait4``) is that child's own peak.

    python -m venv ~/bench-mk-venv
    ~/bench-mk-venv/bin/pip install torch==2.13.0
    echo torch==2.13.0 > c.txt && ~/bench-mk-venv/bin/pip install -c c.txt mergekit
    PYTHONPATH=. .venv/bin/python scripts/bench_mergekit.py --mk-venv ~/bench-mk-venv

Checkpoints are Llama-shaped (``harness.scale_bench.llama_shape``): a base and three experts (base plus
N(0, 0.002) on every matrix), cached under ``--root``. Parity: float32 checkpoints of ``--parity-params``;
speed: bf16 checkpoints of ``--speed-params`` (both tools compute in float32 and write bf16). Each round runs,
per method, ours then mergekit, then the reference (read the four input files, write and fsync one output's
bytes); the table holds the medians over ``--runs`` rounds.

Parameters (the same merge in each tool's terms; weights 0.6, 0.3, 0.4, lambda 0.9):

- task_arithmetic: ours ``scale=0.9``; mergekit ``lambda: 0.9`` (its ``normalize`` default is false).
- linear: ours ``linear`` (= ``mean`` with weights: base + sum w_i tau_i / sum w_i); mergekit ``linear``
  (sum w_i m_i / sum w_i, ``normalize`` default true). No lambda.
- ties: ours ``density=0.2 trim_count=floor_min1 ties_zero_sign=positive`` (mergekit's rules);
  mergekit ``density: 0.2`` (its ``normalize`` default is true: the disjoint mean).
- dare_linear / dare_ties: ours ``drop_p=0.9``; mergekit ``density: 0.1``; dare_ties with ``normalize:
  true`` (ours divides by the agreeing weights; mergekit's default for dare_ties does not). Random masks, and
  mergekit rescales survivors to the tensor's L1 norm where ours divides by 1 - p: speed only, no parity.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = (0.6, 0.3, 0.4)
LAMBDA = 0.9
DENSITY = 0.2
DROP_P = 0.9
PARITY_METHODS = ("task_arithmetic", "linear", "ties")
METHODS = ("task_arithmetic", "linear", "ties", "dare_linear", "dare_ties")
EXPERTS = ("e1", "e2", "e3")


# --- the same merge in each tool's terms ---------------------------------------------------------------

def ours_args(method: str) -> tuple[str, list[str]]:
    w = ["weights=" + ",".join(str(x) for x in WEIGHTS)]
    if method == "task_arithmetic":
        return "task_arithmetic", w + [f"scale={LAMBDA}"]
    if method == "linear":
        return "linear", w
    if method == "ties":
        return "ties", w + [f"scale={LAMBDA}", f"density={DENSITY}", "trim_count=floor_min1",
                            "ties_zero_sign=positive"]
    if method in ("dare_linear", "dare_ties"):
        return method, w + [f"scale={LAMBDA}", f"drop_p={DROP_P}", "seed=0"]
    raise ValueError(method)


def mk_yaml(method: str, ck: dict[str, Path], compute_dtype: str, out_dtype: str) -> str:
    per_model: dict = {}
    shared: dict = {}
    if method == "task_arithmetic":
        shared = {"lambda": LAMBDA}
    elif method == "ties":
        per_model, shared = {"density": DENSITY}, {"lambda": LAMBDA}
    elif method == "dare_linear":
        per_model, shared = {"density": round(1 - DROP_P, 6)}, {"lambda": LAMBDA}
    elif method == "dare_ties":
        per_model, shared = {"density": round(1 - DROP_P, 6)}, {"lambda": LAMBDA, "normalize": True}
    lines = [f"merge_method: {method}", f"dtype: {compute_dtype}", f"out_dtype: {out_dtype}"]
    if method != "linear":
        lines.append(f"base_model: {ck['base']}")
    lines.append("models:")
    for name, w in zip(EXPERTS, WEIGHTS):
        lines += [f"  - model: {ck[name]}", "    parameters:", f"      weight: {w}"]
        lines += [f"      {k}: {v}" for k, v in per_model.items()]
    if shared:
        lines.append("parameters:")
        lines += [f"  {k}: {str(v).lower() if isinstance(v, bool) else v}" for k, v in shared.items()]
    return "\n".join(lines) + "\n"


# --- checkpoints ---------------------------------------------------------------------------------------

def build(root: Path, n_params: float, dtype_name: str) -> dict[str, Path]:
    """Base + three experts (cached: a marker file says complete); runs in a child (imports torch)."""
    from harness.scale_bench import llama_shape

    shape = llama_shape(int(n_params))
    d = root / f"llama-{shape.hidden}x{shape.layers}-v{shape.vocab}-{dtype_name}"
    ck = {"base": d / "base", **{e: d / e for e in EXPERTS}}
    if not (d / "complete").exists():
        subprocess.run([sys.executable, __file__, "--_build", str(d), str(int(n_params)), dtype_name],
                       check=True, env=_env())
    return ck


def _build_child(d: Path, n_params: int, dtype_name: str) -> None:
    import torch

    from harness.merging.safetensors_io import SafetensorsReader, SafetensorsWriter
    from harness.scale_bench import llama_shape
    from harness.seeding import tensor_generator

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype_name]
    shape = llama_shape(n_params)
    metas = {k: (dtype, s) for k, s in shape.tensors().items()}
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": shape.hidden,
              "intermediate_size": shape.intermediate, "num_hidden_layers": shape.layers,
              "num_attention_heads": shape.heads, "num_key_value_heads": shape.kv_heads,
              "vocab_size": shape.vocab, "rms_norm_eps": 1e-5, "max_position_embeddings": 2048,
              "tie_word_embeddings": False, "torch_dtype": dtype_name}
    for i, name in enumerate(("base",) + EXPERTS):
        path = d / name
        path.mkdir(parents=True, exist_ok=True)
        src = SafetensorsReader(d / "base" / "model.safetensors") if i else None
        with SafetensorsWriter(path / "model.safetensors", metas, {"format": "pt"}, durable=False) as w:
            for k, s in shape.tensors().items():
                g = tensor_generator(i, "bench-mk", k)
                if src is not None:
                    t = src.read(k).float()
                    if len(s) > 1:
                        t += 0.002 * torch.randn(s, generator=g)
                else:
                    t = torch.ones(s) if len(s) == 1 else 0.02 * torch.randn(s, generator=g)
                w.write(k, t.to(dtype))
        if src is not None:
            src.close()
        (path / "config.json").write_text(json.dumps(config))
    (d / "complete").write_text("ok")


# --- timed children ------------------------------------------------------------------------------------

def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def timed(cmd: list[str], log: Path, env: dict | None = None) -> tuple[float, int]:
    """Whole-process wall seconds and peak RSS (bytes) of one child."""
    with open(log, "ab") as fh:
        fh.write(("\n$ " + " ".join(cmd) + "\n").encode())
        fh.flush()
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=fh, stderr=fh, env=env or _env())
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise RuntimeError(f"{cmd[0]} ... exited {p.returncode}; see {log}")
    return wall, ru.ru_maxrss * 1024


def ours_cmd(method: str, ck: dict[str, Path], out: Path, python: str) -> list[str]:
    name, params = ours_args(method)
    cmd = [python, "-m", "harness.cli", "merge", name, "--base", str(ck["base"]), "--out", str(out)]
    for p in params:
        cmd += ["--param", p]
    return cmd + [str(ck[e]) for e in EXPERTS]


def mk_cmd(method: str, ck: dict[str, Path], out: Path, mk_venv: Path, work: Path, compute_dtype: str,
           out_dtype: str) -> list[str]:
    cfg = work / f"mk-{method}-{out_dtype}.yaml"
    cfg.write_text(mk_yaml(method, ck, compute_dtype, out_dtype))
    return [str(mk_venv / "bin" / "mergekit-yaml"), str(cfg), str(out), "--no-copy-tokenizer",
            "--no-write-model-card", "--quiet", "--random-seed", "0"]


def _copy_child(out: Path, inputs: list[Path]) -> None:
    """The I/O floor: read every input byte, write one output's bytes (the base's size), fsync."""
    buf = bytearray(64 << 20)
    view = memoryview(buf)
    size = inputs[0].stat().st_size
    with open(out, "wb") as fo:
        for i, path in enumerate(inputs):
            with open(path, "rb") as fi:
                while n := fi.readinto(view):
                    if i == 0:
                        fo.write(view[:n])
        assert fo.tell() == size
        fo.flush()
        os.fsync(fo.fileno())


def weight_files(d: Path) -> list[Path]:
    return sorted(d.glob("*.safetensors"))


# --- parity --------------------------------------------------------------------------------------------

def _parity_child(ours: Path, theirs: Path, base: Path, experts: list[Path], trim_density: float) -> None:
    """Per tensor: max |a - b| / max |b| and ||a - b|| / ||b|| of the merged weights, the same of the merged
    task vectors (a - base), and how many entries differ at all. With ``trim_density`` > 0 (TIES), entries
    where some expert's |tau| equals its trim threshold exactly are counted apart (``at_threshold_ties``):
    which of several equal magnitudes a trim keeps is a tie-break (ours: first by position; mergekit: the
    order its unstable argsort leaves), and the worst figures are also given without them. One JSON line."""
    import torch

    from harness.merging.safetensors_io import CheckpointReader

    a, b, z = CheckpointReader(ours), CheckpointReader(theirs), CheckpointReader(base)
    ex = [CheckpointReader(e) for e in experts]
    keys = ("max_rel", "norm_rel", "tv_max_rel", "tv_norm_rel")
    worst, worst_nt = dict.fromkeys(keys, 0.0), dict.fromkeys(keys, 0.0)
    where = dict.fromkeys(keys, "")
    differ = total = at_ties = 0
    if set(a.keys()) != set(b.keys()):
        raise SystemExit(f"tensor names differ: {sorted(set(a.keys()) ^ set(b.keys()))[:5]}")

    def measure(d, y, tv):
        return {"max_rel": float(d.max() / y.abs().max().clamp_min(1e-30)),
                "norm_rel": float(d.norm() / y.norm().clamp_min(1e-30)),
                "tv_max_rel": float(d.max() / tv.abs().max().clamp_min(1e-30)),
                "tv_norm_rel": float(d.norm() / tv.norm().clamp_min(1e-30))}

    for k in a.keys():
        x, y, base_t = a.read(k).double(), b.read(k).double(), z.read(k)
        if x.shape != y.shape or a.meta(k).dtype != b.meta(k).dtype:
            raise SystemExit(f"{k}: {a.meta(k)} vs {b.meta(k)}")
        d = (x - y).abs()
        tv = y - base_t.double()
        vals = measure(d, y, tv)
        for m, v in vals.items():
            if v > worst[m]:
                worst[m], where[m] = v, k
        n_diff = int((d != 0).sum())
        if n_diff and trim_density > 0:
            tie = torch.zeros(d.shape, dtype=torch.bool)
            n = d.numel()
            kk = max(1, int(trim_density * n))
            for e in ex:
                mag = (e.read(k).float() - base_t.float()).abs()
                thr = torch.kthvalue(mag.reshape(-1), n - kk + 1).values
                tie |= mag == thr
            explained = tie & (d != 0)
            at_ties += int(explained.sum())
            d = torch.where(explained, 0.0, d)
            vals = measure(d, y, tv)
        for m, v in vals.items():
            worst_nt[m] = max(worst_nt[m], v)
        differ += n_diff
        total += d.numel()
    print(json.dumps({"worst": worst, "where": where, "entries_differing": differ, "entries": total,
                      "at_threshold_ties": at_ties, "worst_without_threshold_ties": worst_nt}))


# --- main ----------------------------------------------------------------------------------------------

def median(xs):
    return statistics.median(xs) if xs else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mk-venv", type=Path, default=Path(os.environ.get("CYCLEQD_MERGEKIT_VENV",
                                                                        "~/bench-mk-venv")).expanduser())
    ap.add_argument("--root", type=Path, default=Path.home() / ".cache" / "cycleqd-bench-mergekit")
    ap.add_argument("--parity-params", type=float, default=6e7, help="float32 parity checkpoints (0: skip)")
    ap.add_argument("--speed-params", type=float, default=5.5e8, help="bf16 speed checkpoints (0: skip)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--tolerance", type=float, default=1e-6)
    ap.add_argument("--allow-threshold-ties", action="store_true",
                    help="exit 0 when every difference beyond the tolerance sits at an exact magnitude tie at a "
                         "TIES trim threshold (a tie-break, see _parity_child)")
    ap.add_argument("--_build", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--_copy", nargs="+", help=argparse.SUPPRESS)
    ap.add_argument("--_parity", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a._build:
        _build_child(Path(a._build[0]), int(a._build[1]), a._build[2])
        return 0
    if a._copy:
        _copy_child(Path(a._copy[0]), [Path(p) for p in a._copy[1:]])
        return 0
    if a._parity:
        ours, theirs, base, density, *experts = a._parity
        _parity_child(Path(ours), Path(theirs), Path(base), [Path(e) for e in experts], float(density))
        return 0

    methods = [m for m in a.methods.split(",") if m]
    work = a.root / "work"
    work.mkdir(parents=True, exist_ok=True)
    log = work / "bench.log"
    mk = a.mk_venv
    py = sys.executable
    versions = {"mergekit": _mk_version(mk), "python": sys.version.split()[0],
                "torch_ours": _torch_version(py), "torch_mergekit": _torch_version(str(mk / "bin" / "python")),
                "cpus": os.cpu_count()}
    result: dict = {"versions": versions, "weights": WEIGHTS, "lambda": LAMBDA, "density": DENSITY,
                    "drop_p": DROP_P, "tolerance": a.tolerance}
    ok = True

    if a.parity_params:
        ck = build(a.root, a.parity_params, "float32")
        parity = {}
        for m in [m for m in methods if m in PARITY_METHODS]:
            o, t = work / f"p-ours-{m}", work / f"p-mk-{m}"
            for d in (o, t):
                shutil.rmtree(d, ignore_errors=True)
            timed(ours_cmd(m, ck, o, py), log)
            timed(mk_cmd(m, ck, t, mk, work, "float32", "float32"), log)
            density = DENSITY if m == "ties" else 0.0
            out = subprocess.run([py, __file__, "--_parity", str(o), str(t), str(ck["base"]), str(density)]
                                 + [str(ck[e]) for e in EXPERTS], env=_env(),
                                 capture_output=True, text=True, check=True).stdout
            rep = json.loads(out.strip().splitlines()[-1])
            w, wn = rep["worst"], rep["worst_without_threshold_ties"]
            rep["pass"] = w["max_rel"] <= a.tolerance and w["norm_rel"] <= a.tolerance
            rep["pass_without_threshold_ties"] = wn["max_rel"] <= a.tolerance and wn["norm_rel"] <= a.tolerance
            ok &= rep["pass_without_threshold_ties"] if a.allow_threshold_ties else rep["pass"]
            parity[m] = rep
            print(f"parity {m}: worst max-rel {w['max_rel']:.2e} norm-rel {w['norm_rel']:.2e}"
                  f" (of the task vector: {w['tv_max_rel']:.2e} / {w['tv_norm_rel']:.2e}),"
                  f" {rep['entries_differing']} of {rep['entries']} entries differ"
                  f" ({rep['at_threshold_ties']} at exact magnitude ties at a trim threshold; without them"
                  f" max-rel {wn['max_rel']:.2e}) -> {'PASS' if rep['pass'] else 'FAIL'}"
                  f"{'' if rep['pass'] else ' (PASS without threshold ties)' if rep['pass_without_threshold_ties'] else ''}",
                  flush=True)
        result["parity"] = {"params": a.parity_params, "dtype": "float32",
                            "checkpoint_bytes": sum(f.stat().st_size for f in weight_files(ck["base"])),
                            "methods": parity}

    if a.speed_params:
        ck = build(a.root, a.speed_params, "bfloat16")
        inputs = [weight_files(ck[n])[0] for n in ("base",) + EXPERTS]
        one = inputs[0].stat().st_size
        raw: dict = {m: {"ours": [], "mergekit": []} for m in methods}
        copies = []
        copy_cmd = [py, __file__, "--_copy", str(work / "copy.bin")] + [str(p) for p in inputs]
        timed(copy_cmd, log)  # warm the page cache
        for r in range(a.runs):
            for m in methods:
                for tool in ("ours", "mergekit"):
                    out = work / f"s-{tool}-{m}"
                    shutil.rmtree(out, ignore_errors=True)
                    cmd = ours_cmd(m, ck, out, py) if tool == "ours" else mk_cmd(m, ck, out, mk, work, "float32",
                                                                                  "bfloat16")
                    wall, rss = timed(cmd, log)
                    raw[m][tool].append({"s": wall, "rss": rss})
                    print(f"round {r + 1} {m:16s} {tool:8s} {wall:7.2f} s  {rss / 1e9:.2f} GB", flush=True)
                    shutil.rmtree(out, ignore_errors=True)
            wall, rss = timed(copy_cmd, log)
            copies.append({"s": wall, "rss": rss})
            print(f"round {r + 1} read+write+fsync    {wall:7.2f} s", flush=True)
        copy_s = median([c["s"] for c in copies])
        rows = {}
        for m in methods:
            o_s = median([x["s"] for x in raw[m]["ours"]])
            t_s = median([x["s"] for x in raw[m]["mergekit"]])
            o_r = median([x["rss"] for x in raw[m]["ours"]])
            t_r = median([x["rss"] for x in raw[m]["mergekit"]])
            rows[m] = {"ours_s": o_s, "mergekit_s": t_s, "speedup": t_s / o_s, "copy_ratio": o_s / copy_s,
                       "ours_peak_rss": o_r, "mergekit_peak_rss": t_r, "ours_rss_ratio": o_r / one,
                       "mergekit_rss_ratio": t_r / one,
                       "goals": {"3x_mergekit": t_s / o_s >= 3, "2x_copy": o_s / copy_s <= 2,
                                 "rss_1.3x": o_r / one <= 1.3}}
        result["speed"] = {"params": a.speed_params, "dtype": "bfloat16", "checkpoint_bytes": one,
                           "runs": a.runs, "copy_s": copy_s, "copies": copies, "methods": rows, "raw": raw}
        print()
        print(table(result))
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0 if ok else 1


def table(result: dict) -> str:
    sp = result["speed"]
    lines = [f"{sp['checkpoint_bytes'] / 1e9:.2f} GB bf16 checkpoints (base + 3), medians of {sp['runs']} "
             f"interleaved runs; read of the 4 inputs + fsynced write of 1 output: {sp['copy_s']:.2f} s", "",
             "| method | ours (s) | mergekit (s) | mergekit / ours | ours / read+write | ours peak RSS "
             "(x one checkpoint) | mergekit peak RSS |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for m, r in sp["methods"].items():
        lines.append(f"| {m} | {r['ours_s']:.2f} | {r['mergekit_s']:.2f} | {r['speedup']:.2f}x | "
                     f"{r['copy_ratio']:.2f}x | {r['ours_peak_rss'] / 1e9:.2f} GB ({r['ours_rss_ratio']:.2f}x) | "
                     f"{r['mergekit_peak_rss'] / 1e9:.2f} GB ({r['mergekit_rss_ratio']:.2f}x) |")
    return "\n".join(lines)


def _mk_version(mk: Path) -> str:
    out = subprocess.run([str(mk / "bin" / "python"), "-c",
                          "import importlib.metadata as m; print(m.version('mergekit'))"],
                         capture_output=True, text=True)
    return out.stdout.strip() or "?"


def _torch_version(python: str) -> str:
    out = subprocess.run([python, "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True)
    return out.stdout.strip() or "?"


if __name__ == "__main__":
    sys.exit(main())
