"""hfpipe: pretrain and adapt transformer language models on the Hugging Face stack."""

__version__ = "0.1.0"
