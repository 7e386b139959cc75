"""Compose the run configuration: schema defaults <- defaults.yaml <- groups <- command line.

`compose(["iteration=2", "backbone=mistral", "search.branch=4"])` returns a typed, read-only
OmegaConf object. Every mistake (unknown key, wrong type, unknown group name, value outside its
choices) raises `ConfigError` with one line naming the key and what is allowed; run.py turns that
into exit code 2 before anything heavy starts.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from conf.schema import ANSWER_FALLBACKS, CHOICES, EVAL_METHODS, Config

CONF_DIR = Path(__file__).resolve().parent
GROUPS = ("backbone", "task", "preset")  # merged in this order, after defaults.yaml


class ConfigError(ValueError):
    """A configuration mistake the user can fix; the message is one line."""


def group_options(group: str, conf_dir: Path = CONF_DIR) -> list[str]:
    """The choices of a config group: the names of the YAML files under `conf_dir/<group>/`."""
    return sorted(p.stem for p in (conf_dir / group).glob("*.yaml"))


def _load_yaml(path: Path, what: str) -> DictConfig:
    try:
        return OmegaConf.load(path)
    except (OSError, OmegaConfBaseException) as e:
        raise ConfigError(f"cannot read {what} {path}: {e}") from e


def _merge(base: DictConfig, override, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, override)
    except OmegaConfBaseException as e:
        raise ConfigError(_describe(e, source)) from e


def _describe(e: OmegaConfBaseException, source: str) -> str:
    key = getattr(e, "full_key", None) or "?"
    msg = str(e).splitlines()[0]
    if "not in struct" in msg or "Key '" in msg and "not" in msg:
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        return f"unknown config key '{key}' (from {source}); allowed {'under ' + parent if parent else 'top-level'} keys: {', '.join(_keys_at(parent))}"
    return f"bad value for '{key}' (from {source}): {msg}"


def _keys_at(dotted: str) -> list[str]:
    node = OmegaConf.structured(Config)
    for part in filter(None, dotted.split(".")):
        node = node.get(part) if isinstance(node, DictConfig) else None
        if node is None:
            return []
    return sorted(node.keys()) if isinstance(node, DictConfig) else []


def _split_args(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    groups: dict[str, str] = {}
    dotlist: list[str] = []
    for arg in argv:
        if "=" not in arg:
            raise ConfigError(f"argument '{arg}' is not key=value (example: iteration=2 backbone=tiny)")
        key, value = arg.split("=", 1)
        if key in GROUPS:
            options = group_options(key)
            if value not in options:
                raise ConfigError(f"unknown {key} '{value}'; allowed: {', '.join(options)}")
            groups[key] = value
        else:
            dotlist.append(arg)
    return groups, dotlist


def compose(argv: list[str] | None = None) -> DictConfig:
    """Build the resolved config from command-line style `key=value` arguments."""
    groups, dotlist = _split_args(list(argv or []))
    cfg = OmegaConf.structured(Config)
    cfg = _merge(cfg, _load_yaml(CONF_DIR / "defaults.yaml", "defaults"), "conf/defaults.yaml")
    for group in GROUPS:
        name = groups.get(group) or OmegaConf.select(cfg, group if group == "preset" else f"{group}.name")
        path = CONF_DIR / group / f"{name}.yaml"
        if not path.exists():
            raise ConfigError(f"unknown {group} '{name}'; allowed: {', '.join(group_options(group))}")
        cfg = _merge(cfg, _load_yaml(path, f"{group} group"), f"conf/{group}/{name}.yaml")
    try:
        cli = OmegaConf.from_dotlist(dotlist)
    except OmegaConfBaseException as e:
        raise ConfigError(f"cannot parse command line: {str(e).splitlines()[0]}") from e
    cfg = _merge(cfg, cli, "command line")
    validate(cfg)
    OmegaConf.set_readonly(cfg, True)
    return cfg


def validate(cfg: DictConfig) -> None:
    """Checks the schema's types cannot express: choices, ranges, cross-field rules."""
    for key, allowed in CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if str(value).lower() not in allowed:
            raise ConfigError(f"bad value for '{key}': {value!r}; allowed: {', '.join(allowed)}")
    for method in cfg.eval.methods:
        if method not in EVAL_METHODS:
            raise ConfigError(f"bad value in 'eval.methods': {method!r}; allowed: {', '.join(EVAL_METHODS)}")
    for rule in cfg.backbone.answer_fallbacks:
        if rule not in ANSWER_FALLBACKS:
            raise ConfigError(
                f"bad value in 'backbone.answer_fallbacks': {rule!r}; allowed: {', '.join(ANSWER_FALLBACKS)}"
            )
    if any(b <= 0 for b in cfg.eval.budgets):
        raise ConfigError(f"bad value in 'eval.budgets': {list(cfg.eval.budgets)}; multipliers must be > 0")
    if cfg.iteration < 0:
        raise ConfigError(f"bad value for 'iteration': {cfg.iteration}; must be >= 0")
    for key in ("backbone.sft.zero_stage", "backbone.prm_train.zero_stage"):
        if OmegaConf.select(cfg, key) not in (0, 1, 2, 3):
            raise ConfigError(f"bad value for '{key}': {OmegaConf.select(cfg, key)}; allowed: 0, 1, 2, 3")
    for key in ("search", "eval.search"):
        s = OmegaConf.select(cfg, key)
        if s.branch < 1 or s.iteration_limit < 1:
            raise ConfigError(f"bad value under '{key}': branch and iteration_limit must be >= 1")
        if not (0.0 <= s.low < s.high <= 1.0):
            raise ConfigError(f"bad value under '{key}': need 0 <= low < high <= 1")
    trees = cfg.pool.trees_in_flight
    if not (trees == "auto" or (str(trees).isdigit() and int(trees) >= 1)):
        raise ConfigError(
            f"bad value for 'pool.trees_in_flight': {trees!r}; allowed: auto or an integer >= 1"
        )
    for key in ("search.max_expansions", "eval.search.max_expansions"):
        if OmegaConf.select(cfg, key) < 1:
            raise ConfigError(f"bad value for '{key}': {OmegaConf.select(cfg, key)}; must be >= 1")
    if cfg.task.name in ("file", "gsm8k") and not cfg.data.path:
        raise ConfigError(
            f"task={cfg.task.name} needs a question file: set data.path=FILE (JSON list or JSONL)"
        )
    if cfg.data.path and not Path(cfg.data.path).is_file():
        raise ConfigError(f"data.path={cfg.data.path} does not exist or is not a file")
    if cfg.selection.sft_replay < 0:
        raise ConfigError(f"bad value for 'selection.sft_replay': {cfg.selection.sft_replay}; must be >= 0")
    if not 0.0 <= cfg.data.heldout_fraction < 1.0:
        raise ConfigError("bad value for 'data.heldout_fraction': must be in [0, 1)")
    if cfg.policy.engine == "endpoint":
        _validate_endpoint(cfg)


