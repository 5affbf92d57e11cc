"""A content-addressed cache of evaluations, shared between runs (``runner.score_cache: DIR``).

Why: an ablation suite (Table 2: five runs on the same experts) or a rerun scores the same experts on the
same split again and again; at paper scale each costs minutes. A model id is the content address of its
recipe tree, which the store rebuilds bit for bit from the base and the experts, so an evaluation is
determined by:
- the model id and the digests of the base's and every expert's weight files;
- the split, the run seed (it picks the splits) and the engine settings;
- every task's name, domain and params, plus the digest of each file a param points to (datasets, prompts);
- the digest of the harness's own source (harness/, domains/, envs/): any code change starts a new cache.
Anything else that changed (a server version, the sandbox's root filesystem) is not in the key: clear the
directory when you change those. Entries are written atomically, one JSON file per evaluation.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Mapping

from harness.runner.checkpoint import atomic_write_json, read_json

REPO = Path(__file__).resolve().parents[2]
SOURCE_DIRS = ("harness", "domains", "envs")


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            h.update(chunk)
    return h.hexdigest()


def model_digest(model_dir: Path) -> str:
    """Digest of an HF directory's weights (every *.safetensors file, by name and content)."""
    files = sorted(Path(model_dir).glob("*.safetensors"))
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0" + file_digest(f).encode())
    return h.hexdigest()


def source_digest() -> str:
    h = hashlib.sha256()
    for d in SOURCE_DIRS:
        for f in sorted((REPO / d).rglob("*.py")):
            h.update(str(f.relative_to(REPO)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def _param_files(value, data_root: Path, out: dict) -> None:
    """Digests of the files that task params name (relative to the data root, or absolute)."""
    if isinstance(value, Mapping):
        for v in value.values():
            _param_files(v, data_root, out)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _param_files(v, data_root, out)
    elif isinstance(value, str) and value and len(value) < 4096:
        for p in (data_root / value, Path(value)):
            try:
                if p.is_file():
                    out[value] = file_digest(p)
                    break
            except OSError:
                continue


class ScoreCache:
    def __init__(self, root: str | Path, *, tasks: list[Mapping], seed: int, data_root: Path, engine: Mapping,
                 base_dir: Path, experts: Mapping[str, Path]):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        files: dict[str, str] = {}
        for t in tasks:
            _param_files(t.get("params", {}), Path(data_root), files)
        context = {"tasks": [dict(t) for t in tasks], "seed": seed, "data_root": str(data_root), "files": files,
                   "engine": dict(engine), "source": source_digest()}
        self.context = hashlib.sha256(json.dumps(context, sort_keys=True, default=str).encode()).hexdigest()
        self.weights = {"base": model_digest(base_dir), **{n: model_digest(p) for n, p in experts.items()}}
        self.hits = 0

    def key(self, model_id: str, split: str) -> str:
        blob = json.dumps({"context": self.context, "weights": self.weights, "model": model_id, "split": split},
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def get(self, key: str) -> dict | None:
        p = self.root / key[:2] / f"{key}.json"
        if not p.exists():
            return None
        self.hits += 1
        return read_json(p)

    def put(self, key: str, result: Mapping) -> None:
        atomic_write_json(self.root / key[:2] / f"{key}.json", dict(result))
