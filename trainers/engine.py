"""The training loop shared by policy SFT and PRM regression, on DeepSpeed or on plain torch.

Data: every rank sees the same deterministic permutation per epoch (seed + epoch), padded by wrapping
to a multiple of the world size, and takes every world_size-th example: all ranks run the same number
of micro-steps, which the collectives of DeepSpeed need.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from models.device import train_bf16
from pipeline.progress import Progress, is_quiet
from trainers.ds_config import build_ds_config, warmup_steps
from trainers.worker import WorkerContext, report

log = logging.getLogger(__name__)

REPORT_MIN_STEPS = 100
PROGRESS_INTERVAL_S = 15.0  # a plain progress line at most this often off a terminal
# Optimizer steps left out of the steady-state rate (first-step allocations, DeepSpeed's lazy set-up).
STEADY_AFTER_STEPS = 2
GROUP_WINDOW = 32  # batches sorted by length together (`TrainConfig.group_by_length`)


@dataclass
class Plan:
    """How long a job runs: micro-steps per rank and optimizer steps."""

    micro_per_epoch: int
    total_micro: int
    optimizer_steps: int


def make_plan(n_examples: int, cfg: Any, world_size: int) -> Plan:
    if n_examples == 0:
        raise ValueError("training job got no examples")
    per_rank = math.ceil(n_examples / world_size)
    micro_per_epoch = math.ceil(per_rank / cfg.micro_batch_size)
    gas = cfg.gradient_accumulation_steps
    steps = max(1, math.ceil(cfg.epochs * micro_per_epoch / gas))
    if cfg.max_steps > 0:
        steps = min(steps, cfg.max_steps)
    return Plan(micro_per_epoch, steps * gas, steps)


def micro_batches(examples: list, cfg: Any, ctx: WorkerContext, plan: Plan) -> Iterator[list]:
    """This rank's micro-batches, `plan.total_micro` of them, reshuffled (seeded) every epoch; with
    `cfg.group_by_length`, grouped by length (`length_groups`)."""
    done, epoch = 0, 0
    while done < plan.total_micro:
        rng = random.Random(cfg.seed * 1_000_003 + epoch)
        order = list(range(len(examples)))
        rng.shuffle(order)
        padded = order + order[: (-len(order)) % ctx.world_size]
        mine = padded[ctx.rank :: ctx.world_size]
        batches = [mine[s : s + cfg.micro_batch_size] for s in range(0, len(mine), cfg.micro_batch_size)]
        if cfg.group_by_length:
            batches = length_groups(mine, [row_length(examples[i]) for i in mine], cfg.micro_batch_size, rng)
        for batch in batches:
            if done == plan.total_micro:
                return
            yield [examples[i] for i in batch]
            done += 1
        epoch += 1


def row_length(row: Any) -> int:
    """Length of a training row: token ids of an SFT row `(ids, labels)`, characters of a PRM row
    `(PRMText, target)`."""
    first = row[0] if isinstance(row, tuple) else row
    return len(getattr(first, "text", first))


def length_groups(items: list, lengths: list[int], size: int, rng: random.Random) -> list[list]:
    """`items` (already shuffled) cut into batches of `size` whose rows have similar lengths: each window
    of GROUP_WINDOW batches is sorted by length and cut, then the batches are shuffled. Less padding
    (a countdown warm-start batch: mean row 76 tokens, longest ~110) at the same data per epoch."""
    batches = []
    window = size * GROUP_WINDOW
    for lo in range(0, len(items), window):
        part = sorted(range(lo, min(lo + window, len(items))), key=lambda i: lengths[i])
        batches += [[items[i] for i in part[s : s + size]] for s in range(0, len(part), size)]
    rng.shuffle(batches)
    return batches


class TorchEngine:
    """In-process stand-in for a DeepSpeed engine: AdamW, linear warmup/decay, clipping, accumulation."""

    def __init__(self, module: torch.nn.Module, cfg: Any, total_steps: int):
        self.module = module
        params = [p for p in module.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        warm = warmup_steps(cfg, total_steps)

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / (warm + 1)
            return max(0.0, (total_steps - step) / max(1, total_steps - warm))

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)
        self.cfg = cfg
        self.micro = 0
        # bf16 (`auto`: a GPU with bf16, or a CPU with bf16 units, models.device.train_bf16): forward
        # under autocast, weights and AdamW in fp32
        self.device_type = next(module.parameters()).device.type
        self.bf16 = train_bf16(cfg.bf16, self.device_type)
        # `compile`: the forward through torch.compile (same parameters: `module` is what is saved)
        self.forward = torch.compile(module, dynamic=True) if cfg.compile else module
        self._first = bool(cfg.compile)

    def __call__(self, *args, **kwargs):
        if self._first:  # torch.compile fails only when first called (e.g. no C++ compiler): run eager
            self._first = False
            try:
                return self._forward(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - any compile failure; eager is the same model
                log.warning("torch.compile failed (%s); training eager", str(exc).splitlines()[0][:200])
                self.forward = self.module
        return self._forward(*args, **kwargs)

    def _forward(self, *args, **kwargs):
        if not self.bf16:
            return self.forward(*args, **kwargs)
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            return self.forward(*args, **kwargs)

    def backward(self, loss: torch.Tensor) -> None:
        (loss / self.cfg.gradient_accumulation_steps).backward()

    def step(self) -> None:
        self.micro += 1
        if self.micro % self.cfg.gradient_accumulation_steps:
            return
        if self.cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.cfg.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def train(self) -> None:
        self.module.train()

    def eval(self) -> None:
        self.module.eval()


def build_engine(module: torch.nn.Module, cfg: Any, ctx: WorkerContext, total_steps: int):
    """A DeepSpeed engine inside Ray Train, a `TorchEngine` in-process. Both: engine(...), backward, step.
    With `use_gpu` the in-process module moves to the GPU (DeepSpeed places its own)."""
    if not ctx.distributed:
        if cfg.use_gpu and torch.cuda.is_available():
            module = module.to("cuda")
        return TorchEngine(module, cfg, total_steps)
    import deepspeed

    if cfg.compile:
        log.warning(
            "train compile=true applies to in-process jobs (num_workers=0); this DeepSpeed job runs eager"
        )
    ds_config = build_ds_config(cfg, world_size=ctx.world_size, total_steps=total_steps)
    with _captured_stdout("deepspeed.initialize"):  # it prints "... shm_comm_op built successfully"
        engine, *_ = deepspeed.initialize(
            model=module,
            config=ds_config,
            model_parameters=[p for p in module.parameters() if p.requires_grad],
        )
    return engine


def engine_device(engine: Any) -> torch.device:
    """Where the engine's parameters live (DeepSpeed engines say so; else the module's first parameter)."""
    device = getattr(engine, "device", None)
    if isinstance(device, torch.device | str):
        return torch.device(device)
    return next(engine.module.parameters()).device


@contextlib.contextmanager
def _captured_stdout(what: str):
    """While quiet (`pipeline.progress.quiet_logs`), what `print` writes inside goes to the DEBUG log
    (to the WARNING log when the block fails); otherwise nothing changes.

    In a Ray Train worker `print` is patched to log on the root logger at INFO (Ray Train's
    RAY_TRAIN_ENABLE_PRINT_PATCH), so a filter on the root logger itself catches those records: a
    logger's filters see only what is logged on it, not what other loggers propagate to its handlers.
    """
    if not is_quiet():
        yield
        return
    buffer = io.StringIO()
    printed = _PrintedFilter()
    root = logging.getLogger()
    root.addFilter(printed)
    failed = False
    try:
        with contextlib.redirect_stdout(buffer):
            yield
    except BaseException:
        failed = True
        raise
    finally:
        root.removeFilter(printed)
        lines = buffer.getvalue().splitlines()
        lines += [m for m in printed.messages if m not in lines]
        text = "\n".join(line for line in lines if line.strip())
        if text:
            log.log(logging.WARNING if failed else logging.DEBUG, "%s printed:\n%s", what, text)


class _PrintedFilter(logging.Filter):
    """Holds back the INFO-and-below records logged on the root logger itself (patched prints)."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        self.messages.append(record.getMessage())
        return False


