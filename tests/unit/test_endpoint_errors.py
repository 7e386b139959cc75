"""EndpointEngine against real sockets: a dead port, and small stdlib HTTP servers on 127.0.0.1 that
answer 401, garbage, 429-then-200, or never. Every failure is one EndpointError line, within a bound."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

pytest.importorskip("openai")

from actors.engines.endpoint import EndpointEngine, EndpointError  # noqa: E402
from conf.schema import BackboneConfig, EndpointConfig  # noqa: E402
from pipeline.search.protocol import Critique, Propose  # noqa: E402

KEY_ENV = "RESTMCTS_TEST_ENDPOINT_KEY"
GOOD_KEY = "sk-test-right-key"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _completion(n: int, texts: list[str] | None = None) -> dict:
    texts = texts or [f"{i}+1={i + 1}" for i in range(n)]
    choices = [{"index": i, "text": t, "finish_reason": "stop"} for i, t in enumerate(texts)]
    return {"id": "c", "object": "text_completion", "choices": choices, "usage": {"completion_tokens": 7 * n}}


class Server:
    """A real HTTP server in a thread; `replies` is consumed one per POST: (status, body bytes)."""

    def __init__(self, replies: list[tuple[int, bytes]], hang: threading.Event | None = None):
        self.replies = list(replies)
        self.requests: list[dict] = []
        self.auth: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (stdlib name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                server.requests.append(json.loads(body))
                server.auth.append(self.headers.get("Authorization", ""))
                if hang is not None:
                    hang.wait(30)  # released by the test; bounded so a broken test cannot wedge the run
                    return
                status, payload = server.replies.pop(0) if server.replies else (500, b"no more replies")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self):  # noqa: N802 (stdlib name)
                payload = json.dumps({"object": "list", "data": [{"id": "served-model"}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve() -> Iterator:
    servers: list[Server] = []

    def start(replies, hang=None) -> Server:
        servers.append(Server(replies, hang))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def _engine(url: str, **kw) -> EndpointEngine:
    cfg = EndpointConfig(base_url=url, model="m", timeout_s=5.0, max_retries=2, backoff_s=0.01, **kw)
    return EndpointEngine(BackboneConfig(max_step_tokens=16), cfg)


REQ = [Propose(question="1+1", steps=("1+0=1",), n=2, temperature=0.7, seed=11)]


def _one_line_error(excinfo, *parts: str) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg and GOOD_KEY not in msg and "wrong" not in msg, msg
    for part in parts:
        assert part in msg, msg
    return msg


def test_dead_port_fails_with_one_line_after_retries():
    url = f"http://127.0.0.1:{_free_port()}/v1"
    engine = _engine(url)
    t0 = time.monotonic()
    with pytest.raises(EndpointError) as e:
        engine.propose(REQ)
    assert time.monotonic() - t0 < 10
    msg = _one_line_error(e, f"POST {url}/completions", "connection refused", "after 3 tries")
    assert msg == f"POST {url}/completions: connection refused after 3 tries"
    engine.close()


def test_wrong_key_is_401_without_retries(serve, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-wrong")
    server = serve([(401, b'{"error": {"message": "Unauthorized"}}')] * 3)
    engine = _engine(server.url, api_key_env=KEY_ENV)
    with pytest.raises(EndpointError) as e:
        engine.propose(REQ)
    _one_line_error(e, "HTTP 401", f"${KEY_ENV}", "Unauthorized")
    assert len(server.requests) == 1  # not retried
    assert server.auth == ["Bearer sk-wrong"]
    assert "sk-wrong" not in str(e.value)
    engine.close()


def test_unset_key_variable_is_a_clear_error(monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(EndpointError, match=f"{KEY_ENV} is empty or unset"):
        _engine("http://127.0.0.1:1/v1", api_key_env=KEY_ENV)


def test_chat_backbone_on_completions_needs_a_tokenizer():
    with pytest.raises(EndpointError, match="needs a local tokenizer"):
        EndpointEngine(BackboneConfig(prompt_format="chat"), EndpointConfig(model="m"))


def test_garbage_reply_is_a_clear_error(serve):
    server = serve([(200, b"{not json at all")])
    engine = _engine(server.url)
    with pytest.raises(EndpointError) as e:
        engine.propose(REQ)
    _one_line_error(e, "malformed reply", "not JSON")
    assert len(server.requests) == 1
    engine.close()


def test_json_of_the_wrong_shape_is_a_clear_error(serve):
    server = serve(
        [(200, json.dumps({"choices": "nope"}).encode()), (200, json.dumps(_completion(1)).encode())]
    )
    engine = _engine(server.url)
    with pytest.raises(EndpointError) as e:
        engine.propose(REQ)
    _one_line_error(e, "malformed reply")
    with pytest.raises(EndpointError) as e:
        engine.propose(REQ)  # n=2 asked, one text back
    _one_line_error(e, "malformed reply", "asked for 2 texts, got 1")
    engine.close()


def test_429_then_200_is_retried_and_succeeds(serve, monkeypatch):
    monkeypatch.setenv(KEY_ENV, GOOD_KEY)
    reply = _completion(2, ["2+0=2\nThe answer is 2", "  1+1=2  "])
    server = serve([(429, b'{"error": "slow down"}'), (503, b"busy"), (200, json.dumps(reply).encode())])
    engine = _engine(server.url, api_key_env=KEY_ENV)
    [proposal] = engine.propose(REQ)
    assert proposal.steps == ("2+0=2", "1+1=2")  # cut at the delimiter, stripped
    assert proposal.tokens == 14  # usage.completion_tokens
    assert len(server.requests) == 3
    sent = server.requests[-1]
    assert sent["prompt"] == "Q:1+1\n1+0=1\n"  # PromptFormat.prefix, as PolicyActor renders it
    assert (sent["n"], sent["temperature"], sent["seed"], sent["max_tokens"]) == (2, 0.7, 11, 16)
    assert sent["stop"] == ["\n"] and sent["model"] == "m"
    engine.close()


def test_model_name_is_asked_from_the_server_once(serve):
    server = serve([(200, json.dumps(_completion(2)).encode())] * 2)
    cfg = EndpointConfig(base_url=server.url, model="", backoff_s=0.01)
    engine = EndpointEngine(BackboneConfig(), cfg)
    engine.propose(REQ + REQ)
    assert [r["model"] for r in server.requests] == ["served-model"] * 2
    engine.close()


def test_critique_and_reflection_hint_are_rendered_like_policy_actor(serve):
    server = serve(
        [
            (200, json.dumps(_completion(1, [" unsolved, try 2*3"])).encode()),
            (200, json.dumps(_completion(1)).encode()),
        ]
    )
    engine = _engine(server.url)
    [verdict] = engine.critique([Critique(question="6", steps=("1+1=2",), want_reflection=True, seed=3)])
    assert verdict.solved is False and verdict.reflection == "try 2*3" and verdict.tokens == 7
    assert server.requests[0]["prompt"].startswith("Q:6\n1+1=2\nIs the problem solved?")
    assert server.requests[0]["n"] == 1
    [greedy] = engine.propose([Propose("6", (), 3, 0.0, 5, reflection="multiply")])
    assert server.requests[1]["prompt"] == "Q:6\nHint: multiply\n"
    assert (server.requests[1]["temperature"], server.requests[1]["n"]) == (0.0, 1)  # greedy: one sample
    assert greedy.steps == ("0+1=1",) * 3 and greedy.tokens == 7
    engine.close()


def test_silent_server_times_out_with_one_line(serve):
    release = threading.Event()
    server = serve([], hang=release)
    cfg = EndpointConfig(base_url=server.url, model="m", timeout_s=0.5, max_retries=1, backoff_s=0.01)
    engine = EndpointEngine(BackboneConfig(), cfg)
    t0 = time.monotonic()
    try:
        with pytest.raises(EndpointError) as e:
            engine.propose(REQ)
    finally:
        release.set()
    assert time.monotonic() - t0 < 5
    _one_line_error(e, "no reply within 0.5 s after 2 tries")
    engine.close()


def test_make_engine_picks_by_policy_engine(tmp_path, tiny_dirs):
    from actors.engines import make_engine
    from actors.engines.hf import HFEngine
    from conf.schema import PolicyConfig

    hf = make_engine(tiny_dirs.policy_dir, BackboneConfig(), PolicyConfig(engine="hf"))
    assert isinstance(hf, HFEngine) and hf.info()["engine"] == "hf" and hf.model is not None
    hf.close()
    assert hf.model is None
    engine = make_engine(str(tmp_path / "absent"), BackboneConfig(), PolicyConfig(engine="endpoint"))
    assert isinstance(engine, EndpointEngine) and engine.info()["engine"] == "endpoint"
    engine.close()
    with pytest.raises(ValueError, match="unknown policy.engine"):
        make_engine(str(tmp_path), BackboneConfig(), PolicyConfig(engine="tgi"))


def _step_reply(text: str, tokens: int, stop_reason: str | None = "\n") -> tuple[int, bytes]:
    choice = {"index": 0, "text": text, "finish_reason": "stop", "stop_reason": stop_reason}
    return 200, json.dumps({"choices": [choice], "usage": {"completion_tokens": tokens}}).encode()


def test_whole_solutions_step_by_step_until_the_answer_line(serve):
    server = serve(
        [
            _step_reply("1+1=2", 4),
            _step_reply("", 1),  # a blank line: kept in the text, not a step
            _step_reply(" The answer is 2", 5),
            _step_reply("2+2=4", 4),
            _step_reply("", 1, stop_reason=None),  # EOS
        ]
    )
    engine = _engine(server.url)
    [sol] = engine.greedy_solve(["1+1"], max_steps=8)
    assert sol.steps == ("1+1=2", "The answer is 2") and sol.tokens == 10
    prompts = [r["prompt"] for r in server.requests]
    assert prompts == ["Q:1+1\n", "Q:1+1\n1+1=2\n", "Q:1+1\n1+1=2\n\n"]
    budget = BackboneConfig().max_solution_tokens
    assert [r["max_tokens"] for r in server.requests] == [budget, budget - 4, budget - 5]
    [[sample]] = engine.sample_solutions(["2+2"], n=1, temperature=0.7, seed=1)
    assert sample.steps == ("2+2=4",) and sample.tokens == 5  # ended at EOS
    engine.close()
