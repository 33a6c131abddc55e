"""Invented documents for the knowledge benchmarks: deterministic, seeded, with questions and answers.

Each document is 3-5 sentences of invented facts about one subject (an observatory, a ship, a
company, a festival, a bridge, a species, a novel, a mountain railway, a lighthouse, a composer, a
software project), built from templates whose slots are filled with invented names made of
syllables, years, numbers with units and people. Every document comes with
- forward questions, which name the subject and ask for a short fact from the text
  ("In what year was the Varnholt Observatory finished?" -> "1987"), and
- reverse questions, which do not name the subject and whose answer is the subject
  ("Which observatory sits on Mount Ceddra?" -> "Varnholt Observatory").

Every invented name is unique across all the documents of one call (a reverse question keys on
one, so it points at exactly one document), and every answer appears verbatim in its text. A small
shared pool of invented province names recurs across documents on purpose, as real corpora repeat
place names; no question keys on a province alone. Some questions paraphrase the text ("finished"
for "completed", "spans" for "over"), so a router cannot rely on copying.

    from docgen import generate_documents        # bench/ on sys.path, as bench scripts have it
    docs = generate_documents(1000, seed=0)
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field

_ONSETS = (
    "b br c ch cr d dr f fl g gr h k kr l m n p pr qu r s sc sk st t th tr v w z"
).split()
_VOWELS = "a e i o u a e o ae ei ou".split()
_CODAS = ("", "", "", "n", "r", "l", "s", "th", "nd", "rk", "ll", "st", "m", "rn", "ck", "v")
_ENDINGS = (
    "a o en el ar on is ine ard ick mark holt wick by more ford vale stead ton dale mere ess ira ow"
).split()
_PROVINCES = 40  # size of the shared province pool

# Syllables can spell real names ("China" and "Paris" came up in the first 10,000): a document that
# mentions a real country, city or planet would make a general question about it a question about
# the knowledge base, so such names are never generated.
_REAL_NAMES = frozenset(
    """
    africa america amazon ankara argentina asia athens atlanta austin australia austria bangkok beijing
    berlin bern boston brazil cairo canada canberra chicago chile china cuba dallas delhi denver dublin
    earth egypt england europe everest france geneva germany ghana greece haiti india iran iraq ireland
    israel italy japan jordan jupiter kenya korea lima lisbon london madrid malta mars mercury mexico
    milan monaco moscow naples nepal niger nile norway oman oslo ottawa panama paris peru poland prague
    qatar rome russia sahara saturn seoul spain sudan sweden sydney texas tokyo turkey uranus venice
    venus vienna wales warsaw yemen zurich
    """.split()
)


@dataclass(frozen=True)
class QA:
    """One question and its short answer (which appears verbatim in the document's text)."""

    question: str
    answer: str


@dataclass(frozen=True)
class GeneratedDocument:
    """One invented document with its forward and reverse questions."""

    doc_id: int
    kind: str
    title: str
    text: str
    forward: list[QA] = field(default_factory=list)
    reverse: list[QA] = field(default_factory=list)
    names: tuple[str, ...] = ()  # the invented names drawn for this document (some may be in dropped sentences)


class _Names:
    """Invented capitalised names, never the same twice within one generator."""

    def __init__(self, rng: random.Random, reserved: frozenset[str] = frozenset()):
        self.rng = rng
        self.reserved = reserved | _REAL_NAMES
        self.used: set[str] = set()
        self.drawn: list[str] = []  # since the last take()

    def take(self) -> tuple[str, ...]:
        """The names drawn since the last call."""
        drawn, self.drawn = tuple(self.drawn), []
        return drawn

    def _syllable(self) -> str:
        rng = self.rng
        return rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)

    def word(self) -> str:
        """A fresh name: one or two syllables and an ending, 5 to 12 letters."""
        for _ in range(1000):
            body = self._syllable() + (self._syllable() if self.rng.random() < 0.35 else "")
            name = (body + self.rng.choice(_ENDINGS)).capitalize()
            if 5 <= len(name) <= 12 and name.lower() not in self.used and name.lower() not in self.reserved:
                self.used.add(name.lower())
                self.drawn.append(name)
                return name
        raise RuntimeError("ran out of invented names")

    def person(self) -> str:
        return f"{self.word()} {self.word()}"