@contextlib.contextmanager
def full_parameters(engine, cfg: Any, ctx: WorkerContext):
    """Inside, `engine.module` holds full (un-partitioned) parameters on every rank (ZeRO-3 gather).

    Every rank must enter. Changes made inside are not written back to the partitions.
    """
    if ctx.distributed and cfg.zero_stage == 3:
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(engine.module.parameters()), modifier_rank=None):
            yield engine.module
    else:
        yield engine.module


def mean_over_ranks(values: list[float], ctx: WorkerContext) -> list[float]:
    if not ctx.distributed or ctx.world_size == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    torch.distributed.all_reduce(t)
    return (t / ctx.world_size).tolist()


@dataclass
class LoopResult:
    losses: list[float] = field(default_factory=list)  # per optimizer step, mean over ranks
    tokens: int = 0  # non-padding tokens seen, all ranks
    seconds: float = 0.0
    steps: int = 0
    started_at: float = 0.0  # time.time() as the first micro-step begins (startup = this - job submit)
    steady_tokens: int = 0  # tokens of the optimizer steps after the first STEADY_AFTER_STEPS, all ranks
    steady_seconds: float = 0.0  # their wall time, up to the last step's progress report (excluded)
    steady_cpu_seconds: float = 0.0  # CPU time of the same window (process_time), all ranks


