"""The run directory and its manifest: what resume reads.

    runs/<name>/
      config.yaml          resolved config of the run (written once, compared on resume)
      state.json           manifest: phases done per round with file checksums; written last, atomically
      metrics.jsonl        one JSON line per event
      .lock                held (flock) by the run using the directory; a second run is refused
      round_<k>/...        shard files, datasets, checkpoints, eval.json
      plots/

A phase counts as done only when the manifest says so AND every file it lists still has the recorded
SHA-256: a half-written or edited file is never trusted. Every file is written to a temporary name in
the same directory and renamed into place (`atomic_write_*`), so a kill leaves either the old file or
the new one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

# Keys that may change between a run and its resumption (they change how, not what, is computed).
SAFE_TO_CHANGE = (
    "iteration",
    "log_level",
    "tracker",
    "dry_run",
    "resume",
    "ray.",
    "pool.",
    "policy.replicas",
    "policy.max_batch_size",
    "prm.replicas",
    "prm.max_batch_size",
    "backbone.policy_resources.",
    "backbone.prm_resources.",
    "eval.methods",
    "eval.budgets",
    "train.",  # where Ray Train keeps its state and which nodes host its workers: not what is computed
)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_tree(path: Path) -> str:
    """Checksum of a file, or of a directory's files (names and contents) in sorted order."""
    if path.is_file():
        return sha256(path)
    h = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        h.update(str(p.relative_to(path)).encode())
        h.update(sha256(p).encode())
    return h.hexdigest()


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data: Any) -> None:
    """Indented, key-sorted JSON (what every eval/info file of a run uses), written atomically."""
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True, default=str))


def atomic_write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def atomic_replace_dir(src: Path, dst: Path) -> None:
    """Move a finished directory into place, replacing an older one."""
    if dst.exists():
        trash = dst.with_name(f".{dst.name}.old")
        shutil.rmtree(trash, ignore_errors=True)
        os.replace(dst, trash)
        os.replace(src, dst)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)


def config_differences(saved: DictConfig, current: DictConfig) -> list[str]:
    """Dotted keys whose values differ, except the keys declared safe to change."""
    a = _flatten(OmegaConf.to_container(saved, resolve=True))
    b = _flatten(OmegaConf.to_container(current, resolve=True))
    keys = sorted(set(a) | set(b))
    new = {k for k in set(b) - set(a) if b[k] == _schema_default(k)}  # added since, left at its default
    return [k for k in keys if a.get(k) != b.get(k) and not _safe(k) and k not in new]


def _schema_default(key: str) -> Any:
    """The schema's default of a dotted key (a sentinel when the schema has none): a run saved before
    the key existed computed as if it had this value."""
    from conf.schema import Config

    try:
        return OmegaConf.select(OmegaConf.structured(Config), key, default=_NO_DEFAULT)
    except Exception:  # a key below a dict-typed node the schema leaves open
        return _NO_DEFAULT


_NO_DEFAULT = object()


def _safe(key: str) -> bool:
    return any(key == s or (s.endswith(".") and key.startswith(s)) for s in SAFE_TO_CHANGE)


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): node}


class RunDirError(ValueError):
    """The run directory cannot be used: in use by another run, or an unreadable manifest (one line)."""


LOCK_NAME = ".lock"


@contextmanager
def lock_run_dir(root: str | Path) -> Iterator[None]:
    """Hold `<root>/.lock` (an exclusive `fcntl.flock`) for the block; a second holder gets RunDirError
    naming the pid that holds it. The kernel drops the lock when the holding process dies, so a killed
    run never leaves it stuck (the file stays; only the lock counts)."""
    import fcntl

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            raise RunDirError(
                f"run directory {root} is in use by another run (pid {holder}); wait for it to finish, "
                "or use run.name=NEW for a new run"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def clear_run_dir(root: str | Path) -> None:
    """Delete a run directory's contents except its lock file (resume=false, with the lock held)."""
    root = Path(root)
    if not root.is_dir():
        return
    for p in root.iterdir():
        if p.name == LOCK_NAME:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def _read_manifest(path: Path) -> dict[str, Any]:
    """state.json, or RunDirError naming the file when it is not valid JSON (one line)."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunDirError(
            f"manifest {path} is not valid JSON ({e}); remove it to redo the run's phases, "
            "or resume=false to start over"
        ) from None
    if not isinstance(state, dict) or not isinstance(state.get("rounds"), dict):
        raise RunDirError(f"manifest {path} has no 'rounds' object; remove it, or resume=false to start over")
    return state


class RunDir:
    """One run's directory and manifest. Not thread-safe: only the driver writes it."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.state_file = self.root / "state.json"
        self.config_file = self.root / "config.yaml"
        self.metrics_file = self.root / "metrics.jsonl"
        self.lock_file = self.root / LOCK_NAME
        self.state: dict[str, Any] = {"version": 1, "rounds": {}}
        if self.state_file.exists():
            self.state = _read_manifest(self.state_file)

    def lock(self) -> AbstractContextManager[None]:
        """Hold the run directory for one run (`lock_run_dir`); a second run on it is refused."""
        return lock_run_dir(self.root)

    def round_dir(self, k: int) -> Path:
        return self.root / f"round_{k}"

    def rel(self, path: Path) -> str:
        return str(Path(path).resolve().relative_to(self.root.resolve()))

    def _phase(self, k: int, phase: str) -> dict[str, Any] | None:
        return self.state["rounds"].get(str(k), {}).get(phase)

    def phase_done(self, k: int, phase: str) -> bool:
        entry = self._phase(k, phase)
        if not entry:
            return False
        for rel, digest in entry["files"].items():
            path = self.root / rel
            if not path.exists() or sha256_tree(path) != digest:
                return False
        return True

    def phase_info(self, k: int, phase: str) -> dict[str, Any]:
        entry = self._phase(k, phase)
        return dict(entry["info"]) if entry else {}

    def mark_done(
        self, k: int, phase: str, files: Iterable[Path], info: dict[str, Any] | None = None
    ) -> None:
        """Record a finished phase with its output files' checksums; the manifest is rewritten atomically."""
        entry = {"files": {self.rel(p): sha256_tree(Path(p)) for p in files}, "info": info or {}}
        self.state["rounds"].setdefault(str(k), {})[phase] = entry
        atomic_write_text(self.state_file, json.dumps(self.state, indent=1, sort_keys=True))

    def check_or_save_config(self, cfg: DictConfig) -> None:
        """First run: save the resolved config. Resume: refuse a changed config (see SAFE_TO_CHANGE)."""
        from conf.load import ConfigError

        if self.config_file.exists():
            diff = config_differences(OmegaConf.load(self.config_file), cfg)
            if diff:
                raise ConfigError(
                    f"run '{self.root}' was started with a different config ({', '.join(diff)}); "
                    "use the same values, resume=false to start over, or run.name=NEW for a new run"
                )
        atomic_write_text(self.config_file, OmegaConf.to_yaml(cfg, resolve=True))
