"""Facts of a passage as short, self-contained statements, and the question-and-answer items built from them.

A 135M model that memorises a passage as one block answers a question about its fourth sentence by
reciting the first three, and cannot answer from the other side at all ("which observatory stands
above Lissemark?"), because every fact was only ever seen after the name it is about. This module
turns a passage into what teaches retrieval instead, deterministically (no model in the loop):

- statements: each sentence with its pronoun or "the observatory" resolved to the title, so every
  sentence stands alone;
- entities: the names, numbers and dates in each statement;
- forward items: the statement with one entity asked for ("... sits on what, 2,940 meters above ...?"),
  answered with the entity alone, which is the short answer a user wants;
- reverse items: "What do you know about Lissemark?" answered with the statement that names the
  title, so the title is learned as something that follows each of its facts (the reversal-curse fix);
- cloze probes: one entity masked, to grade recall when the model's own questions fail.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .grade import normalize_answer
from .types import Probe

# Words that start a sentence with a capital without being a name.
_FUNCTION_WORDS = frozenset("""
a an the it its this that these those he she his her they their there here in on at by for from of to with
since after before during when while until as and but or so if then today now each every both all some many
most under over about around between among into onto upon later earlier also yet still however although
""".split())
_PRONOUN_SUBJECTS = {"it": "", "its": "'s", "he": "", "she": "", "they": "", "his": "'s", "her": "'s",
                     "their": "'s"}
_NUMBER_WORDS = ("one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
                 "sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety "
                 "hundred thousand million").split()
_MONTHS = ("January February March April May June July August September October November December").split()
# A name: capitalised words (with inner hyphens, digits or apostrophes), joined by "of"/"&"/"and" or
# lowercase particles when the next word is capitalised again ("Treaty of Osmund Ford", "Aldous & Crane").
_CAP_WORD = r"[A-Z][\w'’-]*"
_NAME = re.compile(rf"{_CAP_WORD}(?:(?:\s+(?:of|the|and|&|de|von|van)\s+|\s+){_CAP_WORD})*")
_DATE = re.compile(rf"\b(?:{'|'.join(_MONTHS)})(?:\s+\d{{1,2}},?)?\s+\d{{4}}\b")
_NUMBER = re.compile(r"(?<![\w-])\d[\d,]*(?:\.\d+)?(?:\s*(?:%|percent))?"
                     rf"(?:\s+(?:{'|'.join(_NUMBER_WORDS)}))?\b")
_NUMBER_WORD = re.compile(rf"\b(?:{'|'.join(_NUMBER_WORDS)})(?:[\s-](?:{'|'.join(_NUMBER_WORDS)}))*\b",
                          re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
_UNIT = re.compile(r"\s+([a-z]+(?:-[a-z]+)?)")


@dataclass(frozen=True)
class Fact:
    """One self-contained statement and the entities it names."""

    statement: str
    entities: tuple[str, ...]


@dataclass(frozen=True)
class QAItem:
    """A training chat: a user question and the short answer the adapter should give."""

    question: str
    answer: str
    direction: str  # "forward" (about the title, answered with a fact) or "reverse" (a fact -> the title)


def split_sentences(text: str) -> list[str]:
    """Split prose into sentences on ., ! or ? followed by whitespace and a capital/digit."""
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def subject_of(title: str | None, text: str) -> str:
    """What the passage is about: its title, else its first name-like span, else "the passage"."""
    if title and title.strip():
        return title.strip()
    names = _names(split_sentences(text)[0]) if text.strip() else []
    return names[0] if names else "the passage"


def extract_facts(text: str, title: str | None = None) -> list[Fact]:
    """Each sentence of `text`, made self-contained, with the names, numbers and dates it holds."""
    subject = subject_of(title, text)
    facts = []
    for sentence in split_sentences(text):
        statement = resolve_subject(sentence, subject)
        entities = tuple(e for e in entities_in(statement) if not _same(e, subject))
        facts.append(Fact(statement=statement, entities=entities))
    return facts


def resolve_subject(sentence: str, subject: str) -> str:
    """Replace a leading pronoun, or "the <head noun of the subject>", with the subject itself."""
    if _mentions(sentence, subject):
        return sentence
    words = sentence.split(maxsplit=1)
    if not words:
        return sentence
    first = words[0].lower()
    rest = words[1] if len(words) > 1 else ""
    if first in _PRONOUN_SUBJECTS:
        return f"{_capitalized(subject)}{_PRONOUN_SUBJECTS[first]} {rest}".strip()
    head = subject.split()[-1].lower()
    pattern = re.compile(rf"\b[Tt]he {re.escape(head)}\b")
    match = pattern.search(sentence)
    if match:
        replacement = _capitalized(subject) if match.start() == 0 else _lowered_article(subject)
        return sentence[: match.start()] + replacement + sentence[match.end():]
    return f"{_capitalized(subject)}: {sentence}"


def entities_in(sentence: str) -> list[str]:
    """Names, numbers (with their unit word), dates and spelled-out numbers, in order, without repeats.

    Overlapping matches keep the longest ("March 2024" over "March" and "2024").
    """
    spans: list[tuple[int, int, str]] = [(m.start(), m.end(), m.group(0)) for m in _DATE.finditer(sentence)]
    for pattern in (_NUMBER, _NUMBER_WORD):
        for m in pattern.finditer(sentence):
            value, end = m.group(0), m.end()
            unit = _UNIT.match(sentence, m.end())
            # "2,940 meters", "14 kilowatt-hours": the unit is part of the answer a user expects; a
            # year ("in 1987 and") is not followed by one.
            if unit and not _is_year(value) and unit.group(1) not in _FUNCTION_WORDS:
                value, end = f"{value} {unit.group(1)}", unit.end()
            spans.append((m.start(), end, value))
    spans.extend((start, start + len(name), name) for start, name in _name_spans(sentence))
    spans.sort(key=lambda s: (s[0], -(s[1] - s[0])))
    kept: list[tuple[int, int, str]] = []
    for span in spans:
        if all(span[1] <= k[0] or span[0] >= k[1] for k in kept):
            kept.append(span)
    out: list[str] = []
    for _, _, value in sorted(kept):
        if value and all(normalize_answer(value) != normalize_answer(o) for o in out):
            out.append(value)
    return out


def forward_items(facts: list[Fact]) -> list[QAItem]:
    """For each entity of each statement, the statement asked with that entity as "what"."""
    items = []
    for fact in facts:
        for entity in fact.entities:
            question = _ask_for(fact.statement, entity)
            if question:
                items.append(QAItem(question=question, answer=entity, direction="forward"))
    return items


# Commas (not the thousands in "2,940"), semicolons, colons, brackets and dashes bound a clause.
_CLAUSE_BREAK = re.compile(r"\s*(?:,(?!\d{3})|[;:()]|\s-\s|\s–\s)\s*")
_CLAUSE_OPENERS = re.compile(r"^(?:(?:and|but|or|so|while|whereas|although|though|then)\s+)+", re.IGNORECASE)


def clause_items(facts: list[Fact]) -> list[QAItem]:
    """For each entity, the clause around it asked for it: the short question a user writes about one fact
    of a long sentence ("... requires that every worker has at least what paid holidays each year?"),
    beside the whole statement that forward_items asks. Only where the clause is shorter than the statement."""
    items = []
    for fact in facts:
        whole = fact.statement.rstrip(" .!?")
        pieces = [_CLAUSE_OPENERS.sub("", c) for c in _CLAUSE_BREAK.split(whole) if c]
        for entity in fact.entities:
            clause = next((c for c in pieces if _find(c, entity) >= 0), None)
            if clause is None or len(clause.split()) < len(entity.split()) + 3 or clause == whole:
                continue  # too short to ask anything, or the whole statement already asked
            question = _ask_for(clause, entity)
            if question:
                items.append(QAItem(question=question[0].upper() + question[1:], answer=entity, direction="forward"))
    return items


def what_question(statement: str, subject: str) -> str | None:
    """A statement that opens with its subject, asked from its other side: "What sits on Mount Ceddra?"."""
    match = re.match(rf"(?:the\s+)?{re.escape(subject)}(?:'s)?\s+(.+?)[.!]?$", statement, re.IGNORECASE)
    if match is None or len(match.group(1).split()) < 2 or statement.lower().startswith(f"{subject.lower()}'s"):
        return None
    return f"What {match.group(1)}?"


# Words that open the next phrase of a sentence: a question cut before one asks for one relation only.
_PHRASE_OPENERS = frozenset("""
at in on of by for from to with and but or who whom whose which that where when while since after before as
than into onto under over between among during until through across above below near off along
""".split())
# Nor do these end one: an article, a pronoun or an auxiliary opens the next phrase ("... from what was?").
_NOT_PHRASE_ENDS = frozenset("the a an it its he she his her they their them him is was are were has had have be been".split())


def prefix_items(facts: list[Fact], subject: str) -> list[QAItem]:
    """Each fact asked only as far as the phrase of the name it asks for, both ways: "The SS Chillon was a
    steam freighter launched in what year?" answered with the year, and "What sits on Mount Zeirtura?"
    answered with the subject. A user's question names the subject and one relation, not the sentence's
    other facts, which the whole-statement questions (forward_items, what_question) hand the student as
    cues it will not get. An item is made only where the cut leaves out at least two words, keeps the
    subject, and keeps a word of the name's own clause before it ("... Zeirtura, what?" asks nothing)."""
    items = []
    for fact in facts:
        whole = fact.statement.rstrip(" .!?")
        for entity in fact.entities:
            cut = _phrase_cut(whole, entity)
            question = _ask_for(cut, entity) if cut and _mentions(cut, subject) else None
            if question:
                items.append(QAItem(question=question, answer=entity, direction="forward"))
        reverse = what_question(fact.statement, subject)
        for entity in fact.entities if reverse else ():
            if _is_year(entity) or not _names(entity):
                continue  # as reverse_items: a bare number is no handle to recall a fact by
            cut = _phrase_cut(reverse.rstrip("?"), entity)
            if cut:
                items.append(QAItem(question=cut + "?", answer=subject, direction="reverse"))
    return items