def fit(
    engine,
    examples: list,
    collate: Callable[[list], dict],
    loss_fn: Callable[[Any, dict], torch.Tensor],
    cfg: Any,
    ctx: WorkerContext,
    plan: Plan,
    name: str,
) -> LoopResult:
    """Run `plan.total_micro` micro-steps of `loss_fn(engine, batch)`; batch["attention_mask"] counts tokens."""
    result = LoopResult()
    gas = cfg.gradient_accumulation_steps
    # Each ray.train.report costs ~2 s here (Ray Train V2 syncs the ranks): a few per job, plus the last.
    # It prints nothing (trainers.worker.quiet_worker_logs); the progress line below is what people see.
    report_every = max(REPORT_MIN_STEPS, math.ceil(plan.optimizer_steps / 5))
    # Rank 0 only: a live bar on a terminal, else a plain line every PROGRESS_INTERVAL_S with
    # done/total steps, rate and ETA; one summary line at the end.
    bar = None
    if ctx.rank == 0:
        bar = Progress(name, plan.optimizer_steps, "steps", stream=sys.stderr, interval=PROGRESS_INTERVAL_S)
    engine.train()
    result.started_at = time.time()
    start = time.perf_counter()
    steady_start, steady_cpu0, steady_tokens0 = 0.0, 0.0, 0
    window: list[float] = []
    try:
        device = engine_device(engine)
        for i, chunk in enumerate(micro_batches(examples, cfg, ctx, plan)):
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in collate(chunk).items()}
            loss = loss_fn(engine, batch)
            engine.backward(loss)
            engine.step()
            window.append(float(loss.detach()))
            result.tokens += int(batch["attention_mask"].sum())
            if (i + 1) % gas:
                continue
            (step_loss,) = mean_over_ranks([sum(window) / len(window)], ctx)
            window = []
            result.losses.append(step_loss)
            result.steps += 1
            now, cpu = time.perf_counter(), time.process_time()  # ranks in step: the all-reduce synced them
            if result.steps == STEADY_AFTER_STEPS:
                steady_start, steady_cpu0, steady_tokens0 = now, cpu, result.tokens
            elif result.steps > STEADY_AFTER_STEPS:
                result.steady_seconds = now - steady_start
                result.steady_cpu_seconds = cpu - steady_cpu0
                result.steady_tokens = result.tokens - steady_tokens0
            if bar is not None:
                bar.update(1, loss=step_loss)
            if ctx.in_ray and (result.steps % report_every == 0 or result.steps == plan.optimizer_steps):
                elapsed = round(time.perf_counter() - start, 1)
                report(ctx, {"job": name, "step": result.steps, "loss": step_loss, "seconds": elapsed})
    except BaseException:
        if bar is not None:
            bar.close(failed=True)
        raise
    result.seconds = time.perf_counter() - start
    if bar is not None:
        first, final = head_tail(result.losses)
        bar.close("no optimizer step" if first is None else f"loss {first:.4g} -> {final:.4g}")
    sums = [float(result.tokens), float(result.steady_tokens), result.steady_cpu_seconds]
    tokens, steady, cpu = (v * ctx.world_size for v in mean_over_ranks(sums, ctx))
    result.tokens, result.steady_tokens = int(round(tokens)), int(round(steady))
    result.steady_cpu_seconds = cpu
    return result


