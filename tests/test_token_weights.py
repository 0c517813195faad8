"""PRL as a trainer option: per-step weights from PRL values, laid onto completion tokens, scaling
each token's loss; a finetune stage without token weights keeps its model id."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from schemas.loop import FinetuneStage
from tasks.generation.generate import split_steps
from tasks.lake.ids import content_hash
from tasks.prompts.tiny_model import build_tokenizer
from tasks.training.finetune import (Example, _Batcher, _weighted_completion_loss, completion_token_weights,
                                     encode_examples, prl_step_weights, stage_fingerprint)


def test_prl_step_weights_clip_at_zero_and_the_cap_then_average_one():
    assert prl_step_weights([0.5, 1.5], 2.0) == [0.5, 1.5]
    weights = prl_step_weights([-1.0, 1.0, 5.0], 2.0)  # -> [0, 1, 2] / 1
    assert weights == [0.0, 1.0, 2.0] and math.isclose(sum(weights) / 3, 1.0)
    assert prl_step_weights([-0.3, -2.0], 2.0) == [1.0, 1.0]  # nothing positive: learned as is


def test_spans_weigh_each_steps_tokens_and_eos_takes_the_last_weight():
    tokenizer = build_tokenizer()
    text = "1+2=3\n3*2=6\n#### 6"
    steps = split_steps(text, "\n")
    spans = tuple((end, w) for (_, end), w in zip(steps, (0.0, 1.0, 2.0)))
    [weights] = completion_token_weights(tokenizer, [Example("Q: ", text, 1.0, spans)])
    ids = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    assert len(weights) == len(ids["input_ids"]) + 1  # + EOS
    for (start, _), weight in zip(ids["offset_mapping"], weights):
        step = next(i for i, (_, end) in enumerate(steps) if start < end) if start < steps[-1][1] else 2
        assert weight == (0.0, 1.0, 2.0)[step], (text[start:], weight)
    assert weights[-1] == 2.0
    assert completion_token_weights(tokenizer, [Example("Q: ", text)]) is None


def test_token_weights_scale_each_tokens_loss_against_a_hand_computed_mean():
    torch.manual_seed(0)
    tokenizer = build_tokenizer()
    examples = [Example("Q: 1+2\n", "1+2=3\n#### 3", 1.0, ((5, 0.0), (12, 2.0))),
                Example("Q: 2*2\n", "2*2=4\n#### 4", 3.0, ((5, 1.0), (12, 1.0)))]
    encoded = encode_examples(tokenizer, examples, 64)
    token_weights = completion_token_weights(tokenizer, examples)
    batch = _Batcher(encoded, torch.tensor([1.0, 3.0]), 0, 0, 1, token_weights)([0, 1], torch.device("cpu"))
    logits = torch.randn(*batch.input_ids.shape, len(tokenizer))
    got = _weighted_completion_loss(logits, batch.labels, batch.weights, batch.total_weight, batch.token_weights)
    expected = 0.0
    for row, ((ids, prompt_len), weights, sample_weight) in enumerate(zip(encoded, token_weights, (1.0, 3.0))):
        losses = [F.cross_entropy(logits[row, position - 1], torch.tensor(ids[position])).item()
                  for position in range(prompt_len, len(ids))]
        assert len(losses) == len(weights)
        expected += sample_weight * sum(w * l for w, l in zip(weights, losses)) / len(losses)
    assert got.item() == pytest.approx(expected / 4.0, rel=1e-5)
    plain = _weighted_completion_loss(logits, batch.labels, batch.weights, batch.total_weight)
    assert plain.item() != pytest.approx(got.item())


def test_a_stage_without_token_weights_hashes_as_before_they_existed():
    stage = FinetuneStage()
    before = {k: v for k, v in stage.model_dump(mode="json").items()
              if k not in ("token_weights", "token_weight_scorer", "token_weight_clip", "max_steps", "batching",
                           "merge_with_base")}
    assert content_hash("finetune", stage_fingerprint(stage)) == content_hash("finetune", before)
    weighted = FinetuneStage(token_weights="prl")
    assert stage_fingerprint(weighted)["token_weights"] == "prl"
    assert content_hash("finetune", stage_fingerprint(weighted)) != content_hash("finetune", before)
