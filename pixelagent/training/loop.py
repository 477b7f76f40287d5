"""The training loop shared by the stage-1 and stage-2 recipes.

One optimiser step = ``optim.batch_size`` samples, drawn deterministically by the data mixer
(a pure function of the step), split across ranks and micro-batches with gradient
accumulation. Checkpoints keep the trainable weights, optimiser, scheduler and RNG states, so
``--resume`` continues exactly where a run stopped.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from pathlib import Path

import numpy as np
import torch

from pixelagent.errors import CheckpointError, ConfigError
from pixelagent.nn.losses import LossWeights
from pixelagent.nn.model import SegmentationModel, SegSample
from pixelagent.registry import get_registry
from pixelagent.training import checkpoint as ckpt
from pixelagent.training.config import TrainConfig
from pixelagent.training.distributed import World, device_for, init_process_group, shutdown
from pixelagent.training.logging import MetricsLog
from pixelagent.training import precision as amp
from pixelagent.training.strategy import make_strategy


def warmup_linear(warmup: int, total: int):
    """LR multiplier: 0 → 1 over ``warmup`` steps, then linearly down to 0 at ``total``."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))
    return factor


class Trainer:
    """Builds the model, data and optimiser from a :class:`TrainConfig` and trains it."""

    def __init__(self, config: TrainConfig, world: World | None = None) -> None:
        self.config = config
        self.world = world or World.from_env()
        self.device = device_for(self.world, config.device)
        self.output = Path(config.output_dir)
        self._drawn: list[int] = []  # samples this rank drew, per step run
        self._check_batch()
        self.precision = amp.resolve(config.precision, self.device)
        self.strategy = make_strategy(config.distributed.strategy, self.world, self.device, self.precision)

    # -- setup ----------------------------------------------------------------------------------
    def _check_batch(self) -> None:
        optim, size = self.config.optim, self.world.size
        if optim.batch_size % (size * optim.micro_batch_size):
            raise ConfigError(f"optim.batch_size {optim.batch_size} must be a multiple of world size {size} "
                              f"x optim.micro_batch_size {optim.micro_batch_size}")

    def _seed(self) -> None:
        random.seed(self.config.seed)
        np.random.seed(self.config.seed)
        torch.manual_seed(self.config.seed)

    def build_model(self) -> SegmentationModel:
        registry = get_registry()
        preset = registry.preset(self.config.preset).preset if not self.config.preset.endswith(
            (".yaml", ".yml", ".json")) else None
        if preset is None:
            from pixelagent.presets import load_preset_file
            preset = load_preset_file(self.config.preset)
        preset = preset.with_overrides(**self.config.preset_overrides, device=self.device)
        # built in the precision's storage dtype (frozen weights stay there), saved with the preset's own
        built = preset.with_overrides(dtype=self.precision.storage)
        model = SegmentationModel(registry.build(built), preset, LossWeights(**self.config.loss.model_dump()))
        amp.prepare(model, self.precision)  # fp32 master weights, before stage 1's are loaded into them
        if self.config.optim.gradient_checkpointing:
            if not hasattr(model.llm, "enable_gradient_checkpointing"):
                raise ConfigError(f"optim.gradient_checkpointing: the {preset.llm.name} backbone has none; set it false")
            model.llm.enable_gradient_checkpointing()
        if self.config.init_from:
            model.load_weights(self.config.init_from)  # all of stage 1: LoRA, projection, alignment, decoder
        if self.config.feature_cache:
            model.use_feature_cache(self.config.feature_cache)
        noise = self.config.phrase_noise
        if noise.p > 0 and noise.groups:
            from pixelagent.nn.phrase_noise import PhraseNoise

            model.phrase_noise = PhraseNoise.from_words(noise.groups, noise.p,
                                                        *model.span_tokens("phrase_noise.p"))
        return model

    def build_data(self):
        from pixelagent.data.adapters import build_datasets
        from pixelagent.data.mixing import MixedSampler, ratios_from_config

        sources = build_datasets(self.config.data.sources)  # every bad path reported at once
        ratios = self.config.data.ratios or {name: 1 for name in sources}
        sampler = MixedSampler({n: len(d) for n, d in sources.items()},
                               ratios_from_config(ratios, list(sources)), self.config.seed)
        return sources, sampler

    # -- the loop -------------------------------------------------------------------------------
    def run(self, resume: bool = False) -> Path:
        """Train to ``optim.max_steps``; returns the directory of the final model."""
        init_process_group(self.world, self.config.distributed.backend, self.device)
        try:
            return self._run(resume)
        finally:
            shutdown(self.world)

    def _run(self, resume: bool) -> Path:
        self._seed()
        model = self.build_model()
        sources, sampler = self.build_data()
        # sharding replaces the parameters, so the optimiser must come after it; DDP wraps last
        engine = self.strategy.wrap(model) if self.strategy.sharded else None
        optim = self.config.optim
        optimizer = amp.adamw(model.trainable_parameters(), self.device, lr=optim.lr, betas=optim.betas,
                              weight_decay=optim.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_linear(optim.warmup_steps, optim.max_steps))
        self.scaler = amp.grad_scaler(self.precision, self.device)
        start = self._maybe_resume(resume, model, optimizer, scheduler)
        engine = engine or self.strategy.wrap(model)
        log = MetricsLog(self.output, self.world.is_main, self.config.log.tensorboard,
                         self.config.optim.max_steps, start)
        model.train()
        with log:
            for step in range(start, self.config.optim.max_steps):
                began = time.perf_counter()
                losses = self._step(engine, optimizer, scheduler, sources, sampler, step)
                self._after_step(step + 1, model, optimizer, scheduler, log, losses, began)
        return self._finish(model)

    def _maybe_resume(self, resume: bool, model, optimizer, scheduler) -> int:
        root = self.output / "checkpoints"
        report = ckpt.say if self.world.is_main else (lambda message: None)  # one copy of each line
        if self.world.is_main:
            ckpt.clean_stale(root, report)
        if not resume:
            if ckpt.checkpoint_dirs(root):
                raise ConfigError(f"{self.output} already has checkpoints; pass --resume to continue, "
                                  "or choose another output_dir")
            return 0
        found = ckpt.resume(root, model, optimizer, scheduler, rank=self.world.rank, report=report,
                            load=lambda weights, state: self.strategy.load(model, optimizer, weights, state),
                            scaler=self.scaler)
        if found is None:
            # Start over rather than refuse: --resume is what a restart script passes on every
            # launch (a preempted job requeued, a supervisor's retry), and the first launch has
            # nothing to resume yet; Lightning's ckpt_path="last" does the same. The line names
            # the folder, so a mistyped output_dir does not go unnoticed.
            report(f"no checkpoint under {root} to resume; starting from step 0")
            return 0
        return found[1]

    def rank_batch(self, sampler, step: int) -> list[tuple[str, int]]:
        """This rank's share of the global batch of ``step`` (draws rank, rank + world, ...)."""
        size = self.config.optim.batch_size
        return [sampler.draw(step * size + i) for i in range(self.world.rank, size, self.world.size)]

    def _step(self, engine, optimizer, scheduler, sources, sampler, step: int) -> dict[str, float]:
        draws = self.rank_batch(sampler, step)
        self._drawn.append(len(draws))
        micro = self.config.optim.micro_batch_size
        chunks = [draws[i:i + micro] for i in range(0, len(draws), micro)]
        totals = {"loss": 0.0, "text_loss": 0.0, "bce_loss": 0.0, "dice_loss": 0.0}
        optimizer.zero_grad(set_to_none=True)
        for index, chunk in enumerate(chunks):
            samples = [self._sample(sources[name][i]) for name, i in chunk]
            sync = index == len(chunks) - 1
            with self.strategy.accumulating(engine, sync), amp.autocast(self.precision, self.device):
                out = engine(samples)
                loss = out.loss / len(chunks)
                (loss if self.scaler is None else self.scaler.scale(loss)).backward()
            if out.phrase_loss is not None:
                totals.setdefault("phrase_loss", 0.0)
            for key in totals:
                totals[key] += getattr(out, key).detach().item() / len(chunks)
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)  # clip the true gradients
        torch.nn.utils.clip_grad_norm_([p for p in engine.parameters() if p.requires_grad],
                                       self.config.optim.grad_clip)
        if self.scaler is None:
            optimizer.step()
        else:
            self.scaler.step(optimizer)  # skipped when the scaled gradients overflowed
            self.scaler.update()
        scheduler.step()
        totals = self._mean_over_ranks(totals)
        totals["lr"] = scheduler.get_last_lr()[0]
        totals["samples"] = self.config.optim.batch_size
        if self.device.startswith("cuda"):
            totals["gpu_peak_gib"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        return totals

    def _write_rank_summary(self, model: SegmentationModel) -> None:
        """``rank-N.json``: what this rank trained on and a digest of its weights (ranks must agree)."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self.strategy.trainable_state(model).items()):
            digest.update(name.encode())
            digest.update(tensor.float().numpy().tobytes())
        self.output.mkdir(parents=True, exist_ok=True)
        summary = {"rank": self.world.rank, "world_size": self.world.size,
                   "steps_run": len(self._drawn), "samples_per_step": sorted(set(self._drawn)),
                   "global_batch": self.config.optim.batch_size, "weights_sha256": digest.hexdigest()}
        (self.output / f"rank-{self.world.rank}.json").write_text(json.dumps(summary))

    def _mean_over_ranks(self, values: dict[str, float]) -> dict[str, float]:
        """The logged losses averaged over all ranks (each rank only saw its share of the batch)."""
        if not self.world.distributed:
            return values
        tensor = torch.tensor(list(values.values()), dtype=torch.float64,
                              device=self.device if self.device.startswith("cuda") else "cpu")
        torch.distributed.all_reduce(tensor)
        return dict(zip(values, (tensor / self.world.size).tolist()))

    @staticmethod
    def _sample(example) -> SegSample:
        pixels = example.load_image()
        masks = example.masks if example.masks.shape[0] else np.zeros((0, *pixels.shape[:2]), dtype=bool)
        return SegSample(pixels, list(example.turns), masks)

    def _after_step(self, step: int, model, optimizer, scheduler, log, losses, began: float) -> None:
        losses["samples_per_s"] = losses["samples"] / max(time.perf_counter() - began, 1e-9)
        log.step(step, losses)
        if step % self.config.log.every == 0 or step == self.config.optim.max_steps:
            log.write(step, losses)
        if step % self.config.checkpoint.every == 0 and step < self.config.optim.max_steps:
            self._checkpoint(step, model, optimizer, scheduler)
        validate = self.config.validate_
        # sharded, every rank takes part (each layer gathers its weights from all of them)
        if validate and self.config.data.val and step % validate.every == 0 and (
                self.world.is_main or self.strategy.sharded):
            ciou = self.validate(model)
            if self.world.is_main:
                log.write(step, {"val_ciou": ciou})

    def _checkpoint(self, step: int, model, optimizer, scheduler) -> None:
        """Save the checkpoint of ``step``; a rank that fails makes every rank stop (none hangs)."""
        root = self.output / "checkpoints"
        error: CheckpointError | None = None
        if not self.world.is_main:
            try:
                ckpt.stage_rank_rng(root, step, self.world.rank)
            except CheckpointError as exc:
                error = exc
        # also the barrier: every rank's RNG state is on disk before rank 0 collects them
        if self._any_rank_failed(error is not None):
            if self.world.is_main:
                ckpt.discard_staged(root, step, self.world.size)
            raise error or CheckpointError(f"another rank could not stage its RNG state for checkpoint step "
                                           f"{step} (its error says why); rerun with --resume once fixed")
        # gathered by every rank when sharded; by name, so any strategy can resume it
        weights = self.strategy.trainable_state(model)
        optimizer_state = self.strategy.optimizer_state(model, optimizer)
        if self.world.is_main:
            try:
                ckpt.save_checkpoint(root, step, model, optimizer, scheduler, self.config.checkpoint.keep,
                                     world_size=self.world.size, weights=weights,
                                     optimizer_state=optimizer_state, scaler=self.scaler)
            except CheckpointError as exc:
                error = exc
        if self._any_rank_failed(error is not None):
            raise error or CheckpointError(f"rank 0 could not write checkpoint step {step} (its error says why); "
                                           "rerun with --resume once fixed")

    def _any_rank_failed(self, failed: bool) -> bool:
        """Whether any rank failed (a collective, so a barrier too)."""
        if not self.world.distributed:
            return failed
        flag = torch.tensor([float(failed)], device=self.device if self.device.startswith("cuda") else "cpu")
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())

    def validate(self, model: SegmentationModel) -> float:
        """cIoU of the segmentation turns of the first ``validate.samples`` validation examples."""
        from pixelagent.training.validation import validation_ciou

        if not self.strategy.sharded:
            return validation_ciou(model, self.config.data.val, self.config.validate_.samples)
        model.unshard()  # the parts are called directly, not through the sharded root's forward
        try:
            return validation_ciou(model, self.config.data.val, self.config.validate_.samples)
        finally:
            model.reshard()

    def _card(self) -> dict:
        """Model-card metadata of the final model: what it was trained on, its last validation."""
        data = self.config.data
        datasets = [str(spec.get("dataset_dir") or spec.get("json_path") or spec.get("images_dir") or name)
                    for name, spec in data.sources.items()]
        card: dict = {"datasets": [Path(d).name or d for d in datasets]}
        rows = self.output / "metrics.jsonl"
        if rows.is_file():
            values = [json.loads(line) for line in rows.read_text(encoding="utf-8").splitlines() if line.strip()]
            validated = [v["val_ciou"] for v in values if "val_ciou" in v]
            if validated:
                card["metrics"] = {"val_ciou": validated[-1]}
        return card

    def _finish(self, model: SegmentationModel) -> Path:
        final = self.output / "final"
        error: CheckpointError | None = None
        try:
            self._write_rank_summary(model)
        except OSError as exc:
            error = CheckpointError(f"cannot write {self.output / f'rank-{self.world.rank}.json'}: "
                                    f"{exc.strerror or exc}; free space or check the folder is writable")
        full = self.strategy.full_state(model) if self.strategy.sharded else None  # a collective: every rank
        if self.world.is_main and error is None:
            try:
                model.save_pretrained(final, include_frozen=self.config.checkpoint.save_frozen, state=full,
                                      card=self._card())
                (self.output / "config.json").write_text(json.dumps(self.config.model_dump(by_alias=True), indent=2))
            except OSError as exc:
                error = CheckpointError(f"cannot write {self.output / 'config.json'}: {exc.strerror or exc} "
                                        f"(the final model is saved in {final}); check the folder is writable")
            except CheckpointError as exc:
                latest = ckpt.latest_checkpoint(self.output / "checkpoints")
                error = CheckpointError(f"{exc}; then rerun with --resume to redo the steps after "
                                        f"{latest if latest else 'step 0'}")
        if self._any_rank_failed(error is not None):  # also the barrier: the model is saved
            raise error or CheckpointError(f"another rank could not finish writing {final} or its rank summary "
                                           "(its error says why); fix it and rerun with --resume")
        return final
