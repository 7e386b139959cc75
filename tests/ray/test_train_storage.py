"""`train.storage_path`: a Ray Train job keeps its run state where the key says (here a file:// URI, the
way a pyarrow filesystem is named), mirrored by the job's path under run.root; the job's metrics and
models stay under run.root; the launcher reports the node each worker ran on. One TorchTrainer.fit
(~15-30 s on 2 cores)."""

from __future__ import annotations

import pytest

from conf.load import compose
from conf.schema import TrainConfig
from pipeline.prompting import PromptFormat
from pipeline.records import SFTExample
from trainers.job import ray_train_settings
from trainers.sft import train_sft

pytestmark = pytest.mark.ray


def test_a_job_writes_its_ray_train_state_under_train_storage_path(ray_session, tiny_dirs, tmp_path):
    fmt = PromptFormat()
    examples = [SFTExample(str(i), fmt.prompt(f"{i}+1"), f"{i}+1={i + 1}", (), 1.0, "gold") for i in range(8)]
    runs, store = tmp_path / "runs", tmp_path / "store"
    cfg = compose([f"run.root={runs}", f"train.storage_path=file://{store}"])
    local = runs / "r" / "ray_train"
    job = TrainConfig(num_workers=1, cpus_per_worker=1, max_steps=1, micro_batch_size=4)
    with ray_train_settings(cfg.train, cfg.run.root):
        m = train_sft(
            tiny_dirs.policy_dir, examples, str(runs / "r" / "policy"), job, str(local), name="sft-x"
        )

    # Ray Train's own files (its storage marker) under the URI, at <storage_path>/r/ray_train/<job name>
    assert (store / "r" / "ray_train" / "sft-x" / ".validate_storage_marker").is_file()
    assert not (local / "sft-x" / ".validate_storage_marker").exists()
    # what the loop reads stays under run.root: the metrics file, the model, the workers' node records
    assert (local / "sft-x" / "metrics.json").is_file() and (runs / "r" / "policy" / "config.json").is_file()
    node = ray_session.get_runtime_context().get_node_id()
    assert m["worker_nodes"].startswith("rank 0 on ") and f" {node[:8]} (CPU 1" in m["worker_nodes"]
    assert m["steps"] == 1
