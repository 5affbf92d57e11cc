"""``cycleqd`` command line: run, resume, report, merge, replay, leaderboard, doctor.

It imports the core only: domains, envs and leaderboards are reached through the registries
(``harness/registry.py``), so what the help and ``doctor`` list is what a config can name.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections import Counter
from pathlib import Path

from harness import scale_bench
from harness.config import DEFAULT_DATA_ROOT
from harness.domain import DomainContext, build_domain
from harness.errors import ConfigError, HarnessError
from harness.leaderboard import Leaderboard
from harness.merging.streaming import merge_checkpoints
from harness.registry import ALL as ALL_REGISTRIES
from harness.registry import (
    CODE_SANDBOXES,
    EPISODE_SHELLS,
    LEADERBOARDS,
    MERGE_METHODS,
    RUN_REPORTS,
    SQL_BACKENDS,
    load_ref,
)
from harness.runner.runner import RESULTS, resume_run, run_from_config
from harness.transcript import PREFIX as TRANSCRIPT
from harness.transcript import transcript_agent


def _cmd_run(a) -> int:
    run_dir, _ = run_from_config(a.config, a.overrides, run_dir=a.run_dir, overwrite=a.overwrite)
    print(RUN_REPORTS.get("main_table")(run_dir))
    print(f"run directory: {run_dir}")
    return 0


def _cmd_resume(a) -> int:
    resume_run(a.run_dir)
    print(RUN_REPORTS.get("main_table")(a.run_dir))
    return 0


def _cmd_report(a) -> int:
    written = RUN_REPORTS.get("files")(a.run_dir, a.generation)
    if (Path(a.run_dir) / RESULTS).exists():
        print(RUN_REPORTS.get("main_table")(a.run_dir))
    for k, p in written.items():
        print(f"{k}: {p}")
    return 0


def _cmd_bench(a) -> int:
    report = scale_bench.run(int(float(a.params)), a.generations, a.mutation, Path(a.root) if a.root else None,
                             device=a.device)
    if a.json:
        print(json.dumps(report))
    else:
        print(json.dumps(report, indent=1))
    return 0


def _cmd_spread(a) -> int:
    summary = RUN_REPORTS.get("seed_spread")([Path(d) for d in a.reports], Path(a.out))
    print((Path(a.out) / "spread.md").read_text(), end="")
    return 0 if summary else 1


def _cmd_join(a) -> int:
    RUN_REPORTS.get("mini_join")(Path(a.table1), Path(a.table2), Path(a.out))
    print((Path(a.out) / "tables.md").read_text(), end="")
    return 0


def _cmd_merge(a) -> int:
    params = {}
    for kv in a.param:
        k, _, v = kv.partition("=")
        if k == "weights":
            params[k] = tuple(float(x) for x in v.split(","))
        elif k == "seed":
            params[k] = int(v)
        else:  # numbers, or a named rule (trim_count=floor_min1, ties_zero_sign=positive)
            try:
                params[k] = float(v)
            except ValueError:
                params[k] = v
    spec = MERGE_METHODS.get(a.method).spec(**params)
    print(merge_checkpoints(a.base, a.models, spec, a.out))
    return 0


def _options_epilog(name: str) -> str:
    """The leaderboard's own options for its ``--help`` (they are parsed from the unknown arguments, so
    argparse does not list them itself)."""
    opts = LEADERBOARDS.get(name).options
    lines = [f"  --{k.replace('_', '-')} {'{' + ','.join(c) + '}' if c else 'VALUE'}  {h} (default: {d or 'none'})"
             for k, (c, d, h) in opts.items()]
    return ("its own options:\n" + "\n".join(lines)) if lines else ""


def _leaderboard_options(board: Leaderboard, extra: list[str]) -> dict[str, str]:
    """``--key value`` / ``--key=value`` pairs a leaderboard declares (e.g. ``--engine vllm`` for mini)."""
    opts = {k: default for k, (_, default, _) in board.options.items()}
    i = 0
    while i < len(extra):
        tok = extra[i]
        key, eq, val = tok[2:].partition("=") if tok.startswith("--") else ("", "", "")
        key = key.replace("-", "_")
        if key not in board.options:
            raise ConfigError(f"leaderboard {board.name}: unknown option {tok!r} (options: "
                              f"{['--' + k for k in board.options] or 'none'})")
        if not eq:
            i += 1
            if i >= len(extra):
                raise ConfigError(f"leaderboard {board.name}: option --{key} needs a value")
            val = extra[i]
        choices = board.options[key][0]
        if choices and val not in choices:
            raise ConfigError(f"leaderboard {board.name}: --{key} {val!r} is not one of {list(choices)}")
        opts[key] = val
        i += 1
    return opts


def _cmd_leaderboard(a) -> int:
    """Run a registered leaderboard (``cycleqd leaderboard NAME``; ``cycleqd mini`` and ``cycleqd sam`` are
    its short names) and optionally compare it with a committed reference."""
    board: Leaderboard = LEADERBOARDS.get(a.name)
    opts = _leaderboard_options(board, a.extra)
    report = board.run("full" if a.full else "quick", a.seed, Path(a.out) if a.out else None, not a.quiet, **opts)
    out_dir = Path(report["out_dir"])
    print((out_dir / board.summary_file).read_text())
    print(f"report: {out_dir / 'index.html'}")
    if a.check:
        ref_path = Path(a.check) / "report.json" if Path(a.check).is_dir() else Path(a.check)
        if not ref_path.is_file():
            raise HarnessError(f"--check: no reference report at {ref_path}")
        problems = board.compare(report, json.loads(ref_path.read_text()))
        if problems:
            print(f"regression check against {ref_path}: {len(problems)} difference(s) beyond tolerance",
                  file=sys.stderr)
            for p in problems:
                print(f"  - {p}", file=sys.stderr)
            return 1
        print(f"regression check against {ref_path}: within tolerance")
    return 0


def _replay_agent(dom, spec: str):
    """``gold`` and the domain's other scripted agents, or ``transcript:FILE`` (recorded replies)."""
    if spec.startswith(TRANSCRIPT):
        if not hasattr(dom, "sample_id"):
            raise HarnessError(f"domain {dom.name!r} does not name its samples: it cannot replay a transcript")
        return transcript_agent(spec[len(TRANSCRIPT):], [dom.sample_id(i) for i in range(len(dom.samples()))])
    return dom.scripted_agent(spec)


