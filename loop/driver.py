"""The ReST-MCTS* self-training loop (docs/ALGORITHM.md section 4), resumable phase by phase.

    round 0:  start models (tiny: warm start + D_V0 PRM; else the configured checkpoints), evaluate
    round k:  MCTS* over the training questions -> infer values, select traces -> policy SFT
              -> PRM regression -> evaluate with the new models

Every phase writes its files atomically and is then recorded in `state.json` with their checksums;
a rerun of the same command skips what the manifest proves done (shards individually: a shard file
exists only once it is complete). Models are trained from the round-0 checkpoints on the data
accumulated over rounds 1..k, as the paper does.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from loop.methods import method_phases
from loop.metrics import MetricsLog
from loop.report import final_table, load_eval
from loop.round0 import start_models
from loop.session import Pools, ray_session
from pipeline.records import Question
from pipeline.rundir import RunDir, atomic_write_json

log = logging.getLogger(__name__)


class Driver:
    def __init__(self, cfg: DictConfig, train: list[Question], heldout: list[Question], run: RunDir):
        self.cfg, self.train, self.heldout, self.run = cfg, train, heldout, run
        from loop.tracker import make_tracker

        # tracker=none|tensorboard|wandb: every metrics.jsonl event also goes there (loop/tracker.py)
        tracker = make_tracker(cfg.tracker, run.root, OmegaConf.to_container(cfg, resolve=True))
        self.metrics = MetricsLog(run.metrics_file, tracker=tracker)
        self.pools = Pools(cfg)

    def fit(self) -> dict[int, dict[str, Any]]:
        """Round 0, then `iteration` self-training rounds. Returns the eval results per round."""
        with self.metrics.phase("start", 0):  # cached per machine, so cheap to redo on resume
            models = start_models(self.cfg, self.run)
        cfg, run, train = self.cfg, self.run, self.train
        method = method_phases(cfg.method)
        with self.pools:
            self.phase(0, "eval", self.evaluate, 0, models)
            for k in range(1, cfg.iteration + 1):
                self.phase(k, "search", method.generate, cfg, run, lambda m=models: self.pool(m), train, k)
                self.phase(k, "values", method.select, cfg, run, train, k)
                self.pools.close()  # generation actors give their CPUs/GPUs back before training
                policy = self.phase(k, "sft", method.train_policy, cfg, run, models, k)
                prm = self.phase(k, "prm", method.train_prm, cfg, run, models, k)
                models = {**models, "policy_dir": policy["policy_dir"], "prm_dir": prm["prm_dir"]}
                self.phase(k, "eval", self.evaluate, k, models)
        self.close()
        return {k: self.run.phase_info(k, "eval") for k in range(self.cfg.iteration + 1)}

    def close(self) -> None:
        """Flush and finish the experiment tracker (TensorBoard files, the wandb run). Safe twice; a run
        that fails before `fit` ends is closed at interpreter exit (loop.metrics.MetricsLog)."""
        self.metrics.close()

    def phase(self, k: int, name: str, body, *args) -> dict[str, Any]:
        """Run `body(*args)` unless the manifest proves it done; body returns (files, info)."""
        if self.run.phase_done(k, name):
            log.info("round %d: %s already done, skipped", k, name)
            self.metrics.event("phase_skipped", k, phase=name)
            return self.run.phase_info(k, name)
        with self.metrics.phase(name, k) as timing:
            files, info = body(*args)
            timing.update({key: v for key, v in info.items() if isinstance(v, int | float)})
        self.run.mark_done(k, name, files, info)
        return info

    def pool(self, models: dict[str, Any]) -> Any:
        """The search pool on the current checkpoints, started on first use (its start time logged)."""
        before, t0 = self.pools.pool, time.monotonic()
        pool = self.pools.get(models["policy_dir"], models["prm_dir"])
        if pool is not before:
            log.info("search pool up in %.1f s", time.monotonic() - t0)
        return pool

    def evaluate(self, k: int, models: dict[str, Any]) -> tuple[list[Path], dict[str, Any]]:
        from loop.evaluate import evaluate_methods

        results = evaluate_methods(
            self.pool(models), self.heldout, self.cfg, k, self.run.round_dir(k) / "eval"
        )
        quality = self.step_quality(k)
        if quality is not None:
            results["prm_step_auc"] = quality
        path = self.run.round_dir(k) / "eval.json"
        atomic_write_json(path, results)
        accuracies = {f"acc_{m}": r["accuracy"] for m, r in results["methods"].items()}
        if quality is not None:
            accuracies["prm_step_auc"] = quality["auc"]
        self.metrics.event("eval", k, **accuracies)
        # eval.json method entries as they are: accuracy and tokens/question (in the legend); y axis 0-100 %
        per_round = {
            j: r["methods"] for j in range(k + 1) if (r := results if j == k else load_eval(self.run, j))
        }
        from loop.plots import plot_accuracy

        plot_accuracy(per_round, self.run.root / "plots" / "accuracy.png", title=f"run {self.run.root.name}")
        return [path], results

    def step_quality(self, k: int) -> dict[str, Any] | None:
        """PRM step AUC on this round's held-out MCTS* trees (built-in tasks: steps can be checked)."""
        from pipeline.tasks import builtin

        task = builtin(self.cfg.task.name)
        trees_dir = self.run.round_dir(k) / "eval" / "mcts"
        if task is None or not trees_dir.is_dir():
            return None
        from pipeline.quality import step_auc, task_node_label
        from pipeline.shards import load_shard

        trees = [t.nodes for p in sorted(trees_dir.glob("shard-*.jsonl")) for t in load_shard(p)]
        questions = {q.id: q for q in self.heldout}
        result = step_auc(trees, questions, label=task_node_label(task, self.cfg.backbone.answer_prefix))
        log.info("round %d PRM step AUC on held-out MCTS* trees: %s", k, result)
        return result


def train_main(cfg: DictConfig, train: list[Question], heldout: list[Question]) -> int:
    """`python run.py` (mode=train): set up the run directory and Ray, fit, print the final table."""
    import sys

    from conf.load import ConfigError
    from loop.session import check_pool_fits
    from pipeline.rundir import RunDirError, clear_run_dir, lock_run_dir

    if cfg.policy.engine == "endpoint" and cfg.iteration > 0:
        print(
            "restmcts: config error: policy.engine=endpoint cannot be trained; use mode=evaluate or iteration=0"
        )
        return 2
    root = Path(cfg.run.root) / cfg.run.name
    t0 = time.monotonic()
    try:
        with lock_run_dir(root):  # the whole run: a second run on this directory is refused
            if not cfg.resume:
                clear_run_dir(root)  # everything but the lock we hold
            run = RunDir(root)
            run.check_or_save_config(cfg)
            t_ray = time.monotonic()
            with ray_session(cfg) as url:
                log.info("start: Ray up in %.1f s", time.monotonic() - t_ray)
                check_pool_fits(cfg)  # a pool that can never be placed fails now, not after round 0
                print(f"restmcts: run directory {root}  |  Ray dashboard {url}", flush=True)
                evals = Driver(cfg, train, heldout, run).fit()
    except ConfigError as e:  # also a pool that cannot be placed on the Ray cluster (loop.session)
        print(f"restmcts: config error: {e}", file=sys.stderr)
        return 2
    except RunDirError as e:
        print(f"restmcts: run directory error: {e}", file=sys.stderr)
        return 2
    print(final_table(evals))
    print(f"restmcts: done in {time.monotonic() - t0:.0f} s; results in {root}")
    OmegaConf.set_readonly(cfg, True)
    return 0
