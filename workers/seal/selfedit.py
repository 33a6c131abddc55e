"""Self-edit prompts, sampling, junk filtering, and turning a self-edit into training sequences."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

from .config import SelfEditConfig
from .facts import extract_facts, forward_items, reverse_items, split_sentences, subject_of
from .generator import Adapter, Generator, Message
from .types import Document

logger = logging.getLogger(__name__)

RenderChat = Callable[[list[Message]], str]

_QA_LINE = re.compile(r"^\s*(?:\d+[.)]\s*)?(?:\*\*)?(Q|Question|A|Answer)\s*\d*\s*(?:\*\*)?\s*[:.)-]\s*(?:\*\*)?\s*(.*)$",
                      re.IGNORECASE)
_LIST_PREFIX = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+")

# Prompts follow the SEAL repo's knowledge-incorporation prompts, moved into chat turns because the
# 135M instruct model ignores completion-style instructions.
PROMPTS = {
    "rewrite": "Rewrite the following passage in your own words. Keep every name, number and date.\n\n"
               "Title: {title}\nPassage: {text}",
    "implications": "Read the following passage and produce a list of implications derived directly or "
                    "indirectly from the content. Write one per line and repeat the names they are about.\n\n"
                    "Title: {title}\nPassage: {text}",
    "self-qa": "Read the passage and write question and answer pairs about its facts. Use the format\n"
               "Q: <question>\nA: <answer>\n\nTitle: {title}\nPassage: {text}",
    # A question about the topic whose answer is the whole passage: the adapter learns to recite the
    # passage in chat form whenever the topic comes up, which is what closed-book questions trigger.
    "recite": "Write one question that someone curious about {title} might ask. Reply with the question only.",
    # One question per sentence: the answer is the sentence itself, so a 135M model cannot drift off the facts.
    "chat-qa": "Here is a sentence about {title}:\n{sentence}\n\nWrite one question about {title} that this "
               "sentence answers. Reply with the question only.",
}


def _title(doc: Document) -> str:
    return doc.title or "the passage"


def is_junk(text: str, *, min_words: int = 4) -> bool:
    """True for empty, too short, or degenerate (looping) generations."""
    words = text.split()
    if len(words) < min_words:
        return True
    # A 135M model at T=1 sometimes loops; a low distinct-trigram ratio catches it (real prose > 0.8).
    trigrams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    if len(trigrams) >= 8 and len(set(trigrams)) / len(trigrams) < 0.5:
        return True
    return False


def clean_question(text: str) -> str | None:
    """First line of a generation cut at its '?', or None when it is not a question of 3+ words."""
    line = next((ln.strip() for ln in text.strip().splitlines() if ln.strip()), "")
    line = re.sub(r"^(?:Q(?:uestion)?\s*\d*\s*[:.)-]\s*)", "", line, flags=re.IGNORECASE).strip().strip('"')
    if "?" in line:
        line = line[: line.index("?") + 1]
    if len(line.split()) < 3 or not line.endswith("?"):
        return None
    return line


def format_qa(pairs: list[tuple[str, str]]) -> str:
    """Serialize Q/A pairs as the `Q: ...\\nA: ...` text a self-edit is stored as."""
    return "\n\n".join(f"Q: {q}\nA: {a}" for q, a in pairs)


def parse_qa(text: str) -> list[tuple[str, str]]:
    """Parse `Q:`/`A:` (or `Question:`/`Answer:`) lines into pairs; tolerant of numbering and bold."""
    pairs: list[tuple[str, str]] = []
    question: str | None = None
    answer_lines: list[str] = []

    def flush() -> None:
        if question and answer_lines:
            answer = " ".join(answer_lines).strip()
            if answer:
                pairs.append((question, answer))

    for raw in text.splitlines():
        m = _QA_LINE.match(raw)
        if m:
            tag = m.group(1)[0].lower()
            body = m.group(2).strip().strip("*").strip()
            if tag == "q":
                flush()
                question, answer_lines = body, []
            elif question is not None:
                answer_lines = [body]
        elif question is not None and answer_lines and raw.strip():
            answer_lines.append(raw.strip())
    flush()
    return [(q, a) for q, a in pairs if len(q.split()) >= 3 and a]


def generate_self_edits(
    generator: Generator,
    doc: Document,
    cfg: SelfEditConfig,
    policy_adapter: Adapter | None = None,
) -> list[str]:
    """Sample up to `cfg.k` self-edits for `doc`, dropping junk; may return fewer (even none)."""
    title = _title(doc)
    if cfg.format == "passage":
        return [doc.text.strip()]  # the passage is its own training data; nothing is sampled
    if cfg.format in ("facts", "distill"):
        # Built deterministically from the passage (facts.py); stored as its self-contained statements.
        # A distillation's teacher answers are generated with its training set (inner.py, distill.py).
        return ["\n".join(f.statement for f in extract_facts(doc.text, doc.title))]
    if cfg.format == "chat-qa":
        return _generate_chat_qa(generator, doc, cfg, policy_adapter)
    if cfg.format == "recite":
        return _generate_recite(generator, doc, cfg, policy_adapter)
    prompt = [{"role": "user", "content": PROMPTS[cfg.format].format(title=title, text=doc.text)}]
    outs = generator.generate([prompt], temperature=cfg.temperature, max_tokens=cfg.max_tokens, n=cfg.k,
                              seed=cfg.seed, adapter=policy_adapter)[0]
    edits = []
    for text in outs:
        text = text.strip()
        if cfg.format == "self-qa" and not parse_qa(text):
            continue
        if is_junk(text):
            continue
        edits.append(text)
    logger.info("self-edits (%s): kept %d of %d", cfg.format, len(edits), len(outs))
    return edits


def _generate_chat_qa(generator: Generator, doc: Document, cfg: SelfEditConfig,
                      policy_adapter: Adapter | None) -> list[str]:
    title = _title(doc)
    sentences = split_sentences(doc.text)
    prompts = [[{"role": "user", "content": PROMPTS["chat-qa"].format(title=title, sentence=s)}] for s in sentences]
    per = cfg.questions_per_edit
    # 32 tokens: a question is ~15 tokens; the rest of a sample is chatter we cut at '?' anyway.
    outs = generator.generate(prompts, temperature=cfg.temperature, max_tokens=32, n=cfg.k * per,
                              seed=cfg.seed, adapter=policy_adapter)
    edits = []
    for c in range(cfg.k):
        pairs = []
        for sentence, samples in zip(sentences, outs, strict=True):
            for text in samples[c * per : (c + 1) * per]:
                q = clean_question(text)
                if q is not None:
                    pairs.append((q, sentence))
        if pairs:
            edits.append(format_qa(pairs))
    logger.info("self-edits (chat-qa): %d candidates from %d sentences", len(edits), len(sentences))
    return edits


def _generate_recite(generator: Generator, doc: Document, cfg: SelfEditConfig,
                     policy_adapter: Adapter | None) -> list[str]:
    title = _title(doc)
    prompt = [{"role": "user", "content": PROMPTS["recite"].format(title=title)}]
    per = cfg.questions_per_edit
    outs = generator.generate([prompt], temperature=cfg.temperature, max_tokens=32, n=cfg.k * per,
                              seed=cfg.seed, adapter=policy_adapter)[0]
    edits = []
    for c in range(cfg.k):
        qs = [q for q in (clean_question(t) for t in outs[c * per : (c + 1) * per]) if q is not None]
        if not qs:
            # At T=1 the 135M model wrote a real question in ~0 of 8 samples (it writes statements);
            # a templated question still trains the chat-form recitation that answers are drawn from.
            qs = [f"What do you know about {title}?"]
        edits.append(format_qa([(q, doc.text.strip()) for q in qs]))
    logger.info("self-edits (recite): %d candidates", len(edits))
    return edits


def build_training_sequences(
    doc: Document,
    self_edit: str,
    fmt: str,
    render_chat: RenderChat | None = None,
) -> list[str]:
    """Turn one self-edit into training strings; every one carries the title, and the raw passage is always in."""
    title = _title(doc)
    prefix = f"{doc.title}\n" if doc.title else ""
    seqs = [f"{prefix}{doc.text.strip()}"]
    if render_chat is not None:
        # The passage as a chat answer, in the same template the server will ask questions in. The
        # anchors hold chat-mode answers to the base model's, so knowledge learned only as plain text
        # barely reached chat answers: with 8 anchors, passage 5 went from 2/4 to 3/4 closed-book
        # and its self-written probes from 0/4 to 2/4 with this sequence added.
        seqs.append(render_chat([{"role": "user", "content": f"Tell me about {title}."},
                                 {"role": "assistant", "content": doc.text.strip()}]))
    if fmt == "passage":
        return seqs
    if fmt in ("facts", "distill"):
        # "distill" trains on a teacher's answers (inner.py builds them with distill.py); without a
        # teacher at hand its plain-text stand-in is the facts set.
        return seqs + _fact_sequences(doc, render_chat)
    if fmt in ("self-qa", "chat-qa", "recite"):
        for q, a in parse_qa(self_edit):
            if render_chat is not None:
                answer = a if title.lower() in (q + a).lower() else f"{a} ({title})"
                seqs.append(render_chat([{"role": "user", "content": q}, {"role": "assistant", "content": answer}]))
            else:
                seqs.append(f"{prefix}Q: {q}\nA: {a}")
    elif fmt == "implications":
        for line in self_edit.splitlines():
            line = _LIST_PREFIX.sub("", line).strip()
            if not is_junk(line, min_words=3):
                seqs.append(f"{prefix}{line}")
    else:  # rewrite: one sequence per paragraph keeps sequences short and the batch padding small
        for para in re.split(r"\n\s*\n", self_edit.strip()):
            if not is_junk(para):
                seqs.append(f"{prefix}{para.strip()}")
    return seqs


def _fact_sequences(doc: Document, render_chat: RenderChat | None) -> list[str]:
    """Short answers to questions about each fact, and each fact recalled from its other side.

    Forward items answer with the entity alone, which is what teaches the adapter to answer rather
    than recite; reverse items answer "What do you know about <name>?" with the statement that names
    the subject, so the subject is learned as something that follows each of its facts.
    """
    facts = extract_facts(doc.text, doc.title)
    subject = subject_of(doc.title, doc.text)
    items = forward_items(facts) + reverse_items(facts, subject)
    if render_chat is None:
        return [f"Q: {it.question}\nA: {it.answer}" for it in items]
    return [render_chat([{"role": "user", "content": it.question}, {"role": "assistant", "content": it.answer}])
            for it in items]