def _validate_endpoint(cfg: DictConfig) -> None:
    """A remote policy cannot be fine-tuned, so only evaluation or a round-0-only run may use it."""
    if cfg.mode == "train" and cfg.iteration > 0:
        raise ConfigError(
            f"policy.engine=endpoint cannot be self-trained (iteration={cfg.iteration}): "
            "use mode=evaluate, iteration=0, or policy.engine=hf|vllm"
        )
    ep = cfg.policy.endpoint
    if not str(ep.base_url).startswith(("http://", "https://")):
        raise ConfigError(
            f"bad value for 'policy.endpoint.base_url': {ep.base_url!r}; need http(s)://HOST:PORT/v1"
        )
    if ep.max_concurrency < 1 or ep.max_retries < 0 or ep.timeout_s <= 0 or ep.backoff_s < 0:
        raise ConfigError(
            "bad value under 'policy.endpoint': need max_concurrency >= 1, max_retries >= 0, timeout_s > 0, backoff_s >= 0"
        )


def check_model_paths(cfg: DictConfig) -> None:
    """Real backbones need local model directories; fail with the key to set (nothing is downloaded)."""
    if cfg.backbone.name in ("tiny", "smollm2"):
        return
    for key in ("policy_path", "prm_path"):
        value = cfg.backbone[key]
        if not value:
            raise ConfigError(
                f"backbone={cfg.backbone.name} needs a local model directory: set backbone.{key}=/path/to/model"
            )
        if not (Path(value) / "config.json").is_file():
            raise ConfigError(f"backbone.{key}={value} is not an HF model directory (no config.json there)")


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)
