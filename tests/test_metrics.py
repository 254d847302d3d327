"""Evaluation metrics against hand-computed examples, their merge and all_reduce path, errors."""
import json
import math

import pytest
import torch

from mobilenets.engine.metrics import (STATE_FIELDS, ConfusionMatrix, EvalAccumulator,
                                       format_report, topk_correct)

# 3 classes, 7 samples. Ranks of the target: 1, 1, 2, 1, 2, 2, 3.
LOGITS = torch.tensor([
    [3.0, 1.0, 0.0],  # t0: predicted 0
    [1.0, 3.0, 0.0],  # t1: predicted 1
    [2.0, 1.0, 0.0],  # t1: predicted 0, target second
    [0.0, 1.0, 2.0],  # t2: predicted 2
    [0.0, 2.0, 1.0],  # t2: predicted 1, target second
    [1.0, 0.0, 2.0],  # t0: predicted 2, target second
    [0.0, 2.0, 1.0],  # t0: predicted 1, target last
])
TARGETS = torch.tensor([0, 1, 1, 2, 2, 0, 0])
MATRIX = [[1, 1, 1],  # true 0 -> predicted 0, 1, 2 once each
          [1, 1, 0],
          [0, 1, 1]]


def test_topk_correct_hand_example():
    assert topk_correct(LOGITS, TARGETS, ks=(1, 2, 3)) == {1: 3, 2: 6, 3: 7}
    assert topk_correct(LOGITS, TARGETS) == {1: 3, 5: 7}  # k=5 capped at 3 classes, key kept


def test_ties_go_to_the_lower_class_everywhere():
    logits = torch.zeros(3, 4)  # every class tied
    targets = torch.tensor([0, 1, 3])
    assert topk_correct(logits, targets, ks=(1, 2)) == {1: 1, 2: 2}
    cm = ConfusionMatrix(4)
    cm.update(logits, targets)
    assert cm.matrix[:, 0].tolist() == [1, 1, 0, 1]  # argmax picks class 0, as top-1 did
    acc = EvalAccumulator(4)
    acc.update(logits, targets)
    assert acc.top1 == int(acc.confusion.matrix.trace()) == 1


def test_confusion_matrix_hand_example():
    cm = ConfusionMatrix(3)
    cm.update(LOGITS, TARGETS)
    m = cm.matrix
    assert m.dtype == torch.int64 and m.shape == (3, 3)
    assert m.tolist() == MATRIX
    assert cm.per_class_accuracy().tolist() == pytest.approx([1 / 3, 1 / 2, 1 / 2])
    assert cm.accuracy() == pytest.approx(3 / 7)
    assert cm.support().tolist() == [3, 2, 2] and cm.num_samples == 7


def test_confusion_matrix_accepts_class_ids_and_accumulates_batches():
    cm = ConfusionMatrix(3)
    preds = LOGITS.argmax(dim=1)
    cm.update(preds[:4], TARGETS[:4])
    cm.update(LOGITS[4:], TARGETS[4:])  # logits and ids mix freely
    cm.update(torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long))  # empty batch
    assert cm.matrix.tolist() == MATRIX
    m = cm.matrix
    m += 100  # a copy: the state is untouched
    assert cm.matrix.tolist() == MATRIX
    cm.reset()
    assert cm.num_samples == 0 and math.isnan(cm.accuracy())


def test_per_class_accuracy_is_nan_for_a_class_without_samples():
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([0, 1, 0]), torch.tensor([0, 1, 1]))
    acc = cm.per_class_accuracy()
    assert acc[:2].tolist() == [1.0, 0.5] and math.isnan(acc[2])


