"""midb.lru.BoundedCache: a fixed-size least-recently-used map."""

from __future__ import annotations

import threading

from midb.lru import BoundedCache


def test_the_least_recently_used_entry_goes_first() -> None:
    cache: BoundedCache[str, int] = BoundedCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1          # "a" is now the most recently used
    cache.put("c", 3)                   # so "b" makes room
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (1, None, 3)
    assert len(cache) == 2


def test_putting_a_key_again_replaces_and_refreshes_it() -> None:
    cache: BoundedCache[str, int] = BoundedCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    cache.put("a", 10)
    cache.put("c", 3)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (10, None, 3)


def test_a_cache_of_capacity_zero_keeps_nothing() -> None:
    cache: BoundedCache[str, int] = BoundedCache(0)
    cache.put("a", 1)
    assert cache.get("a") is None and len(cache) == 0


def test_concurrent_use_never_exceeds_the_capacity() -> None:
    cache: BoundedCache[int, int] = BoundedCache(50)

    def churn(offset: int) -> None:
        for number in range(2000):
            cache.put(offset + number, number)
            cache.get(offset + number // 2)

    threads = [threading.Thread(target=churn, args=(index * 10_000,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(cache) == 50


def test_get_many_answers_each_key_and_refreshes_the_hits() -> None:
    cache: BoundedCache[str, int] = BoundedCache(3)
    for key, value in (("a", 1), ("b", 2), ("c", 3)):
        cache.put(key, value)
    assert cache.get_many(["c", "x", "a", "a"]) == [3, None, 1, 1]
    cache.put("d", 4)                   # "b" was not asked for: it is the least recently used
    assert cache.get_many(["a", "b", "c", "d"]) == [1, None, 3, 4]
    assert cache.get_many([]) == []


def test_get_many_while_others_put() -> None:
    """Entries dropped by a concurrent put() between the lookup and the refresh are skipped."""
    cache: BoundedCache[int, int] = BoundedCache(64)
    stop = threading.Event()

    def churn() -> None:
        number = 0
        while not stop.is_set() and number < 200_000:
            cache.put(number % 500, number)
            number += 1

    thread = threading.Thread(target=churn)
    thread.start()
    try:
        for _ in range(300):
            values = cache.get_many(list(range(500)))
            assert len(values) == 500 and sum(value is not None for value in values) <= 64 + 1
    finally:
        stop.set()
        thread.join()
    assert len(cache) == 64
