"""The formats public PRMs ship in, each on a tiny random model of that shape built here: a step-tag
generative PRM (a causal LM read at a tag after each step) and a two-class token classifier read
at a separator token; checked against the model's own logits read by hand."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from schemas.loop import PrmScorerConfig
from schemas.generation import PromptFormat
from tasks.prompts.tiny_model import TinyModelConfig, build_model, build_tokenizer
from tasks.rounds.context import reward_model_scorer
from tasks.scoring.public_prm import StepTagPRMScorer, TwoClassPRMScorer
from tasks.scoring.reward_model import RewardModelError

FMT = PromptFormat(template="Q: {problem}\n")
CANDIDATES = [
    {"candidate_id": "a", "prompt_id": "p", "iteration": 0, "problem": "1+2", "text": "1+2=3\n3*2=6\n#### 6"},
    {"candidate_id": "b", "prompt_id": "p", "iteration": 0, "problem": "1+2", "text": "#### 3"},
]


def tiny(kind: str, out: Path, marker: str) -> Path:
    """A randomly initialised tiny model folder of `kind` whose tokenizer knows `marker` as one token."""
    from transformers import LlamaForTokenClassification

    tokenizer = build_tokenizer()
    tokenizer.add_tokens([marker])
    model = build_model(tokenizer, TinyModelConfig(), seed=0)
    if kind == "two_class":
        model.config.num_labels = 2
        torch.manual_seed(0)
        model = LlamaForTokenClassification(model.config)
    model.resize_token_embeddings(len(tokenizer))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def by_hand(folder: Path, loader, text: str, marker: str):  # noqa: ANN001
    """Logits at the marker positions of prompt + text with a marker after every step."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    marked = "\n".join(step + " " + marker for step in text.split("\n"))
    ids = tokenizer("Q: 1+2\n" + marked, add_special_tokens=False)["input_ids"]
    marker_id = tokenizer.convert_tokens_to_ids(marker)
    with torch.inference_mode():
        logits = loader.from_pretrained(folder)(input_ids=torch.tensor([ids])).logits[0].float()
    return logits[[i for i, t in enumerate(ids) if t == marker_id]], tokenizer


def test_a_step_tag_prm_reads_p_good_against_p_bad_at_each_tag(tmp_path: Path):
    from transformers import AutoModelForCausalLM

    folder = tiny("step_tag", tmp_path / "tag", "ки")
    entry = PrmScorerConfig(name="shepherd_prm", path=str(folder), format="step_tag")
    scorer = reward_model_scorer(entry, FMT, "\n")
    assert isinstance(scorer, StepTagPRMScorer) and scorer.name == "shepherd_prm"
    rows = scorer.score(CANDIDATES)
    logits, tokenizer = by_hand(folder, AutoModelForCausalLM, CANDIDATES[0]["text"], "ки")
    good, bad = tokenizer.convert_tokens_to_ids("+"), tokenizer.convert_tokens_to_ids("-")
    expected = torch.softmax(logits[:, [good, bad]], dim=-1)[:, 0].tolist()
    assert rows[0]["step_scores"] == pytest.approx(expected, abs=1e-5)
    assert len(rows[1]["step_scores"]) == 1 and rows[0]["value"] is None
    other = StepTagPRMScorer(folder, good_token="1", bad_token="0", prompt_format=FMT)
    assert other.version != scorer.version


def test_a_two_class_prm_reads_label_one_at_each_separator(tmp_path: Path):
    from transformers import AutoModelForTokenClassification

    folder = tiny("two_class", tmp_path / "two", "<extra_0>")
    scorer = reward_model_scorer(PrmScorerConfig(path=str(folder), format="two_class"), FMT, "\n")
    assert isinstance(scorer, TwoClassPRMScorer)
    rows = scorer.score(CANDIDATES)
    logits, _ = by_hand(folder, AutoModelForTokenClassification, CANDIDATES[0]["text"], "<extra_0>")
    assert rows[0]["step_scores"] == pytest.approx(torch.softmax(logits, dim=-1)[:, 1].tolist(), abs=1e-5)


def test_public_prm_formats_refuse_what_they_cannot_read(tmp_path: Path):
    tag = tiny("step_tag", tmp_path / "tag", "ки")
    two = tiny("two_class", tmp_path / "two", "<extra_0>")
    with pytest.raises(RewardModelError, match="not a \\*ForTokenClassification model"):
        TwoClassPRMScorer(tag)
    with pytest.raises(RewardModelError, match="not a \\*ForCausalLM model"):
        StepTagPRMScorer(two)
    with pytest.raises(RewardModelError, match="'<extra_1>' is 9 tokens"):
        StepTagPRMScorer(tag, step_tag="<extra_1>").score(CANDIDATES)
    with pytest.raises(RewardModelError, match="candidate c: 3 'ки' markers for 2 steps"):
        StepTagPRMScorer(tag).score([{**CANDIDATES[0], "candidate_id": "c", "text": "1+2=3 ки\n#### 3"}])