def _phrase_cut(statement: str, entity: str) -> str | None:
    """`statement` up to the end of the phrase holding `entity` ("launched in 1919 at the ..." ->
    "launched in 1919"; "81 meters long and ..." -> "81 meters long"), or None where that leaves out
    fewer than two words, or where the entity's own clause has no content word before it ("On
    September 30, 1960, ..." asks nothing once cut)."""
    pos = _find(statement, entity)
    if pos <= 0:
        return None
    clause_start = max((m.end() for m in _CLAUSE_BREAK.finditer(statement[:pos])), default=0)
    if all(re.sub(r"['’]s$", "", w.lower()) in _FUNCTION_WORDS for w in statement[clause_start:pos].split()):
        return None
    rest = statement[pos + len(entity):].split()
    # One more word where it ends the name's phrase ("yards", "long"), never the next phrase or a name.
    keep = int(bool(rest) and rest[0].islower() and rest[0].strip(",;:") not in _PHRASE_OPENERS | _NOT_PHRASE_ENDS)
    if len(rest) - keep < 2:
        return None
    return " ".join([statement[: pos + len(entity)], *rest[:keep]]).rstrip(",;:")


def reverse_items(facts: list[Fact], subject: str) -> list[QAItem]:
    """For each entity, "What do you know about <entity>?" answered with the statement naming the subject."""
    items = []
    seen: set[str] = set()
    for fact in facts:
        if not _mentions(fact.statement, subject):
            continue
        for entity in fact.entities:
            key = normalize_answer(entity)
            if key in seen or _is_year(entity) or not _names(entity):
                continue  # a bare year or number is no handle to recall a fact by
            seen.add(key)
            items.append(QAItem(question=f"What do you know about {entity}?", answer=fact.statement,
                                direction="reverse"))
    return items


