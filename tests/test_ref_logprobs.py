"""Reference log-probabilities under the tiny Llama: batching, padding, loading, and PRL end to end."""
from __future__ import annotations

import os

import pytest
import torch

from schemas import table_spec
from tasks.generation.ref_logprobs import (ReferenceModelError, candidate_logprobs, load_reference,
                                sequence_logprobs)
from tasks.scoring.prl import group_advantages, prl_score_rows
from tasks.prompts.tiny_model import TinyModelConfig, build_model, build_tokenizer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
CANDIDATES = table_spec("candidates")
PROMPTS = ["Q: 1+2\n", "Q: 12*3-4\n", "Q: a\n", "Q: 7\n"]
TEXTS = ["3", "x=36\ny=32\n", "1\n2\n3\n4\n5\n6\n7\n8\n", ""]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: these models are tiny, and the test machine's cores are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer):
    return build_model(tokenizer, TinyModelConfig(), seed=0).eval()


@pytest.fixture(scope="module")
def completions(tokenizer):
    """Completion token ids: the texts' characters followed by EOS (except the empty one)."""
    eos = tokenizer.eos_token_id
    return [tokenizer(t, add_special_tokens=False)["input_ids"] + ([eos] if t else []) for t in TEXTS]


def manual(model, tokenizer, prompt: str, completion: list[int]) -> list[float]:
    """log_softmax of one unpadded forward pass, gathered at the completion tokens."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    full = torch.tensor([prompt_ids + completion])
    with torch.no_grad():
        logits = model(full).logits[0].float()
    logprobs = torch.log_softmax(logits[len(prompt_ids) - 1:-1], dim=-1)
    return logprobs.gather(-1, torch.tensor(completion).unsqueeze(-1)).squeeze(-1).tolist()


def assert_close(actual: list[list[float]], expected: list[list[float]], tol: float = 1e-5) -> None:
    assert [len(a) for a in actual] == [len(e) for e in expected]
    for a, e in zip(actual, expected):
        assert a == pytest.approx(e, abs=tol)


def test_batched_equals_manual_log_softmax_gather(model, tokenizer, completions):
    expected = [manual(model, tokenizer, p, c) for p, c in zip(PROMPTS, completions)]
    result = sequence_logprobs(model, tokenizer, PROMPTS, completions, device="cpu")
    assert_close(result, expected)
    assert [len(r) for r in result] == [2, 11, 17, 0]
    assert all(v < 0 for row in result for v in row)


def test_independent_of_batch_size_and_padding(model, tokenizer, completions):
    one_at_a_time = [sequence_logprobs(model, tokenizer, [p], [c], device="cpu")[0]
                     for p, c in zip(PROMPTS, completions)]
    for batch_size, side in ((3, "right"), (3, "left"), (64, "right"), (64, "left")):
        result = sequence_logprobs(model, tokenizer, PROMPTS, completions, batch_size=batch_size,
                                   device="cpu", padding_side=side)
        assert_close(result, one_at_a_time)
    # A token budget of 40 splits the longest-first order into batches of 1, 1 and 2 sequences.
    budget = sequence_logprobs(model, tokenizer, PROMPTS, completions, device="cpu", max_batch_tokens=40)
    assert_close(budget, one_at_a_time)


def test_scores_the_given_token_ids_not_a_retokenisation(model, tokenizer):
    # EOS in the middle and an UNK: decoding and re-encoding would drop or change them.
    completion = [tokenizer.convert_tokens_to_ids("4"), tokenizer.eos_token_id, tokenizer.unk_token_id,
                  tokenizer.convert_tokens_to_ids("2")]
    result = sequence_logprobs(model, tokenizer, ["Q: 2+2\n"], [completion], device="cpu")
    assert_close(result, [manual(model, tokenizer, "Q: 2+2\n", completion)])


def test_restores_training_mode(tokenizer, completions):
    trained = build_model(tokenizer, TinyModelConfig(), seed=1).train()
    sequence_logprobs(trained, tokenizer, PROMPTS[:1], completions[:1], device="cpu")
    assert trained.training


@pytest.mark.parametrize(
    ("prompts", "tokens", "kwargs", "message"),
    [
        (["Q\n", "Q\n"], [[5]], {}, "2 prompts but 1 completions"),
        (["Q\n"], [[5]], {"batch_size": 0}, "batch_size must be an integer >= 1"),
        (["Q\n"], [[5]], {"padding_side": "middle"}, "padding_side must be 'right' or 'left'"),
        (["Q\n"], [[5]], {"max_batch_tokens": 0}, "max_batch_tokens must be >= 1 or None"),
        (["Q\n", "Q\n"], [[5], [5, 10_000]], {}, "completion 1 holds token id 10000, outside the vocabulary"),
        (["Q\n"], [[-1]], {}, "completion 0 holds token id -1"),
        (["Q\n"], [[5] * 255], {}, "sequence 0 has 257 tokens, more than the model's 256 positions"),
        ([""], [[5]], {}, "prompt 0 tokenizes to no tokens"),
    ],
)
def test_validation(model, tokenizer, prompts, tokens, kwargs, message):
    with pytest.raises(ValueError, match=message):
        sequence_logprobs(model, tokenizer, prompts, tokens, device="cpu", **kwargs)


def test_empty_input(model, tokenizer):
    assert sequence_logprobs(model, tokenizer, [], [], device="cpu") == []


# -- loading ------------------------------------------------------------------------------------
def test_load_reference_round_trip(tmp_path, model, tokenizer, completions):
    folder = tmp_path / "base"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    loaded, loaded_tokenizer = load_reference(folder, device="cpu")
    assert not loaded.training
    assert_close(sequence_logprobs(loaded, loaded_tokenizer, PROMPTS, completions, device="cpu"),
                 sequence_logprobs(model, tokenizer, PROMPTS, completions, device="cpu"))


def test_load_reference_errors(tmp_path):
    with pytest.raises(ReferenceModelError, match="reference model folder not found: .*missing"):
        load_reference(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReferenceModelError, match=r"not a model folder \(no config.json\)"):
        load_reference(tmp_path / "empty")
    from transformers import ViTConfig

    ViTConfig().save_pretrained(tmp_path / "vision")
    with pytest.raises(ReferenceModelError, match="not a causal language model \\(model_type 'vit'\\)"):
        load_reference(tmp_path / "vision")


# -- PRL end to end -----------------------------------------------------------------------------
def test_prl_with_policy_equal_to_reference_gives_the_advantage(model, tokenizer):
    eos = tokenizer.eos_token_id
    texts = {("p1", 0): "2+1=3\n3*2=6\n", ("p1", 1): "2+1=4\n", ("p1", 2): "6\n",
             ("p2", 0): "9-3=6\n6\n", ("p2", 1): "5\n"}
    prompt_texts = {"p1": "Q: (2+1)*2\n", "p2": "Q: 9-3\n"}
    rewards = {("p1", 0): 1.0, ("p1", 1): 0.0, ("p1", 2): 1.0, ("p2", 0): 1.0, ("p2", 1): 1.0}
    rows = []
    for (prompt_id, index), text in texts.items():
        token_ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [eos]
        step_ends = [i for i, t in enumerate(text) if t == "\n"]  # one char per token
        rows.append({"candidate_id": f"{prompt_id}-{index}", "prompt_id": prompt_id, "model_id": "tiny",
                     "iteration": 0, "sampling_hash": "s", "sample_index": index, "text": text,
                     "steps": text.split("\n")[:-1], "num_tokens": len(token_ids), "finish_reason": "stop",
                     "cumulative_logprob": None, "token_ids": token_ids, "token_logprobs": None,
                     "step_token_ends": step_ends})
    # The "generating policy" log-probs, one sequence at a time, as a sampler would have recorded them.
    for row in rows:
        row["token_logprobs"] = sequence_logprobs(model, tokenizer, [prompt_texts[row["prompt_id"]]],
                                                  [row["token_ids"]], device="cpu")[0]
    candidates = CANDIDATES.from_rows(rows)  # float32 log-probs, as in the lake
    refs = candidate_logprobs(model, tokenizer, candidates, prompt_texts, batch_size=2, device="cpu")
    outcome = {f"{p}-{i}": r for (p, i), r in rewards.items()}
    scores = {r["candidate_id"]: r for r in prl_score_rows(candidates, outcome, refs, eta=1.0,
                                                           iteration=0, scorer_version="v")}
    a_p1 = group_advantages([1.0, 0.0, 1.0])
    expected = {"p1-0": a_p1[0], "p1-1": a_p1[1], "p1-2": a_p1[2], "p2-0": 0.0, "p2-1": 0.0}
    assert a_p1[1] == pytest.approx(-2 / 3 / (3 ** -0.5 + 1e-6), abs=1e-12)
    assert sorted(scores) == sorted(expected)
    for cid, advantage in expected.items():
        steps = len(texts[(cid[:2], int(cid[-1]))].split("\n")) - 1
        assert scores[cid]["value"] == pytest.approx(advantage, abs=1e-12)
        assert scores[cid]["step_scores"] == pytest.approx([advantage] * steps, abs=1e-5)


def test_candidate_logprobs_errors(model, tokenizer):
    row = {"candidate_id": "c1", "prompt_id": "p1", "token_ids": [5, 6]}
    with pytest.raises(ValueError, match="candidate 'c1': no prompt text for prompt 'p1'"):
        candidate_logprobs(model, tokenizer, [row], {}, device="cpu")
    with pytest.raises(ValueError, match="candidate 'c1' has no token_ids"):
        candidate_logprobs(model, tokenizer, [{**row, "token_ids": None}], {"p1": "Q\n"}, device="cpu")
    with pytest.raises(ValueError, match="candidate 'c1' appears twice"):
        candidate_logprobs(model, tokenizer, [row, row], {"p1": "Q\n"}, device="cpu")
