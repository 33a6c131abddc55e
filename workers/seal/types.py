"""Plain data carried through the SEAL inner loop."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


@dataclass(frozen=True)
class Probe:
    """One question whose answer the learned document should supply."""

    question: str
    answer: str


class ProbeSource(StrEnum):
    """What a learn's probes were (kept in its metrics and on the registry's document row)."""

    caller = "caller"  # given with the document
    self_written = "self-written"  # the model's own questions that checked out (probes.write_probes)
    self_written_cloze = "self-written+cloze"  # one or two of those, filled in with cloze items
    cloze = "cloze"  # entity cloze items alone ("Fill in the blank ...")

    @property
    def questions(self) -> bool:
        """Whether they are questions of the form users ask, not sentences to complete (mostly)."""
        return self in (ProbeSource.caller, ProbeSource.self_written)


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
