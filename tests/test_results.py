import json

import numpy as np
import pytest
from pydantic import ValidationError

from pixelagent.mask import Mask
from pixelagent.results import Reply, Target, Turn


def mask(y0, y1, x0, x1):
    array = np.zeros((40, 60), dtype=bool)
    array[y0:y1, x0:x1] = True
    return Mask(array)


def test_reply_mask_is_the_union_or_none():
    a, b = mask(0, 10, 0, 10), mask(5, 20, 5, 20)
    reply = Reply(text="x", targets=[Target(phrase="a", mask=a, score=0.5),
                                     Target(phrase="b", mask=b, score=0.7)])
    np.testing.assert_array_equal(reply.mask.array, a.array | b.array)
    assert not reply.no_target and reply.phrases == ["a", "b"]
    empty = Reply(text="nothing to segment")
    assert empty.no_target and empty.mask is None and empty.phrases == []


def test_target_derived_fields():
    target = Target(phrase="label", mask=mask(2, 12, 3, 8), score=0.25)
    assert target.bbox == (3, 2, 8, 12) and target.area == 50
    assert target.granularity == target.mask.granularity


def test_score_must_be_a_probability():
    with pytest.raises(ValidationError):
        Target(phrase="x", mask=mask(0, 1, 0, 1), score=1.5)


def test_turn_json_round_trip_keeps_masks():
    reply = Reply(text="it", raw_text="[OBJ]it[SEG]", targets=[Target(phrase="it", mask=mask(1, 9, 1, 9), score=1)])
    turn = Turn(index=1, question="q", reply=reply)
    data = json.loads(turn.model_dump_json())
    assert data["reply"]["targets"][0]["mask"]["size"] == [40, 60]
    assert data["reply"]["targets"][0]["bbox"] == [1, 1, 9, 9] and data["reply"]["no_target"] is False
    back = Turn.model_validate_json(turn.model_dump_json())
    assert back.reply.targets[0].mask == reply.targets[0].mask
    assert back.time == turn.time
