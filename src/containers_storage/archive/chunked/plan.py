"""Which ranges of the blob to ask for: Go's missing parts and how it merges them.

Every chunk the store does not have becomes a part (its range of the blob); Go then merges
parts so that one request carries at most ``maxNumberMissingChunks`` (1024) ranges, closing
the cheapest gaps first and any gap under 1 KiB regardless, and asks again with half as many
when the server refuses (HTTP 400).  This is the same arithmetic, so the same requests reach the
registry as from Go.
"""

from __future__ import annotations

__all__ = ["MAX_MISSING_CHUNKS", "Op", "Part", "merge_missing_chunks", "network_ranges"]

MAX_MISSING_CHUNKS = 1024  # Go's maxNumberMissingChunks
AUTO_MERGE_THRESHOLD = 1024  # Go's autoMergePartsThreshold


class Op:
    """What one piece of a part's range is: a gap to skip (``gap`` > 0), or chunks ``first`` to
    ``last`` of file ``file`` (``csize`` compressed bytes giving ``usize`` content bytes), whose
    data is thrown away for zeros when ``hole``."""

    __slots__ = ("csize", "file", "first", "gap", "hole", "last", "usize")

    def __init__(self, *, gap: int = 0, file: int = -1, first: int = -1, last: int = -1, csize: int = 0,
                 usize: int = 0, hole: bool = False) -> None:
        self.gap = gap
        self.file = file
        self.first = first
        self.last = last
        self.csize = csize
        self.usize = usize
        self.hole = hole

    def __repr__(self) -> str:
        """A short description for debugging."""
        if self.gap:
            return f"Op(gap={self.gap})"
        return f"Op(file={self.file}, chunks={self.first}..{self.last}, {self.csize}->{self.usize})"


class Part:
    """A range of the blob (Go's missingPart): from the network, a local file (``origin``) or a
    hole; ``ops`` say what its bytes are."""

    __slots__ = ("hole", "length", "offset", "ops", "origin")

    def __init__(self, offset: int, length: int, ops: list[Op], *, hole: bool = False,
                 origin: tuple[str, str, int] | None = None) -> None:
        self.offset = offset
        self.length = length
        self.ops = ops
        self.hole = hole
        self.origin = origin

    @property
    def network(self) -> bool:
        return self.origin is None and not self.hole

    def __repr__(self) -> str:
        """A short description for debugging."""
        kind = "network" if self.network else "hole" if self.hole else "local"
        return f"Part({self.offset}+{self.length}, {kind}, {self.ops!r})"


def merge_missing_chunks(parts: list[Part], target: int) -> list[Part]:
    """Go's mergeMissingChunks: the same parts, fewer and larger network ranges."""
    if not parts:
        return parts

    def gap(prev: Part, cur: Part) -> int:
        return cur.offset - (prev.offset + prev.length)

    # Chunks of one file that follow each other without a gap become one chunk.
    merged = [parts[0]]
    for cur in parts[1:]:
        prev = merged[-1]
        if (gap(prev, cur) == 0 and prev.network and cur.network and len(prev.ops) == 1
                and len(cur.ops) == 1 and prev.ops[0].file == cur.ops[0].file
                and not prev.ops[0].gap and not cur.ops[0].gap):
            prev.length += cur.length
            op = prev.ops[0]
            op.csize += cur.ops[0].csize
            op.usize += cur.ops[0].usize
            op.last = cur.ops[0].last
        else:
            merged.append(cur)
    parts = merged

    # The gaps between consecutive network parts, cheapest first; close enough of them to get
    # down to ``target`` ranges, and every gap cheaper than the threshold anyway.
    gaps: list[tuple[int, int, int]] = []  # (cost, from, to)
    last = -1
    count = 0
    for i, p in enumerate(parts):
        if not p.network:
            continue
        count += 1
        if last >= 0:
            gaps.append((p.offset - (parts[last].offset + parts[last].length), last, i))
        last = i
    gaps.sort(key=lambda g: g[0])  # stable, where Go's sort.Slice is not: equal costs may differ
    to_merge = [False] * len(parts)
    remaining = count - target
    for cost, frm, to in gaps:
        if remaining < 0 and cost > AUTO_MERGE_THRESHOLD:
            continue
        for i in range(frm + 1, to + 1):
            to_merge[i] = True
        remaining -= 1

    out = [parts[0]]
    for i in range(1, len(parts)):
        if not to_merge[i]:
            out.append(parts[i])
            continue
        g = gap(parts[i - 1], parts[i])
        prev = out[-1]
        prev.length += g + parts[i].length
        if prev.hole or prev.origin is not None:
            # Now fetched: what was a hole is fetched and thrown away, a local chunk fetched.
            for op in prev.ops:
                op.hole = op.hole or prev.hole
            prev.hole = False
            prev.origin = None
        if g > 0:
            prev.ops.append(Op(gap=g))
        cur = parts[i]
        for op in cur.ops:
            op.hole = op.hole or cur.hole
        prev.ops.extend(cur.ops)
    return out


def network_ranges(parts: list[Part]) -> list[tuple[int, int]]:
    """The (offset, length) ranges to request."""
    return [(p.offset, p.length) for p in parts if p.network]