# A template turns (names, rng, province pool) into a kind, a title and its sentences; each
# sentence carries the forward and reverse questions it supports. Sentence 0 is always kept.
_Sentence = tuple[str, list[QA], list[QA]]
_Template = Callable[[_Names, random.Random, list[str]], tuple[str, str, list[_Sentence]]]


def _year(rng: random.Random, lo: int = 1820, hi: int = 2023) -> int:
    return rng.randint(lo, hi)


def _observatory(nm: _Names, rng: random.Random, provinces: list[str]):
    title = f"{nm.word()} Observatory"
    mount, town, person, comet, org = nm.word(), nm.word(), nm.person(), nm.word(), nm.word()
    y, y2 = _year(rng, 1850, 1995), _year(rng, 1996, 2022)
    height = rng.randint(800, 4800)
    mirror = f"{rng.randint(1, 9)}.{rng.randint(1, 9)}"
    code = f"{comet}-{rng.randint(2, 99)}"
    return "observatory", title, [
        (f"The {title} sits on Mount {mount}, {height:,} meters above the town of {town} in the province of {rng.choice(provinces)}.",
         [QA(f"On which mountain does the {title} stand?", f"Mount {mount}")],
         [QA(f"Which observatory sits on Mount {mount}?", title),
          QA(f"Which observatory overlooks the town of {town}?", title)]),
        (f"It was completed in {y} and named after the astronomer {person}, who discovered the comet {code}.",
         [QA(f"In what year was the {title} finished?", str(y)), QA(f"Which comet did {person} discover?", code)],
         [QA(f"Which observatory is named after the astronomer {person}?", title)]),
        (f"Its main telescope has a mirror {mirror} meters wide.",
         [QA(f"How wide is the mirror of the main telescope at the {title}?", f"{mirror} meters")], []),
        (f"Since {y2} the observatory has been run by the {org} Trust.",
         [QA(f"Who has run the {title} since {y2}?", f"{org} Trust")],
         [QA(f"Which observatory does the {org} Trust run?", title)]),
    ]


def _ship(nm: _Names, rng: random.Random, provinces: list[str]):
    name = nm.word()
    title = f"SS {name}"
    yard, port, port2, captain, cape = nm.word(), nm.word(), nm.word(), nm.person(), nm.word()
    y = _year(rng, 1850, 1960)
    length = rng.randint(60, 240)
    cargo = rng.choice(["timber", "salt", "copper ore", "grain", "coal", "wool", "tea"])
    return "ship", title, [
        (f"The {title} was a steam freighter launched in {y} at the {yard} yards in the port of {port}.",
         [QA(f"In what year was the {title} launched?", str(y)), QA(f"In which port was the {title} built?", port)],
         [QA(f"Which ship was launched at the {yard} yards?", title)]),
        (f"She was {length} meters long and carried {cargo} between {port} and {port2}.",
         [QA(f"How long was the {title}?", f"{length} meters"), QA(f"What cargo did the {title} carry?", cargo)],
         [QA(f"Which freighter sailed between {port} and {port2}?", title)]),
        (f"Her longest-serving captain was {captain}, who commanded her for {rng.randint(3, 30)} years.",
         [QA(f"Who was the longest-serving captain of the {title}?", captain)],
         [QA(f"Which ship did captain {captain} command?", title)]),
        (f"In {y + rng.randint(5, 40)} she ran aground off Cape {cape} and was sold for scrap.",
         [QA(f"Where did the {title} run aground?", f"Cape {cape}")],
         [QA(f"Which steamer was wrecked off Cape {cape}?", title)]),
    ]


