"""A cached Debian root filesystem for OS-task episodes (AgentBench's default image, rebuilt here).

AgentBench's OS image is Ubuntu with python3, pip, git, vim, curl, wget, unzip, zip and tree. No image
registry is reachable here, so the harness builds the equivalent from Debian packages with
``debootstrap --variant=minbase`` once, caches it by a hash of its recipe, and gives every episode a
throw-away overlay on top (envs/sandbox/rootfs_shell.py). The Docker backend imports the same tree as an
image.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

from harness.errors import HarnessError

PACKAGES = ("python3", "python3-pip", "git", "vim-tiny", "curl", "wget", "unzip", "zip", "tree", "procps",
            "iproute2", "less", "bc", "sudo", "file", "psmisc", "passwd", "login")
DEFAULT_MIRROR = "http://deb.debian.org/debian"


def cache_root() -> Path:
    return Path(os.environ.get("CYCLEQD_CACHE", Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cycleqd"))


def recipe(suite: str = "bookworm", packages=PACKAGES, mirror: str = DEFAULT_MIRROR) -> dict:
    return {"suite": suite, "packages": sorted(packages), "mirror": mirror, "variant": "minbase", "v": 1}


def rootfs_path(**kw) -> Path:
    r = recipe(**kw)
    h = hashlib.sha256(json.dumps(r, sort_keys=True).encode()).hexdigest()[:12]
    return cache_root() / "rootfs" / f"{r['suite']}-{h}"


def ensure_rootfs(**kw) -> Path:
    """The cached root filesystem, built on first use (about a minute; needs root and debootstrap)."""
    path = rootfs_path(**kw)
    if (path / ".cycleqd-complete").exists():
        return path
    if os.geteuid() != 0:
        raise HarnessError("os rootfs: building the root filesystem needs root (debootstrap)")
    if not shutil.which("debootstrap"):
        raise HarnessError("os rootfs: debootstrap not installed (apt-get install debootstrap; envs/install-system-deps.sh)")
    r = recipe(**kw)
    tmp = path.with_name(path.name + f".building{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(["debootstrap", f"--variant={r['variant']}", f"--include={','.join(r['packages'])}",
                          r["suite"], str(tmp), r["mirror"]], capture_output=True, text=True)
    if out.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise HarnessError(f"os rootfs: debootstrap failed: {(out.stdout + out.stderr).strip().splitlines()[-1:]}")
    # what AgentBench's image looks like from inside: a root home and a usable /tmp
    (tmp / "root").mkdir(exist_ok=True)
    (tmp / "tmp").chmod(0o1777)
    (tmp / ".cycleqd-complete").write_text(json.dumps(r))
    if path.exists():
        shutil.rmtree(tmp, ignore_errors=True)  # another process won the race
    else:
        os.replace(tmp, path)
    return path


if __name__ == "__main__":
    print(ensure_rootfs())