def head_tail(losses: list[float]) -> tuple[float | None, float | None]:
    """(mean of the first 10%, mean of the last 10%) of a loss curve, at least one step each; (None,
    None) for an empty curve. The job metrics' first_loss/final_loss and the progress summary."""
    if not losses:
        return None, None
    k = max(1, len(losses) // 10)
    return sum(losses[:k]) / k, sum(losses[-k:]) / k


def summary(result: LoopResult, plan: Plan, n_examples: int, ctx: WorkerContext) -> dict:
    """The metrics every job writes (loss curve, first/final loss, tokens/s, steps, seconds).

    `steady_tokens_per_s` leaves out the first STEADY_AFTER_STEPS optimizer steps and the final
    progress report (the whole loop's rate when the job is shorter); `steady_cpu_seconds` is the CPU
    time of all ranks in that window (0 when too short); `loop_started_at` is the wall clock
    (time.time()) as the first micro-step begins.
    """
    if result.steady_seconds > 0:
        steady = (result.steady_tokens, result.steady_seconds, result.steps - STEADY_AFTER_STEPS)
    else:  # too short for a steady state: the whole loop
        steady = (result.tokens, result.seconds, result.steps)
    first, final = head_tail(result.losses)
    return {
        "loss_curve": result.losses,
        "first_loss": first,
        "final_loss": final,
        "steps": result.steps,
        "micro_steps_per_epoch": plan.micro_per_epoch,
        "examples": n_examples,
        "tokens": result.tokens,
        "tokens_per_s": result.tokens / max(result.seconds, 1e-9),
        "train_seconds": result.seconds,
        "steady_tokens_per_s": steady[0] / max(steady[1], 1e-9),
        "steady_seconds": steady[1],
        "steady_steps": steady[2],
        "steady_cpu_seconds": result.steady_cpu_seconds,
        "loop_started_at": result.started_at,
        "world_size": ctx.world_size,
        "engine": "deepspeed" if ctx.distributed else "torch",
    }


def enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    """`TrainConfig.gradient_checkpointing`: recompute each layer's activations in the backward pass
    (less memory, ~30% more compute). On an HF model (the policy, or a PRM's backbone), before LoRA and
    before the engine is built; the KV cache is off (it cannot be used while recomputing). Non-reentrant
    checkpointing, so gradients reach LoRA adapters and a value head whatever needs grad upstream."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x: the new name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    elif hasattr(model, "gradient_checkpointing_enable"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    else:
        raise TypeError(f"gradient_checkpointing needs a transformers model, not {type(model).__name__}")
    if getattr(model, "config", None) is not None:
        model.config.use_cache = False


def apply_lora(module: torch.nn.Module, lora: Any, task_type: str) -> torch.nn.Module:
    """Wrap `module` with peft LoRA adapters (merged back into plain weights on save)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        task_type=task_type,
    )
    return get_peft_model(module, config)


def replace_dir(tmp: str, final: str) -> None:
    """Move a finished output directory into place (the old one, if any, is removed first)."""
    if os.path.exists(final):
        shutil.rmtree(final)
    os.replace(tmp, final)
