"""A seccomp filter that denies new user namespaces, for the OS episode (which runs as real root).

Why: inside a user namespace of its own, even a root without capabilities gets them all back over new
mount and cgroup namespaces: it can mount the v1 cgroup hierarchies and, its uid being the host's root,
write ``max`` to its own ``pids.max`` and memory limit. The coding sandbox gets the same protection from
bubblewrap's ``--disable-userns``; the episode shell (``unshare`` + ``chroot``, real uids for ``useradd``
and ``su``) has no such switch, so every process of it inherits this filter, installed between fork and
exec: ``unshare`` and ``clone`` with CLONE_NEWUSER fail with EPERM; ``clone3``, whose flags a filter cannot
read, fails with ENOSYS (the C library then falls back to ``clone``); any other ABI (x32, i386) fails with
EPERM. Everything else is allowed (Docker's own profile is the model: the same denial, by the same means).
"""

from __future__ import annotations

import ctypes
import errno
import platform
import struct

CLONE_NEWUSER = 0x10000000
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
RET_ALLOW = 0x7FFF0000
RET_ERRNO = 0x00050000
# (audit arch, unshare, clone, clone3, first number of a foreign sub-ABI or None)
ARCHES = {"x86_64": (0xC000003E, 272, 56, 435, 0x40000000), "aarch64": (0xC00000B7, 97, 220, 435, None)}
LD_W_ABS, JEQ, JGE, JSET, RET = 0x20, 0x15, 0x35, 0x45, 0x06
NR, ARCH, ARG0 = 0, 4, 16  # offsets in struct seccomp_data


def _program(arch: str) -> list[tuple[int, int, int, int]]:
    audit, unshare, clone, clone3, foreign = ARCHES[arch]
    deny, nosys = RET_ERRNO | errno.EPERM, RET_ERRNO | errno.ENOSYS
    prog = [(LD_W_ABS, 0, 0, ARCH), (JEQ, 1, 0, audit), (RET, 0, 0, deny), (LD_W_ABS, 0, 0, NR)]
    if foreign is not None:
        prog += [(JGE, 0, 1, foreign), (RET, 0, 0, deny)]
    prog += [(JEQ, 0, 1, clone3), (RET, 0, 0, nosys),
             (JEQ, 1, 0, unshare), (JEQ, 0, 3, clone),
             (LD_W_ABS, 0, 0, ARG0), (JSET, 0, 1, CLONE_NEWUSER), (RET, 0, 0, deny),
             (RET, 0, 0, RET_ALLOW)]
    return prog


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class NoUserNamespaces:
    """The compiled filter, built once in the parent; ``install()`` is called in the child (a
    ``preexec_fn``) and needs CAP_SYS_ADMIN (no ``no_new_privs``: setuid ``sudo`` must keep working)."""

    def __init__(self) -> None:
        arch = platform.machine()
        if arch not in ARCHES:
            raise OSError(f"seccomp: no filter for {arch} (known: {', '.join(ARCHES)})")
        prog = _program(arch)
        self._buf = ctypes.create_string_buffer(b"".join(struct.pack("<HBBI", *ins) for ins in prog))
        self._fprog = _SockFprog(len(prog), ctypes.addressof(self._buf))
        self._prctl = ctypes.CDLL(None, use_errno=True).prctl
        self._prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]

    def install(self) -> None:
        if self._prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(self._fprog), 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "seccomp: the filter was refused")


_FILTER: list[NoUserNamespaces] = []


def no_user_namespaces() -> NoUserNamespaces:
    """The process-wide filter object (built on first use)."""
    if not _FILTER:
        _FILTER.append(NoUserNamespaces())
    return _FILTER[0]
