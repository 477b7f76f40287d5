"""Validation during training: real generation on held-out dialogues, scored by cIoU."""

from __future__ import annotations

from typing import Any

import torch

from pixelagent.agent import Agent
from pixelagent.eval.segmentation import SegmentationMeter
from pixelagent.markup import find_focus_spans
from pixelagent.mask import Mask


@torch.no_grad()
def validation_ciou(model, spec: dict[str, Any], limit: int) -> float:
    """cIoU over the segmentation turns of the first ``limit`` examples of the ``spec`` dataset.

    The model answers every question itself (as at test time); a turn without ``[SEG]`` in
    its reply counts as an empty prediction.
    """
    from pixelagent.data.adapters import build_dataset

    dataset = build_dataset(spec)
    was_training = model.training
    model.eval()
    agent, meter = Agent.from_parts(model.preset, model.parts), SegmentationMeter()
    for index in range(min(limit, len(dataset))):
        _score_example(agent, dataset[index], meter)
    model.train(was_training)
    return meter.result().overall.ciou if len(meter) else 0.0


def _score_example(agent: Agent, example, meter: SegmentationMeter) -> None:
    session = agent.session(example.load_image())
    masks = iter(example.masks)
    for question, answer in example.turns:
        reply = session.ask(question)
        for _ in find_focus_spans(answer):
            truth = next(masks, None)
            if truth is not None:
                meter.add(reply.mask, Mask(truth))
