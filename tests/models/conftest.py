"""Tiny reference models built from transformers' own config classes (no download)."""

import pytest
import torch
from transformers import BertConfig, GPT2Config, T5Config

import hfpipe  # noqa: F401  (registers the Auto classes)

VOCAB = 99


@pytest.fixture
def batch():
    """input_ids (2, 9) with the second row right-padded after 6 tokens."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, VOCAB, (2, 9), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    ids[1, 6:] = 0
    return ids, mask


def bert_config(**kw):
    return BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=37, **kw)


def gpt2_config(**kw):
    return GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64, **kw)


def t5_config(gated=False, num_decoder_layers=2, **kw):
    return T5Config(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_decoder_layers=num_decoder_layers,
                    num_heads=4, feed_forward_proj="gated-gelu" if gated else "relu",
                    tie_word_embeddings=not gated, decoder_start_token_id=0, **kw)
