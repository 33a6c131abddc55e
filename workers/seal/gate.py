"""The publish gate: pure rules over before/after accuracies."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class GateDecision:
    """Whether a candidate may be published, why, and the numbers it was judged on."""

    accepted: bool
    reasons: list[str] = field(default_factory=list)
    numbers: dict = field(default_factory=dict)


EPS = 1e-9  # keeps 0.1+0.2-style float noise from flipping a decision at the margin


def new_facts_improved(before: float, after: float) -> bool:
    """The new-facts rule: accuracy on the document's probes rose, or was and stays perfect."""
    return after > before + EPS or (before >= 1.0 - EPS and after >= 1.0 - EPS)


def decide(
    *,
    new_before: float | None,
    new_after: float | None,
    old_before: float | None = None,
    old_after: float | None = None,
    canary_before: float | None = None,
    canary_after: float | None = None,
    old_margin: float = 0.10,
    canary_margin: float = 0.05,
) -> GateDecision:
    """Accept when new-fact accuracy rises, and old-probe and canary drops stay within their margins.

    Each rule applies only when its numbers are given (a consolidation has no new document).
    """
    for name, value in (("new_before", new_before), ("new_after", new_after), ("old_before", old_before),
                        ("old_after", old_after), ("canary_before", canary_before),
                        ("canary_after", canary_after)):
        if value is not None and not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be an accuracy in [0, 1], got {value}")
    for name, value in (("old_margin", old_margin), ("canary_margin", canary_margin)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value}")
    if (new_before is None) != (new_after is None):
        raise ValueError("new_before and new_after must be given together")
    if (old_before is None) != (old_after is None):
        raise ValueError("old_before and old_after must be given together")
    if (canary_before is None) != (canary_after is None):
        raise ValueError("canary_before and canary_after must be given together")

    reasons: list[str] = []
    numbers: dict = {}
    if new_before is not None and new_after is not None:
        numbers.update(new_before=new_before, new_after=new_after, new_gain=new_after - new_before)
        if not new_facts_improved(new_before, new_after):
            reasons.append(f"new-fact accuracy did not rise ({new_before:.3f} -> {new_after:.3f})")
    if old_before is not None and old_after is not None:
        drop = old_before - old_after
        numbers.update(old_before=old_before, old_after=old_after, old_drop=drop, old_margin=old_margin)
        if drop > old_margin + EPS:
            reasons.append(f"old-probe accuracy dropped {drop:.3f} > margin {old_margin:.3f}")
    if canary_before is not None and canary_after is not None:
        drop = canary_before - canary_after
        numbers.update(canary_before=canary_before, canary_after=canary_after, canary_drop=drop,
                       canary_margin=canary_margin)
        if drop > canary_margin + EPS:
            reasons.append(f"canary accuracy dropped {drop:.3f} > margin {canary_margin:.3f}")
    accepted = not reasons
    if accepted:
        reasons.append("all gate rules passed")
    return GateDecision(accepted=accepted, reasons=reasons, numbers=numbers)
