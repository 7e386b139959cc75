"""Training batches grouped by length (`TrainConfig.group_by_length`): the same rows per epoch, less padding."""

from __future__ import annotations

import random

import torch

from conf.schema import TrainConfig
from trainers.engine import length_groups, make_plan, micro_batches, row_length
from trainers.prm_train import LOSSES
from trainers.worker import WorkerContext

CTX = WorkerContext(rank=0, world_size=1, distributed=False, in_ray=False)


def _rows(n: int) -> list[tuple[list[int], list[int]]]:
    rng = random.Random(0)
    return [([i] * rng.randint(40, 110), [0]) for i in range(n)]


def test_grouped_epoch_holds_every_row_once_with_less_padding():
    rows = _rows(640)
    padded = {}
    for grouped in (False, True):
        cfg = TrainConfig(micro_batch_size=16, epochs=1, group_by_length=grouped, seed=3)
        batches = list(micro_batches(rows, cfg, CTX, make_plan(len(rows), cfg, 1)))
        assert sorted(r[0][0] for b in batches for r in b) == list(range(640))
        padded[grouped] = sum(len(b) * max(map(row_length, b)) for b in batches)
    assert padded[True] < 0.85 * padded[False]
    again = list(micro_batches(rows, cfg, CTX, make_plan(len(rows), cfg, 1)))
    assert [[r[0][0] for r in b] for b in again] == [[r[0][0] for r in b] for b in batches]


def test_length_groups_shuffles_batches_and_keeps_items():
    items = list(range(100))
    lengths = [i % 10 for i in items]
    batches = length_groups(items, lengths, 10, random.Random(0))
    assert sorted(i for b in batches for i in b) == items
    assert all(len({lengths[i] for i in b}) == 1 for b in batches)  # one window: sorted, cut


def test_prm_losses_are_lowest_at_the_target():
    class Fixed:
        def __init__(self, values):
            self.values = torch.tensor(values)

        def __call__(self, *args):
            return self.values

    batch = {k: None for k in ("input_ids", "attention_mask", "solution_mask", "last_mask")}
    batch["targets"] = torch.tensor([0.25, 0.9])
    for name, loss in LOSSES.items():
        at = loss(Fixed([0.25, 0.9]), batch)
        off = loss(Fixed([0.4, 0.7]), batch)
        assert at < off, name
