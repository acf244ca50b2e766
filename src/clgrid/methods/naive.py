"""Naive fine-tuning: cross-entropy on the current task only; the lower bound of every grid."""

from __future__ import annotations

from typing import Any

from clgrid.methods.base import Method, register


@register("naive")
class Naive(Method):
    """Naive fine-tuning: cross-entropy on the current task only; the lower bound of every grid."""

    FACTS: dict[str, Any] = {"paper": None}
