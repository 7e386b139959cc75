"""Screen a self-training SFT recipe on a finished run's traces, without re-running the search.

Trains the round-0 policy (as the loop does with `selection.sft_from=round0`) on the selected traces of
rounds 1..k of a run (`round_<j>/sft.jsonl`), each trace repeated `--trace-repeat` times, plus
`--replay` round-0 examples (`selection.sft_replay`), with `backbone.sft` overridden by the given
key=value pairs; then measures held-out greedy (`python run.py mode=evaluate eval.methods=[cot]`) per
difficulty. `--replay-only` drops the traces: the control that says how much of a change comes from the
traces and how much from more training on round-0 data.

    python bench/sft_screen.py runs/cd27-s0 --round 1 lr=3e-4 micro_batch_size=64 num_workers=0
    python bench/sft_screen.py runs/cd27-s0 --round 1 --replay-only lr=3e-4 micro_batch_size=64

Prints one line: the recipe, rows, steps, seconds, greedy overall / per difficulty. The run's own
config (task, seed, backbone) is read from `<run>/config.yaml`. One at a time on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="a finished training run's directory (runs/<name>)")
    ap.add_argument("--round", type=int, default=1, help="traces of rounds 1..ROUND")
    ap.add_argument("--replay", type=int, default=None, help="round-0 examples (default: the run's)")
    ap.add_argument("--trace-repeat", type=int, default=1, help="copies of each trace")
    ap.add_argument("--replay-only", action="store_true", help="no traces: the control")
    ap.add_argument("--start", help="start from this policy directory instead of round 0's")
    ap.add_argument("--keep", help="keep the trained policy in this directory")
    ap.add_argument("sft", nargs="*", help="backbone.sft key=value overrides (lr=3e-4 epochs=2 ...)")
    return ap.parse_intermixed_args(argv)


def main(argv: list[str]) -> int:
    args = parse(argv)
    from omegaconf import OmegaConf

    from loop.methods.common import accumulated, replay_examples
    from pipeline.records import SFTExample
    from pipeline.rundir import RunDir

    run_root = Path(args.run)
    cfg = OmegaConf.load(run_root / "config.yaml")
    cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([f"backbone.sft.{item}" for item in args.sft]))
    models = json.loads((run_root / "round_0" / "models.json").read_text())
    traces = [] if args.replay_only else accumulated(RunDir(run_root), args.round, "sft.jsonl", SFTExample)
    traces = traces * args.trace_repeat
    n_replay = int(cfg.selection.sft_replay if args.replay is None else args.replay)
    replay = replay_examples(cfg, n_replay)
    rows = traces + replay
    random.Random(0).shuffle(rows)
    if int(cfg.backbone.sft.num_workers) > 0:  # Ray Train workers, as in the loop
        from actors.cluster import init_ray

        init_ray(cfg.ray, log_to_driver=False)
    with tempfile.TemporaryDirectory(prefix="sft-screen-") as tmp:
        line = screen(args, cfg, models, traces, replay, rows, Path(args.keep or tmp))
    print(line)
    return 0


def screen(args, cfg, models, traces, replay, rows, out: Path) -> str:
    """Train `rows` into `out/policy`, evaluate greedy into `out/eval`; the result line."""
    from trainers.sft import train_sft

    start = args.start or models["policy_dir0"]
    t0 = time.monotonic()
    metrics = train_sft(
        start,
        rows,
        str(out / "policy"),
        cfg.backbone.sft,
        storage_dir=str(out / "jobs"),
        name="sft-screen",
        add_special_tokens=cfg.backbone.prompt_format == "plain",
    )
    seconds = time.monotonic() - t0
    cmd = [
        sys.executable,
        "run.py",
        "mode=evaluate",
        f"task={cfg.task.name}",
        f"seed={cfg.seed}",
        f"backbone.policy_path={out / 'policy'}",
        f"backbone.prm_path={models['prm_dir0']}",
        "eval.methods=[cot]",
        "run.name=eval",
        f"run.root={out}",
    ]
    subprocess.run(cmd, check=True, capture_output=True, cwd=Path(__file__).resolve().parents[1])
    res = json.loads((out / "eval" / "eval.json").read_text())["methods"]["cot"]
    by = " ".join(f"d{d} {100 * a:.1f}" for d, a in sorted(res["by_difficulty"].items()))
    recipe = " ".join(args.sft) or "(run's backbone.sft)"
    return (
        f"{recipe} | traces {len(traces)} (x{args.trace_repeat}{', none: control' if args.replay_only else ''})"
        f" + replay {len(replay)} | steps {metrics.get('steps')} in {seconds:.0f} s, loss "
        f"{metrics.get('first_loss', float('nan')):.3f} -> {metrics.get('final_loss', float('nan')):.3f} | "
        f"greedy {100 * res['accuracy']:.1f} ({by})"
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
