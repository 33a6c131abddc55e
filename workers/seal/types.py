"""Plain data carried through the SEAL inner loop."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Probe:
    """One question whose answer the learned document should supply."""

    question: str
    answer: str


@dataclass
class Document:
    """A passage to learn, with optional caller-supplied probe questions."""

    text: str
    title: str | None = None
    probes: list[Probe] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.text or not self.text.strip():
            raise ValueError(f"Document.text must be non-empty, got {self.text!r}")


class Cancelled(Exception):
    """Raised between steps when the caller's cancel callback returns True."""
