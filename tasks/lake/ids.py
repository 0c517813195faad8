"""Content-addressed ids: the same content always gets the same id, so reruns can skip work."""
from __future__ import annotations

import hashlib
import json
import math
from typing import Any

ID_HEX_CHARS = 16


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace; floats that are integral stay distinguishable."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def content_hash(*parts: Any) -> str:
    """A 16-hex-digit SHA-256 digest of the canonical JSON of `parts`."""
    for part in parts:
        if isinstance(part, float) and not math.isfinite(part):
            raise ValueError(f"cannot hash a non-finite number: {part}")
    digest = hashlib.sha256(canonical_json(list(parts)).encode("utf-8")).hexdigest()
    return digest[:ID_HEX_CHARS]


def prompt_id(source: str, problem: str) -> str:
    """Id of a problem: hash of its source name and its exact text."""
    return content_hash("prompt", source, problem)


def sampling_hash(params: dict[str, Any]) -> str:
    """Id of a set of sampling parameters (temperature, top_p, max_tokens, seed, ...)."""
    return content_hash("sampling", params)


def candidate_id(prompt_id: str, model_id: str, sampling_hash: str, sample_index: int) -> str:
    """Id of one sample: prompt, model, sampling parameters and the sample's index."""
    return content_hash("candidate", prompt_id, model_id, sampling_hash, int(sample_index))


def policy_hash(config: dict[str, Any]) -> str:
    """Id of a declarative selection policy config."""
    return content_hash("policy", config)


def shard_id(table: str, keys: list[str]) -> str:
    """Deterministic shard name for a chunk of rows identified by their sorted keys."""
    return content_hash("shard", table, sorted(keys))