def _cmd_replay(a) -> int:
    """Run a dataset through the real protocol, envs and judge with a scripted agent or a transcript.
    Exit status: 0 when every sample was judged, 3 when any ended in a harness error (the sandbox or the
    server failed: no verdict), 2 for bad input."""
    params = {"data": str(Path(a.data).resolve())} if a.data else {}
    if a.backend:
        params["backend"] = a.backend
    for kv in a.param:
        k, _, v = kv.partition("=")
        params[k] = json.loads(v) if v[:1] in "[{0123456789-tfn" and v not in ("-",) else v
    data_root = Path(a.data_root or os.environ.get("CYCLEQD_DATA", DEFAULT_DATA_ROOT))
    dom = build_domain(a.domain, task=a.domain, ctx=DomainContext(None, a.seed, data_root), params=params)
    try:
        dom.setup()
        res = dom.run(_replay_agent(dom, a.agent), None, progress=sys.stderr.isatty() and not a.json)
        counts = Counter(s.status.value for s in res.samples)
        harness = res.harness_failures
        n = len(res.samples)
        solved = counts.get("solved", 0)
        plus = sum(s.detail.get("plus") is True for s in res.samples) if any("plus" in s.detail for s in res.samples) \
            else None  # MBPP+: the second column
        if a.json:
            print(json.dumps({"domain": a.domain, "agent": a.agent, "quality": res.quality, "solved": solved,
                              "total": n, "harness_failures": harness, "statuses": dict(sorted(counts.items())),
                              **({"plus": plus} if plus is not None else {})}))
        else:
            print(f"{a.domain} replay, agent={a.agent}: quality {res.quality:.4f} over {n} samples")
            print(f"solved {solved}/{n} ({solved / max(n, 1):.1%}); excluding {harness} harness-side failures: "
                  f"{solved}/{n - harness} ({solved / max(n - harness, 1):.1%})")
            print("statuses: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
            if plus is not None:
                print(f"plus: {plus}/{n} ({plus / max(n, 1):.1%})")
        if a.show_failures:
            for s in res.samples:
                if s.score < 1:
                    print(f"  {s.sample_id}: {s.status.value}: " + json.dumps(s.detail, ensure_ascii=False)[:300],
                          file=sys.stderr if a.json else sys.stdout)
        if a.agent == "gold" and hasattr(dom, "reference_query_rate") and not a.json:
            hit, total = dom.reference_query_rate()
            print(f"information: questions whose sql.query reproduces the label: {hit}/{total}")
    finally:
        dom.close()
    if harness:
        print(f"cycleqd: {harness} of {n} samples ended in a harness error (no verdict): see --show-failures",
              file=sys.stderr)
        return 3
    return 0


def _cmd_doctor(a) -> int:
    ok = load_ref("envs.doctor:report", "doctor")()  # envs is reached by name only (layering)
    print("registered:")
    for kind, reg in ALL_REGISTRIES.items():
        aliases = ", ".join(f"{x}={n}" for x, n in sorted(reg.aliases().items()))
        print(f"  {kind}: {', '.join(reg.names())}" + (f" (aliases: {aliases})" if aliases else ""))
    return 0 if ok or not a.strict else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cycleqd", description="CycleQD: quality-diversity model merging")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="start a run from a config (`cycleqd doctor` lists every registered name it may use)")
    r.add_argument("config")
    r.add_argument("overrides", nargs="*", help="key=value overrides, e.g. qd.generations=50")
    r.add_argument("--run-dir", default=None)
    r.add_argument("--overwrite", action="store_true", help="start over in a run dir that holds a run")
    r.set_defaults(fn=_cmd_run)
    s = sub.add_parser("resume", help="continue a stopped or killed run exactly")
    s.add_argument("run_dir")
    s.set_defaults(fn=_cmd_resume)
    t = sub.add_parser("report", help="write leaderboard tables and elite maps for a run")
    t.add_argument("run_dir")
    t.add_argument("--generation", type=int, default=None, help="archive snapshot for the heatmaps")
    t.set_defaults(fn=_cmd_report)
    b = sub.add_parser("bench", help="scale: the paper-scale path (store, merges, mutations, archives) on a "
                                     "Llama-shaped model of N random parameters, memory and time measured")
    b.add_argument("what", choices=["scale"])
    b.add_argument("--params", default="1e9", help="model size (default 1e9)")
    b.add_argument("--generations", type=int, default=40)
    b.add_argument("--mutation", default="svd_official")
    b.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    b.add_argument("--root", default=None, help="where the models are cached (default ~/.cache/cycleqd/bench-scale)")
    b.add_argument("--json", action="store_true", help="one JSON line")
    b.set_defaults(fn=_cmd_bench)
    sp = sub.add_parser("spread", help="several seeds' leaderboard reports as one table: mean ± std per row, "
                                       "CycleQD above / within / below each baseline's spread")
    sp.add_argument("out", help="output directory (spread.md, spread.json, index.html)")
    sp.add_argument("reports", nargs="+", help="directories holding a report.json (one per seed)")
    sp.set_defaults(fn=_cmd_spread)
    jn = sub.add_parser("join", help="two sittings of one mini experiment (--tables 1 and --tables 2: same world, "
                                     "variant and seed) as one report; refuses sittings that scored a model differently")
    jn.add_argument("out", help="output directory (tables.md, report.json, verdicts.json, index.html)")
    jn.add_argument("table1", help="the sitting that ran Table 1 (a folder with report.json)")
    jn.add_argument("table2", help="the sitting that ran Table 2")
    jn.set_defaults(fn=_cmd_join)
    m = sub.add_parser("merge", help=f"merge HF checkpoints ({', '.join(MERGE_METHODS.names())})")
    m.add_argument("method")
    m.add_argument("--base", required=True)
    m.add_argument("--out", required=True)
    m.add_argument("--param", action="append", default=[], help="e.g. density=0.2, weights=0.5,0.5")
    m.add_argument("models", nargs="+")
    m.set_defaults(fn=_cmd_merge)
    rp = sub.add_parser("replay", help="run a dataset through a domain's protocol, env and judge with a scripted agent "
                                       "or recorded replies; exit 3 when any sample ends in a harness error")
    rp.add_argument("domain")
    rp.add_argument("--agent", default="gold", help="gold | wrong | a domain's named wrong agent | transcript:FILE "
                                                    '(JSON lines {"id": SAMPLE_ID, "replies": [REPLY, ...]})')
    rp.add_argument("--data", default=None, help="a dataset file in the domain's format (default: the shared one)")
    rp.add_argument("--backend", default=None,
                    help=f"a registered kind: SQL backends {' | '.join(SQL_BACKENDS.names())} (db); episode shells "
                         f"{' | '.join(EPISODE_SHELLS.names())} (os); code sandboxes {' | '.join(CODE_SANDBOXES.names())} "
                         "(coding); 'local' is each one's default")
    rp.add_argument("--data-root", default=None)
    rp.add_argument("--seed", type=int, default=0)
    rp.add_argument("--param", action="append", default=[], help="extra domain parameter key=value")
    rp.add_argument("--show-failures", action="store_true")
    rp.add_argument("--json", action="store_true", help="print one JSON object (solved, total, statuses, ...)")
    rp.set_defaults(fn=_cmd_replay)
    def leaderboard_args(parser, name=None):
        if name is None:
            parser.add_argument("name", help=f"registered: {', '.join(LEADERBOARDS.names())}")
        parser.add_argument("--full", action="store_true", help="the full reference run (default: the quick variant)")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--out", default=None, help="output directory (default: runs/<name>-<variant>-seed<seed>)")
        parser.add_argument("--quiet", action="store_true")
        parser.add_argument("--check", default=None, metavar="REFERENCE",
                            help="compare with a reference (a report.json or its directory); exit 1 beyond tolerance")
        parser.set_defaults(fn=_cmd_leaderboard, extra=[], **({"name": name} if name else {}))

    lb = sub.add_parser("leaderboard", help="run a registered leaderboard (its own options, e.g. mini's --engine, "
                                            "follow as --key value)")
    leaderboard_args(lb)
    for name in LEADERBOARDS.names():  # short names: `cycleqd mini` = `cycleqd leaderboard mini`
        leaderboard_args(sub.add_parser(name, help=f"= cycleqd leaderboard {name}", epilog=_options_epilog(name),
                                        formatter_class=argparse.RawDescriptionHelpFormatter), name)
    dr = sub.add_parser("doctor", help="which backends work on this machine, and why not")
    dr.add_argument("--strict", action="store_true", help="exit 1 when any backend is unavailable")
    dr.set_defaults(fn=_cmd_doctor)
    return p


def _log_to_stderr(quiet: bool) -> None:
    """The harness's own log (logger ``cycleqd``: heartbeats during long evaluations) on stderr; --quiet
    keeps warnings only. Other libraries' loggers are left as they are."""
    logger = logging.getLogger("cycleqd")
    if not logger.handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(asctime)s cycleqd: %(message)s", "%H:%M:%S"))
        logger.addHandler(h)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may come after options too (`run CONFIG --run-dir D qd.bins=10`)
    if args.fn is _cmd_leaderboard:
        args.extra = extra
        extra = []
    overrides = [e for e in extra if "=" in e and not e.startswith("-")]
    if args.cmd != "run" and overrides or len(overrides) != len(extra):
        parser.error(f"unrecognized arguments: {' '.join(e for e in extra if e not in overrides or args.cmd != 'run')}")
    if args.cmd == "run":
        args.overrides = list(args.overrides) + overrides
    _log_to_stderr(quiet=bool(getattr(args, "quiet", False)))
    try:
        return args.fn(args)
    except (HarnessError, ValueError, FileNotFoundError) as exc:
        print(f"cycleqd: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cycleqd: interrupted; continue with `cycleqd resume RUN_DIR`", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
