"""How the model is spread over the training processes: DDP, or FSDP2 sharding (ZeRO-2 / ZeRO-3).

``distributed.strategy`` in a training config:

- ``ddp`` (default): every GPU holds the whole model, its gradients and the optimiser state;
  gradients are all-reduced (PyTorch DDP).
- ``zero2``: PyTorch FSDP2 (``fully_shard``) shards the *trainable* parameters' fp32 master
  copy, their gradients and AdamW's state over the GPUs, DeepSpeed ZeRO-2's saving (the paper
  trains with ZeRO-2). The frozen weights (the LLM's base, the vision towers, SAM's image
  encoder) stay whole on every GPU, and the trainable parameters stay gathered from the forward
  to the end of the backward (``reshard_after_forward=False``), so each step gathers once.
- ``zero3``: FSDP2 shards every weight as well, one LLM decoder layer gathered at a time; the
  least memory, the most communication.

Checkpoints are written in one layout whatever the strategy: rank 0 writes the full trainable
weights and the full optimiser state (gathered from the shards), keyed by parameter name, so a
run may resume under another strategy or world size, and ``final/`` loads with ``Agent(dir)``.
Launch under ``torchrun`` as for DDP. The whole of this runs on CPUs too (gloo), which is how
the tests check it.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.distributed as dist

from pixelagent.errors import ConfigError
from pixelagent.training.distributed import World
from pixelagent.training.precision import Precision

STRATEGIES = ("ddp", "zero2", "zero3")


class Strategy:
    """Plain DDP (or a single process): the model is used as built."""

    sharded = False

    def __init__(self, name: str, world: World, device: str, precision: Precision) -> None:
        self.name, self.world, self.device, self.precision = name, world, device, precision

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module each step calls."""
        if not self.world.distributed:
            return model
        device_ids = [torch.device(self.device).index] if self.device.startswith("cuda") else None
        # SAM's IoU head gets no gradient from eq. 8, hence find_unused_parameters
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=True)

    def accumulating(self, engine: torch.nn.Module, sync: bool) -> Any:
        """Context of one micro-batch: gradients are only synchronised on the last one."""
        if sync or not self.world.distributed:
            return contextlib.nullcontext()
        return engine.no_sync()

    def trainable_state(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """Full trainable weights by name, on the CPU (every rank must call it under sharding)."""
        return {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}

    def optimizer_state(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """The optimiser state in the checkpoint layout: keyed by parameter name."""
        return by_name(optimizer.state_dict(), trainable_names(model))

    def load(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, weights: dict[str, torch.Tensor],
             optimizer_state: dict[str, Any]) -> None:
        """Restore full weights and a checkpoint's optimiser state (by name or, older, by index)."""
        model.load_state_dict(weights, strict=False)
        optimizer.load_state_dict(by_index(optimizer_state, trainable_names(model)))


class ShardedStrategy(Strategy):
    """FSDP2: ``zero2`` shards what trains, ``zero3`` everything (see the module docstring)."""

    sharded = True

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        if not dist.is_initialized():
            raise ConfigError(f"distributed.strategy {self.name} needs a process group: launch with torchrun "
                              "(torchrun --nproc_per_node N recipes/train_stage1.py --config ...), even for one GPU")
        self._same_start(model)
        mesh = init_device_mesh(torch.device(self.device).type, (self.world.size,))
        compute = self.precision.compute
        policy = MixedPrecisionPolicy(param_dtype=compute, reduce_dtype=torch.float32 if compute else None)
        frozen = {p for p in model.parameters() if not p.requires_grad}
        ignored = frozen if self.name == "zero2" else None
        # ZeRO-3 frees each layer's gathered weights after its forward; ZeRO-2 keeps them to the backward
        reshard = self.name == "zero3"
        for layer in decoder_layers(model):
            fully_shard(layer, mesh=mesh, reshard_after_forward=reshard, mp_policy=policy,
                        ignored_params=None if ignored is None else {p for p in layer.parameters() if p in ignored})
        fully_shard(model, mesh=mesh, reshard_after_forward=reshard, mp_policy=policy, ignored_params=ignored)
        return model

    def _same_start(self, model: torch.nn.Module) -> None:
        """Every rank shards its own copy: make the copies identical (rank 0's), as DDP does."""
        with torch.no_grad():
            for parameter in model.parameters():
                dist.broadcast(parameter.data, src=0)

    def accumulating(self, engine: torch.nn.Module, sync: bool) -> Any:
        engine.set_requires_gradient_sync(sync)  # reduce-scatter only after the last micro-batch
        return contextlib.nullcontext()

    def trainable_state(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        # gathered on every rank (cpu_offload would leave the other ranks empty): the rank
        # summaries compare them, and they are only the trainable weights
        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, ignore_frozen_params=True))
        names = set(trainable_names(model))
        return {k: v.detach().contiguous().cpu() for k, v in state.items() if k in names}

    def optimizer_state(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """Gathered on the CPU of rank 0 only (the one that writes checkpoints); every rank calls it."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        return get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True,
                                                                                   cpu_offload=True))

    def load(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, weights: dict[str, torch.Tensor],
             optimizer_state: dict[str, Any]) -> None:
        from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                             set_optimizer_state_dict)

        options = StateDictOptions(full_state_dict=True, strict=False)
        set_model_state_dict(model, weights, options=options)
        set_optimizer_state_dict(model, optimizer, by_name(optimizer_state, trainable_names(model)), options=options)

    def full_state(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """Every weight, gathered on the CPU of rank 0 (every rank calls it; for saving ``final/``)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def make_strategy(name: str, world: World, device: str, precision: Precision) -> Strategy:
    if name not in STRATEGIES:
        raise ConfigError(f"unknown distributed.strategy {name!r}; use one of {', '.join(STRATEGIES)}")
    return (Strategy if name == "ddp" else ShardedStrategy)(name, world, device, precision)


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The LLM's decoder layers: each is one FSDP unit (and one checkpointed block)."""
    for name, module in model.named_modules():
        if name.endswith("layers") and isinstance(module, torch.nn.ModuleList) and len(module):
            return list(module)
    return []


def trainable_names(model: torch.nn.Module) -> list[str]:
    """Names of the trainable parameters in the optimiser's order (``trainable_parameters()``)."""
    return [n for n, p in model.named_parameters() if p.requires_grad]


def by_name(state: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """An index-keyed ``optimizer.state_dict()`` keyed by parameter name instead (unchanged if it is)."""
    groups = state.get("param_groups", [])
    if not groups or not groups[0]["params"] or isinstance(groups[0]["params"][0], str):
        return state
    return {"state": {names[i]: value for i, value in state["state"].items()},
            "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in groups]}


def by_index(state: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """The inverse of :func:`by_name`, for ``optimizer.load_state_dict``."""
    groups = state.get("param_groups", [])
    if not groups or not groups[0]["params"] or not isinstance(groups[0]["params"][0], str):
        return state
    index = {name: i for i, name in enumerate(names)}
    missing = [n for g in groups for n in g["params"] if n not in index]
    if missing:
        raise ConfigError(f"the checkpoint's optimiser state names parameters this model lacks ({missing[:3]}); "
                          "was it written with another config?")
    return {"state": {index[n]: value for n, value in state["state"].items()},
            "param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in groups]}
