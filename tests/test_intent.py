"""Intent relations decided from masks, at and around the documented thresholds."""

import numpy as np
import pytest

from pixelagent.intent import INSIDE_FRACTION, SAME_IOU, IntentState, Relation, relate
from pixelagent.mask import Granularity, Mask
from pixelagent.results import Reply, Target


def box(y0, y1, x0, x1, shape=(100, 100)):
    array = np.zeros(shape, dtype=bool)
    array[y0:y1, x0:x1] = True
    return Mask(array)


@pytest.mark.parametrize("new, prev, relation", [
    (box(0, 50, 0, 50), box(0, 50, 0, 50), Relation.SAME),
    (box(10, 20, 10, 20), box(0, 50, 0, 50), Relation.REFINE),
    (box(0, 50, 0, 50), box(10, 20, 10, 20), Relation.BROADEN),
    (box(60, 90, 60, 90), box(0, 50, 0, 50), Relation.SWITCH),
    (box(0, 50, 30, 80), box(0, 50, 0, 50), Relation.SWITCH),  # half overlap: neither inside
])
def test_relations(new, prev, relation):
    assert relate(new, prev)[0] is relation


def test_same_threshold_boundary():
    prev = box(0, 100, 0, 100)
    # IoU of a 100x85 box with the full image is exactly 0.85: same; 84 columns is refine
    assert relate(box(0, 100, 0, 85), prev)[1].iou == pytest.approx(SAME_IOU)
    assert relate(box(0, 100, 0, 85), prev)[0] is Relation.SAME
    assert relate(box(0, 100, 0, 84), prev)[0] is Relation.REFINE


def test_refine_threshold_boundary():
    prev = box(0, 50, 0, 50)
    # new: 10 rows x 10 cols, 8 columns inside prev (80 %) -> refine; 7 columns (70 %) -> switch
    inside_8 = box(0, 10, 42, 52)
    inside_7 = box(0, 10, 43, 53)
    assert relate(inside_8, prev)[1].inside_previous == pytest.approx(INSIDE_FRACTION)
    assert relate(inside_8, prev)[0] is Relation.REFINE
    assert relate(inside_7, prev)[0] is Relation.SWITCH


def target(mask, phrase="t"):
    return Target(phrase=phrase, mask=mask, score=1.0)


def test_state_records_only_turns_with_targets():
    state = IntentState()
    assert state.update(1, Reply(text="hello")) is None
    first = state.update(2, Reply(text="a", targets=[target(box(0, 60, 0, 60), "the bottle")]))
    assert first.relation is Relation.FIRST and first.overlap is None
    second = state.update(3, Reply(text="b", targets=[target(box(10, 14, 10, 14), "its label")]))
    assert second.relation is Relation.REFINE and second.turn == 3
    assert second.granularity is Granularity.FINE  # 16 px on a 100x100 image: < (32*100/640)^2 = 25
    assert [f.turn for f in state.focuses] == [2, 3]
    assert state.describe() == "'the bottle' → 'its label'"
    assert state.transitions()[1] == "turn 3: 'its label' (refine, fine)"


def test_several_targets_use_their_union():
    state = IntentState()
    state.update(1, Reply(text="a", targets=[target(box(0, 10, 0, 10))]))
    both = state.update(2, Reply(text="b", targets=[target(box(0, 10, 0, 10), "x"),
                                                    target(box(50, 60, 50, 60), "y")]))
    assert both.relation is Relation.BROADEN and both.phrase == "x; y"
    assert both.mask.area == 200


def test_intent_serialises_to_json():
    state = IntentState()
    state.update(1, Reply(text="a", targets=[target(box(0, 10, 0, 10))]))
    data = state.model_dump(mode="json")
    assert data["focuses"][0]["relation"] == "first"
    assert data["focuses"][0]["mask"]["size"] == [100, 100]
