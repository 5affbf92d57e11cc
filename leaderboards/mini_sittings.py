"""Two sittings of one mini experiment as one report: ``cycleqd join OUT TABLE1_DIR TABLE2_DIR``.

Why: the full variant's Table 1 (``--tables 1``) and Table 2 (``--tables 2``) are each hours on a CPU, so
they are made in two sittings, possibly on two machines. Joining them is safe only if both scored the
same models on the same instances: same world (its cache address covers the recipe and the code that
builds it), variant, seed and tasks, and every row both sittings scored (the base, the experts and the
mean merge, which ``--tables 2`` scores for the regime) must agree exactly. Anything else is an error that
names the culprit, never a table that mixes two experiments.

The joined report is an ordinary mini report (``tables: "1+2"``): Table 1, its paired comparisons, regime
and question kinds from the first sitting; Table 2 and its paired comparisons from the second; the
per-instance verdicts of both; each sitting's speed; the stages' seconds summed over both.
"""

from __future__ import annotations

from pathlib import Path

from harness.errors import ConfigError
from harness.runner.checkpoint import atomic_write_json, read_json
from leaderboards.mini_report import write_report

SAME = ("variant", "seed", "tasks", "engine")  # what two sittings of one experiment share


def _report(d: Path, role: str, tables: tuple[str, ...]) -> dict:
    path = Path(d) / "report.json"
    if not path.exists():
        raise ConfigError(f"join: {d} has no report.json (the {role} sitting)")
    rep = read_json(path)
    if rep.get("tables", "1+2") not in tables or not rep.get(role.replace(" ", "")):
        raise ConfigError(f"join: {path} is a --tables {rep.get('tables', '1+2')} report, which has no {role} "
                          f"(want one of: {', '.join(tables)})")
    return rep


def join(table1_dir: Path, table2_dir: Path, out: Path) -> dict:
    """Write the joined report into ``out`` (``tables.md``, ``table1.csv``, ``table2.csv``, ``report.json``,
    ``verdicts.json``, ``index.html``); returns it."""
    a = _report(table1_dir, "table 1", ("1", "1+2"))
    b = _report(table2_dir, "table 2", ("2", "1+2"))
    for key in SAME:
        if a.get(key) != b.get(key):
            raise ConfigError(f"join: the sittings differ in {key}: {a.get(key)!r} ({table1_dir}) vs "
                              f"{b.get(key)!r} ({table2_dir})")
    worlds = [Path(str(r.get("world", {}).get("dir", "?"))).name for r in (a, b)]
    if worlds[0] != worlds[1]:
        raise ConfigError(f"join: the sittings ran in different worlds: {worlds[0]} ({table1_dir}) vs {worlds[1]} "
                          f"({table2_dir})")
    for label, scores in b["table1"].items():  # the rows both scored: the same models on the same instances
        if label in a["table1"] and a["table1"][label] != scores:
            raise ConfigError(f"join: the sittings disagree on {label!r}: {a['table1'][label]} ({table1_dir}) vs "
                              f"{scores} ({table2_dir}); not the same models or instances")
    verdicts = {}
    for d in (table1_dir, table2_dir):
        path = Path(d) / "verdicts.json"
        for key, row in (read_json(path) if path.exists() else {}).items():
            if key in verdicts and verdicts[key] != row:
                raise ConfigError(f"join: the sittings' verdicts differ for {key!r} ({path})")
            verdicts[key] = row
    timings = {k: a["timings"].get(k, 0.0) + b["timings"].get(k, 0.0) for k in {*a["timings"], *b["timings"]}}
    paired = {**({"table1": a["paired"]["table1"]} if "table1" in (a.get("paired") or {}) else {}),
              **({"table2": b["paired"]["table2"]} if "table2" in (b.get("paired") or {}) else {})}
    report = {**{k: v for k, v in a.items() if k not in ("table1_rows", "table2_rows", "timings_this_call")},
              "tables": "1+2", "table2": b["table2"], "paired": paired, "timings": timings,
              "speed_table2": b.get("speed", {}),
              "sittings": {"table1": str(table1_dir), "table2": str(table2_dir)}}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # the progress curves where the sittings kept them: Table 1's CycleQD run, then each Table 2 run (qd_<i>)
    main = Path(table1_dir) / "qd_table1"  # a run folder; a committed copy keeps progress.json at its top
    runs = {a.get("cycleqd_row") or "CycleQD": main if main.is_dir() else Path(table1_dir)}
    runs.update({label: Path(table2_dir) / f"qd_{i}" for i, label in enumerate(b["table2"])})
    atomic_write_json(out / "verdicts.json", verdicts)
    write_report(out, report, runs)
    return report
