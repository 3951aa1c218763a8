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


def test_threads_of_one_process_wait_for_each_other(tmp_path: Path) -> None:
    # Threads share the process's POSIX lock, so exclusion between them is ours: a writer thread
    # must wait for another writer and for readers, and be woken when they let go.
    import threading

    lock = get_lock_file(str(tmp_path / "threads.lock"))
    inside: list[str] = []
    overlaps: list[str] = []
    done: list[str] = []
    guard = threading.Lock()

    def work(name: str, write: bool) -> None:
        for _ in range(50):
            with lock.writing() if write else lock.reading():
                with guard:
                    if (write and inside) or any(x.startswith("w") for x in inside):
                        overlaps.append(f"{name} with {inside}")
                    inside.append(name)
                time.sleep(0.0005)
                with guard:
                    inside.remove(name)
        done.append(name)

    threads = [threading.Thread(target=work, args=(f"w{i}", True)) for i in range(3)]
    threads += [threading.Thread(target=work, args=(f"r{i}", False)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a thread was never woken"
    assert len(done) == 6, done  # no thread died on the way (an exception ends it silently)
    assert overlaps == []
    assert not lock.locked_for_writing