def cloze_probes(facts: list[Fact], n: int) -> list[Probe]:
    """Up to `n` probes that mask one entity of a statement, spread over statements and answers."""
    candidates: list[list[Probe]] = []
    for fact in facts:
        per_fact = []
        for entity in fact.entities:
            masked = _mask(fact.statement, entity)
            if masked:
                per_fact.append(Probe(question=f"Fill in the blank with a name, number or date: {masked}",
                                      answer=entity))
        candidates.append(per_fact)
    probes: list[Probe] = []
    seen: set[str] = set()
    # Round-robin over statements, so four probes cover four facts, not one sentence's four names.
    for depth in range(max((len(c) for c in candidates), default=0)):
        for per_fact in candidates:
            if depth < len(per_fact) and normalize_answer(per_fact[depth].answer) not in seen:
                seen.add(normalize_answer(per_fact[depth].answer))
                probes.append(per_fact[depth])
    return probes[:n]


def _find(statement: str, entity: str) -> int:
    """Where `entity` stands as whole words in `statement` ("Quell" is not inside "Quellbrook"), or -1."""
    m = re.search(rf"(?<![\w-]){re.escape(entity)}(?![\w-])", statement)
    return m.start() if m else -1


def _ask_for(statement: str, entity: str) -> str | None:
    pos = _find(statement, entity)
    if pos < 0:
        return None
    word = "what year" if _is_year(entity) else "when" if entity.split()[0] in _MONTHS else "what"
    question = (statement[:pos] + word + statement[pos + len(entity):]).rstrip(" .!")
    if pos == 0:
        question = question[0].upper() + question[1:]
    return question + "?"


