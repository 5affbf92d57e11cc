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
``sudoers`` file) is the task itself and still runs.

The local judge's root is an overlay: its upper layer is seeded (``seed_upper``) *before* it is mounted
over the agent's layer and the rootfs, with links, copies, whiteouts and opaque directories that hide the
agent's version of every pristine part. Nothing walks or follows the agent's files (a million files in
/etc/profile.d cost nothing; a full disk does not stop the judge, whose layers live on their own tmpfs);
only the agent's upper layer is listed, for the commands it removed (``removed_commands``, as for Docker).
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

PRISTINE_DIRS = ("usr/lib", "usr/lib64", "usr/libexec", "usr/local/lib", "usr/share")
PRISTINE_ETC = ("etc/ld.so.preload", "etc/ld.so.cache", "etc/ld.so.conf", "etc/ld.so.conf.d", "etc/alternatives",
                "etc/bash.bashrc", "etc/profile", "etc/profile.d", "etc/environment", "etc/pam.d", "etc/pam.conf",
                "etc/security", "etc/sudo.conf")
PRISTINE_ETC_GLOBS = ("etc/python3*",)
COMMAND_DIRS = ("usr/bin", "usr/sbin")
JUDGE_DIR = ".judge"
EPISODE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
JUDGE_PATH = f"/{JUDGE_DIR}/bin:{EPISODE_PATH}"
JUDGE_ENV = {"HOME": "/root", "PATH": JUDGE_PATH, "TERM": "dumb", "LANG": "C.UTF-8", "USER": "root",
             "PYTHONNOUSERSITE": "1", "PYTHONSAFEPATH": "1"}
DEVICES = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8), "urandom": (1, 9), "tty": (5, 0)}
OPAQUE = "trusted.overlay.opaque"


def pristine_etc(rootfs: Path) -> list[str]:
    """The /etc entries the judge takes from the rootfs (absent there: absent in the judge too)."""
    globbed = [str(p.relative_to(rootfs)) for g in PRISTINE_ETC_GLOBS for p in sorted(rootfs.glob(g))]
    return list(PRISTINE_ETC) + globbed


def top_links(rootfs: Path) -> dict[str, str]:
    """The rootfs's top-level links (bin -> usr/bin, lib64 -> usr/lib64...)."""
    return {p.name: os.readlink(p) for p in rootfs.iterdir() if p.is_symlink()}


# -- overlay layers --------------------------------------------------------------------------------------
def is_whiteout(path: Path) -> bool:
    """An overlay whiteout: the name was removed in this layer (a 0/0 character device)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def is_opaque(path: Path) -> bool:
    """An overlay opaque directory: it hides every lower name it does not hold."""
    try:
        return os.getxattr(path, OPAQUE, follow_symlinks=False) == b"y"
    except OSError:
        return False


def _opaque_dir(path: Path) -> Path:
    path.mkdir(mode=0o755, parents=True, exist_ok=True)
    os.setxattr(path, OPAQUE, b"y", follow_symlinks=False)
    return path


def removed_commands(agent_upper: Path, rootfs: Path) -> set[str]:
    """The pristine commands (``/usr/bin/x``) that the agent's upper layer removed."""
    out: set[str] = set()
    for rel in COMMAND_DIRS:
        names = set(os.listdir(rootfs / rel))
        out |= {f"/{rel}/{n}" for n in names - _still_there(agent_upper, rel, names)}
    return out


def _still_there(agent_upper: Path, rel: str, names: set[str]) -> set[str]:
    """Which of the rootfs's ``names`` in ``rel`` a view with ``agent_upper`` on top still has: not those
    under a whiteout, nor under a directory the layer replaced (a file, a link) or made opaque without
    holding them."""
    cur, lower_shows = agent_upper, True
    for part in Path(rel).parts:
        cur = cur / part
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            return names if lower_shows else set()
        if not stat.S_ISDIR(st.st_mode):
            return set()
        lower_shows = lower_shows and not is_opaque(cur)
    entries = set(os.listdir(cur))
    gone = {n for n in entries if is_whiteout(cur / n)}
    return names - gone if lower_shows else names & (entries - gone)


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


def seed_upper(upper: Path, rootfs: Path, agent_upper: Path) -> list[tuple[Path, str]]:
    """Fill the judge overlay's empty upper layer, before it is mounted over ``agent_upper`` and the
    rootfs, so that every pristine part hides the agent's: top-level links, /proc and /dev (opaque, to
    mount on), links ``usr/lib -> /.judge/usr/lib``..., copies of the pristine /etc entries (opaque
    directories; a whiteout where the rootfs has none), ``/.judge/bin``. Returns the read-only binds to
    make once mounted: (source, path in the root): the pristine /usr at /.judge/usr."""
    for name, target in top_links(rootfs).items():
        (upper / name).symlink_to(target)
    for d in ("proc", "dev"):
        _opaque_dir(upper / d)
    for rel in PRISTINE_DIRS:
        if (rootfs / rel).is_dir() and not (rootfs / rel).is_symlink():
            (upper / rel).parent.mkdir(parents=True, exist_ok=True)
            (upper / rel).symlink_to(f"/{JUDGE_DIR}/{rel}")
    for rel in pristine_etc(rootfs):
        src, dst = rootfs / rel, upper / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir() and not src.is_symlink():
            shutil.copytree(src, dst, symlinks=True)
            for d, _, _ in os.walk(dst):
                os.setxattr(d, OPAQUE, b"y")
        elif os.path.lexists(src):
            shutil.copy2(src, dst, follow_symlinks=False)
        else:
            os.mknod(dst, stat.S_IFCHR, 0)  # a whiteout: absent, whatever the agent put there
    _opaque_dir(upper / JUDGE_DIR / "usr")
    _opaque_dir(upper / JUDGE_DIR)
    removed = removed_commands(agent_upper, rootfs)
    shadow_bin(rootfs, _opaque_dir(upper / JUDGE_DIR / "bin"),
               {rel: {n for n in os.listdir(rootfs / rel) if f"/{rel}/{n}" not in removed} for rel in COMMAND_DIRS})
    return [(rootfs / "usr", f"{JUDGE_DIR}/usr")]


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
