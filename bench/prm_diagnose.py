"""How well does a PRM rank what the search really met, against the policy's own log-probabilities?

Reads a run's held-out MCTS* trees (`round_<k>/eval/mcts/*.jsonl`, with the PRM's value of every node)
and scores, on the same nodes, the four likelihood features of the round's policy (models/prm.py:
min / mean token log-probability of the solution and of its last step). Prints, side by side:
- end leaves: AUC of correct over wrong finished solutions;
- countdown siblings: how often the child from whose state the target can still be made (the exact
  solver, `value_of_state`) is ranked above a sibling from which it cannot (legal children only: the
  rules value an illegal one `low` without asking the PRM; a tie counts half).

    python bench/prm_diagnose.py runs/cd-r0 --round 0 --task countdown
    python bench/prm_diagnose.py runs/cd-eval --policy DIR     # a mode=evaluate run (<run>/eval/mcts)
    python bench/prm_diagnose.py runs/cd-eval --prm-only       # the PRM column alone (no policy pass)

The policy directory is the round's (`round_<k>/models.json`) unless `--policy DIR`. CPU, a few minutes
for 300 trees of the tiny countdown model.
"""

from __future__ import annotations

import argparse
import glob
import itertools
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

NAMES = ("solution_min", "solution_mean", "last_step_min", "last_step_mean")


def auc(pos: list[float], neg: list[float]) -> float | None:
    if not pos or not neg:
        return None
    return sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", help="run directory (runs/<name>)")
    ap.add_argument("--round", type=int, default=0)
    ap.add_argument("--task", default="countdown", help="the run's task (its held-out set is rebuilt)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--policy", default=None, help="policy directory (default: the round's)")
    ap.add_argument(
        "--prm-only", action="store_true", help="the PRM column only (no policy forward per node: fast)"
    )
    args = ap.parse_args(argv)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from conf.load import compose
    from models.prm import encode, feature_masks, likelihood_features
    from pipeline.prompting import PromptFormat
    from pipeline.tasks import builtin

    cfg = compose([f"task={args.task}", f"seed={args.seed}"])
    task = builtin(cfg.task.name)
    if task is None:
        print(f"prm_diagnose: task {args.task!r} has no built-in held-out set", file=sys.stderr)
        return 2
    run = Path(args.run) / f"round_{args.round}"
    if not run.is_dir() and (Path(args.run) / "eval" / "mcts").is_dir():
        run = Path(args.run)  # a mode=evaluate run: its trees sit under <run>/eval/mcts
    if args.policy is None and not args.prm_only and not (run / "models.json").is_file():
        print(f"prm_diagnose: {run} names no policy (models.json); pass --policy DIR", file=sys.stderr)
        return 2
    fmt = PromptFormat.from_backbone(cfg.backbone)
    if not args.prm_only:
        policy = args.policy or json.loads((run / "models.json").read_text())["policy_dir"]
        tok = AutoTokenizer.from_pretrained(policy)
        model = AutoModelForCausalLM.from_pretrained(policy).eval()
    content = {q.id: q.content for q in task.make_task_split(cfg.task, cfg.seed)[1]}

    @torch.inference_mode()
    def features(question: str, steps: list[str]) -> list[float]:
        if args.prm_only:
            return [0.0] * len(NAMES)
        enc = encode(tok, [fmt.prm_text(question, steps)], max_length=1024)
        logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
        sol, tail = feature_masks(enc["attention_mask"], enc["solution_mask"], enc["last_mask"])
        return likelihood_features(logits, enc["input_ids"], sol, tail)[0].tolist()

    value_of_state = getattr(task, "value_of_state", None)
    ends: dict[bool, list[tuple[list[float], float]]] = {True: [], False: []}
    pairs: list[tuple[tuple[list[float], float], tuple[list[float], float]]] = []
    files = sorted(glob.glob(str(run / "eval" / "mcts" / "*.jsonl")))
    if not files:
        print(f"prm_diagnose: no MCTS* trees under {run}/eval/mcts", file=sys.stderr)
        return 2
    for line in (line for f in files for line in open(f)):
        tree = json.loads(line)
        q = content[tree["question_id"]]
        for node in tree["nodes"]:
            if node["is_end"] and node["steps"] and node["correct"] is not None:
                ends[bool(node["correct"])].append((features(q, node["steps"]), node["prm_value"]))
        if value_of_state is None:
            continue
        children: dict[int, list[dict]] = {}
        for node in tree["nodes"]:
            if node["parent_id"] >= 0:
                children.setdefault(node["parent_id"], []).append(node)
        for kids in children.values():
            # illegal children (the task's rules: valued `low` without the PRM) are no test of the PRM
            valued = [(value_of_state(q, kid["steps"]), kid) for kid in kids if not kid.get("illegal")]
            for (va, a), (vb, b) in itertools.combinations(valued, 2):
                if va != vb:
                    hi, lo = (a, b) if va > vb else (b, a)
                    pairs.append(
                        (
                            (features(q, hi["steps"]), hi["prm_value"]),
                            (features(q, lo["steps"]), lo["prm_value"]),
                        )
                    )

    print(
        f"{run}: {len(ends[True])} correct / {len(ends[False])} wrong end leaves, {len(pairs)} sibling pairs"
    )
    print(f"{'scorer':<16} {'end-leaf AUC':>12} {'sibling pairs':>14}")
    scorers = [("PRM", lambda x: x[1])]
    if not args.prm_only:
        scorers += [(n, lambda x, i=i: x[0][i]) for i, n in enumerate(NAMES)]
    for name, f in scorers:
        end = auc([f(x) for x in ends[True]], [f(x) for x in ends[False]])
        sib = sum((f(a) > f(b)) + 0.5 * (f(a) == f(b)) for a, b in pairs) / len(pairs) if pairs else None
        print(
            f"{name:<16} {'-' if end is None else f'{end:.3f}':>12} {'-' if sib is None else f'{sib:.3f}':>14}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
