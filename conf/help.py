"""`python run.py --help` and `--version`: what a newcomer types first.

Everything that can go stale is read, not copied: the group choices are the files under `conf/<group>/`
(with the first line of each file's leading comment), the defaults come from the composed default config
(schema <- defaults.yaml <- default groups, exactly what `python run.py` gets), the modes from the
schema's CHOICES and the version from the installed package metadata (pyproject.toml when not installed).
Only the one-line meaning of each key and the examples are written here.
"""

from __future__ import annotations

import re
import textwrap
from importlib import metadata
from pathlib import Path

from omegaconf import OmegaConf

from conf.load import CONF_DIR, GROUPS, compose, group_options
from conf.schema import CHOICES

PACKAGE = "restmcts"
WIDTH = 100  # characters per line

MODES = {
    "train": "round 0, then `iteration` self-training rounds (search -> select -> SFT -> PRM -> evaluate)",
    "evaluate": "evaluate the configured models on the held-out questions with eval.methods",
    "compare": "ReST-MCTS* beside ReST-EM and Self-Rewarding at the same token budget, one report",
}

# (key, meaning): the keys people change most; their defaults are read from the composed config.
KEYS = (
    ("iteration", "self-training iterations after round 0"),
    ("seed", "changes everything random: questions, warm start, search"),
    ("run.name", "run directory runs/<run.name>/; the same command again resumes it"),
    ("resume", "false starts runs/<run.name>/ afresh"),
    ("eval.methods", "any of cot, sc, bon, mcts, tot_bfs, tot_dfs"),
    ("search.iteration_limit", "MCTS* rounds per question while collecting data"),
    ("eval.search.iteration_limit", "the same for mcts evaluation"),
    ("pool.search_workers", "search workers (Ray actors)"),
    ("backbone.policy_path", "local HF directory of the policy (real backbones)"),
    ("backbone.prm_path", "local HF directory of the PRM base (real backbones)"),
    ("data.path", "question file for task=file|gsm8k (JSON list or JSONL)"),
    ("tracker", "none | tensorboard | wandb (offline unless WANDB_MODE is set)"),
    ("ray.address", "null: start Ray locally; auto: join this node's cluster"),
    ("dry_run", "print the resolved config and exit"),
)

EXAMPLES = (
    ("python run.py", "the default job: tiny backbone, arith, 2 iterations"),
    (
        "python run.py task=countdown iteration=1 run.name=cd seed=1",
        "another task and seed, its own run directory",
    ),
    (
        "python run.py mode=evaluate task=file data.path=q.jsonl 'eval.methods=[cot,sc,bon,mcts]'",
        "evaluate on your own questions",
    ),
)

DOCS = (
    ("README.md", "running, config keys, backbones, tasks, resume"),
    ("docs/ARCHITECTURE.md", "the pieces and the data flow"),
    ("docs/ALGORITHM.md", "the search and the value formulas"),
    ("docs/FORMATS.md", "the files a run writes"),
    ("conf/schema.py", "every key with its default and meaning"),
)


def version() -> str:
    """The package version: installed metadata, else pyproject.toml beside conf/ (a plain checkout)."""
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        pyproject = CONF_DIR.parent / "pyproject.toml"
        found = re.search(r'^version\s*=\s*"([^"]+)"', _read(pyproject), re.MULTILINE)
        return found.group(1) if found else "unknown"


def help_text(conf_dir: Path = CONF_DIR) -> str:
    """The whole --help page; `conf_dir` holds the group directories (tests point it elsewhere)."""
    defaults = compose([])
    sections = [
        "usage: python run.py [key=value ...]    (also: --help, -h, --version)",
        "",
        "restmcts trains a language model on its own MCTS* tree searches (ReST-MCTS*): a policy proposes",
        "reasoning steps, a process reward model values them, and Ray runs the search and training rounds.",
        _modes(),
        _groups(conf_dir, defaults),
        _keys(defaults),
        _examples(),
        _places(defaults),
        _docs(),
    ]
    return "\n".join(sections) + "\n"


def _modes() -> str:
    lines = ["", "modes (mode=...):"]
    for mode in CHOICES["mode"]:
        lines.append(f"  {mode:<10}{MODES.get(mode, '')}")
    return "\n".join(lines)


def _groups(conf_dir: Path, defaults) -> str:
    """Each group with its choices, one line each: the file's first comment line says what it is."""
    lines = ["", "config groups (merged in this order, command line last; files under conf/<group>/):"]
    for group in GROUPS:
        default = OmegaConf.select(defaults, group if group == "preset" else f"{group}.name")
        lines.append(f"  {group}=  (default {default})")
        names = group_options(group, conf_dir)
        width = max(map(len, names), default=0) + 2
        for name in names:
            about = _first_comment(conf_dir / group / f"{name}.yaml")
            lines.append(_wrap(f"{name:<{width}}{about}".rstrip(), indent=4, hang=4 + width))
    return "\n".join(lines)


def _keys(defaults) -> str:
    lines = ["", "keys people change most (default in brackets; all keys: conf/schema.py):"]
    for key, meaning in KEYS:
        value = OmegaConf.select(defaults, key)
        lines.append(_wrap(f"{key:<28}[{_show(value)}]  {meaning}", indent=2, hang=32))
    return "\n".join(lines)


def _examples() -> str:
    lines = ["", "examples:"]
    for command, what in EXAMPLES:
        lines += [f"  {command}", f"      {what}"]
    return "\n".join(lines)


def _places(defaults) -> str:
    run_dir = Path(defaults.run.root) / "<run.name>"
    return "\n".join(
        [
            "",
            "where things go:",
            f"  runs     {run_dir}/ (run.root={defaults.run.root}): config.yaml, state.json, "
            "metrics.jsonl, round_<k>/, eval.json",
            f"  cache    {defaults.cache_dir}/ (cache_dir=): built backbones, round-0 models, question sets",
        ]
    )


def _docs() -> str:
    lines = ["", "read next:"]
    lines += [f"  {path:<22}{what}" for path, what in DOCS]
    return "\n".join(lines)


def _first_comment(path: Path) -> str:
    """The first sentence of the file's leading `#` comment block ("" when it has none)."""
    words: list[str] = []
    for line in _read(path).splitlines():
        stripped = line.strip()
        if not stripped.startswith("#"):
            break
        words.append(stripped.lstrip("#").strip())
        if words[-1].endswith("."):  # a sentence ended with the line
            break
    text = " ".join(w for w in words if w)
    end = re.search(r"\.\s+(?=[A-Z])", text)  # a sentence ends before a capital ("e.g. smollm2" does not)
    return text[: end.start() + 1] if end else text


def _show(value) -> str:
    """A default as it is written on the command line: null, true, [cot, mcts]."""
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return str(value)


def _wrap(text: str, indent: int, hang: int) -> str:
    return textwrap.fill(
        text, WIDTH, initial_indent=" " * indent, subsequent_indent=" " * hang, break_on_hyphens=False
    )


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return ""
