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
                                     encode_examples, prefix_step_weights, prl_step_weights,
                                     stage_fingerprint, step_weights, token_weight_spans)
from tests.helpers import WORLD, build, cid, pid


def test_prl_step_weights_clip_at_zero_and_the_cap_then_average_one():
    assert prl_step_weights([0.5, 1.5], 2.0) == [0.5, 1.5]
    weights = prl_step_weights([-1.0, 1.0, 5.0], 2.0)  # -> [0, 1, 2] / 1
    assert weights == [0.0, 1.0, 2.0] and math.isclose(sum(weights) / 3, 1.0)
    assert prl_step_weights([-0.3, -2.0], 2.0) == [1.0, 1.0]  # nothing positive: learned as is


def test_prefix_step_weights_stop_at_the_first_step_below_the_minimum():
    assert prefix_step_weights([-0.1, -0.5, -0.05], -0.3) == [1.0, 0.0, 0.0]  # later steps follow the doubt
    assert prefix_step_weights([-0.1, -0.2], -0.3) == [1.0, 1.0]
    assert prefix_step_weights([-0.3, -0.1], -0.3) == [1.0, 1.0]  # at the minimum is not below it
    assert prefix_step_weights([-0.9, -0.1], -0.3) == [0.0, 0.0]  # doubted from the start: learns nothing
    assert prefix_step_weights([1.0, 0.0, 1.0], 0.5) == [1.0, 0.0, 0.0]  # a 0/1 step label as the score


def test_step_weights_follow_the_stage():
    values = [0.4, -1.0, 3.0]
    assert step_weights(values, FinetuneStage(token_weights="prl", token_weight_clip=2.0)) == prl_step_weights(values, 2.0)
    assert step_weights(values, FinetuneStage(token_weights="prefix", token_weight_min=0.0)) == [1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="'none' has no step weights"):
        step_weights(values, FinetuneStage())


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
              if k not in ("token_weights", "token_weight_scorer", "token_weight_clip", "token_weight_min", "max_steps",
                           "batching", "merge_with_base")}
    assert content_hash("finetune", stage_fingerprint(stage)) == content_hash("finetune", before)
    weighted = FinetuneStage(token_weights="prl")
    assert stage_fingerprint(weighted)["token_weights"] == "prl"
    assert content_hash("finetune", stage_fingerprint(weighted)) != content_hash("finetune", before)
    assert "token_weight_min" not in stage_fingerprint(weighted)  # PRL-weighted models keep their ids
    prefix = [stage_fingerprint(FinetuneStage(token_weights="prefix", token_weight_min=m)) for m in (-0.3, -0.2)]
    assert prefix[0]["token_weight_min"] == -0.3 and prefix[0] != prefix[1]


def test_prefix_spans_come_from_the_named_scorers_step_scores_in_the_lake(lake):
    build(lake, WORLD)
    doubt = {0: [-0.1, -0.9], 1: [-0.5, -0.1], 3: [-0.1, -0.2]}  # a0 doubted at step 2, a1 at step 1, a3 never
    lake.write("scores", [dict(candidate_id=cid("a", i), prompt_id=pid("a"), iteration=0, scorer="confidence",
                               scorer_version="1", value=sum(s) / 2, label=None, extracted_answer=None,
                               step_scores=s, detail=None) for i, s in doubt.items()], 0, shard="scores-conf")
    rows = [{"candidate_id": cid("a", i), "text": WORLD["a"][1][i]["text"]} for i in doubt]
    stage = FinetuneStage(token_weights="prefix", token_weight_scorer="confidence", token_weight_min=-0.3)
    spans = token_weight_spans(lake, 0, rows, stage, "\n")
    expected = {0: (1.0, 0.0), 1: (0.0, 0.0), 3: (1.0, 1.0)}
    for row, i in zip(rows, doubt):
        ends = [end for _, end in split_steps(row["text"], "\n")]
        assert spans[row["candidate_id"]] == tuple(zip(ends, expected[i])), i
    with pytest.raises(ValueError, match=f"kept candidate {cid('a', 2)} has none: score the round with 'confidence'"):
        token_weight_spans(lake, 0, [{"candidate_id": cid("a", 2), "text": WORLD["a"][1][2]["text"]}], stage, "\n")
    with pytest.raises(ValueError, match="has 3 steps but 2 'confidence' step scores"):
        token_weight_spans(lake, 0, [{"candidate_id": cid("a", 0), "text": "x=1\nx=1\n#### 1"}], stage, "\n")
