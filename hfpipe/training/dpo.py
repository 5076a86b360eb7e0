"""HfpipeDPOTrainer: trl's DPOTrainer with HfpipeTrainer's checkpoints, counts and budget.

Imported only where trl is installed (the ``[post]`` extra): tasks/dpo.py checks that first.
"""

from trl import DPOTrainer

from .trainer import HfpipeTrainer


class HfpipeDPOTrainer(HfpipeTrainer, DPOTrainer):
    """Method resolution: HfpipeTrainer's additions, then trl's DPOTrainer, then transformers' Trainer."""


__all__ = ["HfpipeDPOTrainer"]
