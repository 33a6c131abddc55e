"""How the model reads a document it is given: one prompt for every place that answers with a document
in context, so what is measured is what is served.

- the serving API's instant-recall and in-context routes (app/knowledge/catalog.py);
- a learn job's in-context measure of its probes, which a shard must match to answer from weights;
- the context-distillation teacher (workers/seal/distill.py), whose answers the shard learns.
"""

from __future__ import annotations

READING_PROMPT = "Passage: {title}{text}\n\nAnswer the question using the passage.\nQuestion: {question}"


def reading_prompt(title: str | None, text: str, question: str) -> str:
    """The user turn that puts the document before the question."""
    return READING_PROMPT.format(title=f"{title}. " if title else "", text=text, question=question)


def reading_messages(title: str | None, text: str, question: str) -> list[dict[str, str]]:
    """The chat a question about a document is answered with when the document is read, not recalled."""
    return [{"role": "user", "content": reading_prompt(title, text, question)}]
