"""The lexical router: which document of a knowledge base a request is about, or none (the base model).

Documents are ranked with BM25 (bm25s) over title + text + probe questions. Raw BM25 scores are not
comparable across queries, so the fallback to the base model uses a normalized confidence instead:
the weighted share of the query's content terms that the top document contains,

    score = sum(w(t) for query terms t in the document) / sum(w(t) for all query terms)
    w(t)  = idf(t) * (1 + NAME_WEIGHT if t comes from a name in the query else 1)
    idf(t) = log(1 + (N + PRIOR_DOCUMENTS - df + 0.5) / (df + 0.5))

over the N indexed documents, so a term no document contains (df = 0) weighs the most.
"What is the capital of France?" against a knowledge base that mentions "capital" but never
"France" therefore scores low, while a question naming a document's entities scores near 1. The
formula is defined for N = 1. The request routes to the top document when score >= threshold.

The index is immutable: rebuild it to change the documents. Routing is deterministic: documents are
indexed in doc_id order whatever order they come in, and ties go to the lowest doc_id, so every API
process that builds from the same registry rows makes the same decision.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import bm25s
import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.5
"""Route to the top document when its score is at least this, else answer with the base model.

Calibrated by bench/knowledge_router.py's threshold sweep: questions about the documents (the
fictional dev set; generated forward and reverse questions at 1k and 10k documents; the same
lowercased) against general questions (the anchor prompts and the bench's own list; the canary set
is only checked, never tuned on). 0.50 and 0.55 tied on the balanced mean; 0.50 kept 94% of
lowercase questions routed (0.55: 89.5%) at the cost of 1.3 points of general-question fallback
at 1k (97.3% vs 98.6%). Since lowercase questions take their names from the document (NAME_WEIGHT)
both route 100% of them and 0.55 leads, 0.994 to 0.990; not re-calibrated yet, because 0.60
already drops one-document knowledge bases to 96.7%. A general question sent to a document's shard is answered by the base
weights plus one document's adapter; a question about a document sent to base is answered wrong."""

STATES = ("learned", "pending", "context")

# Function words, question scaffolding and generic request verbs: they say nothing about which
# document a question is about, and a general question made only of them must not route.
STOPWORDS = frozenset(
    """
    a about above after again against all also am an and any are as at be because been before being
    below between both but by can could did do does doing done down during each either else ever
    every few for from further get got had has have having he her here hers herself him himself his
    how i if in into is it its itself just let like may me might more most must my myself no nor not
    now of off on once one only or other ought our ours ourselves out over own please same shall she
    should so some such tell than that the their theirs them themselves then there these they this
    those through to too under until up upon us very was we were what whatever when whenever where
    whereas wherever whether which while who whoever whom whose why will with within without would
    yes yet you your yours yourself yourselves
    year years many much name named called give list explain describe say know
    """.split()
)

# A token is a run of letters/digits, optionally joined by hyphens or apostrophes ("tessari-4",
# "o'brien") or by a decimal point between digits ("3.1"). Thousands separators are removed first
# so "2,940" and "2940" are the same term.
_TOKEN = re.compile(r"[^\W_]+(?:(?:[-'’]|(?<=\d)\.(?=\d))[^\W_]+)*")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
_SENTENCE_START = ".?!:;\"“(\n"

NAME_WEIGHT = 2.0
"""A query term from a name (capitalised, not sentence-initial) weighs 1 + NAME_WEIGHT times its IDF.

A question about a document names it ("What cargo did the SS Motraeick carry?"), and a general
question names something the knowledge base lacks ("Who discovered Halley's Comet?"), while the
rest of a question is often paraphrase the document does not contain ("cargo", "carry"). Measured
by bench/knowledge_router.py at 1,000 generated documents, threshold 0.5: without the weight
94.0% of the questions routed to their document and 98.0% of general questions fell back; with it
100% and 97.3%.

A query typed all in lowercase marks no names, so there the top document decides: a query term it
always writes capitalised (at a sentence start too) gets the weight. Measured the same way at
1,000 documents with every question lowercased: without it 94.0% of the questions routed and
98.0% of general questions (and 24/24 canary questions) fell back; with it 100%, 94.6% and 23/24
("what color is the sky on a clear day?" reached a document about the "Northern Skies Trust").
Capitalised queries are scored exactly as before. The trade was taken because a miss is a wrong
answer for certain (the base model cannot know the document), while a general question sent to a
shard is answered by the base weights plus one document's low-rank update, which may still give
the base model's answer. The gate does not check that case: it asks the canary through the
router, as written, and so never asks the shard a lowercased canary question."""

PRIOR_DOCUMENTS = 10
"""IDF is computed as if the knowledge base had this many more documents, none sharing a term.

With N = 1 a term the document lacks weighs 4.8 times one it has (log 4 / log 1.33), so one word
of paraphrase sinks a question about a one-document knowledge base; with 10 prior documents the
ratio is about 1.5 at every size up to ~10 and shrinks as N grows (1.17 at N = 1,000). Measured
on the fictional passages as ten one-document knowledge bases at threshold 0.5: 90% of their
questions routed without it, 100% with it (general questions: 100% fell back either way)."""


