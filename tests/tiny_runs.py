"""Recipe pieces for the tests' tiny runs (tests/ is on sys.path: rootdir conftest, no __init__.py)."""


def four_steps(output_dir, batch_size: int) -> dict:
    """A recipe's train section for a run of four optimizer steps, evaluated and saved at the last."""
    return {"output_dir": str(output_dir), "max_steps": 4, "per_device_train_batch_size": batch_size,
            "per_device_eval_batch_size": batch_size, "learning_rate": 1e-3, "logging_steps": 2, "eval_steps": 4,
            "save_steps": 4, "report_to": [], "seed": 3}
