"""Sharded training configurations: DeepSpeed ZeRO-2/3 and FSDP2.

Without a GPU: each accelerate_configs/{deepspeed-*,fsdp}.yaml goes through `accelerate launch`'s own
validation and environment preparation (the code that runs before any process starts) and the plugin
the processes would build from that environment is checked, DeepSpeed not installed (DeepSpeedPlugin is
plain accelerate; only starting the processes needs deepspeed).

With CUDA: fsdp.yaml really trains, and is compared with one process as in test_distributed.py.
FSDP cannot be checked on CPU: with `use_cpu` accelerate 1.15 makes the processes MULTI_CPU (gloo DDP)
and silently ignores fsdp_config (AcceleratorState only switches MULTI_GPU-like types to FSDP).
"""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from safetensors.torch import load_file
from test_distributed import NO_DROPOUT, PLAIN, RECIPE, ROOT, tokenizer_dir  # noqa: F401 (fixture)

CONFIGS = ROOT / "accelerate_configs"


def launch_env(config: str, monkeypatch) -> tuple[object, object]:
    """What `accelerate launch --config_file CONFIG` validates and exports to its processes;
    the exported variables are set here (monkeypatch), as they are in each process."""
    args = launch_command_parser().parse_args(["--config_file", str(CONFIGS / config), "-m", "hfpipe", "pretrain", "x.yaml"])
    args, defaults, mp_from_config = _validate_launch_command(args)
    if args.use_deepspeed:
        from accelerate.utils.launch import prepare_deepspeed_cmd_env

        # as accelerate.commands.launch.launch_command does before deepspeed_launcher
        fields = list(defaults.deepspeed_config) + (["mixed_precision"] if mp_from_config else [])
        args.deepspeed_fields_from_accelerate_config = ",".join(fields)
        _, env = prepare_deepspeed_cmd_env(args)
    else:
        from accelerate.utils.launch import prepare_multi_gpu_env

        env = prepare_multi_gpu_env(args)
    for key, value in env.items():
        if key.startswith(("ACCELERATE_", "FSDP_")):
            monkeypatch.setenv(key, value)
    return args, defaults


@pytest.mark.parametrize("config,stage", [("deepspeed-zero2.yaml", 2), ("deepspeed-zero3.yaml", 3)])
def test_deepspeed_configs_are_valid_for_accelerate(config, stage, monkeypatch):
    from accelerate.utils import DeepSpeedPlugin, DistributedType

    args, defaults = launch_env(config, monkeypatch)  # unknown keys: ClusterConfig raises TypeError
    assert defaults.distributed_type == DistributedType.DEEPSPEED and args.use_deepspeed
    assert args.mixed_precision == "bf16" and args.num_processes == 8
    plugin = DeepSpeedPlugin()  # built from the exported ACCELERATE_DEEPSPEED_* variables
    plugin.set_mixed_precision(args.mixed_precision)
    ds = plugin.deepspeed_config
    assert plugin.zero_stage == stage and ds["zero_optimization"]["stage"] == stage
    assert ds["zero_optimization"]["offload_optimizer"]["device"] == "none"
    assert ds["zero_optimization"]["offload_param"]["device"] == "none"
    assert ds["bf16"] == {"enabled": True} and ds["fp16"] == {"enabled": False}
    # "auto": filled in from TrainingArguments (the recipe) when Trainer starts
    assert ds["gradient_accumulation_steps"] == ds["gradient_clipping"] == "auto"
    assert ds["train_micro_batch_size_per_gpu"] == "auto"
    if stage == 3:
        assert plugin.zero3_init_flag  # parameters sharded as the model is built
        assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"]  # save_model writes full weights
    else:
        assert not plugin.zero3_init_flag