def test_eval_accumulator_result_hand_example():
    acc = EvalAccumulator(3)
    acc.update(LOGITS[:4], TARGETS[:4], loss=torch.tensor(0.5))  # batch mean: weighs 4 samples
    acc.update(LOGITS[4:], TARGETS[4:], loss=torch.tensor([1.0, 2.0, 3.0]))  # per sample
    r = acc.result(["cat", "dog", "owl"])
    assert r["num_samples"] == 7
    assert r["top1"] == pytest.approx(100 * 3 / 7)
    assert r["top5"] == pytest.approx(100.0)
    assert r["loss"] == pytest.approx((0.5 * 4 + 6.0) / 7)
    assert r["per_class"] == [
        {"name": "cat", "accuracy": pytest.approx(100 / 3), "support": 3},
        {"name": "dog", "accuracy": pytest.approx(50.0), "support": 2},
        {"name": "owl", "accuracy": pytest.approx(50.0), "support": 2},
    ]
    assert r["confusion_matrix"] == MATRIX


def test_loss_is_averaged_over_the_batches_that_gave_one():
    acc = EvalAccumulator(3)
    acc.update(LOGITS[:4], TARGETS[:4])
    assert acc.result()["loss"] is None
    acc.update(LOGITS[4:], TARGETS[4:], loss=2.0)
    r = acc.result()
    assert r["loss"] == pytest.approx(2.0) and r["num_samples"] == 7


def test_result_is_strict_json_even_without_samples():
    acc = EvalAccumulator(3)
    r = acc.result()
    assert r["top1"] is None and r["top5"] is None and r["loss"] is None
    assert [p["accuracy"] for p in r["per_class"]] == [None, None, None]
    acc.update(LOGITS[:2], TARGETS[:2])  # class 2 still has no sample
    json.dumps(acc.result(), allow_nan=False)
    assert [p["name"] for p in acc.result()["per_class"]] == ["0", "1", "2"]


def _random_batches(num_classes=10, sizes=(16, 9, 23), seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, num_classes, generator=g),
             torch.randint(0, num_classes, (n,), generator=g),
             torch.rand((), generator=g)) for n in sizes]


def test_merged_and_reduced_states_equal_one_accumulator_over_all_data():
    batches = _random_batches()
    whole, a, b = EvalAccumulator(10), EvalAccumulator(10), EvalAccumulator(10)
    for i, (x, y, loss) in enumerate(batches):
        whole.update(x, y, loss)
        (a if i < 2 else b).update(x, y, loss)
    expected = whole.result()
    assert whole.num_samples == 48 and 0 < whole.top1 < whole.top5 < 48

    # What a trainer does: sum the state tensors across processes, load the sum.
    reduced = EvalAccumulator(10)
    t = a.state_tensor() + b.state_tensor()
    assert t.dtype == torch.float64 and t.shape == (len(STATE_FIELDS) + 100,)
    reduced.load_state_tensor(t)
    merged = EvalAccumulator(10).merge(a).merge(b)
    for acc in (reduced, merged):
        r = acc.result()
        assert r.pop("loss") == pytest.approx(expected["loss"])
        assert r == {k: v for k, v in expected.items() if k != "loss"}
    assert torch.equal(merged.state_tensor(), whole.state_tensor())


def test_state_tensor_survives_a_real_all_reduce(tmp_path):
    import torch.distributed as dist

    # Training's DDP needs torch.distributed: it is there, and no test left a group behind.
    assert dist.is_available() and not dist.is_initialized()
    acc = EvalAccumulator(10)
    for x, y, loss in _random_batches():
        acc.update(x, y, loss)
    before = acc.result()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        t = acc.state_tensor()
        dist.all_reduce(t)
        acc.load_state_tensor(t)
    finally:
        dist.destroy_process_group()
    assert acc.result() == before


def test_state_and_merge_errors_name_the_parameter():
    acc = EvalAccumulator(3)
    with pytest.raises(ValueError, match=r"^t must be a 1-D tensor of 14 entries"):
        acc.load_state_tensor(torch.zeros(13))
    with pytest.raises(ValueError, match=r"^other must be an EvalAccumulator with num_classes=3"):
        acc.merge(EvalAccumulator(4))


