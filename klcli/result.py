"""What a command computed, before it is delivered: the :class:`Result`, in nats.

A command builds its Result once, with every information quantity (divergence,
entropy, NLL) in nats, and names those quantities in ``information``. The unit
the user asked for is applied when the result is delivered (:meth:`Result.in_unit`),
never inside a computation; figures that are not information quantities (TV,
Δp, top-1, rewards, perplexity, counts) are never scaled. The JSON document is
built from the delivered result once; the checks read that same document.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from klcli.units import NATS, Unit


@dataclass
class Result:
    """One command's figures.

    ``metrics`` maps a per-row metric's name (``kl``, ``entropy`` …) to its
    summary; ``summary`` is the headline metric's. ``figures`` holds further
    command-specific keys; ``per_row`` the per-row arrays. ``information``
    maps each key that holds an information quantity to the power of the
    logarithm it carries (1 for a divergence; ½ for the JS distance, a square
    root): a ``per_row``/``metrics`` name, a top-level ``figures`` key (every
    float inside is scaled), or a dotted path through lists (``worst.kl``).
    ``value`` is scaled when ``value_has_unit``; ``summary`` always is, unless the result holds no
    information quantity at all (``reference``'s tail masses are probabilities).
    """

    command: str
    headline: str  # what ``value`` is, for people: "mean D(P‖Q)"
    value: float
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
    information: dict[str, float] = field(default_factory=dict)
    unit: Unit = NATS  # of every information figure: nats until delivered in another unit

    @property
    def passed(self) -> bool:
        return all(check["passed"] for check in self.checks)

    def in_unit(self, unit: Unit) -> Result:
        """This result with every information quantity in ``unit`` (a result in nats only)."""
        if self.unit != NATS:
            raise ValueError(f"the result is already in {self.unit.name}; units are applied once, to nats")
        if unit == NATS:
            return self
        scale = unit.scale

        def factor(name: str) -> float:
            return scale ** self.information[name]

        figures = dict(self.figures)
        for path, power in self.information.items():
            head, _, rest = path.partition(".")
            if head in figures:
                figures[head] = _scaled(figures[head], rest.split(".") if rest else [], scale**power)
        return replace(
            self,
            value=self.value / scale if self.value_has_unit else self.value,
            summary=_scaled(self.summary, [], scale) if self.information else self.summary,  # none: no unit
            metrics={name: _scaled(values, [], factor(name)) if name in self.information else values
                     for name, values in self.metrics.items()},
            figures=figures,
            per_row={name: values / factor(name) if name in self.information else values
                     for name, values in self.per_row.items()},
            unit=unit,
        )

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


def _scaled(node, path: list[str], factor: float):
    """``node`` with its floats (below ``path``, through lists) divided by ``factor``; ints and bools kept."""
    if path:
        if isinstance(node, list):
            return [_scaled(item, path, factor) for item in node]
        if isinstance(node, dict) and path[0] in node:
            return {**node, path[0]: _scaled(node[path[0]], path[1:], factor)}
        return node
    if isinstance(node, bool) or node is None or isinstance(node, (int, str)):
        return node
    if isinstance(node, float):
        return node / factor
    if isinstance(node, dict):
        return {key: _scaled(value, [], factor) for key, value in node.items()}
    if isinstance(node, list):
        return [_scaled(item, [], factor) for item in node]
    return node


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