def _company(nm: _Names, rng: random.Random, provinces: list[str]):
    title = f"{nm.word()} {rng.choice(['Mills', 'Instruments', 'Ceramics', 'Textiles', 'Optics', 'Foundry'])}"
    founder, town, town2, ceo, product = nm.person(), nm.word(), nm.word(), nm.person(), nm.word()
    y = _year(rng, 1830, 1990)
    item = rng.choice(["lamp", "loom", "kettle", "microscope", "compass", "stove", "clock"])
    model = f"{product}-{rng.randint(2, 900)} {item}"
    return "company", title, [
        (f"{title} is a manufacturer founded in {y} by {founder} in the town of {town}, in {rng.choice(provinces)}.",
         [QA(f"Who founded {title}?", founder), QA(f"When was {title} established?", str(y))],
         [QA(f"Which company did {founder} found?", title)]),
        (f"It employs about {rng.randint(40, 9000):,} people, and its best-known product is the {model}.",
         [QA(f"What is the best-known product of {title}?", model)],
         [QA(f"Which company makes the {model}?", title)]),
        (f"In {y + rng.randint(5, 30)} it opened a second factory in {town2}.",
         [QA(f"Where did {title} open its second factory?", town2)],
         [QA(f"Which manufacturer opened a factory in {town2}?", title)]),
        (f"Since {_year(rng, 1995, 2023)} the company has been led by the chief executive {ceo}.",
         [QA(f"Who is the chief executive of {title}?", ceo)],
         [QA(f"Which company is led by {ceo}?", title)]),
    ]


def _festival(nm: _Names, rng: random.Random, provinces: list[str]):
    thing = rng.choice(["Lantern", "Harvest", "Kite", "Cheese", "Fiddle", "Lilac", "Boat", "Bread"])
    title = f"{nm.word()} {thing} Festival"
    village, founder, street = nm.word(), nm.person(), nm.word()
    month = rng.choice(["January", "March", "April", "May", "June", "July", "August", "September", "October"])
    visitors = f"{rng.randint(2, 90) * 1000:,}"
    return "festival", title, [
        (f"The {title} is a {rng.randint(2, 9)}-day festival held every {month} in the village of {village}.",
         [QA(f"In which village is the {title} held?", village), QA(f"In which month does the {title} take place?", month)],
         [QA(f"Which festival takes place every {month} in {village}?", title)]),
        (f"It was started in {_year(rng, 1880, 2010)} by the baker {founder}.",
         [QA(f"Who started the {title}?", founder)],
         [QA(f"Which festival did the baker {founder} start?", title)]),
        (f"About {visitors} visitors come each year.",
         [QA(f"How many visitors does the {title} draw?", visitors)], []),
        (f"Its main event is a parade along {street} Street.",
         [QA(f"Along which street does the parade of the {title} go?", f"{street} Street")],
         [QA(f"Which festival holds a parade along {street} Street?", title)]),
    ]


def _bridge(nm: _Names, rng: random.Random, provinces: list[str]):
    title = f"{nm.word()} Bridge"
    river, engineer = nm.word(), nm.person()
    kind = rng.choice(["suspension", "arch", "cable-stayed", "truss", "cantilever"])
    span = rng.randint(90, 1900)
    toll = f"{rng.choice(['two', 'three', 'four', 'five', 'six'])} {rng.choice(['crowns', 'florins', 'marks'])}"
    return "bridge", title, [
        (f"The {title} is a {kind} bridge over the river {river}, opened in {_year(rng, 1880, 2021)}.",
         [QA(f"Which river does the {title} cross?", river)],
         [QA(f"Which bridge spans the river {river}?", title)]),
        (f"Its main span is {span:,} meters long, and it carries {rng.randint(2, 8)} lanes of traffic.",
         [QA(f"How long is the main span of the {title}?", f"{span:,} meters")], []),
        (f"It was designed by the engineer {engineer}.",
         [QA(f"Who designed the {title}?", engineer)],
         [QA(f"Which bridge did the engineer {engineer} design?", title)]),
        (f"A toll of {toll} is charged for cars in the province of {rng.choice(provinces)}.",
         [QA(f"What does a car pay to cross the {title}?", toll)], []),
    ]


