"""Optional yes/no LLM judge over any OpenAI-compatible endpoint (the paper used GPT-4.1)."""

from __future__ import annotations

import logging
import re

logger = logging.getLogger(__name__)

JUDGE_PROMPT = (
    "You are grading an answer to a question.\n"
    "Question: {question}\nReference answer: {answer}\nModel answer: {prediction}\n\n"
    "Does the model answer state the reference answer (or an equivalent) without contradicting it? "
    "Reply with exactly one word: yes or no."
)
_YES = re.compile(r"^\W*yes\b", re.IGNORECASE)


def parse_verdict(text: str) -> bool:
    """True only when the judge's reply starts with 'yes' (anything else counts as no)."""
    return bool(_YES.match(text or ""))


class OpenAIJudge:
    """Asks a chat model, at temperature 0, whether a prediction matches the reference answer."""

    def __init__(self, base_url: str, *, model: str, api_key: str | None = None, timeout: float = 60.0) -> None:
        """Build the client once; `api_key` defaults to a placeholder for servers that need none."""
        import openai

        self.model = model
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key or "none", timeout=timeout, max_retries=2)

    def __call__(self, question: str, answer: str, prediction: str) -> bool:
        """One verdict: does `prediction` answer `question` as `answer` does?"""
        resp = self.client.chat.completions.create(
            model=self.model, temperature=0.0, max_tokens=4,
            messages=[{"role": "user", "content": JUDGE_PROMPT.format(question=question, answer=answer,
                                                                       prediction=prediction)}],
        )
        return parse_verdict(resp.choices[0].message.content or "")
