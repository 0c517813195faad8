"""Math-Shepherd labels in the loop: answer-correct candidates only, lazily, resumable; and the
`steps_above` selection step (preset `rft_mc`) that reads them."""
from __future__ import annotations

from schemas.generation import SamplingConfig
from schemas.policy import PRESETS, SelectionPolicy, StepsAbove
from tasks.generation.generate import Completion
from tasks.lake.store import Lake
from tasks.scoring.math_shepherd import MathShepherdScorer, label_lazily, stored_labels
from tasks.selection.select import apply_policy


class RolloutBackend:
    """Completes a rollout prefix with the right answer unless the prefix holds a step marked '!'."""

    name = "rollouts"

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def generate(self, prompts, sampling, seeds):  # noqa: ANN001, ANN201
        self.prompts += prompts
        return [[Completion("#### 0" if "!" in p else "#### 6", [1], None, None, "stop")] * sampling.n
                for p in prompts]

    def close(self) -> None:
        pass


def candidate(prompt: str, index: int, text: str) -> dict:
    return {"candidate_id": f"{prompt}-{index}", "prompt_id": prompt, "iteration": 0, "sample_index": index,
            "problem": "(1+2)*2", "reference_answer": "6", "text": text}


GOOD, BAD_STEP, WRONG = "1+2=3\n3*2=6\n#### 6", "1+2=3!\n3*2=6\n#### 6", "1+2=3\n3*2=7\n#### 7"


def world() -> tuple[list[dict], set[str]]:
    """p: a correct candidate with a bad step, then three good ones; q: a wrong one, then a good one."""
    rows = [candidate("p", 0, BAD_STEP), candidate("p", 1, GOOD), candidate("p", 2, GOOD), candidate("p", 3, GOOD),
            candidate("q", 0, WRONG), candidate("q", 1, GOOD)]
    correct = {c["candidate_id"] for c in rows if c["text"].endswith("#### 6")}
    return rows, correct


def scorer(backend: RolloutBackend) -> MathShepherdScorer:
    return MathShepherdScorer(backend, SamplingConfig(n=2, temperature=1.0), model_id="m", workers=1)


def test_labels_answer_correct_candidates_in_waves_until_a_prompt_has_enough(lake: Lake) -> None:
    candidates, correct = world()
    backend = RolloutBackend()
    labeller = scorer(backend)
    try:
        report = label_lazily(lake, labeller, candidates, correct, 0, enough=2)
    finally:
        labeller.close()
    labels = stored_labels(lake, 0, "math_shepherd", labeller.version)
    # p: 0 (a bad step), 1 and 2 (good: enough), never 3; q: only the answer-correct 1
    assert labels == {"p-0": [0.0, 0.0, 1.0], "p-1": [1.0, 1.0, 1.0], "p-2": [1.0, 1.0, 1.0],
                      "q-1": [1.0, 1.0, 1.0]}
    assert (report.labelled, report.already, report.waves, report.prompts_enough) == (4, 0, 3, 1)
    assert report.rollouts == 4 * 2 * 2  # 4 candidates, 2 step prefixes each, 2 rollouts per prefix
    assert not any("3*2=7" in p for p in backend.prompts)  # the wrong answer is never rolled out


def test_a_rerun_labels_nothing_again_and_a_larger_enough_continues(lake: Lake) -> None:
    candidates, correct = world()
    first = scorer(RolloutBackend())
    try:
        label_lazily(lake, first, candidates, correct, 0, enough=2)
    finally:
        first.close()
    backend = RolloutBackend()
    again = scorer(backend)
    try:
        report = label_lazily(lake, again, candidates, correct, 0, enough=2)
        assert (report.labelled, report.already, backend.prompts) == (0, 4, [])
        more = label_lazily(lake, again, candidates, correct, 0, enough=3)
    finally:
        again.close()
    assert (more.labelled, more.prompts_enough) == (1, 1)  # p-3; q has no more answer-correct candidates
    assert lake.read("scores").num_rows == 5


def test_steps_above_keeps_labelled_candidates_whose_every_step_reaches_the_reference(lake: Lake) -> None:
    frame = [
        {"candidate_id": "a", "prompt_id": "p", "iteration": 0, "sample_index": 0, "text": "a",
         "math_shepherd__steps": [0.5, 1.0], "math_shepherd__version": "v"},
        {"candidate_id": "b", "prompt_id": "p", "iteration": 0, "sample_index": 1, "text": "b",
         "math_shepherd__steps": [0.0, 1.0], "math_shepherd__version": "v"},
        {"candidate_id": "c", "prompt_id": "p", "iteration": 0, "sample_index": 2, "text": "c",
         "math_shepherd__steps": None, "math_shepherd__version": None},  # not labelled
    ]
    kept = apply_policy(frame, SelectionPolicy(name="mc", steps=[StepsAbove()]))
    assert [row["candidate_id"] for row in kept] == ["a"]
    stricter = apply_policy(frame, SelectionPolicy(name="mc", steps=[StepsAbove(above=0.5)]))
    assert stricter == []
    assert [type(s).__name__ for s in PRESETS["rft_mc"].steps][:2] == ["KeepCorrect", "StepsAbove"]


class HalfwayBackend(RolloutBackend):
    """Like RolloutBackend, but from a prefix holding a step marked '?' one rollout in two is wrong."""

    def generate(self, prompts, sampling, seeds):  # noqa: ANN001, ANN201
        self.prompts += prompts
        return [[Completion("#### 0" if "?" in p and i % 2 else "#### 6", [1], None, None, "stop")
                 for i in range(sampling.n)] for p in prompts]


def test_a_label_threshold_keeps_labelling_past_candidates_at_or_below_it(lake: Lake) -> None:
    unsure = "1+2=3?\n3*2=6\n#### 6"
    candidates = [candidate("p", 0, unsure), candidate("p", 1, GOOD)]
    correct = {c["candidate_id"] for c in candidates}
    for above, labelled in ((0.0, {"p-0"}), (0.5, {"p-0", "p-1"})):
        store = Lake(lake.root / f"above-{above}")
        labeller = scorer(HalfwayBackend())
        try:
            report = label_lazily(store, labeller, candidates, correct, 0, enough=1, above=above)
        finally:
            labeller.close()
        labels = stored_labels(store, 0, "math_shepherd", labeller.version)
        assert set(labels) == labelled, above
        assert labels["p-0"] == [0.5, 0.5, 1.0]
        assert report.prompts_enough == 1
