"""mountinfo parsing: what make_private and the overlay backing-fs check decide from."""

from __future__ import annotations

from containers_storage.mountinfo import containing, parse, topmost

SAMPLE = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
30 27 0:27 / /var/lib/my\\040store rw,relatime shared:7 - xfs /dev/vdb rw
42 27 254:0 /g/overlay /g/overlay rw,relatime - ext4 /dev/vda rw
43 42 0:40 / /g/overlay rw,relatime master:3 - tmpfs tmpfs rw
44 27 0:41 / /mnt/fuse rw,relatime - fuse.sshfs host: rw
garbage line
"""


def test_fields_escapes_and_propagation() -> None:
    mounts = parse(SAMPLE)
    assert [m.mount_point for m in mounts] == [
        "/proc", "/", "/var/lib/my store", "/g/overlay", "/g/overlay", "/mnt/fuse"]
    assert [m.fstype for m in mounts] == ["proc", "ext4", "xfs", "ext4", "tmpfs", "fuse.sshfs"]
    assert [m.private for m in mounts] == [True, False, False, True, False, True]


def test_stacked_mounts_resolve_to_the_topmost() -> None:
    mounts = parse(SAMPLE)
    top = topmost(mounts, "/g/overlay")
    assert top is not None and top.fstype == "tmpfs" and not top.private
    assert topmost(mounts, "/g") is None


def test_a_path_lives_on_its_deepest_mount() -> None:
    mounts = parse(SAMPLE)
    found = [containing(mounts, p) for p in ("/var/lib/my store/x", "/var/lib/my", "/g/overlay/l", "/")]
    assert [m.fstype if m else None for m in found] == ["xfs", "ext4", "tmpfs", "ext4"]
    # A sibling whose name merely starts like a mount point is not under it.
    sibling = containing(mounts, "/var/lib/my storex")
    assert sibling is not None and sibling.mount_point == "/"