def _species(nm: _Names, rng: random.Random, provinces: list[str]):
    animal, klass = rng.choice([("moth", "insect"), ("beetle", "insect"), ("frog", "amphibian"),
                                ("finch", "bird"), ("loach", "fish"), ("lizard", "reptile"), ("snail", "mollusc")])
    title = f"{nm.word()} {animal}"
    genus, habitat, biologist = nm.word(), nm.word(), nm.person()
    where = f"{rng.choice(['Lake', 'the Valley of', 'the Forest of', 'the Marshes of'])} {habitat}"
    food = rng.choice(["midge larvae", "lichen", "fallen fruit", "water fleas", "pine seeds", "algae"])
    return "species", title, [
        (f"The {title} ({genus} {nm.word().lower()}) is a small {klass} found only in {where}.",
         [QA(f"Where does the {title} live?", where)],
         [QA(f"Which {animal} is found only in {where}?", title)]),
        (f"It was first described in {_year(rng, 1850, 2020)} by the biologist {biologist}.",
         [QA(f"Who first described the {title}?", biologist)],
         [QA(f"Which {animal} did the biologist {biologist} describe?", title)]),
        (f"It grows to about {rng.randint(2, 30)} centimeters and feeds mainly on {food}.",
         [QA(f"What does the {title} mainly eat?", food)], []),
        (f"Its scientific genus, {genus}, was named in the province of {rng.choice(provinces)}.",
         [QA(f"To which genus does the {title} belong?", genus)],
         [QA(f"Which {animal} belongs to the genus {genus}?", title)]),
    ]


def _book(nm: _Names, rng: random.Random, provinces: list[str]):
    title = f"The {nm.word()} {rng.choice(['Ledger', 'Orchard', 'Compass', 'Winter', 'Harbour', 'Lantern'])}"
    author, hero, island, publisher, prize = nm.person(), nm.person(), nm.word(), nm.word(), nm.word()
    y = _year(rng, 1850, 2020)
    copies = f"{rng.randint(2, 40)} million"
    return "book", title, [
        (f"{title} is a novel by {author}, published in {y} by {publisher} Press.",
         [QA(f"Who wrote {title}?", author), QA(f"In what year did {title} come out?", str(y))],
         [QA(f"Which novel did {author} write?", title)]),
        (f"It follows the cartographer {hero} on a voyage to the island of {island}.",
         [QA(f"Who is the main character of {title}?", hero)],
         [QA(f"Which novel follows {hero} to the island of {island}?", title)]),
        (f"It won the {prize} Prize in {y + rng.randint(1, 3)}.",
         [QA(f"Which prize did {title} win?", f"{prize} Prize")],
         [QA(f"Which novel won the {prize} Prize?", title)]),
        (f"It has sold about {copies} copies.",
         [QA(f"How many copies has {title} sold?", copies)], []),
    ]


def _railway(nm: _Names, rng: random.Random, provinces: list[str]):
    title = f"{nm.word()} Mountain Railway"
    town, peak, builder, authority = nm.word(), nm.word(), nm.person(), nm.word()
    km, grade = f"{rng.randint(2, 25)}.{rng.randint(1, 9)}", rng.randint(12, 48)
    return "railway", title, [
        (f"The {title} is a rack railway that climbs from the town of {town} to the summit of {peak}.",
         [QA(f"From which town does the {title} start?", town), QA(f"Which summit does the {title} reach?", peak)],
         [QA(f"Which railway climbs to the summit of {peak}?", title)]),
        (f"It opened in {_year(rng, 1870, 1990)} and is {km} kilometers long.",
         [QA(f"How long is the {title}?", f"{km} kilometers")], []),
        (f"Its steepest section has a gradient of {grade} percent.",
         [QA(f"How steep is the steepest part of the {title}?", f"{grade} percent")], []),
        (f"The line was built by the contractor {builder} and is owned by the {authority} Transit Authority.",
         [QA(f"Who built the {title}?", builder)],
         [QA(f"Which railway was built by the contractor {builder}?", title)]),
    ]


