"""restmcts entry point: `python run.py key=value ...` (`--help`, `-h`, `--version`: conf/help.py).

Composes and checks the config (exit 2 with one line on any mistake), validates the question data,
then starts or joins Ray and hands over to the driver (`mode=train`) or the evaluator (`mode=evaluate`).
Nothing heavy is imported before the config is known to be good.
"""

from __future__ import annotations

import logging
import sys
import time

HELP_FLAGS = ("--help", "-h")


def main(argv: list[str]) -> int:
    if any(a in HELP_FLAGS for a in argv):
        from conf.help import help_text

        print(help_text(), end="")
        return 0
    if "--version" in argv:
        from conf.help import version

        print(f"restmcts {version()}")
        return 0
    from conf.load import ConfigError, check_model_paths, compose, to_yaml

    try:
        cfg = compose(argv)
        if cfg.dry_run:
            print(to_yaml(cfg), end="")
            return 0
        check_model_paths(cfg)
        from loop.session import check_cluster_keys

        check_cluster_keys(cfg)  # before any question is drawn or round 0 built, in every mode
        from pipeline.progress import LOG_DATEFMT, LOG_FORMAT

        logging.basicConfig(level=cfg.log_level, format=LOG_FORMAT, datefmt=LOG_DATEFMT)
        from pipeline.data import DataError

        train, heldout = _questions(cfg)
    except ConfigError as e:
        print(f"restmcts: config error: {e}", file=sys.stderr)
        return 2
    except DataError as e:
        print(f"restmcts: data error: {e}", file=sys.stderr)
        return 2

    from pipeline.progress import quiet_logs

    # Libraries' progress bars and known-harmless warnings: hidden unless log_level=DEBUG; set before
    # transformers and Ray start, so local Ray workers and actors inherit the environment it sets.
    quiet_logs(cfg.log_level)
    from pipeline.rundir import RunDirError

    try:
        return _dispatch(cfg, argv, train, heldout)
    except ConfigError as e:  # found after Ray started: e.g. a pool that can never be placed
        print(f"restmcts: config error: {e}", file=sys.stderr)
        return 2
    except RunDirError as e:
        print(f"restmcts: run directory error: {e}", file=sys.stderr)
        return 2


def _questions(cfg) -> tuple[list, list]:
    """(train, heldout), with drawn question sets kept under `<cache_dir>/sets` for the whole process:
    the warm-start and D_V0 sets round 0 reads later come from there too (pipeline/tasks/set_cache.py)."""
    from pathlib import Path

    from pipeline.data import load_questions
    from pipeline.tasks.set_cache import STATS, keep_sets_in

    keep_sets_in(Path(cfg.cache_dir) / "sets")
    t0 = time.monotonic()
    train, heldout = load_questions(cfg.task, cfg.data, seed=cfg.seed)
    logging.getLogger("restmcts.start").info(
        "start: question sets in %.1f s (%d read from %s/sets, %d drawn)",
        time.monotonic() - t0,
        STATS["read"],
        cfg.cache_dir,
        STATS["drawn"],
    )
    return train, heldout


def _dispatch(cfg, argv: list[str], train: list, heldout: list) -> int:
    if cfg.mode == "evaluate":
        from loop.evaluate import evaluate_main

        return evaluate_main(cfg, train, heldout)
    if cfg.mode == "compare":
        from loop.compare import compare_main

        return compare_main(cfg, argv)
    from loop.driver import train_main

    return train_main(cfg, train, heldout)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
