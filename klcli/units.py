"""The logarithm base of reported figures (``--base``), and the name of its unit."""

from __future__ import annotations

import math
from dataclasses import dataclass

from klcli.errors import UsageError

_NAMED = {"e": "nats", "2": "bits", "10": "bans"}


@dataclass(frozen=True)
class Unit:
    """Figures in nats are divided by ``ln(base)`` to be reported in this unit.

    Examples
    --------
    >>> Unit.parse("2").name, Unit.parse("2").from_nats(math.log(2))
    ('bits', 1.0)
    >>> Unit.parse("3").name
    'log-base-3'
    """

    name: str
    base: float

    @classmethod
    def parse(cls, text: str) -> Unit:
        text = text.strip().lower()
        if text in _NAMED:
            return cls(_NAMED[text], math.e if text == "e" else float(text))
        try:
            base = float(text)
        except ValueError:
            base = float("nan")
        if not (math.isfinite(base) and base > 0 and base != 1):
            raise UsageError(f"--base {text!r}: use e, 2, 10 or a positive number other than 1")
        if base == math.e:
            return cls("nats", base)
        return cls(f"log-base-{base:g}", base)

    @property
    def scale(self) -> float:
        """What a figure in nats is divided by."""
        return 1.0 if self.name == "nats" else math.log(self.base)

    def from_nats(self, value):
        return value / self.scale


NATS = Unit("nats", math.e)
