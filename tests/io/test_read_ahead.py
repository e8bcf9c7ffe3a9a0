"""read_ahead: a background producer that keeps order, passes errors on and stops when the consumer does."""

from __future__ import annotations

import threading
import time

import pytest

from klcli.io.source import read_ahead


def test_items_arrive_in_order():
    assert list(read_ahead(iter(range(100)))) == list(range(100))
    assert list(read_ahead(iter([]))) == []


def test_an_error_is_raised_after_the_items_before_it():
    def items():
        yield 1
        yield 2
        raise OSError("page 3 is damaged")

    seen = []
    with pytest.raises(OSError, match="page 3 is damaged"):
        for item in read_ahead(items()):
            seen.append(item)
    assert seen == [1, 2]


def test_closing_early_stops_the_producer():
    produced = []

    def endless():
        count = 0
        while True:
            produced.append(count)
            yield count
            count += 1

    stream = read_ahead(endless(), depth=2)
    assert [next(stream) for _ in range(3)] == [0, 1, 2]
    stream.close()
    time.sleep(0.3)
    settled = len(produced)
    time.sleep(0.3)
    assert len(produced) == settled <= 3 + 2 + 1  # the consumer's three, the queue's two, one in hand
    assert not any(thread.name == "klcli-read-ahead" for thread in threading.enumerate())
