"""The lexical router: which document of a knowledge base a request is about, or none (the base model).

Two stages, both functions of the indexed rows alone, so every API process decides alike:

1. **Candidates.** BM25 (bm25s) over each document's title, text and validated probe questions
   ranks the documents; the top `RouterConfig.candidates` are kept.
2. **Confidence.** Each candidate gets the share of the query's *information* that it contains:

       confidence(q, d) = sum(w(t) for query terms t in d) / sum(w(t) for all query terms t)
       w(t) = rarity(t) * idf(t) * (1 + name_weight if t is a name in the query else 1)
       rarity(t) = 10 ** (-rarity_exponent * zipf(t))   # zipf: wordfreq's English frequency, 0 if unknown
       idf(t) = log(1 + (N + prior_documents - df + 0.5) / (df + 0.5))   # over the N indexed documents

   and it counts only if the question and the document share an *anchor*: a name, a word rare in
   English (wordfreq), a figure, or two less common words; a general question that shares one common
   word with a document ("What does a biologist study?") stays with the base model. A question that
   names its subject is scored on its own, apart from the sentences around it, so a preface ("You are
   a helpful assistant ...") or a sign-off cannot dilute it; one that names nothing ("When was it
   built?") is scored with them, and with each of them, and the best unit decides.

   A query term that no document contains, that is not an English word, and that is one typo away from a
   document's term ("Varnhlot") counts as that term.

The best candidate's confidence decides: at least `threshold`, the request goes to that document (its
shard's weights, or the document in context while it is pending); below it, the base model alone
answers. An operator may open a band between `floor` and `threshold` in which the base model answers
with that document in the prompt (`RouteDecision.sure` is False); it is closed by default, because
the bundled model reading an unrelated document loses its own answer to a general question.

The index is immutable: rebuild it to change the documents. Documents are indexed in doc_id order
whatever order they come in, and ties go to the lowest doc_id.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

import bm25s
import numpy as np
from rapidfuzz import process as fuzzy_process
from rapidfuzz.distance import DamerauLevenshtein
from wordfreq import top_n_list, zipf_frequency

logger = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class RouterConfig:
    """How the router weighs a query and where it draws its lines (calibrated by bench/knowledge_router.py).

    The defaults were chosen on the calibration half of bench/data/wrappers.json (instructions,
    prefaces, subject lines, longer messages, chat histories, lowercase, typos, synonyms) over the
    fictional dev set and 1,000 generated documents, against general questions asked the same ways;
    the held-out half is only reported. See docs/RESULTS.md, "Routing however the question is asked".
    """

    threshold: float = 0.5
    """Route to the top document (its shard) at or above this confidence."""
    floor: float = 0.5
    """Between floor and threshold: the top document in context through the base model; floor ==
    threshold turns that band off, and it is off by default. Measured with the bundled 135M model
    (bench/knowledge_router.py, docs/RESULTS.md): a band from 0.3 let 3.6 more points of SQuAD
    questions reach their paragraph, but sent 1.0-1.1% more general questions to a document at 1k
    and 10k documents, and the model reading that document kept the answer it gives alone for 1 of
    those 6 questions ("In which year did World War II end?" read beside a treaty: the treaty's year).
    A model that reads past an irrelevant passage may turn it on (SEAL_ROUTER_FLOOR)."""
    name_weight: float = 2.0
    """A query term from a name (capitalised, not sentence-initial) weighs 1 + name_weight times more:
    a question about a document names it, a general question names something the knowledge base lacks."""
    lowercase_name_zipf: float = 3.5
    """In a query typed all in lowercase, a term is a name if the document always capitalises it and it
    is rarer than this in English ("varnholt", not "winter" for a novel called "The Long Winter")."""
    rarity_exponent: float = 0.25
    """rarity = 10 ** (-rarity_exponent * zipf): at 0.25 a word 10x rarer in English weighs 1.8x more,
    so a rare word a document lacks ("halley" in "who discovered halley's comet") outweighs the common
    ones it has. Chosen on the calibration wrappers (reach / general → base): 0 gave 99.9/99.9% at
    10 documents, 99.2/99.4% at 1,000 and 86.9/88.2% on SQuAD; 0.25 gave 100/100%, 100/99.3% and
    88.2/87.8%; 0.5 gave 100/95.7%, 100/95.0% and 88.1/87.8% (a preface word that a document also has,
    "Halvard", outweighed the preface's common words)."""
    prior_documents: int = 10
    """idf is computed as if the knowledge base had this many more documents, none sharing a term, so
    one word of paraphrase cannot sink a question about a one-document knowledge base."""
    candidates: int = 5
    """BM25's top documents that the confidence chooses among (1: BM25's top document alone)."""
    segments: bool = True
    """Score each line and sentence of a query on its own too, and take the best unit."""
    anchor_zipf: float = 3.0
    """A document is a question's subject only if they share an anchor: a name, a number of three digits
    or more, a word rarer than this in English (zipf) ..."""
    anchor_pair_zipf: float = 5.0
    """... or two words rarer than this ..."""
    unanchored_factor: float = 0.0
    """... else its confidence is multiplied by this."""
    fuzzy_min_length: int = 4
    """A word whose term no document has is matched one typo away only when it is at least this long ..."""
    fuzzy_max_zipf: float = 2.0
    """... and rarer than this in English (zipf), i.e. not a word of its own."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.floor <= self.threshold <= 1.0:
            raise ValueError(f"need 0 <= floor <= threshold <= 1, got floor={self.floor!r}, threshold={self.threshold!r}")
        if self.candidates < 1:
            raise ValueError(f"candidates must be at least 1, got {self.candidates!r}")


DEFAULT_CONFIG = RouterConfig()
DEFAULT_THRESHOLD = DEFAULT_CONFIG.threshold


def router_config(threshold: float | None = None, floor: float | None = None) -> RouterConfig:
    """The calibrated weighing with an operator's lines where set (SEAL_ROUTER_THRESHOLD, SEAL_ROUTER_FLOOR).

    A threshold set alone keeps the default band's width below it (none by default), so setting
    the threshold alone never makes an invalid pair."""
    threshold = DEFAULT_CONFIG.threshold if threshold is None else threshold
    if floor is None:
        floor = max(0.0, threshold - (DEFAULT_CONFIG.threshold - DEFAULT_CONFIG.floor))
    return replace(DEFAULT_CONFIG, threshold=threshold, floor=floor)

# A token is a run of letters/digits, optionally joined by hyphens or apostrophes ("tessari-4",
# "o'brien") or by a decimal point between digits ("3.1"). Thousands separators are removed first
# so "2,940" and "2940" are the same term.
_TOKEN = re.compile(r"[^\W_]+(?:(?:[-'’]|(?<=\d)\.(?=\d))[^\W_]+)*")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
_SENTENCE_START = ".?!:;\"“(\n"
# Units a query is scored in besides the whole: lines, and sentences ending in . ? or !
_SEGMENT_BREAK = re.compile(r"\n+|(?<=[.?!])\s+")


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
    score: float  # the confidence in [0, 1] that was compared with the threshold and the floor
    bm25: float  # the raw BM25 score of the chosen document (for logs)
    sure: bool = True  # False: score in [floor, threshold), answer with the document in the prompt
    candidates: tuple[tuple[int, float], ...] = field(default=(), compare=False)  # top (doc_id, confidence), for logs


_BASE = RouteDecision(document=None, score=0.0, bm25=0.0)


@dataclass(frozen=True)
class _Token:
    """One word of a text: its terms (stem, and the lowercased word it came from) and how it was written."""

    parts: tuple[tuple[str, str], ...]  # (stem, word) of each part of a hyphenated token, stopwords left out
    compound: str | None  # the stemmed hyphenated whole ("tessari-4"), a document term only
    capitalised: bool
    starts_sentence: bool

    @property
    def named(self) -> bool:
        """A name: capitalised where a sentence does not start ("France" in "the capital of France")."""
        return self.capitalised and not self.starts_sentence


@dataclass(frozen=True)
class _QueryTerm:
    terms: frozenset[str]  # the term, or the documents' terms one typo away from it
    zipf: float  # how common the word it came from is in English
    rarity: float  # 10 ** (-rarity_exponent * zipf)
    idf: float
    named: bool


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


ENGLISH_WORDS = 30_000
"""How many of the most common English words a query's typos are corrected to (down to zipf ~3)."""


@lru_cache(maxsize=1)
def _english_by_length() -> dict[int, list[str]]:
    """The most common English words by length, for typos in words no document has ("decribes")."""
    by_length: dict[int, list[str]] = {}
    for word in top_n_list("en", ENGLISH_WORDS, wordlist="large"):
        if word.isalpha():
            by_length.setdefault(len(word), []).append(word)
    return by_length


def _one_typo_away(word: str, by_length: dict[int, list[str]]) -> list[str]:
    """The words of `by_length` one swapped, dropped, doubled or wrong letter away from `word`."""
    choices = [w for n in (len(word) - 1, len(word), len(word) + 1) for w in by_length.get(n, ())]
    return [m[0] for m in fuzzy_process.extract(word, choices, scorer=DamerauLevenshtein.distance, score_cutoff=1,
                                                 limit=None)]


@lru_cache(maxsize=1 << 16)
def zipf(word: str) -> float:
    """How common a lowercased word is in English: log10 of its count per billion words (0 if unknown)."""
    return zipf_frequency(word, "en", wordlist="large")


def _scan(text: str) -> list[_Token]:
    """The tokens of a text, with their terms and how they were written."""
    text = _THOUSANDS.sub("", text)
    out: list[_Token] = []
    end = 0
    for match in _TOKEN.finditer(text):
        raw = match.group(0)
        starts_sentence = end == 0 or any(c in _SENTENCE_START for c in text[end : match.start()])
        end = match.end()
        word = raw.lower()
        if word.endswith(("'s", "’s")):
            word = word[:-2]
        word = word.replace("'", "").replace("’", "")
        pieces = [p for p in word.split("-") if p]
        parts = tuple((_stem(p), p) for p in pieces if p not in STOPWORDS)
        if not parts:
            continue
        compound = "-".join(_stem(p) for p in pieces) if len(pieces) > 1 else None
        out.append(_Token(parts, compound, raw[0].isupper(), starts_sentence))
    return out


def _segments(text: str) -> list[str]:
    """The lines and sentences of a query, the units it is scored in besides the whole."""
    return [s for s in (part.strip() for part in _SEGMENT_BREAK.split(text)) if s]


def tokenize(text: str) -> list[str]:
    """Content terms of a text, in order: lowercased, stemmed, stopwords dropped.

    A hyphenated token yields itself and its parts ("tessari-4", "tessari", "4"), so "Tessari-4",
    "Tessari 4" and "tessari-4" all match.
    """
    terms: list[str] = []
    for token in _scan(text):
        if token.compound is not None:
            terms.append(token.compound)
        terms += [stem for stem, _ in token.parts]
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

    def __init__(self, documents: Iterable[IndexedDocument] = (), *, threshold: float | None = None,
                 config: RouterConfig = DEFAULT_CONFIG):
        """Index the documents (any order; they are sorted by doc_id).

        Args:
            documents: the knowledge base's documents; doc_ids must be unique.
            threshold: overrides `config.threshold` (the floor moves down with it when it would exceed it).
            config: the weighing and the lines (RouterConfig's defaults are the calibrated ones).

        Raises:
            ValueError: on a duplicate doc_id, an unknown state or an invalid threshold.
        """
        if threshold is not None:
            config = replace(config, threshold=threshold, floor=min(config.floor, threshold))
        started = time.perf_counter()
        docs = tuple(sorted(documents, key=lambda d: d.doc_id))
        duplicates = sorted(i for i, n in Counter(d.doc_id for d in docs).items() if n > 1)
        if duplicates:
            raise ValueError(f"duplicate doc_id(s) {duplicates}")
        for doc in docs:
            if doc.state not in STATES:
                raise ValueError(f"document {doc.doc_id}: unknown state {doc.state!r} (expected one of {STATES})")
        self.config = config
        self.threshold = config.threshold
        self._docs = docs
        self._position = {doc.doc_id: i for i, doc in enumerate(docs)}
        corpus: list[list[str]] = []
        self._terms: list[frozenset[str]] = []
        self._names: list[frozenset[str]] = []
        word_terms: dict[str, str] = {}  # every word of the documents -> its term (for typos)
        for doc in docs:
            terms, capitalised, lowercase = [], set(), set()
            for token in _scan(doc.routing_text()):
                stems = [stem for stem, _ in token.parts]
                terms += ([token.compound] if token.compound else []) + stems
                (capitalised if token.capitalised else lowercase).update(stems)
                for stem, word in token.parts:
                    word_terms.setdefault(word, stem)
            corpus.append(terms)
            self._terms.append(frozenset(terms))
            # The terms a document always writes capitalised, at a sentence start too: its names,
            # which an all-lowercase query is weighed by.
            self._names.append(frozenset(capitalised - lowercase))
        df: dict[str, int] = {}
        for terms in self._terms:
            for term in terms:
                df[term] = df.get(term, 0) + 1
        self._df = df
        self._word_terms = word_terms
        by_length: dict[int, list[str]] = {}
        for word in sorted(w for w in word_terms if len(w) >= config.fuzzy_min_length - 1 and not w.isdigit()):
            by_length.setdefault(len(word), []).append(word)
        self._by_length = by_length
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
        n = len(self._docs) + self.config.prior_documents
        df = self._df.get(term, 0)
        return math.log(1.0 + (n - df + 0.5) / (df + 0.5))

    def route(self, text: str) -> RouteDecision:
        """Route one query string: the best of the whole text and each of its lines and sentences."""
        return self._route_text(text)

    def route_messages(self, messages: list[dict]) -> RouteDecision:
        """Route a chat: the last user turn first; when it does not route, all user turns joined.

        The second pass lets a follow-up ("and when was it built?") reach the document an earlier
        turn named. It is not taken when the last turn names something that document lacks: "What
        is the capital of France?" after a question about a document is a new question, not a
        follow-up. A system prompt is not routing text: it is usually the same for every request.
        """
        turns = [message_text(m.get("content")) for m in messages if m.get("role") == "user"]
        turns = [t for t in turns if t.strip()]
        if not turns:
            return _BASE
        last = self._route_text(turns[-1])
        if (last.document is not None and last.sure) or len(turns) == 1:
            return last
        joined = self._route_text("\n".join(turns))
        if joined.document is None or joined.score <= last.score:
            return last
        names = {stem for token in _scan(turns[-1]) if token.named for stem, _ in token.parts}
        if names - self._terms[self._position[joined.document.doc_id]]:
            return last
        return joined

    def _route_text(self, text: str) -> RouteDecision:
        if self._retriever is None:
            return _BASE
        units = [text]
        segments = _segments(text) if self.config.segments else []
        if len(segments) > 1:
            questions = [s for s in segments if s.endswith("?")]
            if any(map(self._names_a_subject, questions)):
                # A question that names its subject says what the message is about; a preface or a
                # sign-off around it does not ("You are Orion, the assistant of Halvard & Pike." before
                # "What is the capital of France?" is not about a document that names a Halvard).
                units = questions
            else:  # "Subject: the Varnholt Observatory" over "When was it completed?"
                units += segments
        best: tuple[float, float, int] | None = None  # (confidence, bm25, -index): the largest wins
        candidates: tuple[tuple[int, float], ...] = ()
        for unit in units:
            scored = self._score_unit(unit)
            if scored and (best is None or scored[0] > best):
                best, candidates = scored[0], scored[1]
        if best is None:
            return _BASE
        score, bm25, index = best[0], best[1], -best[2]
        config = self.config
        if score < config.floor:
            return RouteDecision(None, score, bm25, True, candidates)
        return RouteDecision(self._docs[index], score, bm25, score >= config.threshold, candidates)

    def _names_a_subject(self, text: str) -> bool:
        """Whether a text names something of its own: a name, a word rare in English, a year or a figure."""
        return any(token.named or any(zipf(word) < self.config.anchor_zipf or (word.isdigit() and len(word) >= 3)
                                      for _, word in token.parts) for token in _scan(text))

    def _score_unit(self, text: str) -> tuple[tuple[float, float, int], tuple[tuple[int, float], ...]] | None:
        """The best candidate for one unit of a query, as (confidence, bm25, -index), with the top three."""
        assert self._retriever is not None
        terms = self._query_terms(_scan(text))
        vocabulary = self._retriever.vocab_dict
        known = sorted({term for query_term in terms.values() for term in query_term.terms if term in vocabulary})
        if not known:
            return None
        scores = self._retriever.get_scores(known)
        k = min(self.config.candidates, len(scores))
        if k == 1:
            top = np.array([np.argmax(scores)])  # the first maximum: ties go to the lowest doc_id
        else:
            top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        cased = _is_cased(text)
        ranked = []
        for index in top.tolist():
            bm25 = float(scores[index])
            if bm25 <= 0.0:
                continue
            ranked.append((self._confidence(terms, index, cased), bm25, -index))
        if not ranked:
            return None
        ranked.sort(reverse=True)
        return ranked[0], tuple((self._docs[-i].doc_id, round(c, 4)) for c, _, i in ranked[:3])

    def _query_terms(self, tokens: list[_Token]) -> dict[str, _QueryTerm]:
        """The query's terms (hyphenated compounds left out: their parts count, so "Kestrel 9" and
        "Kestrel-9" score alike), each with its English rarity and whether it came from a name."""
        exponent = self.config.rarity_exponent
        terms: dict[str, _QueryTerm] = {}
        for token in tokens:
            for stem, word in token.parts:
                alternatives, frequency = frozenset([stem]), zipf(word)
                if stem not in self._df and self._mistyped(word):
                    corrections = _one_typo_away(word, self._by_length)
                    if corrections:  # a typo of the documents' words
                        alternatives = frozenset(self._word_terms[w] for w in corrections)
                        frequency = min(map(zipf, corrections))
                    else:  # a typo of a common word weighs as that word, not as an unknown one
                        frequency = max(map(zipf, _one_typo_away(word, _english_by_length())), default=frequency)
                named, seen = token.named, terms.get(stem)
                if seen is not None:
                    frequency, named = min(frequency, seen.zipf), named or seen.named
                idf = max(map(self.idf, alternatives))
                terms[stem] = _QueryTerm(alternatives, frequency, 10.0 ** (-exponent * frequency), idf, named)
        return terms

    def _mistyped(self, word: str) -> bool:
        """Whether a query word that no document has may be a typo: long enough and no English word.

        Its corrections are the documents' words one typo away, every one of them (the question's other
        words pick the document), or else the common English words one typo away."""
        config = self.config
        return len(word) >= config.fuzzy_min_length and not word.isdigit() and zipf(word) < config.fuzzy_max_zipf

    def _confidence(self, terms: dict[str, _QueryTerm], index: int, cased: bool) -> float:
        """The weighted share of the query's terms that document `index` contains."""
        doc_terms = self._terms[index]
        # Typed all in lowercase, a query cannot mark its names; the document's own capitals say which
        # of its terms are names there.
        names = None if cased else self._names[index]
        config = self.config
        total = matched = 0.0
        anchored, specific = False, 0
        for term, query_term in terms.items():
            named = query_term.named if names is None else (
                query_term.zipf < config.lowercase_name_zipf and not names.isdisjoint(query_term.terms))
            weight = query_term.rarity * query_term.idf * (1.0 + config.name_weight * named)
            total += weight
            if not doc_terms.isdisjoint(query_term.terms):
                matched += weight
                # What the question is specifically about: a name, a word rare in English, a year or a
                # figure, or two less common words together ("corporal punishment"). A general question
                # shares one common word with a document ("What does a biologist study?" and a document
                # on a lizard that names the biologist who described it).
                anchored = anchored or named or query_term.zipf < config.anchor_zipf or (term.isdigit() and len(term) >= 3)
                specific += query_term.zipf < config.anchor_pair_zipf
        anchored = anchored or specific >= 2
        if total <= 0:
            return 0.0
        return matched / total * (1.0 if anchored else config.unanchored_factor)


def build_router(documents: Iterable[IndexedDocument], threshold: float | None = None) -> LexicalRouter:
    """Build a router over the documents (a convenience for LexicalRouter(documents, threshold=...))."""
    return LexicalRouter(documents, threshold=threshold)
