"""Every file in accelerate_configs/ loads through accelerate exactly as `accelerate launch` reads it.

`load_config_from_file` checks only top-level keys, so each nested `deepspeed_config`/`fsdp_config` key is
also checked against the launcher's options, and the plugin accelerate would build on each rank is built
here from the environment the launcher would export. The configs that can run on this CPU machine are run
with 2 ranks in test_two_ranks.py; FSDP cannot (accelerate applies FSDP only on GPUs/accelerators).
"""

from pathlib import Path

import pytest
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils import DeepSpeedPlugin, DistributedType, FullyShardedDataParallelPlugin
from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

CONFIGS = Path(__file__).resolve().parents[2] / "accelerate_configs"
EXPECTED = {
    "single_gpu.yaml": DistributedType.NO,
    "multi_gpu.yaml": DistributedType.MULTI_GPU,
    "deepspeed_zero2.yaml": DistributedType.DEEPSPEED,
    "deepspeed_zero3.yaml": DistributedType.DEEPSPEED,
    "deepspeed_zero3_offload.yaml": DistributedType.DEEPSPEED,
    "fsdp.yaml": DistributedType.FSDP,
    "multi_node.yaml": DistributedType.DEEPSPEED,
    "multi_node_ddp.yaml": DistributedType.MULTI_GPU,
}


def _launch(name: str, *flags: str):
    """The launcher's parsed arguments and the environment it would give each rank."""
    args = launch_command_parser().parse_args(["--config_file", str(CONFIGS / name), *flags, "train.py"])
    args, defaults, _ = _validate_launch_command(args)
    if args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
        return args, prepare_deepspeed_cmd_env(args)[1]
    return args, prepare_multi_gpu_env(args)


def _plugin(monkeypatch, env: dict, plugin_class):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return plugin_class()


def test_the_documented_set_of_configs_exists():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_loads_with_known_keys_only(name):
    config = load_config_from_file(str(CONFIGS / name))
    assert config.distributed_type == EXPECTED[name]
    options = {action.dest for action in launch_command_parser()._actions}
    nested = list(config.deepspeed_config) + list(config.fsdp_config)
    assert [key for key in nested if key not in options] == []
    assert config.mixed_precision == "bf16" and not config.use_cpu


@pytest.mark.parametrize(
    ("name", "stage", "offload", "gather_16bit"),
    [("deepspeed_zero2.yaml", 2, "none", False), ("deepspeed_zero3.yaml", 3, "none", True),
     ("deepspeed_zero3_offload.yaml", 3, "cpu", True), ("multi_node.yaml", 2, "none", False)],
)
def test_deepspeed_configs_build_the_intended_zero_plugin(name, stage, offload, gather_16bit, monkeypatch):
    _, env = _launch(name)
    zero = _plugin(monkeypatch, env, DeepSpeedPlugin).deepspeed_config["zero_optimization"]
    assert zero["stage"] == stage
    assert zero["offload_optimizer"]["device"] == zero["offload_param"]["device"] == offload
    assert zero["stage3_gather_16bit_weights_on_model_save"] is gather_16bit  # final weights reload unsharded


def test_fsdp_config_builds_an_fsdp2_full_shard_plugin(monkeypatch):
    args, env = _launch("fsdp.yaml", "--num_processes", "8")
    plugin = _plugin(monkeypatch, env, FullyShardedDataParallelPlugin)
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
    assert plugin.auto_wrap_policy.__name__ == "transformer_auto_wrap_policy"
    assert plugin.state_dict_type.name == "FULL_STATE_DICT"
    assert args.num_processes == 8


@pytest.mark.parametrize("name", ["multi_node.yaml", "multi_node_ddp.yaml"])
def test_multi_node_configs_are_two_machines_with_a_placeholder_address(name):
    text = (CONFIGS / name).read_text()
    assert "--machine_rank 0" in text and "--machine_rank 1" in text
    args, _ = _launch(name, "--machine_rank", "1", "--main_process_ip", "10.0.0.1")
    assert (args.num_machines, args.num_processes, args.nnodes, args.node_rank) == (2, 16, "2", 1)
    assert (args.rdzv_backend, args.rdzv_endpoint) == ("static", "10.0.0.1:29500")
    assert load_config_from_file(str(CONFIGS / name)).main_process_ip == "MAIN_NODE_IP"


def test_single_and_multi_gpu_configs_set_their_process_counts():
    single, _ = _launch("single_gpu.yaml")
    multi, env = _launch("multi_gpu.yaml", "--num_processes", "2")
    assert (single.num_processes, single.multi_gpu) == (1, False)
    assert (multi.num_processes, multi.multi_gpu, env["ACCELERATE_MIXED_PRECISION"]) == (2, True, "bf16")
