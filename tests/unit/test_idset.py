"""IDSet: interval arithmetic checked against plain Python sets of the same IDs."""

from __future__ import annotations

import random

import pytest

from containers_storage import errors
from containers_storage.idset import IDSet, check_no_overlaps, overlapping_maps
from containers_storage.idtools import IDMap


def ids(s: IDSet) -> set[int]:
    return {i for start, end in s for i in range(start, end)}


def random_set(rng: random.Random, limit: int = 60) -> tuple[IDSet, set[int]]:
    intervals = []
    for _ in range(rng.randint(0, 6)):
        start = rng.randint(0, limit)
        intervals.append((start, start + rng.randint(-3, 15)))  # some empty or reversed
    model = {i for start, end in intervals for i in range(start, end)}
    return IDSet(intervals), model


def test_normalizes_to_sorted_disjoint_non_touching_intervals() -> None:
    s = IDSet([(10, 20), (0, 5), (5, 7), (15, 25), (30, 30), (40, 35), (26, 28)])
    assert s.intervals == ((0, 7), (10, 25), (26, 28))
    assert s.size() == len(s) == 7 + 15 + 2
    assert IDSet([(0, 3), (3, 6)]) == IDSet([(0, 6)])
    assert not IDSet([(5, 5)])
    assert 24 in s and 25 not in s and 26 in s and -1 not in s and "3" not in s


def test_operations_match_python_sets() -> None:
    rng = random.Random(1234)
    for _ in range(2000):
        a, ma = random_set(rng)
        b, mb = random_set(rng)
        assert ids(a) == ma
        assert ids(a - b) == ma - mb
        assert ids(a | b) == ma | mb
        assert ids(a & b) == ma & mb
        assert a.isdisjoint(b) == ma.isdisjoint(mb)
        assert a.size() == len(ma)
        for result in (a - b, a | b, a & b):
            iv = result.intervals
            # canonical form: what a fresh set of the same IDs gives
            assert result == IDSet((i, i + 1) for i in ids(result))
            assert all(iv[k][1] < iv[k + 1][0] for k in range(len(iv) - 1))


def test_subtract_cuts_holes_and_edges() -> None:
    s = IDSet([(0, 100)])
    assert (s - IDSet([(10, 20), (50, 60)])).intervals == ((0, 10), (20, 50), (60, 100))
    assert (s - IDSet([(-5, 1), (99, 200)])).intervals == ((1, 99),)
    assert (s - IDSet([(0, 100)])).intervals == ()
    assert (s - IDSet()).intervals == ((0, 100),)
    # one cut spanning several intervals
    assert (IDSet([(0, 5), (10, 15), (20, 25)]) - IDSet([(3, 22)])).intervals == ((0, 3), (22, 25))


def test_first_takes_the_lowest_ids_across_intervals() -> None:
    s = IDSet([(100, 110), (200, 300)])
    assert s.first(5).intervals == ((100, 105),)
    assert s.first(10).intervals == ((100, 110),)
    assert s.first(15).intervals == ((100, 110), (200, 205))
    assert s.first(0).intervals == ()
    assert s.first(110).size() == 110
    with pytest.raises(errors.NoAvailableIDs, match=r"^not enough unused IDs in user namespace$"):
        s.first(111)
    with pytest.raises(errors.NoAvailableIDs):
        IDSet().first(1)


def test_zip_pairs_host_and_container_ids_in_order() -> None:
    hosts = IDSet([(1000, 1003), (2000, 2010)])
    ctrs = IDSet([(0, 5), (7, 13)])
    assert hosts.zip(ctrs) == [
        IDMap(0, 1000, 3), IDMap(3, 2000, 2), IDMap(7, 2002, 6)]
    # stops when either side runs out
    assert IDSet([(50, 52)]).zip(IDSet([(0, 10)])) == [IDMap(0, 50, 2)]
    assert IDSet([(50, 60)]).zip(IDSet()) == []


def test_zip_is_a_bijection_on_random_sets() -> None:
    rng = random.Random(99)
    for _ in range(500):
        h, mh = random_set(rng, 1000)
        c, mc = random_set(rng, 1000)
        maps = h.zip(c)
        n = min(len(mh), len(mc))
        assert sum(m.size for m in maps) == n
        assert IDSet.of_host_ids(maps) == IDSet((i, i + 1) for i in sorted(mh)[:n])
        assert IDSet.of_container_ids(maps) == IDSet((i, i + 1) for i in sorted(mc)[:n])


def test_sets_from_id_maps() -> None:
    maps = [IDMap(0, 100000, 10), IDMap(10, 100005, 10), IDMap(50, 5, 1)]
    assert IDSet.of_host_ids(maps).intervals == ((5, 6), (100000, 100015))
    assert IDSet.of_container_ids(maps).intervals == ((0, 20), (50, 51))


def test_overlapping_maps_on_either_side() -> None:
    assert overlapping_maps([IDMap(0, 1000, 10), IDMap(10, 1010, 10)]) == []  # touching is fine
    assert overlapping_maps([IDMap(0, 1000, 10), IDMap(5, 2000, 10)]) == [IDMap(5, 2000, 10)]
    assert overlapping_maps([IDMap(0, 1000, 10), IDMap(20, 1009, 1)]) == [IDMap(20, 1009, 1)]
    # Each map is checked against all earlier ones, and counted once when both sides clash.
    maps = [IDMap(0, 1000, 10), IDMap(0, 1000, 10), IDMap(50, 5000, 5), IDMap(52, 6000, 1)]
    assert overlapping_maps(maps) == [IDMap(0, 1000, 10), IDMap(52, 6000, 1)]
    assert overlapping_maps([IDMap(0, 1000, 0), IDMap(0, 1000, 5)]) == []  # an empty map covers nothing


def test_overlap_errors_use_gos_text() -> None:
    check_no_overlaps([IDMap(0, 1000, 10), IDMap(10, 1010, 10)])
    with pytest.raises(errors.InvalidMappings) as one:
        check_no_overlaps([IDMap(0, 100000, 10), IDMap(5, 200000, 10)])
    assert str(one.value) == ("the specified UID and/or GID mapping 5:200000:10 conflicts with other "
                              "mappings: invalid mappings specified")
    with pytest.raises(errors.InvalidMappings) as two:
        check_no_overlaps([IDMap(0, 1, 5), IDMap(1, 100, 1), IDMap(9, 3, 1)])
    assert str(two.value) == ("the specified UID and/or GID mappings 1:100:1, 9:3:1 conflict with "
                              "other mappings: invalid mappings specified")