@pytest.mark.parametrize("call, pattern", [
    (lambda: topk_correct(LOGITS, torch.tensor([0, 1, 3, 0, 0, 0, 0])),
     r"^targets must be class ids in \[0, 3\), found 3"),
    (lambda: topk_correct(LOGITS, -TARGETS - 1),
     r"^targets must be class ids in \[0, 3\), found -3"),
    (lambda: topk_correct(LOGITS, TARGETS[:5]), r"^targets has 5 entries but logits has 7 rows"),
    (lambda: topk_correct(LOGITS, TARGETS.float()), r"^targets must hold integer class ids"),
    (lambda: topk_correct(LOGITS, TARGETS[:, None]), r"^targets must be 1-D"),
    (lambda: topk_correct(LOGITS[0], TARGETS), r"^logits must be 2-D"),
    (lambda: topk_correct(LOGITS, TARGETS, ks=(0, 1)), r"^ks must be"),
    (lambda: ConfusionMatrix(0), r"^num_classes must be an integer >= 1"),
    (lambda: ConfusionMatrix(4).update(LOGITS, TARGETS), r"^logits_or_preds has 3 class columns"),
    (lambda: ConfusionMatrix(3).update(torch.tensor([0, 5]), torch.tensor([0, 1])),
     r"^logits_or_preds must be class ids in \[0, 3\), found 5"),
    (lambda: ConfusionMatrix(3).update(torch.tensor([0, 1]), torch.tensor([0, 1, 2])),
     r"^targets has 3 entries but logits_or_preds has 2 rows"),
    (lambda: EvalAccumulator(3).update(LOGITS, TARGETS, loss=torch.ones(3)), r"^loss must be"),
    (lambda: EvalAccumulator(3).update(LOGITS, TARGETS + 1), r"^targets must be class ids"),
    (lambda: EvalAccumulator(3).result(["a", "b"]), r"^class_names has 2 names, expected 3"),
])
def test_errors_name_the_bad_parameter(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()


def test_a_rejected_batch_changes_nothing():
    acc = EvalAccumulator(3)
    acc.update(LOGITS[:2], TARGETS[:2])
    state = acc.state_tensor()
    with pytest.raises(ValueError):
        acc.update(LOGITS, TARGETS + 1)
    with pytest.raises(ValueError):
        acc.update(LOGITS, TARGETS, loss=torch.ones(2))
    assert torch.equal(acc.state_tensor(), state)


def test_format_report():
    acc = EvalAccumulator(3)
    acc.update(LOGITS, TARGETS, loss=1.25)
    text = format_report(acc.result(["cat", "dog", "barn_owl"]))
    lines = text.splitlines()
    assert "top-1:   42.86%" in lines and "top-5:   100.00%" in lines and "loss:    1.2500" in lines
    assert "samples: 7" in lines
    assert any(line.split() == ["cat", "33.33%", "3"] for line in lines)
    assert any(line.split() == ["barn_owl", "50.00%", "2"] for line in lines)
    # The matrix: short numeric column headers, rows labelled "id name".
    head = lines.index(next(line for line in lines if line.startswith("confusion matrix")))
    assert lines[head + 1].split() == ["0", "1", "2"]
    assert [line.split() for line in lines[head + 2:head + 5]] == [
        ["0", "cat", "1", "1", "1"], ["1", "dog", "1", "1", "0"], ["2", "barn_owl", "0", "1", "1"]]
    # Columns line up under their headers.
    assert lines[head + 1].rstrip().endswith("2") and len(lines[head + 1].rstrip()) == len(
        lines[head + 2].rstrip())
    # Names given here override the result's.
    assert "  owl " in format_report(acc.result(), class_names=["c", "d", "owl"])


def test_format_report_edge_cases():
    text = format_report(EvalAccumulator(2).result())
    assert "top-1:   -" in text and "loss:    -" in text
    big = EvalAccumulator(40)
    big.update(torch.randn(5, 40), torch.arange(5))
    text = format_report(big.result())
    assert "40 classes, above max_matrix_classes=30" in text
    with pytest.raises(ValueError, match=r"^result is missing key 'per_class'"):
        format_report({"top1": 1.0, "top5": 1.0, "loss": None, "num_samples": 1})
    with pytest.raises(ValueError, match=r"^class_names has 1 names, expected 2"):
        format_report(EvalAccumulator(2).result(), ["a"])
