"""Kill anywhere: a small run, uninterrupted, then again with SIGKILL at N seeded moments spread over every
phase (round-0 evaluation, search, values, SFT job, PRM job, evaluation; a kill late in a phase lands in
its checkpoint/manifest writes), rerunning the same command after each kill.

    python bench/kill_anywhere.py                 # N = 10
    python bench/kill_anywhere.py --kills 3 --workdir /tmp/ka

Each kill SIGKILLs the driver and every process of its session (Ray's GCS, raylet, workers and train
workers stay in the driver's session even where they have their own process group). Checks:

1. the run completes (the same command, rerun after the last kill, exits 0);
2. every round's sft.jsonl and prm.jsonl equal the uninterrupted run's, and every shard file too with the
   wall-time field `result.seconds` removed (wall time differs between any two runs);
3. no shard was searched twice: a shard file, once on disk, is never rewritten (same inode and mtime at
   the end as when first seen), and the run that finishes the search reports `shards_searched` equal to
   the shards missing at its start;
4. after every kill the manifest (state.json) is valid JSON and names no file that is missing or differs
   from its checksum;
5. no process of any of the run's sessions is left alive at the end.

The phase each kill hit is read from the killed run's metrics.jsonl and manifest. Exit 0 when every check
passes; the report is printed (and written to <workdir>/report.json).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.rundir import sha256_tree  # noqa: E402

SMALL = [
    "iteration=1",
    "task.train_size=24",
    "task.heldout_size=8",
    "search.iteration_limit=6",
    "eval.search.iteration_limit=3",
    "eval.methods=[cot]",
    "pool.shard_size=4",
    "backbone.sft.max_steps=4",
    "backbone.prm_train.max_steps=4",
]
# the phases a kill can target, in the order a run goes through them
PHASES = [(0, "eval"), (1, "search"), (1, "values"), (1, "sft"), (1, "prm"), (1, "eval")]
SEARCHING = re.compile(r"round (\d+): searching (\d+) of (\d+) shards")


def command(runs: Path, name: str, cache_dir: str) -> list[str]:
    return [
        sys.executable,
        "run.py",
        f"run.root={runs}",
        f"run.name={name}",
        f"cache_dir={cache_dir}",
        *SMALL,
    ]


def events(run: Path) -> list[dict[str, Any]]:
    """metrics.jsonl, skipping a line a kill cut short."""
    path = run / "metrics.jsonl"
    out = []
    if path.exists():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return out


def session_pids(sid: int) -> list[int]:
    out = []
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            if os.getsid(pid) == sid:
                out.append(pid)
        except OSError:
            pass
    return out


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def kill_session(proc: subprocess.Popen) -> None:
    """SIGKILL the driver and every process of its session, then wait until all are gone."""
    victims = [proc.pid, *session_pids(proc.pid)]
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    proc.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        left = [p for p in session_pids(proc.pid) if alive(p)]
        if not left:
            return
        for pid in left:  # a process forked while we were killing
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.2)


def launch(cmd: list[str], log: Path) -> subprocess.Popen:
    """The command in a new session (so a kill reaches Ray's processes), output to `log`."""
    # PYTHONPATH: the driver, Ray's workers and the train workers all import this checkout's code
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    with open(log, "w") as f:
        return subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True
        )


def manifest_problems(run: Path) -> list[str]:
    """Files the manifest names that are missing or differ from their checksum (and a bad manifest)."""
    path = run / "state.json"
    if not path.exists():
        return []
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        return [f"state.json is not valid JSON: {e}"]
    out = []
    for k, phases in state.get("rounds", {}).items():
        for phase, entry in phases.items():
            for rel, digest in entry.get("files", {}).items():
                p = run / rel
                if not p.exists():
                    out.append(f"round {k} {phase}: {rel} is missing")
                elif sha256_tree(p) != digest:
                    out.append(f"round {k} {phase}: {rel} differs from its checksum")
    return out


