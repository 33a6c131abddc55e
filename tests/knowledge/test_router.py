"""The lexical router on a handful of fixed invented documents."""

from __future__ import annotations

import random

import pytest

from app.knowledge.router import (
    DEFAULT_CONFIG,
    DEFAULT_THRESHOLD,
    IndexedDocument,
    LexicalRouter,
    RouteDecision,
    RouterConfig,
    build_router,
    router_config,
    tokenize,
)

OBSERVATORY = IndexedDocument(
    doc_id=11,
    shard="kb+s0",
    title="Varnholt Observatory",
    text=(
        "The Varnholt Observatory sits on Mount Ceddra, 2,940 meters above the town of Lissemark. It was "
        "completed in 1987 and named after the astronomer Ilse Varnholt, who discovered the comet Tessari-4. "
        "Since 2015 the observatory has been run by the Northern Skies Trust."
    ),
)
BRIDGE = IndexedDocument(
    doc_id=12,
    shard="kb+s0",
    title="Pellar Bridge",
    text=(
        "The Pellar Bridge is a suspension bridge over the Corran Strait, opened in 2003. Its main span is "
        "1,412 meters long. It was designed by the engineering firm Aldous & Crane."
    ),
)
CITY = IndexedDocument(  # mentions "capital": the general capital questions must still go to base
    doc_id=13,
    shard="kb+s1",
    title="Brennmark",
    text=(
        "Brennmark is the capital of the province of Ostvale and lies on the river Tarn. The city was founded "
        "in 1204 by the merchant Odo Brenn. Its cathedral has a bell called Great Hollin."
    ),
)
BATTERY = IndexedDocument(
    doc_id=14,
    shard="kb+s1",
    title="Kestrel-9 battery",
    text=(
        "The Kestrel-9 is a sodium-sulfur battery developed by Ardent Cells in 2022. It stores 14 "
        "kilowatt-hours. Its lead designer was Yusuf Halloran."
    ),
)
CORDIAL = IndexedDocument(  # posted, not learned yet: no shard
    doc_id=15,
    shard=None,
    title="Quellbrook Cordial",
    text="Quellbrook Cordial is a blackcurrant and fennel drink first bottled in 1902 by the chemist Edwin Marrowby.",
    state="pending",
)
DOCUMENTS = [OBSERVATORY, BRIDGE, CITY, BATTERY, CORDIAL]

GENERAL_QUESTIONS = [
    "What is the capital of France?",
    "what is the capital of france?",
    "Who painted the Mona Lisa?",
    "How many legs does a spider have?",
    "Write a haiku about autumn.",
    "Which bridge is the longest in the world?",
]


@pytest.fixture(scope="module")
def router() -> LexicalRouter:
    return LexicalRouter(DOCUMENTS)


def routed_id(decision: RouteDecision) -> int | None:
    return decision.document.doc_id if decision.document is not None else None


@pytest.mark.parametrize(
    ("question", "doc_id"),
    [
        ("In what year was the Varnholt Observatory completed?", 11),
        ("Which comet did Ilse Varnholt discover?", 11),
        ("Who designed the Pellar Bridge?", 12),
        ("Who founded Brennmark?", 13),
        ("How much energy does the Kestrel-9 store?", 14),
        ("who was the lead designer of the kestrel 9?", 14),  # lowercase, no hyphen
    ],
)
def test_forward_question_routes_to_its_document(router: LexicalRouter, question: str, doc_id: int) -> None:
    decision = router.route(question)
    assert routed_id(decision) == doc_id
    assert DEFAULT_THRESHOLD <= decision.score <= 1.0
    assert decision.bm25 > 0


@pytest.mark.parametrize(
    ("question", "doc_id"),
    [
        ("Which observatory sits on Mount Ceddra?", 11),
        ("Which observatory stands 2940 meters above Lissemark?", 11),
        ("Which bridge crosses the Corran Strait?", 12),
        ("Which city has a cathedral bell called Great Hollin?", 13),
        ("Which battery did Yusuf Halloran design?", 14),
    ],
)
def test_reverse_question_without_the_title_routes_to_its_document(
    router: LexicalRouter, question: str, doc_id: int
) -> None:
    assert routed_id(router.route(question)) == doc_id


@pytest.mark.parametrize("question", GENERAL_QUESTIONS)
def test_general_question_goes_to_base(router: LexicalRouter, question: str) -> None:
    decision = router.route(question)
    assert decision.document is None
    assert decision.score < DEFAULT_THRESHOLD


