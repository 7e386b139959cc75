"""A round-0 PRM on legal sibling pairs of held-out countdown questions, without a search.

    python bench/value_pairs.py PRM_DIR [key=value ...] [--questions 300]

For each held-out question (the run's task split for the configured seed), every legal first operation
and, after one random legal operation, every legal second one are children of one state; every pair of
siblings where the exact solver can still reach the target from one and not from the other is scored
by the PRM (what it reads: its directory's record, models/value.py). Prints the share of pairs ranked
right, per difficulty: the measure of shared/MEASURED.md's value probe (0.80 after 7 minutes), on the
held-out questions themselves. `bench/prm_diagnose.py` measures the same on the siblings MCTS* really
met (needs an evaluated run).
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def sibling_groups(question, rng: random.Random) -> list[list[tuple[tuple[str, ...], bool]]]:
    """Children (steps, target still reachable) of the start state and of one random legal child."""
    from pipeline.tasks.countdown import format_step, parse_question
    from pipeline.tasks.countdown_solver import moves, reachable

    numbers, target = parse_question(question.content)

    def children(state, prefix):
        out = []
        for a, op, b, r, nxt in moves(state):
            ok = r == target or (len(nxt) > 1 and reachable(nxt, target))
            out.append(((*prefix, format_step(a, op, b, r, nxt)), ok, nxt))
        return out

    first = children(tuple(numbers), ())
    groups = [[(s, ok) for s, ok, _ in first]]
    steps, _, state = rng.choice(first)
    if len(state) > 1:
        groups.append([(s, ok) for s, ok, _ in children(state, steps)])
    return groups


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("prm_dir")
    ap.add_argument("overrides", nargs="*")
    ap.add_argument("--questions", type=int, default=300)
    args = ap.parse_args()

    from conf.load import compose
    from models.prm import load_prm, score_texts
    from models.value import reader_of
    from pipeline.prompting import PromptFormat
    from pipeline.tasks import countdown

    cfg = compose(["task=countdown", *args.overrides])
    _, heldout = countdown.make_task_split(cfg.task, cfg.seed)
    model, tok = load_prm(args.prm_dir)
    reader = reader_of(args.prm_dir, PromptFormat.from_backbone(cfg.backbone))
    rng = random.Random(cfg.seed)
    wins: dict[int, list[bool]] = {}
    for q in heldout[: args.questions]:
        for group in sibling_groups(q, rng):
            texts = [reader.text(q.content, steps, tok) for steps, _ in group]
            values = score_texts(model, tok, texts, 256, 256)
            for (a, va), (b, vb) in itertools.combinations(zip(group, values, strict=True), 2):
                if a[1] != b[1]:
                    good, bad = (va, vb) if a[1] else (vb, va)
                    wins.setdefault(q.difficulty, []).append(good > bad)
    every = [w for ws in wins.values() for w in ws]
    cells = "  ".join(f"N={d}: {sum(w) / len(w):.3f} of {len(w)}" for d, w in sorted(wins.items()))
    print(
        f"{args.prm_dir} ({reader.reads}): legal sibling pairs {sum(every) / len(every):.3f} of {len(every)}  {cells}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
