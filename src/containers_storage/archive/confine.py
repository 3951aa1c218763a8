"""Path resolution that cannot leave a directory: the confinement primitive of the archive engine.

Tarballs are hostile: a name may contain ``..``, be absolute, or run through a symlink that an
earlier entry planted.  Every path is therefore resolved relative to a directory fd with the
semantics of ``chroot`` (``..`` at the root stays at the root, absolute symlink targets start at the
root), by the kernel's ``openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`` where it exists and by
an ``O_NOFOLLOW`` walk of the components, one ``openat`` each, where it does not.
"""

from __future__ import annotations

import errno
import os
import stat

from .. import TYPE_CHECKING
from .accel import fastapply

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = [
    "READ_FLAGS",
    "RESOLVE_IN_ROOT",
    "RESOLVE_NO_MAGICLINKS",
    "have_openat2",
    "open_beneath",
    "open_copies",
    "open_root",
    "parent_beneath",
    "set_openat2_enabled",
    "split_parent",
]

RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

# The same limit as the kernel's MAXSYMLINKS, so both resolvers refuse the same loops.
_MAX_SYMLINKS = 40

_SYS_OPENAT2 = {"x86_64": 437, "aarch64": 437, "arm64": 437, "ppc64le": 437, "s390x": 437,
                "riscv64": 437, "i686": 437, "armv7l": 437}.get(os.uname().machine)

_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC


_openat2_state: bool | None = None  # None: not probed yet


def _ctypes_openat2() -> Callable[[int, bytes, int, int, int], int] | None:
    """openat2 through ctypes, for builds without the C accelerator (importing ctypes and
    loading libc costs a CLI call 3-8 ms, so only then)."""
    import ctypes

    class OpenHow(ctypes.Structure):
        _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                    ("resolve", ctypes.c_uint64)]

    try:
        syscall = ctypes.CDLL(None, use_errno=True).syscall
    except (OSError, AttributeError):  # pragma: no cover - no libc symbols (static build)
        return None
    syscall.restype = ctypes.c_long

    def openat2(dirfd: int, path: bytes, flags: int, mode: int, resolve: int) -> int:
        how = OpenHow(flags, mode, resolve)
        fd = int(syscall(_SYS_OPENAT2, ctypes.c_int(dirfd), ctypes.c_char_p(path),
                         ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how))))
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), path)
        return fd

    return openat2


_raw_openat2_impl: Callable[[int, bytes, int, int, int], int] | None = (
    fastapply.openat2 if fastapply is not None else None)


def _raw_openat2(dirfd: int, path: bytes, flags: int, mode: int, resolve: int) -> int:
    global _raw_openat2_impl
    if _raw_openat2_impl is None:
        _raw_openat2_impl = _ctypes_openat2()
        if _raw_openat2_impl is None:
            raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS), path)
    return _raw_openat2_impl(dirfd, path, flags, mode, resolve)


def have_openat2() -> bool:
    """Whether the kernel offers openat2 (probed once; ENOSYS or a seccomp EPERM mean no)."""
    global _openat2_state
    if _openat2_state is None:
        if _SYS_OPENAT2 is None:
            _openat2_state = False
        else:
            try:
                os.close(_raw_openat2(-100, b"/", _DIR_FLAGS, 0, RESOLVE_NO_MAGICLINKS))
                _openat2_state = True
            except OSError:
                _openat2_state = False
    return _openat2_state


def set_openat2_enabled(enabled: bool | None) -> None:
    """Force the fallback walk (False), re-enable openat2 (True) or re-probe (None); for tests."""
    global _openat2_state
    _openat2_state = None
    if enabled is False:
        _openat2_state = False
    elif enabled:
        have_openat2()


def open_root(path: str | bytes) -> int:
    """An ``O_PATH`` directory fd for a layer root; the anchor for every confined lookup."""
    return os.open(path, _DIR_FLAGS)


def _components(relpath: str | bytes) -> list[bytes]:
    raw = os.fsencode(relpath)
    return [c for c in raw.split(b"/") if c and c != b"."]