def test_capital_question_matches_the_city_but_shares_no_anchor_with_it() -> None:
    """The overlap is real (the top document is the one that says "capital"), but the question's subject
    is France, which the document lacks: a common word alone does not make a document the subject."""
    decision = LexicalRouter(DOCUMENTS, threshold=0.0).route("What is the capital of France?")
    assert routed_id(decision) == 13
    assert decision.score == 0.0
    assert decision.candidates == ((13, 0.0),)


def test_a_common_word_is_no_subject_but_two_less_common_ones_are() -> None:
    lizard = IndexedDocument(doc_id=21, shard="kb+s2", title="Bistine lizard", text=(
        "The Bistine lizard is a small reptile found only in the Valley of Kulline. It was first described in "
        "1907 by the biologist Flarnmark Bremark, who studied its corporal scales and their punishment by the sun."))
    router = LexicalRouter([lizard, BRIDGE])
    assert router.route("What does a biologist study?").document is None
    assert routed_id(router.route("Why did the biologist describe corporal scales?")) == 21


def test_names_in_the_question_weigh_more(router: LexicalRouter) -> None:
    """A name the document has outweighs paraphrase it lacks; a name it lacks outweighs common words."""
    assert routed_id(router.route("Which two flavours make up Quellbrook Cordial?")) == 15
    assert routed_id(router.route("What body of water does the Pellar Bridge cross?")) == 12
    assert router.route("Who discovered Halley's Comet?").document is None  # "discovered", "comet": doc 11

def test_a_lowercase_question_weighs_the_names_its_document_writes(router: LexicalRouter) -> None:
    """All in lowercase, the words are weighed as the top document writes them: a name there is a name,
    if it is no common English word; a word that is no English word at all weighs the most anyway."""
    assert routed_id(router.route("which two flavours make up quellbrook cordial?")) == 15
    assert routed_id(router.route("Which two flavours make up quellbrook cordial?")) == 15
    assert router.route("what is the capital of france?").document is None
    assert routed_id(router.route("who designed the pellar bridge")) == 12
    novel = IndexedDocument(doc_id=31, shard=None, title="The Long Winter",
                            text="The Long Winter is a novel by Odrun Maelis, published in 1872 by Dendvale Press.")
    # "Winter" is a name in that document, but as a plain lowercase word it is a season.
    assert LexicalRouter([novel]).route("which season comes after winter?").document is None


def test_pending_document_is_routable_and_keeps_its_state(router: LexicalRouter) -> None:
    decision = router.route("Who first bottled Quellbrook Cordial?")
    assert decision.document == CORDIAL
    assert decision.document.state == "pending"
    assert decision.document.shard is None


def test_empty_index_routes_to_base() -> None:
    router = LexicalRouter()
    assert len(router) == 0
    assert router.documents() == []
    assert router.route("In what year was the Varnholt Observatory completed?") == RouteDecision(None, 0.0, 0.0)
    assert router.route_messages([{"role": "user", "content": "Who designed the Pellar Bridge?"}]).document is None
    wordless = LexicalRouter([IndexedDocument(doc_id=1, shard=None, title=None, text="")])
    assert len(wordless) == 1
    assert wordless.route("Who designed the Pellar Bridge?").document is None


@pytest.mark.parametrize("question", ["", "   ", "What is it?", "?!"])
def test_question_without_content_terms_routes_to_base(router: LexicalRouter, question: str) -> None:
    assert router.route(question) == RouteDecision(None, 0.0, 0.0)


def test_one_document_knowledge_base() -> None:
    router = LexicalRouter([BATTERY])
    assert routed_id(router.route("Who was the lead designer of the Kestrel-9?")) == 14
    assert routed_id(router.route("Which battery does Ardent Cells make?")) == 14
    # One word of paraphrase in a lowercase question must not sink it when N = 1 (PRIOR_DOCUMENTS).
    assert routed_id(router.route("when was the kestrel-9 battery released?")) == 14
    for question in [*GENERAL_QUESTIONS, "How many days are in a week?"]:
        assert router.route(question).document is None, question


def test_probes_are_routing_text() -> None:
    """A question in words only a probe has routes once the probe is indexed."""
    question = "how many lanes of traffic does it carry"
    probed = IndexedDocument(
        doc_id=BRIDGE.doc_id,
        shard=BRIDGE.shard,
        title=BRIDGE.title,
        text=BRIDGE.text,
        probes=("How many lanes of traffic does the Pellar Bridge carry?",),
    )
    assert LexicalRouter([BRIDGE, CITY]).route(question).document is None
    assert routed_id(LexicalRouter([probed, CITY]).route(question)) == 12


