"""Self-Rewarding baseline training: DPO on `PreferencePair`s with TRL's `DPOTrainer`.

HF policy directory + pairs -> a new HF directory (safetensors, tokenizer included) that loads with a
plain `from_pretrained`. Runs through `run_training_job` like the other trainers:
- num_workers >= 1: a Ray Train job; TRL's Trainer (through accelerate) joins the process group Ray Train
  set up. On GPU it runs DeepSpeed with `build_ds_config` minus its optimizer and scheduler (the HF
  Trainer builds those from the same TrainConfig). On CPU accelerate cannot run DeepSpeed (it enables
  DeepSpeed only for accelerator devices), so CPU workers train data-parallel with DDP over gloo and
  `zero_stage` is ignored (logged); metrics say which ("engine": deepspeed | ddp).
- num_workers == 0: in this process, plain torch ("engine": torch).

The reference model is TRL's default: a frozen copy of the starting policy, loaded again from `base_dir`
(with LoRA, the same model with its adapters disabled). Loss: the sigmoid DPO loss with temperature
`beta`, on the solution tokens (TRL appends EOS to chosen and rejected). Metrics come back through the
job's JSON file: loss_curve, first_loss, final_loss (10% head/tail means, as `engine.summary`), the
same for the reward accuracy (share of pairs whose implicit reward ranks chosen above rejected) and
the reward margin (beta * log-ratio difference), steps, train_seconds, job_seconds, out_dir.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import sys
from typing import Any

from pipeline.baselines import PreferencePair
from pipeline.progress import is_quiet
from trainers.ds_config import build_ds_config, use_bf16
from trainers.engine import replace_dir
from trainers.job import run_training_job
from trainers.worker import train_config, worker_context, write_metrics

log = logging.getLogger(__name__)


def _head_tail(curve: list[float]) -> tuple[float | None, float | None]:
    if not curve:
        return None, None
    k = max(1, len(curve) // 10)
    return sum(curve[:k]) / k, sum(curve[-k:]) / k


def _checkpointing_args(config_cls: Any, enabled: bool) -> dict:
    """TrainingArguments for activation (gradient) checkpointing, under the name this transformers has
    (`activation_checkpointing` since 5.2x, `gradient_checkpointing` before)."""
    names = {f.name for f in dataclasses.fields(config_cls)}
    name = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    return {name: enabled, f"{name}_kwargs": {"use_reentrant": False} if enabled else None}


def _dpo_args(cfg: Any, config: dict, ctx: Any, scratch: str) -> tuple[bool, Any]:
    """(uses DeepSpeed, TRL DPOConfig) for this worker."""
    from trl import DPOConfig

    ds = None
    if ctx.distributed and cfg.use_gpu:
        # The HF Trainer creates the optimizer and LR schedule from the arguments below; DeepSpeed gets
        # the ZeRO stage, precision and batch shape (which must equal the arguments).
        ds = build_ds_config(cfg, world_size=ctx.world_size, total_steps=None)
        del ds["optimizer"], ds["scheduler"]
    elif ctx.distributed and cfg.zero_stage > 0 and ctx.rank == 0:
        log.warning("DPO on CPU workers runs DDP: zero_stage=%d is not applied", cfg.zero_stage)
    return ds is not None, DPOConfig(
        output_dir=scratch,
        per_device_train_batch_size=cfg.micro_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.lr,
        weight_decay=cfg.weight_decay,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps if cfg.max_steps > 0 else -1,
        warmup_steps=cfg.warmup_ratio,  # a float < 1 is a share of the steps (transformers 5)
        lr_scheduler_type="linear",
        max_grad_norm=cfg.max_grad_norm if cfg.max_grad_norm > 0 else 0.0,
        seed=cfg.seed,
        beta=config["beta"],
        max_length=cfg.max_length,
        bf16=use_bf16(cfg.bf16, bool(cfg.use_gpu)),
        **_checkpointing_args(DPOConfig, bool(cfg.gradient_checkpointing)),  # the Trainer enables it
        use_cpu=not cfg.use_gpu,  # on CPU workers accelerate picks MULTI_CPU (DDP over gloo)
        deepspeed=ds,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
    )


def _progress_callback(name: str) -> Any:
    """Rank 0's progress line for the HF Trainer (`pipeline.progress.Progress`: done/total steps, rate,
    ETA, loss), as `trainers.engine.fit` prints for SFT and the PRM; the total is the Trainer's max_steps."""
    from transformers import TrainerCallback

    from pipeline.progress import Progress

    class ProgressCallback(TrainerCallback):
        def __init__(self) -> None:
            self.bar: Progress | None = None
            self.losses: list[float] = []

        def on_train_begin(self, args, state, control, **kwargs):
            self.bar = Progress(name, int(state.max_steps), "steps", stream=sys.stderr, interval=15.0)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.bar is not None and logs and "loss" in logs:
                self.losses.append(float(logs["loss"]))
                self.bar.postfix["loss"] = round(self.losses[-1], 4)

        def on_step_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.set(int(state.global_step))

        def on_train_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                first, final = _head_tail(self.losses)
                self.bar.close("no logged loss" if first is None else f"loss {first:.4g} -> {final:.4g}")

    return ProgressCallback()