def _lighthouse(nm: _Names, rng: random.Random, provinces: list[str]):
    title = f"{nm.word()} Lighthouse"
    head, bay, keeper = nm.word(), nm.word(), nm.person()
    y = _year(rng, 1800, 1950)
    reach = f"{rng.randint(8, 30)} nautical miles"
    return "lighthouse", title, [
        (f"The {title} stands on the headland of {head}, guarding the entrance to {bay} Bay.",
         [QA(f"On which headland is the {title}?", head)],
         [QA(f"Which lighthouse guards the entrance to {bay} Bay?", title)]),
        (f"The tower is {rng.randint(12, 70)} meters tall and was first lit in {y}.",
         [QA(f"When was the {title} first lit?", str(y))], []),
        (f"Its light can be seen from {reach} away.",
         [QA(f"How far away can the light of the {title} be seen?", reach)], []),
        (f"The last keeper, {keeper}, left in {y + rng.randint(40, 90)} when the light was automated.",
         [QA(f"Who was the last keeper of the {title}?", keeper)],
         [QA(f"Which lighthouse was kept by {keeper}?", title)]),
    ]


def _composer(nm: _Names, rng: random.Random, provinces: list[str]):
    title = nm.person()
    city, school, opera, prize, town = nm.word(), nm.word(), nm.word(), nm.word(), nm.word()
    y = _year(rng, 1900, 1995)
    work = f"The {opera} {rng.choice(['Garden', 'Daughter', 'Crossing', 'Tide', 'Mirror'])}"
    return "composer", title, [
        (f"{title} is a composer born in {y} in the city of {city}.",
         [QA(f"Where was {title} born?", city), QA(f"In which year was {title} born?", str(y))],
         [QA(f"Which composer was born in the city of {city}?", title)]),
        (f"She studied at the {school} Conservatory and became known for the opera {work}.",
         [QA(f"Which opera made {title} famous?", work)],
         [QA(f"Who composed the opera {work}?", title)]),
        (f"In {y + rng.randint(25, 50)} she received the {prize} Prize.",
         [QA(f"Which prize did {title} receive?", f"{prize} Prize")],
         [QA(f"Which composer received the {prize} Prize?", title)]),
        (f"She now teaches composition in {town}, in the province of {rng.choice(provinces)}.",
         [QA(f"Where does {title} teach?", town)], []),
    ]


def _software(nm: _Names, rng: random.Random, provinces: list[str]):
    name = nm.word()
    title = f"Project {name}"
    firm, lead, old = nm.word(), nm.person(), nm.word()
    job = rng.choice(["schedules delivery drones", "tracks warehouse stock", "routes customer calls",
                      "plans train crews", "prices freight"])
    lang = rng.choice(["Rust", "Go", "Java", "Python", "Kotlin", "OCaml"])
    return "software", title, [
        (f"{title} is an internal software platform at the logistics firm {firm} that {job}.",
         [QA(f"Which company runs {title}?", firm)],
         [QA(f"Which software platform does the firm {firm} run?", title)]),
        (f"It was launched in {_year(rng, 2005, 2024)} and is written mostly in {lang}.",
         [QA(f"In which programming language is {title} written?", lang)], []),
        (f"The project lead is {lead}.",
         [QA(f"Who leads {title}?", lead)],
         [QA(f"Which platform does {lead} lead?", title)]),
        (f"{name} replaced an older system called {old}, in use since {_year(rng, 1980, 2004)}.",
         [QA(f"What system did {title} replace?", old)],
         [QA(f"Which platform replaced the system called {old}?", title)]),
    ]