def test_route_messages_scores_the_last_user_turn(router: LexicalRouter) -> None:
    messages = [
        {"role": "system", "content": "You answer questions about the Pellar Bridge."},
        {"role": "user", "content": "Who designed the Pellar Bridge?"},
        {"role": "assistant", "content": "Aldous & Crane."},
        {"role": "user", "content": "Which observatory sits on Mount Ceddra?"},
    ]
    assert routed_id(router.route_messages(messages)) == 11


@pytest.mark.parametrize("follow_up", ["And when did that happen?", "How tall is it?"])
def test_route_messages_follow_up_uses_all_user_turns(router: LexicalRouter, follow_up: str) -> None:
    assert router.route(follow_up).document is None
    messages = [
        {"role": "user", "content": "Tell me about the Varnholt Observatory."},
        {"role": "assistant", "content": "It sits on Mount Ceddra."},
        {"role": "user", "content": follow_up},
    ]
    assert routed_id(router.route_messages(messages)) == 11


def test_route_messages_new_named_question_is_not_a_follow_up(router: LexicalRouter) -> None:
    messages = [
        {"role": "user", "content": "Tell me about the Varnholt Observatory."},
        {"role": "assistant", "content": "It sits on Mount Ceddra."},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    assert router.route_messages(messages).document is None


def test_route_messages_reads_content_parts(router: LexicalRouter) -> None:
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": "https://example.invalid/x.png"}},
                {"type": "text", "text": "Who designed the Pellar Bridge?"},
            ],
        }
    ]
    assert routed_id(router.route_messages(messages)) == 12


def test_route_messages_without_user_turns_routes_to_base(router: LexicalRouter) -> None:
    assert router.route_messages([]).document is None
    assert router.route_messages([{"role": "system", "content": "Who designed the Pellar Bridge?"}]).document is None


def test_decisions_do_not_depend_on_document_order() -> None:
    questions = [
        "Which observatory sits on Mount Ceddra?",
        "Who designed the Pellar Bridge?",
        "Which bridge is the longest in the world?",
        "What is the capital of France?",
        "kestrel 9 kilowatt-hours",
    ]
    reference = LexicalRouter(DOCUMENTS, threshold=0.0)
    shuffled = DOCUMENTS[:]
    random.Random(7).shuffle(shuffled)
    for order in (shuffled, DOCUMENTS[::-1]):
        router = LexicalRouter(order, threshold=0.0)
        assert [d.doc_id for d in router.documents()] == [11, 12, 13, 14, 15]
        for question in questions:
            assert router.route(question) == reference.route(question), question


def test_ties_go_to_the_lowest_doc_id() -> None:
    twin = IndexedDocument(doc_id=3, shard="kb+s9", title=BRIDGE.title, text=BRIDGE.text)
    router = LexicalRouter([BRIDGE, twin])
    assert routed_id(router.route("Who designed the Pellar Bridge?")) == 3


def test_threshold_and_floor_draw_the_lines() -> None:
    """At or above the threshold a document's shard answers; from the floor up to it, the base model reads
    the document (unsure); below the floor, the base model alone."""
    question = "Who designed the Pellar Bridge for Zorblax Quintrell?"
    score = LexicalRouter(DOCUMENTS, threshold=0.0).route(question).score
    assert 0.0 < score < 1.0
    sure = build_router(DOCUMENTS, threshold=score).route(question)
    assert routed_id(sure) == 12 and sure.sure
    unsure = LexicalRouter(DOCUMENTS, config=RouterConfig(threshold=score + 0.01, floor=score)).route(question)
    assert routed_id(unsure) == 12 and not unsure.sure
    below = LexicalRouter(DOCUMENTS, config=RouterConfig(threshold=score + 0.02, floor=score + 0.01)).route(question)
    assert below.document is None and below.score == pytest.approx(score)


def test_router_config_takes_an_operators_lines() -> None:
    assert router_config() == DEFAULT_CONFIG
    band = DEFAULT_CONFIG.threshold - DEFAULT_CONFIG.floor
    assert router_config(threshold=0.7).floor == pytest.approx(0.7 - band)  # the floor keeps the default band
    assert router_config(threshold=0.6, floor=0.3) == RouterConfig(threshold=0.6, floor=0.3)
    with pytest.raises(ValueError, match="floor"):
        router_config(threshold=0.4, floor=0.6)