def _mask(statement: str, entity: str) -> str | None:
    pos = _find(statement, entity)
    if pos < 0:
        return None
    return statement[:pos] + "___" + statement[pos + len(entity):]


def _name_spans(sentence: str) -> list[tuple[int, str]]:
    spans = []
    for m in _NAME.finditer(sentence):
        words = m.group(0).split()
        start = m.start()
        # Drop capitalised function words a sentence starts with ("The Varnholt ..." -> "Varnholt ...").
        while words and words[0].lower() in _FUNCTION_WORDS:
            start += len(words[0]) + 1
            words = words[1:]
        while words and words[-1].lower() in _FUNCTION_WORDS:
            words = words[:-1]
        name = " ".join(words).rstrip("'’").removesuffix("'s").removesuffix("’s")
        if name and not name.isdigit() and name not in _MONTHS:
            spans.append((start, name))
        elif name in _MONTHS:
            spans.append((start, name))
    return spans


def _names(text: str) -> list[str]:
    return [name for _, name in _name_spans(text)]


def _is_year(value: str) -> bool:
    return bool(re.fullmatch(r"1\d{3}|20\d{2}", value.strip()))


def _handle(subject: str) -> str:
    """The part of a subject a passage repeats: "Kestrel-9" of "Kestrel-9 battery", else the whole."""
    names = _names(subject)
    return names[0] if names else _strip_article(subject)


def _mentions(sentence: str, subject: str) -> bool:
    return _find(sentence.lower(), _handle(subject).lower()) >= 0


def _same(entity: str, subject: str) -> bool:
    """An entity that is the subject, or a piece of its name, is what every fact is about, not a fact."""
    e, s = normalize_answer(entity), normalize_answer(subject)
    return bool(e) and f" {e} " in f" {s} "


def _strip_article(text: str) -> str:
    return re.sub(r"^(?:the|a|an)\s+", "", text.strip(), flags=re.IGNORECASE)


def _capitalized(subject: str) -> str:
    return subject[0].upper() + subject[1:] if subject else subject


def _lowered_article(subject: str) -> str:
    return re.sub(r"^The\b", "the", subject)
