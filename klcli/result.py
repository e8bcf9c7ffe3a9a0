"""What a command computed, before it is rendered: the :class:`Result`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from klcli.units import Unit


@dataclass
class Result:
    """One command's figures.

    ``metrics`` maps a per-row metric's name (``kl``, ``entropy`` …) to its
    summary; ``summary`` is the headline metric's. ``figures`` holds further
    command-specific keys; ``per_row`` the per-row arrays.
    """

    command: str
    headline: str  # what ``value`` is, for people: "mean D(P‖Q)"
    value: float
    unit: Unit  # of every divergence, entropy and NLL figure (the JSON's "unit" and "base")
    rows: int
    inputs: list[dict]
    summary: dict
    metrics: dict[str, dict] = field(default_factory=dict)
    figures: dict = field(default_factory=dict)
    per_row: dict[str, np.ndarray] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # in the result (table, JSON)
    warnings: list[str] = field(default_factory=list)  # in the result, and on standard error
    checks: list[dict] = field(default_factory=list)
    summary_name: str = "value"  # what ``summary`` summarises, when it is no metric of its own
    summary_over: str = "rows"  # what the summary's count counts
    value_has_unit: bool = True  # False for a perplexity: exp of nats, whatever the unit

    @property
    def passed(self) -> bool:
        return all(check["passed"] for check in self.checks)

    def document(self, *, per_row: bool = False) -> dict:
        """The JSON result (SPEC §4) with Python numbers; see :func:`json_safe`."""
        from klcli import __version__

        doc = {
            "command": self.command,
            "version": __version__,
            "unit": self.unit.name,
            "base": self.unit.base,
            "value": self.value,
            "rows": self.rows,
            "inputs": self.inputs,
            "summary": self.summary,
        }
        doc.update(self.metrics)
        doc.update(self.figures)
        if per_row:
            doc["per_row"] = {name: values.tolist() for name, values in self.per_row.items()}
        doc["notes"] = self.notes + self.warnings
        doc["checks"] = self.checks
        doc["passed"] = self.passed
        return doc


def json_safe(value):
    """Replace non-finite floats for strict JSON: ±inf → "inf"/"-inf", NaN → None."""
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value
