"""The OS judge's view: the agent's final filesystem as data, run by a system the agent never touched.

AgentBench runs its check scripts inside the container the agent has just controlled as root: a planted
``/usr/local/bin/python3`` that exits 0 passes every ``python`` check. Here the check runs after every
process of the episode is gone, in a root whose *data* is the agent's final filesystem (so "did the agent
change the system" is still answered on its final state) but whose *machinery* comes from the pristine
root filesystem, read-only:

- interpreters and commands: ``/.judge/usr`` is the pristine /usr and ``/.judge/bin`` comes first on PATH
  (one link per pristine command that still exists in the agent's /usr/bin or /usr/sbin: a command the
  task removed stays removed, one the agent planted under another name (``calc``) is still found after
  it); the interpreter of each check (``bash``, ``python3``) resolves there;
- libraries and their configuration: /usr/lib, /usr/lib64, /usr/libexec, /usr/local/lib (Python's
  site-packages and ``.pth`` files), /usr/share, the top-level links (/lib, /lib64, /bin, /sbin), and the
  /etc files that decide what runs before a script's first line (``ld.so.preload``, ``ld.so.cache``,
  Python's ``sitecustomize``, ``alternatives``, the shells' profiles) are the pristine ones;
- the environment: ``env -i`` with PATH as above, ``PYTHONNOUSERSITE`` (no ``~/.local`` site-packages)
  and ``PYTHONSAFEPATH`` (no module from the working directory ``/``).

What the check deliberately runs of the agent's (``calc``, ``~/.bashrc``, a user's login shell, the
``sudo`` configuration) is the task itself and still runs. ``prepare`` works on the mounted view from the
host with ``lstat`` only: it never follows a link the agent left.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

PRISTINE_DIRS = ("usr/lib", "usr/lib64", "usr/libexec", "usr/local/lib", "usr/share")
PRISTINE_ETC = ("etc/ld.so.preload", "etc/ld.so.cache", "etc/ld.so.conf", "etc/ld.so.conf.d", "etc/alternatives",
                "etc/bash.bashrc", "etc/profile", "etc/profile.d", "etc/environment")
PRISTINE_ETC_GLOBS = ("etc/python3*",)
COMMAND_DIRS = ("usr/bin", "usr/sbin")
JUDGE_DIR = ".judge"
EPISODE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
JUDGE_PATH = f"/{JUDGE_DIR}/bin:{EPISODE_PATH}"
JUDGE_ENV = {"HOME": "/root", "PATH": JUDGE_PATH, "TERM": "dumb", "LANG": "C.UTF-8", "USER": "root",
             "PYTHONNOUSERSITE": "1", "PYTHONSAFEPATH": "1"}


def pristine_etc(rootfs: Path) -> list[str]:
    """The /etc entries the judge takes from the rootfs (absent there: absent in the judge too)."""
    globbed = [str(p.relative_to(rootfs)) for g in PRISTINE_ETC_GLOBS for p in sorted(rootfs.glob(g))]
    return list(PRISTINE_ETC) + globbed


def top_links(rootfs: Path) -> dict[str, str]:
    """The rootfs's top-level links (bin -> usr/bin, lib64 -> usr/lib64...)."""
    return {p.name: os.readlink(p) for p in rootfs.iterdir() if p.is_symlink()}


def _remove(path: Path) -> None:
    """Remove whatever is at ``path`` without following it."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        path.unlink()


def real_dir(root: Path, rel: str) -> Path:
    """``root/rel`` as a real directory: every component that is a link or not a directory is replaced by
    an empty one (in the judge's throw-away upper layer)."""
    cur = root
    for part in Path(rel).parts:
        cur = cur / part
        try:
            st = os.lstat(cur)
            if stat.S_ISDIR(st.st_mode):
                continue
        except FileNotFoundError:
            pass
        _remove(cur)
        cur.mkdir(mode=0o755)
    return cur


def present_commands(root: Path, rel: str) -> set[str]:
    """Names in the agent's ``root/rel`` (nothing when the agent made it a link or a file)."""
    path = root / rel
    try:
        parent_ok = all(stat.S_ISDIR(os.lstat(root / Path(*Path(rel).parts[:i + 1])).st_mode)
                        for i in range(len(Path(rel).parts)))
    except OSError:
        return set()
    return set(os.listdir(path)) if parent_ok else set()


DEVICES = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8), "urandom": (1, 9), "tty": (5, 0)}


