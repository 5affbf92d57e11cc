"""Streaming safetensors reader and writer.

Why our own: the safetensors library maps whole files, and every page it touches counts towards the
process's resident set; merging three 16 GB checkpoints that way needs tens of GB of RSS. Here a tensor is
read with one ``readinto`` into a fresh buffer and written with one ``write``, so peak memory is a few
tensors, whatever the checkpoint size. The on-disk format is the standard one (files written here load
with ``safetensors.torch.load_file`` and the other way round).

Format: 8-byte little-endian header length N, N bytes of JSON ``{name: {dtype, shape, data_offsets}}``
(plus an optional ``__metadata__`` string map), then the raw little-endian tensor bytes.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch

from harness.errors import CheckpointError

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
_MAX_HEADER = 100 * 1024 * 1024


@dataclass(frozen=True)
class TensorMeta:
    """Where one tensor lives in a file and what it is."""

    dtype: torch.dtype
    shape: tuple[int, ...]
    begin: int  # absolute byte offset in the file
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def _element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


class SafetensorsReader:
    """Random access to the tensors of one ``.safetensors`` file without mapping it."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            self._fh = open(self.path, "rb")
        except OSError as exc:
            raise CheckpointError(f"{self.path}: cannot open ({exc.strerror})") from None
        self.metadata, self._metas = self._parse_header()

    def _parse_header(self) -> tuple[dict, dict[str, TensorMeta]]:
        size = os.fstat(self._fh.fileno()).st_size
        raw = self._fh.read(8)
        if len(raw) != 8:
            raise CheckpointError(f"{self.path}: not a safetensors file (shorter than 8 bytes)")
        (n,) = struct.unpack("<Q", raw)
        if n > _MAX_HEADER or 8 + n > size:
            raise CheckpointError(f"{self.path}: not a safetensors file (header length {n} is invalid)")
        try:
            header = json.loads(self._fh.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise CheckpointError(f"{self.path}: corrupt safetensors header (not JSON)") from None
        if not isinstance(header, dict):
            raise CheckpointError(f"{self.path}: corrupt safetensors header (not an object)")
        metadata = header.pop("__metadata__", None) or {}
        base = 8 + n
        metas: dict[str, TensorMeta] = {}
        for name, info in header.items():
            try:
                dtype = DTYPES[info["dtype"]]
                shape = tuple(int(s) for s in info["shape"])
                b, e = (int(x) for x in info["data_offsets"])
            except (KeyError, TypeError, ValueError):
                raise CheckpointError(
                    f"{self.path}: tensor {name!r} has a bad header entry {info!r}"
                ) from None
            numel = 1
            for s in shape:
                numel *= s
            if e - b != numel * _element_size(dtype) or b < 0 or base + e > size:
                raise CheckpointError(
                    f"{self.path}: tensor {name!r} offsets {b}..{e} do not match shape {shape} "
                    f"or exceed the file (truncated file?)"
                )
            metas[name] = TensorMeta(dtype, shape, base + b, base + e)
        # tensors must not share bytes: a crafted header could alias two parameters (or make one tensor
        # read another's data)
        spans = sorted((m.begin, m.end, k) for k, m in metas.items() if m.end > m.begin)
        for (_, e1, k1), (b2, _, k2) in zip(spans, spans[1:]):
            if b2 < e1:
                raise CheckpointError(f"{self.path}: tensors {k1!r} and {k2!r} overlap in the file (corrupt header)")
        return metadata, metas

    def keys(self) -> list[str]:
        return list(self._metas)

    def meta(self, name: str) -> TensorMeta:
        try:
            return self._metas[name]
        except KeyError:
            raise CheckpointError(f"{self.path}: no tensor named {name!r}") from None

    def read(self, name: str, scratch: torch.Tensor | None = None) -> torch.Tensor:
        """Read one tensor into fresh memory (no mapping, so RSS is just this tensor).

        With ``scratch`` (a uint8 tensor of at least the tensor's size) the bytes land there instead and the
        result is a view of it: a loop over tensors then allocates nothing, which saves the page faults of
        fresh allocations (a third of a streamed merge's time).
        """
        m = self.meta(name)
        if scratch is not None and scratch.numel() >= m.nbytes:
            buf = scratch[: m.nbytes]
        else:
            buf = torch.empty(m.nbytes, dtype=torch.uint8)
        if m.nbytes:
            self._fh.seek(m.begin)
            got = self._fh.readinto(memoryview(buf.numpy()))
            if got != m.nbytes:
                raise CheckpointError(f"{self.path}: tensor {name!r} is truncated")
        return buf.view(m.dtype).reshape(m.shape)

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "SafetensorsReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class SafetensorsWriter:
    """Writes a safetensors file tensor by tensor, in the order declared up front.

    The header needs every tensor's shape and dtype before the first byte of data, so the caller declares
    them (``metas``: name -> (dtype, shape)) and then calls ``write`` for each name in that order. The file
    appears at ``path`` only on ``close()`` (written to a temporary name, fsynced, renamed), so a killed
    writer never leaves a half file under the real name.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        metas: Mapping[str, tuple[torch.dtype, tuple[int, ...]]],
        metadata: Mapping[str, str] | None = None,
        durable: bool = True,
    ):
        self.path = Path(path)
        self.durable = durable  # fsync before the rename (False: a cache that can be rebuilt)
        self._order = list(metas)
        self._metas = dict(metas)
        header: dict = {}
        if metadata:
            header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
        offset = 0
        for name in self._order:
            dtype, shape = self._metas[name]
            numel = 1
            for s in shape:
                numel *= int(s)
            nbytes = numel * _element_size(dtype)
            header[name] = {
                "dtype": DTYPE_NAMES[dtype],
                "shape": [int(s) for s in shape],
                "data_offsets": [offset, offset + nbytes],
            }
            offset += nbytes
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)
        self._tmp = self.path.with_name(f".{self.path.name}.tmp{os.getpid()}")
        self._fh = open(self._tmp, "wb")
        self._fh.write(struct.pack("<Q", len(blob)))
        self._fh.write(blob)
        self._next = 0

    def write(self, name: str, tensor: torch.Tensor) -> None:
        if self._next >= len(self._order) or self._order[self._next] != name:
            expected = self._order[self._next] if self._next < len(self._order) else "nothing"
            raise ValueError(f"SafetensorsWriter: got {name!r}, expected {expected!r}")
        dtype, shape = self._metas[name]
        if tensor.dtype != dtype or tuple(tensor.shape) != tuple(shape):
            raise ValueError(
                f"SafetensorsWriter: {name!r} is {tensor.dtype}{tuple(tensor.shape)}, "
                f"declared {dtype}{tuple(shape)}"
            )
        t = tensor.detach().contiguous().cpu()
        if t.numel():
            self._fh.write(memoryview(t.view(-1).view(torch.uint8).numpy()))
        self._next += 1

    def close(self) -> None:
        if self._next != len(self._order):
            self.abort()
            raise ValueError(f"SafetensorsWriter: {len(self._order) - self._next} tensors never written")
        self._fh.flush()
        if self.durable:
            os.fsync(self._fh.fileno())
        self._fh.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        self._fh.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> "SafetensorsWriter":
        return self

    def __exit__(self, exc_type, *rest) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def save_state_dict(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor]) -> None:
    """Write a whole in-memory state dict atomically."""
    metas = {k: (v.dtype, tuple(v.shape)) for k, v in tensors.items()}
    with SafetensorsWriter(path, metas) as w:
        for k, v in tensors.items():
            w.write(k, v)


class CheckpointReader:
    """All tensors of an HF model directory (one file or shards with an index) behind one lookup."""

    INDEX = "model.safetensors.index.json"
    SINGLE = "model.safetensors"

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise CheckpointError(f"{self.directory}: model directory does not exist")
        index = self.directory / self.INDEX
        if index.exists():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise CheckpointError(f"{index}: corrupt shard index (no weight_map)") from None
            files = sorted(set(weight_map.values()))
        elif (self.directory / self.SINGLE).exists():
            files = [self.SINGLE]
        else:
            found = sorted(p.name for p in self.directory.glob("*.safetensors"))
            if not found:
                raise CheckpointError(f"{self.directory}: no *.safetensors weights in the model directory")
            files = found
        self._readers = {f: SafetensorsReader(self.directory / f) for f in files}
        self._where: dict[str, SafetensorsReader] = {}
        for reader in self._readers.values():
            for k in reader.keys():
                self._where[k] = reader

    def keys(self) -> list[str]:
        return sorted(self._where)

    def meta(self, name: str) -> TensorMeta:
        return self._reader(name).meta(name)

    def read(self, name: str, scratch: torch.Tensor | None = None) -> torch.Tensor:
        return self._reader(name).read(name, scratch)

    def _reader(self, name: str) -> SafetensorsReader:
        try:
            return self._where[name]
        except KeyError:
            raise CheckpointError(f"{self.directory}: no tensor named {name!r}") from None

    def signature(self) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
        return {k: (self.meta(k).dtype, self.meta(k).shape) for k in self.keys()}

    def close(self) -> None:
        for r in self._readers.values():
            r.close()

    def __enter__(self) -> "CheckpointReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check_compatible(base: CheckpointReader, other: CheckpointReader) -> None:
    """Raise a one-line CheckpointError naming the first key or shape that differs."""
    a, b = base.signature(), other.signature()
    missing = sorted(set(a) - set(b))
    extra = sorted(set(b) - set(a))
    if missing:
        raise CheckpointError(f"{other.directory}: incompatible with {base.directory}: missing tensor {missing[0]!r}")
    if extra:
        raise CheckpointError(f"{other.directory}: incompatible with {base.directory}: unexpected tensor {extra[0]!r}")
    for k in a:
        if a[k][1] != b[k][1]:
            raise CheckpointError(
                f"{other.directory}: incompatible with {base.directory}: tensor {k!r} has shape "
                f"{list(b[k][1])}, base has {list(a[k][1])}"
            )
        if a[k][0] != b[k][0]:
            # a task vector across dtypes (an F16 expert of a BF16 base) measures the cast, not the fine-tune
            raise CheckpointError(
                f"{other.directory}: incompatible with {base.directory}: tensor {k!r} is {DTYPE_NAMES[b[k][0]]}, "
                f"base is {DTYPE_NAMES[a[k][0]]} (convert the checkpoint to the base's dtype first)"
            )
