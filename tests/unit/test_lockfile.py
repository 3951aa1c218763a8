"""Lock files: POSIX record locks other processes honour, and last-write tokens."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import struct
import time
from pathlib import Path

from containers_storage.lockfile import LAST_WRITE_SIZE, get_lock_file


def _try_lock(path: str, exclusive: bool, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.lockf(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        queue.put("got")
    except OSError:
        queue.put("blocked")
    finally:
        os.close(fd)


def _probe(path: str, exclusive: bool) -> str:
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_try_lock, args=(path, exclusive, q))
    p.start()
    p.join(10)
    return str(q.get(timeout=5))


def test_write_lock_excludes_other_processes(tmp_path: Path) -> None:
    lf = get_lock_file(str(tmp_path / "a.lock"))
    with lf.writing():
        assert _probe(lf.path, exclusive=False) == "blocked"
    assert _probe(lf.path, exclusive=True) == "got"


def test_read_lock_is_shared_but_excludes_writers(tmp_path: Path) -> None:
    lf = get_lock_file(str(tmp_path / "b.lock"))
    with lf.reading():
        assert _probe(lf.path, exclusive=False) == "got"
        assert _probe(lf.path, exclusive=True) == "blocked"


def test_same_path_gives_one_object(tmp_path: Path) -> None:
    p = str(tmp_path / "c.lock")
    assert get_lock_file(p) is get_lock_file(os.path.join(str(tmp_path), ".", "c.lock"))


def test_last_write_token_layout(tmp_path: Path) -> None:
    lf = get_lock_file(str(tmp_path / "d.lock"))
    assert lf.get_last_write() == b""
    before = time.time_ns()
    with lf.writing():
        token = lf.record_write()
    assert len(token) == LAST_WRITE_SIZE
    assert lf.get_last_write() == token
    when, counter, pid = struct.unpack("<QQI", token[:20])
    assert before <= when <= time.time_ns()
    assert counter >= 1 and pid == os.getpid()
    current, changed = lf.modified_since(token)
    assert not changed and current == token
    _, changed = lf.modified_since(b"other")
    assert changed


def test_record_write_needs_the_write_lock(tmp_path: Path) -> None:
    lf = get_lock_file(str(tmp_path / "e.lock"))
    try:
        lf.record_write()
    except RuntimeError as e:
        assert "write lock" in str(e)
    else:
        raise AssertionError("record_write without the lock must fail")
