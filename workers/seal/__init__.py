"""SEAL inner loop: self-edits, LoRA training, closed-book evaluation, and the publish gate."""

from .config import EvalConfig, SelfEditConfig, TrainConfig
from .evaluate import EvalResult, evaluate_probes
from .gate import GateDecision, decide
from .generator import Adapter, Generator, VLLMGenerator
from .grade import contains_answer, normalize_answer, token_f1
from .inner import CandidateResult, LearnResult, learn_document
from .probes import write_probes
from .selfedit import build_training_sequences, generate_self_edits
from .types import Cancelled, Document, Probe

__all__ = [
    "Adapter", "Cancelled", "CandidateResult", "Document", "EvalConfig", "EvalResult", "GateDecision",
    "Generator", "HFGenerator", "LearnResult", "LoraTrainer", "Probe", "SelfEditConfig", "TrainConfig",
    "TrainResult", "VLLMGenerator", "build_training_sequences", "contains_answer", "decide", "evaluate_probes",
    "write_probes", "generate_self_edits", "learn_document", "normalize_answer", "token_f1", "train_lora",
]


def __getattr__(name: str):
    # torch/transformers load lazily, so `from workers.seal import decide` stays instant (gate, grading).
    if name in ("LoraTrainer", "TrainResult", "train_lora"):
        from . import train
        return getattr(train, name)
    if name == "HFGenerator":
        from .hfgen import HFGenerator
        return HFGenerator
    raise AttributeError(name)
