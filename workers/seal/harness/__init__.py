"""`seal eval`: the knowledge-incorporation harness (conditions, grading, cached runs, reports)."""

from .judge import OpenAIJudge, parse_verdict
from .report import plot_chart, render_table, write_outputs
from .run import (
    CONDITIONS,
    HarnessConfig,
    context_prompt,
    cut_at_tokens,
    regrade,
    run_harness,
    shard_passages,
    summarize,
    users_half,
)

__all__ = ["CONDITIONS", "HarnessConfig", "OpenAIJudge", "context_prompt", "cut_at_tokens", "parse_verdict",
           "plot_chart", "regrade", "render_table", "run_harness", "shard_passages", "summarize", "users_half",
           "write_outputs"]