@dataclass(frozen=True)
class IndexedDocument:
    """One document of a knowledge base as the router sees it."""

    doc_id: int
    shard: str | None  # the shard key that answers it from weights; None = not learned (pending / context)
    title: str | None
    text: str
    probes: tuple[str, ...] = ()  # validated probe questions of the document (extra routing text)
    state: str = "learned"  # "learned" | "pending" | "context"

    def routing_text(self) -> str:
        """The text the router indexes: title, body and probe questions."""
        return "\n".join([self.title or "", self.text, *self.probes])


@dataclass(frozen=True)
class RouteDecision:
    """Where one request goes: a document (and so its shard), or None for the base model."""

    document: IndexedDocument | None  # None: the base model
    score: float  # the normalized confidence in [0, 1] that was compared with the threshold
    bm25: float  # the raw top BM25 score (for logs)


_BASE = RouteDecision(document=None, score=0.0, bm25=0.0)


def _stem(word: str) -> str:
    """A light, symmetric suffix stripper: plurals, -ed, -ing and a final -e.

    It only has to make "discover"/"discovered" and "day"/"days" the same term on both sides;
    queries and documents go through the same function, so over-stripping costs nothing.
    """
    if word.isdigit() or len(word) <= 3:
        return word
    if word.endswith(("ies", "ied")) and len(word) > 4:
        word = word[:-3] + "y"
    elif word.endswith("sses"):
        word = word[:-2]
    elif word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    if word.endswith("ing") and len(word) > 5:
        word = word[:-3]
    elif word.endswith("ed") and len(word) > 4:
        word = word[:-2]
    if word.endswith("e") and len(word) > 4:
        word = word[:-1]
    return word


def _scan(text: str) -> list[tuple[list[str], bool]]:
    """Each token's terms (a compound first, then its parts) and whether it looks like a name.

    A name is a capitalised token that does not start a sentence ("France" in "What is the capital
    of France?", not "What"), numbers excluded.
    """
    return [(terms, capitalised and not starts_sentence) for terms, capitalised, starts_sentence in _scan_cased(text)]


def _document_names(scanned: list[tuple[list[str], bool, bool]]) -> frozenset[str]:
    """The terms a document always writes capitalised, at a sentence start too ("Quellbrook Cordial is ...")."""
    capitalised: set[str] = set()
    lowercase: set[str] = set()
    for terms, is_capitalised, _ in scanned:
        (capitalised if is_capitalised else lowercase).update(terms)
    return frozenset(capitalised - lowercase)


def _scan_cased(text: str) -> list[tuple[list[str], bool, bool]]:
    """Each token's terms, whether it is capitalised (numbers are not) and whether it starts a sentence."""
    text = _THOUSANDS.sub("", text)
    out: list[tuple[list[str], bool, bool]] = []
    end = 0
    for match in _TOKEN.finditer(text):
        raw = match.group(0)
        starts_sentence = end == 0 or any(c in _SENTENCE_START for c in text[end : match.start()])
        end = match.end()
        capitalised = raw[0].isupper()
        raw = raw.lower()
        if raw.endswith(("'s", "’s")):
            raw = raw[:-2]
        raw = raw.replace("'", "").replace("’", "")
        parts = [p for p in raw.split("-") if p]
        if len(parts) > 1:
            stems = [_stem(p) for p in parts if p not in STOPWORDS]
            if stems:
                out.append((["-".join(_stem(p) for p in parts), *stems], capitalised, starts_sentence))
        elif parts and parts[0] not in STOPWORDS:
            out.append(([_stem(parts[0])], capitalised, starts_sentence))
    return out


def tokenize(text: str) -> list[str]:
    """Content terms of a text, in order: lowercased, stemmed, stopwords dropped.

    A hyphenated token yields itself and its parts ("tessari-4", "tessari", "4"), so "Tessari-4",
    "Tessari 4" and "tessari-4" all match.
    """
    return [term for terms, _ in _scan(text) for term in terms]


def query_terms(text: str) -> dict[str, bool]:
    """The terms a query's score is computed over, each with whether it came from a name."""
    return _query_terms(_scan(text))


def _query_terms(scanned: list[tuple[list[str], bool]]) -> dict[str, bool]:
    # Hyphenated compounds are left out (their parts count), so "Kestrel 9" and "Kestrel-9" score
    # alike whichever way the document spells it.
    terms: dict[str, bool] = {}
    for token_terms, named in scanned:
        for term in token_terms:
            if "-" not in term:
                terms[term] = terms.get(term, False) or named
    return terms


def _is_cased(text: str) -> bool:
    """Whether a query uses capitals at all, and so marks its names itself."""
    return text != text.lower()