TEMPLATES: tuple[_Template, ...] = (
    _observatory, _ship, _company, _festival, _bridge, _species, _book, _railway, _lighthouse, _composer, _software,
)


class _Placeholders(_Names):
    """Stands in for _Names when rendering templates to collect their own words."""

    def word(self) -> str:
        return "Qxplaceholder"


def _template_words() -> frozenset[str]:
    """Every word the templates write themselves ("novel", "Bridge", "September"): never a name.

    Rendered 200 times per template so every option of their random choices shows up.
    """
    words: set[str] = set()
    for seed in range(200):
        rng = random.Random(seed)
        stub = _Placeholders(rng)
        for template in TEMPLATES:
            _, title, sentences = template(stub, rng, ["Qxplaceholder"])
            words |= _words(title)
            for text, forward, reverse in sentences:
                words |= _words(text)
                for qa in forward + reverse:
                    words |= _words(qa.question)
    return frozenset(w for w in words if not w.startswith("qx"))


def generate_documents(n: int, seed: int = 0) -> list[GeneratedDocument]:
    """n invented documents (doc_id 0..n-1), the same for the same (n, seed) on every machine.

    Kinds rotate through the templates, so any prefix is a balanced mix. Each document keeps 3-5
    of its template's sentences (the first always); its questions are those of the kept sentences.

    Raises:
        ValueError: if an answer is missing from its text or a reverse question names its subject
            (a template bug; checked for every document).
    """
    rng = random.Random(seed)
    names = _Names(rng, reserved=_template_words())
    provinces = [names.word() for _ in range(_PROVINCES)]
    names.take()
    docs = []
    for doc_id in range(n):
        kind, title, sentences = TEMPLATES[doc_id % len(TEMPLATES)](names, rng, provinces)
        keep = rng.randint(3, min(5, len(sentences)))
        chosen = [sentences[0], *sorted(rng.sample(sentences[1:], keep - 1), key=sentences.index)]
        text = " ".join(s for s, _, _ in chosen)
        forward = [qa for _, f, _ in chosen for qa in f]
        reverse = [qa for _, _, r in chosen for qa in r]
        doc = GeneratedDocument(doc_id=doc_id, kind=kind, title=title, text=text, forward=forward, reverse=reverse,
                                names=names.take())
        _check_document(doc)
        docs.append(doc)
    return docs


def check_unique_names(docs: list[GeneratedDocument]) -> list[str]:
    """Problems with name uniqueness: each invented name in a text must occur in no other text."""
    where: dict[str, set[int]] = {}
    for doc in docs:
        for word in _words(doc.text):
            where.setdefault(word, set()).add(doc.doc_id)
    problems = []
    for doc in docs:
        for name in doc.names:
            holders = where.get(name.lower(), set())
            if holders - {doc.doc_id}:
                problems.append(f"{name!r} of document {doc.doc_id} also occurs in {sorted(holders - {doc.doc_id})[:5]}")
    return problems


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def _check_document(doc: GeneratedDocument) -> None:
    subject = doc.title.removeprefix("The ").removeprefix("SS ").removeprefix("Project ").split()[0]
    for qa in doc.forward + doc.reverse:
        if qa.answer not in doc.text:
            raise ValueError(f"document {doc.doc_id}: answer {qa.answer!r} is not in its text")
    for qa in doc.reverse:
        if subject.lower() in _words(qa.question):
            raise ValueError(f"document {doc.doc_id}: reverse question names its subject: {qa.question!r}")
    if not doc.forward or not doc.reverse:
        raise ValueError(f"document {doc.doc_id}: needs forward and reverse questions")