def make_dev(path: Path) -> Path:
    """A minimal /dev made here, without a process per node (the episode's own /dev binds the host's nodes
    one by one: a dozen ``mount`` processes the judge need not wait for)."""
    path.mkdir(mode=0o755)
    for name, (major, minor) in DEVICES.items():
        os.mknod(path / name, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
        os.chmod(path / name, 0o666)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        (path / name).symlink_to(target)
    for name in ("shm", "pts"):
        (path / name).mkdir()
    (path / "shm").chmod(0o1777)
    return path


def seed_upper(upper: Path, rootfs: Path) -> None:
    """Before the judge's overlay is mounted: its (empty) upper layer gets a link per pristine library
    directory, ``usr/lib -> /.judge/usr/lib``..., which hides whatever the agent's layer has there.
    Removing those trees through the mounted view would write a whiteout per file (seconds)."""
    for rel in PRISTINE_DIRS:
        if (rootfs / rel).is_dir() and not (rootfs / rel).is_symlink():
            (upper / rel).parent.mkdir(parents=True, exist_ok=True)
            (upper / rel).symlink_to(f"/{JUDGE_DIR}/{rel}")


def prepare(root: Path, rootfs: Path) -> list[tuple[Path, Path]]:
    """Make the mounted view ``root`` (the agent's final filesystem over a throw-away upper layer) a judge
    root (``seed_upper`` first); returns the read-only binds still to make, (source in the rootfs, target
    in ``root``): the pristine /usr at ``/.judge/usr``, where the library directories' links point.
    Call only when no process of the agent is left (nothing may change the tree meanwhile)."""
    binds: list[tuple[Path, Path]] = []
    for name, target in top_links(rootfs).items():
        p = root / name
        if not (p.is_symlink() and os.readlink(p) == target):
            _remove(p)
            p.symlink_to(target)
    for d in ("proc", "dev"):
        real_dir(root, d)
    for rel in pristine_etc(rootfs):
        real_dir(root, str(Path(rel).parent))
        _remove(root / rel)
        src = rootfs / rel
        if src.is_dir() and not src.is_symlink():
            shutil.copytree(src, root / rel, symlinks=True)
        elif os.path.lexists(src):
            shutil.copy2(src, root / rel, follow_symlinks=False)
    judge = root / JUDGE_DIR
    _remove(judge)
    binds.append((rootfs / "usr", real_dir(root, f"{JUDGE_DIR}/usr")))
    shadow_bin(rootfs, real_dir(root, f"{JUDGE_DIR}/bin"), {rel: present_commands(root, rel) for rel in COMMAND_DIRS})
    return binds


def shadow_bin(rootfs: Path, bin_dir: Path, present: dict[str, set[str]]) -> None:
    """Fill ``bin_dir`` (the judge's first PATH entry) with a link per pristine command whose name the
    agent's ``present[rel]`` still has."""
    for rel in COMMAND_DIRS:
        for name in sorted(set(os.listdir(rootfs / rel)) & present.get(rel, set())):
            if not (bin_dir / name).is_symlink():
                (bin_dir / name).symlink_to(f"/{JUDGE_DIR}/{rel}/{name}")


def docker_binds(rootfs: Path, bin_dir: Path) -> list[str]:
    """The same judge for a container made from the agent's final files, as the engine's read-only binds
    (``host:container:ro``) of the pristine parts (the engine resolves a target the agent made a link
    inside the container, never on the host); ``bin_dir``: the judge's /.judge/bin, filled already
    (``shadow_bin``) without the commands the agent removed."""
    binds = [(rootfs / "usr", f"/{JUDGE_DIR}/usr")]
    binds += [(rootfs / rel, f"/{rel}") for rel in PRISTINE_DIRS
              if (rootfs / rel).is_dir() and not (rootfs / rel).is_symlink()]
    # /lib64 -> usr/lib64: the ELF interpreter's path, whatever the agent made of the link
    binds += [(rootfs / target, f"/{name}") for name, target in top_links(rootfs).items() if target in PRISTINE_DIRS]
    for rel in pristine_etc(rootfs):
        src = rootfs / rel
        if src.is_symlink():
            continue  # none in the list is one; a link would point on the host
        if src.exists():
            binds.append((src, f"/{rel}"))
        elif rel == "etc/ld.so.preload":
            binds.append((Path("/dev/null"), f"/{rel}"))  # absent in the rootfs: empty, nothing preloaded
    binds.append((bin_dir, f"/{JUDGE_DIR}/bin"))
    return [f"{src}:{dst}:ro" for src, dst in binds]