def message_text(content: Any) -> str:
    """The text of one chat message's content: a string, or OpenAI content parts (text parts only)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif isinstance(part, str):
                texts.append(part)
        return "\n".join(texts)
    return ""


class LexicalRouter:
    """An immutable BM25 index over a knowledge base's documents with a base-model fallback."""

    def __init__(self, documents: Iterable[IndexedDocument] = (), *, threshold: float = DEFAULT_THRESHOLD):
        """Index the documents (any order; they are sorted by doc_id).

        Args:
            documents: the knowledge base's documents; doc_ids must be unique.
            threshold: route when the normalized score is at least this, in [0, 1].

        Raises:
            ValueError: on a duplicate doc_id, an unknown state or a threshold outside [0, 1].
        """
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
        started = time.perf_counter()
        docs = tuple(sorted(documents, key=lambda d: d.doc_id))
        duplicates = sorted(i for i, n in Counter(d.doc_id for d in docs).items() if n > 1)
        if duplicates:
            raise ValueError(f"duplicate doc_id(s) {duplicates}")
        for doc in docs:
            if doc.state not in STATES:
                raise ValueError(f"document {doc.doc_id}: unknown state {doc.state!r} (expected one of {STATES})")
        self.threshold = threshold
        self._docs = docs
        self._position = {doc.doc_id: i for i, doc in enumerate(docs)}
        scanned = [_scan_cased(doc.routing_text()) for doc in docs]
        corpus = [[term for terms, _, _ in tokens for term in terms] for tokens in scanned]
        self._terms = [frozenset(tokens) for tokens in corpus]
        self._names = [_document_names(tokens) for tokens in scanned]
        df: dict[str, int] = {}
        for terms in self._terms:
            for term in terms:
                df[term] = df.get(term, 0) + 1
        self._df = df
        self._retriever: bm25s.BM25 | None = None
        if any(corpus):  # bm25s cannot index a corpus without a single term
            self._retriever = bm25s.BM25()
            self._retriever.index(corpus, show_progress=False)
        logger.debug("indexed %d documents (%d terms) in %.3f s", len(docs), len(df), time.perf_counter() - started)

    def __len__(self) -> int:
        return len(self._docs)

    def documents(self) -> list[IndexedDocument]:
        """The indexed documents in doc_id order."""
        return list(self._docs)

    def idf(self, term: str) -> float:
        """Smoothed IDF of one (already tokenized) term; a term in no document gets the largest value."""
        n = len(self._docs) + PRIOR_DOCUMENTS
        df = self._df.get(term, 0)
        return math.log(1.0 + (n - df + 0.5) / (df + 0.5))

    def route(self, text: str) -> RouteDecision:
        """Route one query string: its top document when the score clears the threshold, else base."""
        return self._route(_scan(text), cased=_is_cased(text))

    def route_messages(self, messages: list[dict]) -> RouteDecision:
        """Route a chat: the last user turn first; below the threshold, all user turns joined.

        The second pass lets a follow-up ("and when was it built?") reach the document an earlier
        turn named. It is not taken when the last turn names something that document lacks: "What
        is the capital of France?" after a question about a document is a new question, not a
        follow-up. A system prompt is not routing text: it is usually the same for every request.
        """
        turns = [message_text(m.get("content")) for m in messages if m.get("role") == "user"]
        turns = [t for t in turns if t.strip()]
        if not turns:
            return _BASE
        scanned = _scan(turns[-1])
        last = self._route(scanned, cased=_is_cased(turns[-1]))
        if last.document is not None or len(turns) == 1:
            return last
        joined_text = "\n".join(turns)
        joined = self._route(_scan(joined_text), cased=_is_cased(joined_text))
        if joined.document is None:
            return last
        names = {term for term, named in _query_terms(scanned).items() if named}
        if names - self._terms[self._position[joined.document.doc_id]]:
            return last
        return joined

    def _route(self, scanned: list[tuple[list[str], bool]], *, cased: bool) -> RouteDecision:
        if self._retriever is None:
            return _BASE
        known = [term for terms, _ in scanned for term in terms if term in self._retriever.vocab_dict]
        if not known:
            return _BASE
        scores = self._retriever.get_scores(known)
        top = int(np.argmax(scores))  # the first maximum: ties go to the lowest doc_id
        bm25 = float(scores[top])
        if bm25 <= 0.0:
            return _BASE
        terms = _query_terms(scanned)
        if not cased:
            # Typed all in lowercase, a query cannot mark its names; the top document's own
            # capitals say which of the query's terms are names there (NAME_WEIGHT).
            names = self._names[top]
            terms = {term: term in names for term in terms}
        score = self._coverage(terms, top)
        document = self._docs[top] if score >= self.threshold else None
        return RouteDecision(document=document, score=score, bm25=bm25)

    def _coverage(self, terms: dict[str, bool], index: int) -> float:
        """IDF-weighted share of the query's terms that document `index` contains; names weigh more."""
        doc_terms = self._terms[index]
        total = matched = 0.0
        for term, named in terms.items():
            weight = self.idf(term) * (1.0 + NAME_WEIGHT * named)
            total += weight
            if term in doc_terms:
                matched += weight
        return matched / total if total > 0 else 0.0


def build_router(documents: Iterable[IndexedDocument], threshold: float = DEFAULT_THRESHOLD) -> LexicalRouter:
    """Build a router over the documents (a convenience for LexicalRouter(documents, threshold=...))."""
    return LexicalRouter(documents, threshold=threshold)
