"""The embedded default model: a character-level tokenizer and a tiny Llama, built from scratch.

Saved with `save_pretrained`, the folder loads exactly like a hub model in transformers and vLLM.
"""
from __future__ import annotations

import string
from dataclasses import asdict, dataclass

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"
# Printable ASCII plus newline: enough for the demo task, GSM8K-style text and judge prompts.
CHARACTERS = "\n" + "".join(c for c in string.printable if c not in "\t\r\x0b\x0c\n")


@dataclass(frozen=True)
class TinyModelConfig:
    """Shape of the tiny Llama (defaults: about 1.05M parameters, head_dim 32 for vLLM's CPU kernels)."""

    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 512
    max_positions: int = 256

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        head_dim = self.hidden_size // self.num_heads
        if head_dim not in (32, 64, 128):
            raise ValueError(f"head_dim {head_dim} is not one vLLM's CPU attention supports (32, 64, 128)")

    def to_dict(self) -> dict:
        """The config as a plain dict (for model cards)."""
        return asdict(self)


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A character-level tokenizer: one token per character, with PAD, EOS and UNK."""
    vocab = {PAD: 0, EOS: 1, UNK: 2}
    for char in CHARACTERS:
        vocab.setdefault(char, len(vocab))
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token=PAD, eos_token=EOS, unk_token=UNK,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.padding_side = "left"
    return tokenizer


def build_model(tokenizer: PreTrainedTokenizerFast, config: TinyModelConfig, seed: int) -> LlamaForCausalLM:
    """A randomly initialised LlamaForCausalLM for `tokenizer`, deterministic for `seed`."""
    import torch

    torch.manual_seed(seed)
    llama = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads,
        max_position_embeddings=config.max_positions,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
        torch_dtype="float32",
    )
    return LlamaForCausalLM(llama)