def recorded(run: Path) -> set[tuple[int, str]]:
    try:
        state = json.loads((run / "state.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return set()
    return {(int(k), p) for k, phases in state.get("rounds", {}).items() for p in phases}


def phase_hit(new: list[dict[str, Any]], run: Path) -> str:
    """Where the kill landed, from the events this invocation wrote and the manifest."""
    open_ = None
    last_end = None
    for e in new:
        if e.get("event") == "phase_start":
            open_ = (e.get("round"), e.get("phase"))
        elif e.get("event") == "phase_end":
            last_end = (e.get("round"), e.get("phase"))
            if open_ == last_end:
                open_ = None
    if open_ is not None:
        return f"round {open_[0]} {open_[1]}"
    if last_end is not None:
        if (int(last_end[0]), last_end[1]) not in recorded(run):
            return f"round {last_end[0]} {last_end[1]} (ended, manifest not yet written)"
        return f"after round {last_end[0]} {last_end[1]} (between phases)"
    return "before the first phase (Ray / model start)"


def order(rp: tuple[int, str]) -> int:
    return PHASES.index(rp) if rp in PHASES else -1


def shard_files(run: Path) -> list[Path]:
    return sorted(run.glob("round_*/search/shard-*.jsonl")) + sorted(
        run.glob("round_*/eval/**/shard-*.jsonl")
    )


def without_seconds(path: Path) -> list[Any]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            row.get("result", {}).pop("seconds", None)
            rows.append(row)
    return rows


def plan(
    kills: int, durations: dict[tuple[int, str], float], seed: int
) -> list[tuple[tuple[int, str], float]]:
    """(target phase, seconds after its start) per kill: every phase gets kills (as evenly as N allows),
    at seeded random moments within the phase's uninterrupted duration (late ones hit its writes)."""
    rng = random.Random(seed)
    if kills >= len(PHASES):
        targets = [PHASES[i * len(PHASES) // kills] for i in range(kills)]
    else:
        targets = sorted(rng.sample(PHASES, kills), key=order)
    return [(t, rng.uniform(0.05, 1.0) * durations.get(t, 5.0)) for t in targets]


def wait_and_kill(
    proc: subprocess.Popen, run: Path, seen: int, target: tuple[int, str], delay: float, limit: float
) -> tuple[bool, str]:
    """Wait until the run starts `target` (or a later phase, when the target is already done), wait
    `delay` s more, then kill the session. Returns (killed, what happened)."""
    deadline = time.monotonic() + limit
    started = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False, f"the run ended (rc {proc.returncode}) before the kill"
        if started is None:
            for e in events(run)[seen:]:
                if e.get("event") == "phase_start" and order((e.get("round"), e.get("phase"))) >= order(
                    target
                ):
                    started = time.monotonic()
                    break
        elif time.monotonic() - started >= delay:
            kill_session(proc)
            return True, "killed"
        time.sleep(0.1)
    kill_session(proc)
    return True, "killed at the time limit"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default=str(ROOT / "runs" / "kill_anywhere"))
    ap.add_argument("--cache-dir", default=str(ROOT / ".cache" / "restmcts"))
    ap.add_argument("--run-timeout", type=float, default=3600.0, help="seconds one invocation may take")
    args = ap.parse_args(argv)

    work = Path(args.workdir).resolve()
    runs = work / "runs"
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    failures: list[str] = []
    sids: list[int] = []

    # 1. uninterrupted
    clean = runs / "clean"
    t0 = time.monotonic()
    for old in (clean, runs / "killed"):
        shutil.rmtree(old, ignore_errors=True)
    proc = launch(command(runs, "clean", args.cache_dir), logs / "clean.log")
    sids.append(proc.pid)
    try:
        rc = proc.wait(timeout=args.run_timeout)
    except subprocess.TimeoutExpired:
        kill_session(proc)
        rc = -9
    clean_seconds = time.monotonic() - t0
    if rc != 0:
        print(f"kill_anywhere: the uninterrupted run failed (rc {rc}); see {logs / 'clean.log'}")
        return 1
    durations = {
        (e["round"], e["phase"]): float(e["seconds"]) for e in events(clean) if e.get("event") == "phase_end"
    }
    print(
        f"kill_anywhere: uninterrupted run {clean_seconds:.0f} s; phases: "
        + ", ".join(f"r{k} {p} {durations.get((k, p), 0):.0f} s" for k, p in PHASES),
        flush=True,
    )

    # 2. killed N times, rerun after each kill
    killed = runs / "killed"
    cmd = command(runs, "killed", args.cache_dir)
    searched: list[str] = []  # problems with 'searching X of Y shards' against the shards on disk
    first_seen: dict[str, tuple[int, int]] = {}
    kills: list[dict[str, Any]] = []
    finished = False
    for i, (target, delay) in enumerate(plan(args.kills, durations, args.seed)):
        seen = len(events(killed))
        on_disk = shards_by_round(killed)
        proc = launch(cmd, logs / f"kill-{i:02d}.log")
        sids.append(proc.pid)
        t_kill = time.monotonic()
        did, what = wait_and_kill(proc, killed, seen, target, delay, args.run_timeout)
        hit = phase_hit(events(killed)[seen:], killed) if did else what
        searched += check_search_log(logs / f"kill-{i:02d}.log", on_disk)
        problems = manifest_problems(killed)
        failures += [f"after kill {i}: {p}" for p in problems]
        for p in shard_files(killed):
            st = p.stat()
            first_seen.setdefault(str(p), (st.st_ino, st.st_mtime_ns))
        kills.append(
            {
                "kill": i,
                "target": f"round {target[0]} {target[1]} +{delay:.1f} s",
                "hit": hit,
                "after_s": round(time.monotonic() - t_kill, 1),
                "shards_on_disk": len(shard_files(killed)),
                "manifest_ok": not problems,
            }
        )
        print(
            f"kill {i}: target {kills[-1]['target']}; hit {hit}; manifest "
            f"{'ok' if not problems else problems}",
            flush=True,
        )
        if not did:
            finished = proc.returncode == 0
            if not finished:
                failures.append(f"invocation {i} exited with rc {proc.returncode} before its kill")
            break

    # 3. the same command to the end
    if not finished:
        on_disk = shards_by_round(killed)
        proc = launch(cmd, logs / "final.log")
        sids.append(proc.pid)
        try:
            rc = proc.wait(timeout=args.run_timeout)
        except subprocess.TimeoutExpired:
            kill_session(proc)
            rc = -9
        if rc != 0:
            failures.append(f"the resumed run failed (rc {rc}); see {logs / 'final.log'}")
        searched += check_search_log(logs / "final.log", on_disk)

    # checks
    failures += [f"at the end: {p}" for p in manifest_problems(killed)]
    rounds = sorted(p.name for p in clean.glob("round_*") if p.is_dir() and p.name != "round_0")
    for rd in rounds:
        for name in ("sft.jsonl", "prm.jsonl"):
            a, b = clean / rd / name, killed / rd / name
            if not b.exists() or a.read_bytes() != b.read_bytes():
                failures.append(f"{rd}/{name} differs from the uninterrupted run's")
            elif not a.read_text().strip():
                failures.append(f"{rd}/{name} is empty: the comparison proves nothing")
    clean_shards = [p.relative_to(clean) for p in shard_files(clean)]
    killed_shards = [p.relative_to(killed) for p in shard_files(killed)]
    if clean_shards != killed_shards:
        failures.append(f"shard files differ in name: {clean_shards} vs {killed_shards}")
    for rel in clean_shards:
        if (killed / rel).exists() and without_seconds(clean / rel) != without_seconds(killed / rel):
            failures.append(f"{rel} differs from the uninterrupted run's (result.seconds aside)")
    for path, (ino, mtime) in first_seen.items():
        st = Path(path).stat() if Path(path).exists() else None
        if st is None or (st.st_ino, st.st_mtime_ns) != (ino, mtime):
            failures.append(f"{path} was written again after it was first on disk (searched twice)")
    failures += searched + search_ended_once(killed)
    time.sleep(2)
    for sid in sids:
        left = [p for p in session_pids(sid) if alive(p)]
        deadline = time.monotonic() + 30
        while left and time.monotonic() < deadline:
            time.sleep(0.5)
            left = [p for p in session_pids(sid) if alive(p)]
        if left:
            failures.append(f"session {sid} has processes left alive: {left}")

    total = time.monotonic() - t_start
    report = {
        "kills": kills,
        "uninterrupted_seconds": round(clean_seconds, 1),
        "phase_seconds": {f"r{k} {p}": durations.get((k, p)) for k, p in PHASES},
        "total_seconds": round(total, 1),
        "failures": failures,
    }
    (work / "report.json").write_text(json.dumps(report, indent=1))
    print(f"kill_anywhere: {len(kills)} kills, phases hit: " + "; ".join(k["hit"] for k in kills))
    print(f"kill_anywhere: total {total:.0f} s (uninterrupted run {clean_seconds:.0f} s)")
    if failures:
        print("kill_anywhere: FAILED")
        for f in failures:
            print(f"  - {f}")
        return 1
    print(
        "kill_anywhere: passed (run completed; sft/prm/shards equal; no shard searched twice; "
        "manifest consistent after every kill; no process left)"
    )
    return 0


def shards_by_round(run: Path) -> dict[int, int]:
    out: dict[int, int] = {}
    for p in run.glob("round_*/search/shard-*.jsonl"):
        k = int(p.parent.parent.name.split("_")[1])
        out[k] = out.get(k, 0) + 1
    return out


def check_search_log(log: Path, on_disk: dict[int, int]) -> list[str]:
    """An invocation searches exactly the shards that were not on disk when it started."""
    out = []
    text = log.read_text(errors="replace") if log.exists() else ""
    for m in SEARCHING.finditer(text):
        k, todo, total = (int(g) for g in m.groups())
        if todo != total - on_disk.get(k, 0):
            out.append(
                f"{log.name}: round {k} searched {todo} of {total} shards with {on_disk.get(k, 0)} on disk"
            )
    return out


def search_ended_once(run: Path) -> list[str]:
    """The search phase of a round ends once, having searched only the shards missing at its start:
    its `shards_searched` (metrics) is at most the shards not on disk before it (checked by the logs)."""
    ends = [e for e in events(run) if e.get("event") == "phase_end" and e.get("phase") == "search"]
    rounds = [int(e["round"]) for e in ends]
    return [
        f"round {k}: the search phase ended {rounds.count(k)} times"
        for k in set(rounds)
        if rounds.count(k) != 1
    ]


if __name__ == "__main__":
    sys.exit(main())