def dpo_worker(config: dict) -> None:
    """Ray Train worker loop (also called in-process): DPO, rank 0 saves `out_dir` and the metrics."""
    import torch
    from datasets import Dataset, disable_progress_bars
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback
    from trl import DPOTrainer

    ctx = worker_context(config)
    if is_quiet():  # TRL maps the pairs through `datasets` (tokenize, truncate): one bar per map
        disable_progress_bars()
    cfg = train_config(config)
    torch.manual_seed(cfg.seed)
    remote = config["trust_remote_code"]
    tokenizer = AutoTokenizer.from_pretrained(config["base_dir"], trust_remote_code=remote)
    model = AutoModelForCausalLM.from_pretrained(
        config["base_dir"], dtype=torch.float32, trust_remote_code=remote, use_safetensors=True
    )
    if cfg.gradient_checkpointing:  # the Trainer turns it on (DPOConfig); the KV cache cannot be used with it
        model.config.use_cache = False
    peft_config = None
    if cfg.lora.enabled:
        from peft import LoraConfig

        lora = cfg.lora
        peft_config = LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=list(lora.target_modules),
            task_type="CAUSAL_LM",
        )
    out_dir = config["out_dir"]
    scratch = f"{out_dir}.trainer-{os.getpid()}"
    deepspeed, args = _dpo_args(cfg, config, ctx, scratch)
    trainer = DPOTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(config["pairs"]),
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    trainer.remove_callback(PrinterCallback)  # it prints every step's log dict; the metrics file keeps them
    if ctx.rank == 0:
        trainer.add_callback(_progress_callback(config["name"]))
    output = trainer.train()

    tmp = f"{out_dir}.tmp-{os.getpid()}"
    if deepspeed and cfg.zero_stage == 3:
        trainer.save_model(tmp)  # every rank: gathers the ZeRO-3 partitions, rank 0 writes
    elif ctx.rank == 0:
        module = trainer.accelerator.unwrap_model(trainer.model)
        module = module.merge_and_unload() if cfg.lora.enabled else module
        module.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    if ctx.rank != 0:
        return
    args_file = os.path.join(tmp, "training_args.bin")  # a pickle the Trainer adds; not part of a model
    if os.path.exists(args_file):
        os.remove(args_file)
    replace_dir(tmp, out_dir)
    logs = [h for h in trainer.state.log_history if "loss" in h and "rewards/accuracies" in h]
    curves = {
        "loss": [float(h["loss"]) for h in logs],
        "reward_accuracy": [float(h["rewards/accuracies"]) for h in logs],
        "reward_margin": [float(h["rewards/margins"]) for h in logs],
    }
    metrics: dict[str, Any] = {"loss_curve": curves["loss"]}
    for name, curve in curves.items():
        metrics[f"first_{name}"], metrics[f"final_{name}"] = _head_tail(curve)
    metrics.update(
        reward_accuracy_curve=curves["reward_accuracy"],
        reward_margin_curve=curves["reward_margin"],
        steps=int(output.global_step),
        pairs=len(config["pairs"]),
        train_seconds=float(output.metrics.get("train_runtime", 0.0)),
        world_size=ctx.world_size,
        engine="deepspeed" if deepspeed else ("ddp" if ctx.distributed else "torch"),
        beta=config["beta"],
        out_dir=out_dir,
    )
    write_metrics(config["metrics_path"], metrics)
    shutil.rmtree(scratch, ignore_errors=True)  # the Trainer's output_dir; nothing is saved there


def train_dpo(
    base_dir: str,
    pairs: list[PreferencePair],
    out_dir: str,
    train_cfg: Any,
    storage_dir: str,
    name: str = "dpo",
    beta: float = 0.1,
    trust_remote_code: bool = False,
) -> dict:
    """DPO-train the causal LM in `base_dir` on `pairs`; write `out_dir`; return the job's metrics.

    `train_cfg` is a `TrainConfig` (lr, epochs or max_steps, micro_batch_size = pairs per worker step,
    num_workers: 0 in-process, >= 1 Ray Train + DeepSpeed). Metrics: see the module docstring.
    """
    if not pairs:
        raise ValueError("train_dpo got no preference pairs (Self-Rewarding found no pair above min_margin)")
    if (
        train_cfg.lora.enabled
        and train_cfg.zero_stage == 3
        and train_cfg.num_workers > 0
        and train_cfg.use_gpu
    ):
        raise ValueError("DPO with LoRA needs zero_stage <= 2 (the merge on save needs full parameters)")
    loop_config = {
        "base_dir": os.path.abspath(base_dir),
        "out_dir": os.path.abspath(out_dir),
        "pairs": [{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in pairs],
        "beta": float(beta),
        "trust_remote_code": trust_remote_code,
        "name": name,
    }
    return run_training_job(dpo_worker, loop_config, train_cfg, name, storage_dir)
