"""Per-model inner-loop recipes: the defaults a learn job trains with, kept as data, not code.

The best recipe differs per base model (SEAL's paper: "rewrite" 49.4% against 33.5% for the raw
passage on Qwen2.5-7B, while the raw passage wins on the bundled 135M model), so it is a JSON file
per model that `seal eval` writes from its measurements and the worker reads before each job.

Lookup for a model (`load_recipe`), first hit wins:
  1. `<recipe_dir>/<model_id>.json`, the operator's or `seal eval`'s file;
  2. `workers/seal/data/recipes/<model_id>.json`, shipped with the package;
  3. the built-in defaults: the dataclass defaults of `SelfEditConfig` and `TrainConfig`.

`model_id` is the model directory's basename or a Hub id's last part (`SmolLM2-135M-Instruct`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .config import SelfEditConfig, TrainConfig
from .runfiles import write_json_atomic

logger = logging.getLogger(__name__)

PACKAGED_RECIPE_DIR = Path(__file__).resolve().parent / "data" / "recipes"
# The anchor count when no recipe names one (Settings.anchor_sequences' old default, ReplayConfig's default).
DEFAULT_ANCHORS = 8


@dataclass(frozen=True)
class Recipe:
    """The inner-loop defaults a learn job uses for one base model; a request's options override them."""

    model: str = ""  # model_id the recipe was chosen for ("" = not tied to a model)
    format: str = SelfEditConfig.format  # self-edit format: one of config.SELF_EDIT_FORMATS
    k: int = SelfEditConfig.k  # self-edit candidates trained per document
    epochs: int = TrainConfig.epochs
    lr: float = TrainConfig.lr
    rank: int = TrainConfig.rank  # 8/16/32/64 (vLLM's max_lora_rank covers these)
    alpha: int = TrainConfig.alpha
    target_modules: tuple[str, ...] = TrainConfig.target_modules
    anchors: int = DEFAULT_ANCHORS  # self-distillation anchor sequences per training run
    # format distill: the most questions the teacher answers per document; with epochs, the learn's time.
    distill_questions: int = SelfEditConfig.distill_questions
    distill_checked: bool = SelfEditConfig.distill_checked
    distill_clauses: bool = SelfEditConfig.distill_clauses
    distill_prefixes: bool = SelfEditConfig.distill_prefixes
    distill_answer_tokens: int = SelfEditConfig.distill_answer_tokens
    # K: documents per knowledge-base shard (app/knowledge). A learn retrains one shard from the
    # base weights on at most K documents, so its cost is O(K); a small model holds fewer facts
    # per LoRA before they interfere, so K is measured per model like the rest of the recipe.
    shard_documents: int = 4
    # A candidate that does not raise its probes gets one more recipe (facts, twice the epochs) before
    # the gate sees it; off, a learn that cannot learn its document fails fast.
    second_recipe: bool = True
    # Train with bf16 matrix products where the CPU computes them natively (TrainConfig.bf16_autocast):
    # set only for a recipe measured to learn as well with them.
    bf16_autocast: bool = False
    # Provenance and numbers behind the choice: dataset, accuracy, canary drop, seconds, date. Free-form.
    measured: dict[str, Any] = field(default_factory=dict, hash=False)
    # A knowledge base's shards answer only the questions routed to their documents (the router sends
    # general ones to the base model), so they get a recipe of their own, tuned for recall alone:
    # overrides of the fields above, with its own `measured`. Empty: shards use the recipe above.
    shard: dict[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        for f in fields(self):
            _check_type(f.name, getattr(self, f.name))
        object.__setattr__(self, "target_modules", tuple(self.target_modules))
        unknown = sorted(set(self.shard) - {f.name for f in fields(self)} | set(self.shard) & {"shard", "model"})
        if unknown:
            raise ValueError(f"Recipe.shard cannot set {', '.join(unknown)}")
        self.for_shards()  # the shard section must make a valid recipe too
        if self.anchors < 0:
            raise ValueError(f"Recipe.anchors must be >= 0, got {self.anchors}")
        if not 1 <= self.shard_documents <= 8:
            raise ValueError(f"Recipe.shard_documents must be 1..8, got {self.shard_documents}")
        # SelfEditConfig and TrainConfig own the value checks (formats, ranks, lr range), so a recipe
        # is valid exactly when the configs it builds are.
        self.selfedit_config()
        self.train_config()

    def for_shards(self) -> Recipe:
        """The recipe a knowledge-base shard trains with: this one under its `shard` overrides."""
        if not self.shard:
            return self
        return replace(self, **{"measured": {}, **self.shard}, shard={})

    def selfedit_config(self, **overrides: Any) -> SelfEditConfig:
        """A `SelfEditConfig` with this recipe's format and k, then `overrides`."""
        return SelfEditConfig(**({"format": self.format, "k": self.k, "distill_questions": self.distill_questions,
                                  "distill_checked": self.distill_checked, "distill_clauses": self.distill_clauses,
                                  "distill_prefixes": self.distill_prefixes,
                                  "distill_answer_tokens": self.distill_answer_tokens}
                                 | overrides))

    def train_config(self, **overrides: Any) -> TrainConfig:
        """A `TrainConfig` with this recipe's LoRA settings, then `overrides`."""
        base = {"epochs": self.epochs, "lr": self.lr, "rank": self.rank, "alpha": self.alpha,
                "target_modules": self.target_modules, "bf16_autocast": self.bf16_autocast}
        return TrainConfig(**(base | overrides))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (`save_recipe` writes it, `Recipe.from_dict` reads it)."""
        return asdict(self) | {"target_modules": list(self.target_modules)}

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "recipe") -> Recipe:
        """A recipe from its JSON form. Missing keys take the built-in defaults; unknown keys are
        ignored with a warning (a newer `seal eval` may write more); bad values raise ValueError
        naming `source`."""
        if not isinstance(data, dict):
            raise ValueError(f"{source}: a recipe must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            logger.warning("%s: ignoring unknown recipe keys %s", source, ", ".join(unknown))
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{source}: {exc}") from exc


_TYPES: dict[str, tuple[type, ...]] = {
    "model": (str,), "format": (str,), "k": (int,), "epochs": (int,), "lr": (int, float), "rank": (int,),
    "alpha": (int,), "anchors": (int,), "distill_questions": (int,), "shard_documents": (int,), "measured": (dict,),
    "target_modules": (list, tuple),
    "second_recipe": (bool,), "bf16_autocast": (bool,), "shard": (dict,), "distill_checked": (bool,),
    "distill_clauses": (bool,), "distill_prefixes": (bool,), "distill_answer_tokens": (int,),
}


def _check_type(name: str, value: Any) -> None:
    # JSON hands back bools where ints are expected without complaint; refuse them like any wrong type.
    if (isinstance(value, bool) and bool not in _TYPES[name]) or not isinstance(value, _TYPES[name]):
        want = " or ".join(t.__name__ for t in _TYPES[name])
        raise ValueError(f"Recipe.{name} must be {want}, got {value!r}")
    if name == "target_modules" and not all(isinstance(m, str) and m for m in value):
        raise ValueError(f"Recipe.target_modules must be module names, got {value!r}")


def model_id(model_path: str | os.PathLike[str]) -> str:
    """The name a model's recipe is filed under: its directory's basename, or a Hub id's last part."""
    name = Path(os.fspath(model_path).rstrip("/")).name
    if name in ("", ".", ".."):
        raise ValueError(f"cannot name a recipe after the model path {os.fspath(model_path)!r}")
    return name


def recipe_path(recipe_dir: str | os.PathLike[str], model_id: str) -> Path:
    """Where the recipe of `model_id` lives in `recipe_dir`."""
    if not model_id or "/" in model_id or model_id in (".", ".."):
        raise ValueError(f"not a model id: {model_id!r} (use recipes.model_id(model_path))")
    return Path(recipe_dir) / f"{model_id}.json"


def find_recipe(model_path: str | os.PathLike[str], recipe_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The file `load_recipe` reads for this model, or None when the built-in defaults apply."""
    name = model_id(model_path)
    dirs = ([Path(recipe_dir)] if recipe_dir is not None else []) + [PACKAGED_RECIPE_DIR]
    return next((p for p in (recipe_path(d, name) for d in dirs) if p.is_file()), None)


def load_recipe(model_path: str | os.PathLike[str], recipe_dir: str | os.PathLike[str] | None = None) -> Recipe:
    """The recipe for the model at `model_path`: `<recipe_dir>/<model_id>.json`, else the packaged
    one, else the built-in defaults. A file that is not a valid recipe raises ValueError naming it."""
    name = model_id(model_path)
    path = find_recipe(model_path, recipe_dir)
    if path is None:
        logger.info("no recipe for %s in %s or the package: using the built-in defaults", name, recipe_dir)
        return Recipe(model=name)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"recipe {path}: not readable as JSON: {exc}") from exc
    recipe = Recipe.from_dict(data, source=f"recipe {path}")
    if recipe.model and recipe.model != name:
        logger.warning("recipe %s was written for %s, not %s; using it anyway", path, recipe.model, name)
    logger.info("recipe for %s from %s: format=%s k=%d epochs=%d lr=%g rank=%d alpha=%d anchors=%d", name, path,
                recipe.format, recipe.k, recipe.epochs, recipe.lr, recipe.rank, recipe.alpha, recipe.anchors)
    return recipe


def save_recipe(recipe: Recipe, path: str | os.PathLike[str]) -> None:
    """Write `recipe` as JSON; atomic, so a worker reading it mid-write sees the old or the new one."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, recipe.to_dict())


_loaded: dict[tuple[str, str | None], tuple[tuple[str, int, int, int], Recipe]] = {}


def load_recipe_cached(model_path: str | os.PathLike[str],
                       recipe_dir: str | os.PathLike[str] | None = None) -> Recipe:
    """`load_recipe`, read again only when the file it resolves to changes. Workers run jobs in one
    long-lived process (workers/main.py), so a recipe `seal eval` writes applies from the next job."""
    path = find_recipe(model_path, recipe_dir)
    try:
        st = path.stat() if path else None
    except OSError:  # replaced or removed between the lookup and the stat: read afresh, cache nothing
        return load_recipe(model_path, recipe_dir)
    stamp = (str(path), st.st_ino, st.st_mtime_ns, st.st_size) if st else ("", 0, 0, 0)
    key = (os.fspath(model_path), os.fspath(recipe_dir) if recipe_dir is not None else None)
    hit = _loaded.get(key)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    recipe = load_recipe(model_path, recipe_dir)
    _loaded[key] = (stamp, recipe)
    return recipe


# `seal eval` conditions that train an adapter the way a learn job can (workers/seal/harness/run.py):
# "passage", and "self-edit:<format>". "base" and "context" train nothing; "self-edit+policy" needs
# a policy adapter that a recipe does not name.
PASSAGE_CONDITION, SELF_EDIT_PREFIX = "passage", "self-edit:"
# Where `seal eval --recipe-section` writes the winner: the recipe itself (single-stream adapters) or
# its `shard` section (knowledge-base shards).
RECIPE_SECTIONS = ("stream", "shard")


def condition_format(condition: str) -> str | None:
    """The self-edit format a harness condition trains with, or None when a recipe cannot express it."""
    if condition == PASSAGE_CONDITION:
        return "passage"
    if condition.startswith(SELF_EDIT_PREFIX):
        return condition.removeprefix(SELF_EDIT_PREFIX)
    return None


def pick_winner(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The harness summary row (`harness.summarize`) a recipe should follow: the best closed-book
    accuracy among conditions a recipe can express; a tie goes to the faster one. None if none ran."""
    usable = [r for r in rows if condition_format(r["condition"]) is not None and r.get("questions")]
    return min(usable, key=lambda r: (-r["accuracy"], r["seconds"]), default=None)


def recipe_from_summary(rows: Sequence[dict[str, Any]], *, train: TrainConfig, model: str, current: Recipe,
                        provenance: dict[str, Any] | None = None, section: str = "stream") -> Recipe | None:
    """The recipe `seal eval`'s comparison points to: the winning condition's format with the LoRA
    settings the harness trained under. What the harness does not vary (k, anchors, K, the second
    recipe, the other section) is kept from `current`. `measured` holds the winner's numbers, the runners-up and `provenance`.

    `section="shard"` writes the winner into the recipe's `shard` section (what knowledge-base shards
    train with) and keeps the single-stream recipe above it as it is; the shard section's own anchors
    and second_recipe are kept likewise."""
    if section not in RECIPE_SECTIONS:
        raise ValueError(f"section must be one of {RECIPE_SECTIONS}, got {section!r}")
    best = pick_winner(rows)
    if best is None:
        return None
    n = max(best["passages"], 1)
    measured = {
        **(provenance or {}),
        "condition": best["condition"], "accuracy": round(best["accuracy"], 4), "f1": round(best["f1"], 4),
        "passages": best["passages"], "questions": best["questions"], "seconds": round(best["seconds"], 1),
        "seconds_per_passage": round(best["seconds"] / n, 1),
        "compared": {r["condition"]: {"accuracy": round(r["accuracy"], 4), "seconds": round(r["seconds"], 1)}
                     for r in rows if condition_format(r["condition"]) is not None},
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "not_measured": "k and anchors are kept from the previous recipe; the harness does not vary them",
    }
    if best.get("judge_accuracy") is not None:
        measured["judge_accuracy"] = round(best["judge_accuracy"], 4)
    chosen = {"format": condition_format(best["condition"]), "epochs": train.epochs, "lr": train.lr,
              "rank": train.rank, "alpha": train.alpha, "target_modules": list(train.target_modules)}
    if section == "shard":
        return replace(current, model=model, shard={**current.shard, **chosen, "measured": measured})
    return replace(current, model=model, measured=measured, **chosen)
