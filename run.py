"""restmcts entry point: `python run.py key=value ...`.

Composes and checks the config (exit 2 with one line on any mistake), validates the question data,
then starts or joins Ray and hands over to the driver (`mode=train`) or the evaluator (`mode=evaluate`).
Nothing heavy is imported before the config is known to be good.
"""

from __future__ import annotations

import logging
import sys


def main(argv: list[str]) -> int:
    from conf.load import ConfigError, check_model_paths, compose, to_yaml

    try:
        cfg = compose(argv)
        if cfg.dry_run:
            print(to_yaml(cfg), end="")
            return 0
        check_model_paths(cfg)
        from pipeline.data import DataError, load_questions

        train, heldout = load_questions(cfg.task, cfg.data, seed=cfg.seed)
    except ConfigError as e:
        print(f"restmcts: config error: {e}", file=sys.stderr)
        return 2
    except DataError as e:
        print(f"restmcts: data error: {e}", file=sys.stderr)
        return 2

    logging.basicConfig(
        level=cfg.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
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
