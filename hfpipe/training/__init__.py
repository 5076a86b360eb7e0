"""Training internals shared by the verbs that train (pretrain, finetune, demo).

    trainer.py      HfpipeTrainer (Trainer with hfpipe's checkpoints, counts, budget) and build_trainer
    output_dir.py   where a run writes and what it resumes from
    budget.py       train.time_budget: the clock, the schedule over it, its progress bar
    loss_counts.py  the loss counts Trainer does not make for hfpipe's heads
    loss_curve.py   loss.png and loss_history.json
    callbacks.py    the compile notice, the non-finite-loss stop, pushes of checkpoints
    results.py      what a finished run writes and prints
    state.py        Trainer's pickled resume state as safetensors + JSON (for the Hub)

The package imports nothing itself: hub/ reads state.py without pulling in the Trainer.
"""