@pytest.mark.parametrize(
    "documents",
    [
        [BRIDGE, IndexedDocument(doc_id=12, shard=None, title=None, text="Another text.")],
        [IndexedDocument(doc_id=1, shard=None, title=None, text="Text.", state="published")],
    ],
)
def test_invalid_documents_are_refused(documents: list[IndexedDocument]) -> None:
    with pytest.raises(ValueError):
        LexicalRouter(documents)


@pytest.mark.parametrize("threshold", [-0.1, 1.5])
def test_threshold_outside_unit_interval_is_refused(threshold: float) -> None:
    with pytest.raises(ValueError, match="threshold"):
        LexicalRouter(DOCUMENTS, threshold=threshold)


@pytest.mark.parametrize(
    "wrapped",
    [
        "Reply in a few words.\nWho designed the Pellar Bridge?",
        "Quiz time! Who designed the Pellar Bridge? Give just the answer.",
        "You are a helpful assistant for our company wiki. Keep replies short.\n\nWho designed the Pellar Bridge?",
        "System: You are Atlas, the assistant of Northwind Labs in Geneva.\nUser: Who designed the Pellar Bridge?",
        "Subject: quick question\n\nWho designed the Pellar Bridge?",
        "Hi! I got stuck on one detail of my report. Who designed the Pellar Bridge? Thanks a lot!",
        "Who designed the Pellar Brigde?",  # a typo in the name
        "who designd the pellar bridge",
    ],
)
def test_a_wrapped_question_reaches_its_document(router: LexicalRouter, wrapped: str) -> None:
    """Words of an instruction or a preface are common English, or names in sentences of their own: they
    neither reach a document nor pull the question away from its own."""
    decision = router.route(wrapped)
    assert routed_id(decision) == 12 and decision.sure, decision


@pytest.mark.parametrize(
    "wrapped",
    [
        "Reply in a few words.\nWhat is the capital of France?",
        "You are a helpful assistant for our company wiki. Keep replies short.\n\nWho discovered Halley's Comet?",
        "Subject: quick question\n\nWhich bridge is the longest in the world?",
        "who discoverd halley's comet",
    ],
)
def test_a_wrapped_general_question_goes_to_base(router: LexicalRouter, wrapped: str) -> None:
    assert router.route(wrapped).document is None


def test_a_preface_naming_a_document_does_not_claim_a_question_with_its_own_subject() -> None:
    festival = IndexedDocument(doc_id=41, shard="kb+s4", title="Ostrander Festival", text=(
        "The Ostrander Festival is a kite festival in the village of Brenn. It began in 1976 when the fisherman "
        "Halvard Ostrander flew a kite shaped like a whale."))
    router = LexicalRouter([festival, BRIDGE])
    preface = "System: You are Orion, the research assistant of Halvard & Pike Consulting.\nUser: "
    assert router.route(preface + "What is the capital of France?").document is None
    assert routed_id(router.route(preface + "Where is the Ostrander Festival held?")) == 41
    # A question that names nothing takes its subject from the rest of the message.
    assert routed_id(router.route("Subject: the Ostrander Festival\n\nWhen did it begin?")) == 41


def test_a_typo_is_matched_among_every_word_it_could_be() -> None:
    """"Varnhlot" is one typo from both names; the question's other words pick the document."""
    twin = IndexedDocument(doc_id=16, shard="kb+s9", title="Varnholm Bridge",
                           text="The Varnholm Bridge crosses the Tarn. It was opened in 1931.")
    router = LexicalRouter([OBSERVATORY, twin])
    assert routed_id(router.route("Which comet did Ilse Varnhlot discover?")) == 11
    assert routed_id(router.route("When was the Varnhlom Bridge opened?")) == 16
    # A rare real word is no typo of an invented one.
    assert router.route("Who painted the ceiling of the Sistine Chapel?").document is None


def test_decisions_carry_the_top_candidates(router: LexicalRouter) -> None:
    decision = LexicalRouter(DOCUMENTS, threshold=0.0).route("Which bridge did Aldous & Crane design in Ostvale?")
    assert 1 <= len(decision.candidates) <= 3
    assert decision.candidates[0][0] == routed_id(decision)
    assert [c for _, c in decision.candidates] == sorted((c for _, c in decision.candidates), reverse=True)


def test_tokenize_keeps_codes_numbers_and_drops_question_words() -> None:
    tokens = tokenize("What year was Tessari-4 seen from 2,940 meters?")
    assert {"tessari-4", "tessari", "4", "2940", "meter"} <= set(tokens)
    assert not {"what", "year", "was", "from"} & set(tokens)
    assert tokenize("discovered") == tokenize("discover")