def test_fsdp_config_builds_fsdp2_wrapping_each_transformer_block(monkeypatch):
    import hfpipe  # noqa: F401 (registers hfpipe_decoder with the Auto classes)
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
    from accelerate.utils.dataclasses import get_module_class_from_name
    from transformers import AutoConfig, AutoModelForCausalLM

    args, defaults = launch_env("fsdp.yaml", monkeypatch)
    assert defaults.distributed_type == DistributedType.FSDP and args.use_fsdp
    assert args.mixed_precision == "bf16"
    plugin = FullyShardedDataParallelPlugin()  # from the exported FSDP_* variables
    assert plugin.fsdp_version == 2
    assert plugin.transformer_cls_names_to_wrap == ["TransformerBlock"]
    assert "SHARDED_STATE_DICT" in str(plugin.state_dict_type)
    assert plugin.reshard_after_forward is True
    # the class named for wrapping is the one hfpipe's models are made of, once per layer
    config = AutoConfig.for_model("hfpipe_decoder", vocab_size=100, hidden_size=32, num_hidden_layers=3,
                                  num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    model = AutoModelForCausalLM.from_config(config)
    block = get_module_class_from_name(model, "TransformerBlock")
    assert block is not None
    assert sum(isinstance(m, block) for m in model.modules()) == 3


def run_on_gpu(command, out, devices: str):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": devices}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1200, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    state = json.loads((out / "trainer_state.json").read_text())
    return [(e["step"], e["loss"]) for e in state["log_history"] if "loss" in e]


@pytest.mark.gpu
@pytest.mark.slow
def test_fsdp2_matches_one_process_and_saves_a_full_model(tmp_path, tokenizer_dir):  # noqa: F811
    """fsdp.yaml on (up to) two GPUs, fp32 so that it can match one process closely."""
    from transformers import AutoModelForCausalLM

    import hfpipe  # noqa: F401

    n = min(2, torch.cuda.device_count())
    devices = ",".join(str(i) for i in range(n))
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable))
    common = ["pretrain", str(RECIPE), "--smoke", "--max-steps", "3", "--set", NO_DROPOUT, *PLAIN,
              "--set", "train.logging_steps=1", "--set", "train.save_steps=3",
              "--set", f"tokenizer.name_or_path={tokenizer_dir}"]
    one, sharded = tmp_path / "one", tmp_path / "fsdp"
    losses_one = run_on_gpu([sys.executable, "-m", "hfpipe", *common, "--output-dir", str(one),
                             "--set", "train.per_device_train_batch_size=8"], one, "0")
    losses_fsdp = run_on_gpu([accelerate, "launch", "--config_file", str(CONFIGS / "fsdp.yaml"),
                              "--num_processes", str(n), "--mixed_precision", "no",
                              "-m", "hfpipe", *common, "--output-dir", str(sharded),
                              "--set", f"train.per_device_train_batch_size={8 // n}"], sharded, devices)
    # FSDP really ran: the checkpoint holds the sharded (distributed checkpoint) model
    assert (sharded / "checkpoint-3" / "pytorch_model_fsdp_0").is_dir()
    assert [s for s, _ in losses_one] == [s for s, _ in losses_fsdp] == [1, 2, 3]
    for (_, a), (_, b) in zip(losses_one, losses_fsdp):
        assert a == pytest.approx(b, abs=2e-4)
    # the final model is gathered into one ordinary model.safetensors, not left as shards
    assert (sharded / "model.safetensors").is_file(), sorted(p.name for p in sharded.iterdir())
    weights_one, weights_fsdp = load_file(one / "model.safetensors"), load_file(sharded / "model.safetensors")
    assert weights_one.keys() == weights_fsdp.keys()
    for name in weights_one:
        torch.testing.assert_close(weights_one[name], weights_fsdp[name], atol=2e-5, rtol=1e-4)
    model = AutoModelForCausalLM.from_pretrained(sharded)
    for name, tensor in model.state_dict().items():
        if name in weights_fsdp:
            torch.testing.assert_close(tensor, weights_fsdp[name])