def open_beneath(root_fd: int, relpath: str | bytes, flags: int, mode: int = 0o644) -> int:
    """Open ``relpath`` as if ``root_fd`` were ``/``; symlinks and ``..`` never leave the root.

    ``O_NOFOLLOW`` in ``flags`` applies to the last component only, as with ``open(2)``.  With
    ``O_CREAT`` the mode is passed through (and ignored otherwise, since openat2 refuses a mode
    without ``O_CREAT``).
    """
    flags |= os.O_CLOEXEC
    tmpfile = getattr(os, "O_TMPFILE", 0)  # includes O_DIRECTORY's bit, hence the == below
    if not flags & os.O_CREAT and not (tmpfile and flags & tmpfile == tmpfile):
        mode = 0
    if have_openat2():
        path = b"/".join(_components(relpath)) or b"."
        return _raw_openat2(root_fd, path, flags, mode, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
    return _walk_open(root_fd, _components(relpath), flags, mode)


# Reading a file another layer holds: never its last symlink, never blocking on a FIFO.
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def open_copies(items: Sequence[tuple[int, str | bytes, int]]) -> list[int]:
    """For each ``(root_fd, relpath, size)``: ``relpath`` opened for reading beneath ``root_fd``
    (as :func:`open_beneath` with ``O_NOFOLLOW``) if it is a regular file of ``size`` bytes, its
    reading started (``POSIX_FADV_WILLNEED``); else -1, whatever the reason.

    With openat2 and the C extension the whole batch is one call without the GIL, which also
    encodes and cleans the paths (done here, in Python, that took the GIL ~5 us a file).
    """
    if fastapply is not None and have_openat2():
        return fastapply.open_copies(  # type: ignore[no-any-return]
            items if type(items) is list else list(items), READ_FLAGS,
            RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
    fds = []
    for root, rel, size in items:
        fd = -1
        try:
            fd = open_beneath(root, rel, READ_FLAGS)
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode) and st.st_size == size:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
            else:
                os.close(fd)
                fd = -1
        except OSError:
            if fd >= 0:
                os.close(fd)
                fd = -1
        fds.append(fd)
    return fds


def _walk_open(root_fd: int, comps: list[bytes], flags: int, mode: int) -> int:
    """The portable resolver: one ``openat(O_NOFOLLOW)`` per component, symlinks expanded by hand.

    A stack of directory fds stands for the path walked so far, so ``..`` pops (and stops at the
    root) instead of asking the filesystem, whose ``..`` could lead out of the root.
    """
    stack: list[int] = []  # fds we own; the current directory is stack[-1] or root_fd
    todo = list(reversed(comps))  # components still to resolve, next one last
    links = 0
    try:
        while todo:
            name = todo.pop()
            cur = stack[-1] if stack else root_fd
            if name == b"..":
                if stack:
                    os.close(stack.pop())
                continue
            last = not todo
            try:  # (the mode only counts with O_CREAT, which only the last component can have)
                fd = os.open(name, (flags if last else _DIR_FLAGS) | os.O_NOFOLLOW, mode, dir_fd=cur)
            except OSError as e:
                if last:
                    # ELOOP (or ENOTDIR with O_DIRECTORY) may mean a symlink the caller follows.
                    symlink = (e.errno in (errno.ELOOP, errno.EMLINK, errno.ENOTDIR)
                               and not flags & os.O_NOFOLLOW)
                else:
                    symlink = e.errno == errno.ENOTDIR
                if not symlink:
                    raise
                try:
                    target = os.readlink(name, dir_fd=cur)
                except OSError:
                    raise e from None
            else:
                if last:
                    return fd
                stack.append(fd)
                continue
            links += 1
            if links > _MAX_SYMLINKS:
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), b"/".join(comps))
            target_b = os.fsencode(target)
            if target_b.startswith(b"/"):
                while stack:
                    os.close(stack.pop())
            # A target of "/" or "." adds nothing: the walk then ends on the directory itself.
            todo.extend(reversed(_components(target_b)))
        # The path named a directory on the stack (or the root) itself.
        cur = stack[-1] if stack else root_fd
        return os.open(".", flags & ~(os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW), dir_fd=cur)
    finally:
        for fd in stack:
            os.close(fd)


def split_parent(relpath: str | bytes) -> tuple[bytes, bytes]:
    """Split a confined path into (parent, last component), after dropping empty and ``.`` parts."""
    comps = _components(relpath)
    if not comps:
        return b"", b""
    return b"/".join(comps[:-1]), comps[-1]


def parent_beneath(root_fd: int, relpath: str | bytes) -> tuple[int, bytes]:
    """An ``O_PATH`` fd of the confined parent directory of ``relpath`` and its last component.

    The caller then acts on the last component with the ``*at`` calls and never follows it, so a
    symlink in that place is replaced or removed rather than written through.  A last component of
    ``..`` (or an empty path) is refused, since it would name a directory above the parent.
    """
    parent, name = split_parent(relpath)
    if not name or name == b"..":
        raise OSError(errno.EINVAL, "path has no last component inside the root", os.fsencode(relpath))
    fd = open_beneath(root_fd, parent, _DIR_FLAGS) if parent else os.dup(root_fd)
    if not parent:
        # Keep the caller's close() rule simple: the fd returned is always theirs to close.
        return fd, name
    st = os.fstat(fd)
    if not stat.S_ISDIR(st.st_mode):  # pragma: no cover - O_DIRECTORY guarantees this
        os.close(fd)
        raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), parent)
    return fd, name
