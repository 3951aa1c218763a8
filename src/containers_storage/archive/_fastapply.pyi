from collections.abc import Callable, Sequence

def run(
    buf: bytes, pos: int, pad: int, root: int, cache: dict[bytes, int], stale: list[int],
    dir_times: list[tuple[bytes, int, int]], unpacked: set[bytes] | None, uids: set[int],
    gids: set[int], chown: bool, seen: set[bytes] | None,
    crc: Callable[[memoryview, int], int], ts_pos: int,
    uid_map: Sequence[tuple[int, int, int]] | None, gid_map: Sequence[tuple[int, int, int]] | None,
    reuse: dict[bytes, tuple[int, bool]] | None = None,
) -> tuple[int, int, int, list[bytes], tuple[bytes, OSError] | None]: ...

def openat2(dirfd: int, path: bytes, flags: int, mode: int, resolve: int) -> int: ...
def open_copies(items: list[tuple[int, str | bytes, int]], flags: int, resolve: int) -> list[int]: ...
