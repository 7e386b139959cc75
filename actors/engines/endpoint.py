"""EndpointEngine: the policy served by an OpenAI-compatible HTTP server (vLLM, SGLang, TGI, OpenAI).

One HTTP request per job (`n` samples of one prompt, with the job's seed), at most
`endpoint.max_concurrency` in flight (a thread pool). Completions API by default: the prompt is rendered
here exactly as the HF PolicyActor renders it (chat-style backbones need a local tokenizer for the
chat template: `tokenizer_dir`). With `use_chat` the chat completions API is used instead and the server
applies its own template; the partial solution is sent as an assistant turn to continue
(`continue_final_message`, a vLLM extension).

Failures: 429, 5xx, timeouts and connection errors are retried `max_retries` times with exponential
backoff (`backoff_s * 2 ** (k - 1)` before retry k); other HTTP errors (401 wrong key, 400 prompt too
long, 404 unknown model) and malformed replies are not. Either way the caller gets one `EndpointError`
whose message is one line: `POST http://HOST/v1/completions: connection refused after 3 tries`.
The key is read from the environment variable named by `endpoint.api_key_env`; it never enters a
config, a message or a log.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any

from actors.engines.text import Job, Sampled, SamplingEngine, chat_messages, completion_prompt
from pipeline.prompting import PromptFormat

log = logging.getLogger(__name__)

NO_KEY = "EMPTY"  # what local servers without --api-key accept; the openai client insists on some key
INSTALL = 'pip install "restmcts[endpoint]"  (or: pip install "openai>=1.40")'


class EndpointError(RuntimeError):
    """A request to the policy endpoint failed for good; the message is one line naming the URL."""


def _one_line(text: Any, limit: int = 160) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _connection_reason(exc: BaseException) -> str:
    """'connection refused' or the innermost cause of a connection error, on one line."""
    inner: BaseException | None = exc
    while inner is not None:
        if isinstance(inner, ConnectionRefusedError) or "refused" in str(inner).lower():
            return "connection refused"
        if inner.__cause__ is None:
            break
        inner = inner.__cause__
    return f"connection error ({_one_line(inner or exc, 100)})"


class EndpointEngine(SamplingEngine):
    """StepProposer over HTTP. `backbone` is a BackboneConfig, `endpoint` an EndpointConfig."""

    def __init__(self, backbone: Any, endpoint: Any, tokenizer_dir: str | None = None):
        try:
            import openai
        except ImportError as e:
            raise EndpointError(f"policy.engine=endpoint needs the openai package: {INSTALL}") from e
        self._openai = openai
        self.cfg = endpoint
        self.fmt = PromptFormat.from_backbone(backbone)
        self.max_tokens = int(backbone.max_step_tokens)
        self.solution_tokens = int(backbone.max_solution_tokens)
        self.base_url = str(endpoint.base_url).rstrip("/")
        self.tokenizer = None
        if self.fmt.style == "chat" and not endpoint.use_chat:
            if not tokenizer_dir:
                raise EndpointError(
                    "a chat-style backbone on the completions API needs a local tokenizer for its chat "
                    "template: pass tokenizer_dir, or set policy.endpoint.use_chat=true"
                )
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(
                tokenizer_dir, trust_remote_code=bool(backbone.trust_remote_code)
            )
        self.client = openai.OpenAI(
            base_url=self.base_url,
            api_key=self._api_key(),
            timeout=float(endpoint.timeout_s),
            max_retries=0,  # retries are ours: counted, logged, one error line at the end
        )
        self.pool = ThreadPoolExecutor(
            max_workers=int(endpoint.max_concurrency), thread_name_prefix="endpoint"
        )
        self._model = str(endpoint.model)
        self._model_lock = threading.Lock()

    def _api_key(self) -> str:
        name = str(self.cfg.api_key_env)
        if not name:
            return NO_KEY
        key = os.environ.get(name, "")
        if not key:
            raise EndpointError(
                f"policy.endpoint.api_key_env={name} but the environment variable {name} is empty or unset"
            )
        return key

    # ------------------------------------------------------------------------------ lifecycle

    def reload(self, model_dir: str) -> None:
        """The server owns the weights; nothing to load here (self-training is refused at config time)."""
        log.info("endpoint engine: reload(%s) ignored; %s serves its own model", model_dir, self.base_url)

    def release(self) -> None:
        """Nothing is held locally."""

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()

    def info(self) -> dict[str, Any]:
        return {"engine": "endpoint", "base_url": self.base_url, "model": self._model, "pid": os.getpid()}

    # ------------------------------------------------------------------------------ serving

    def _sample(self, jobs: Sequence[Job]) -> list[Sampled]:
        """All jobs concurrently (bounded by the pool); the first failure cancels the rest and is raised."""
        if not jobs:
            return []
        model = self.model_name()
        futures = [self.pool.submit(self._one, job, model) for job in jobs]
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        for f in pending:
            f.cancel()
        for f in futures:
            if f in done and f.exception() is not None:
                raise f.exception()  # type: ignore[misc]
        return [f.result() for f in futures]

    def model_name(self) -> str:
        """The configured model, or the first one the server lists (asked once)."""
        with self._model_lock:
            if not self._model:
                url = f"GET {self.base_url}/models"
                raw = self._with_retries(url, lambda: self.client.models.with_raw_response.list())
                data = self._json(url, raw)
                try:
                    self._model = str(data["data"][0]["id"])
                except (KeyError, IndexError, TypeError) as e:
                    raise EndpointError(f"{url}: malformed reply (no model id): {_one_line(data)}") from e
            return self._model

    def _one(self, job: Job, model: str) -> Sampled:
        common = {
            "model": model,
            "n": job.n,
            "temperature": job.temperature,
            "max_tokens": job.max_tokens or self.max_tokens,
            "stop": [self.fmt.delimiter],
            "seed": job.seed,
        }
        if self.cfg.use_chat:
            url = f"POST {self.base_url}/chat/completions"
            messages = chat_messages(job, self.fmt)
            extra = (
                {"continue_final_message": True, "add_generation_prompt": False}
                if messages[-1]["role"] == "assistant"
                else None
            )
            call = self.client.chat.completions.with_raw_response.create
            raw = self._with_retries(url, lambda: call(messages=messages, extra_body=extra, **common))
        else:
            url = f"POST {self.base_url}/completions"
            prompt = completion_prompt(job, self.fmt, self.tokenizer)
            call = self.client.completions.with_raw_response.create
            raw = self._with_retries(url, lambda: call(prompt=prompt, **common))
        return self._parse(url, self._json(url, raw), job.n)

    def _with_retries(self, url: str, call: Callable[[], Any]) -> Any:
        """`call()` with retries on 429/5xx/timeouts/connection errors; EndpointError otherwise."""
        oa = self._openai
        tries = int(self.cfg.max_retries) + 1
        reason = ""
        for attempt in range(1, tries + 1):
            try:
                return call()
            except oa.APIStatusError as e:
                status = e.response.status_code
                detail = _one_line(e.response.text, 120)
                if status != 429 and status < 500:
                    hint = (
                        f" (check the key in ${self.cfg.api_key_env or '<unset>'})" if status == 401 else ""
                    )
                    raise EndpointError(f"{url}: HTTP {status}{hint}: {detail}") from None
                reason = f"HTTP {status}: {detail}"
            except oa.APITimeoutError:
                reason = f"no reply within {self.cfg.timeout_s} s"
            except oa.APIConnectionError as e:
                reason = _connection_reason(e)
            if attempt < tries:
                wait_s = float(self.cfg.backoff_s) * 2 ** (attempt - 1)
                log.warning("%s: %s (try %d of %d); retrying in %.2f s", url, reason, attempt, tries, wait_s)
                time.sleep(wait_s)
        raise EndpointError(f"{url}: {reason} after {tries} tries")

    @staticmethod
    def _json(url: str, raw: Any) -> Any:
        text = raw.http_response.text
        try:
            return json.loads(text)
        except ValueError:
            raise EndpointError(f"{url}: malformed reply (not JSON): {_one_line(text, 120)!r}") from None

    def _parse(self, url: str, data: Any, n: int) -> Sampled:
        """n texts (ordered by choice index) and usage.completion_tokens from a (chat) completions reply.
        A sample ended for good when it hit the token limit, or stopped with `stop_reason` null (EOS; a
        vLLM field); servers without `stop_reason` leave `ended` unknown."""
        try:
            choices = sorted(data["choices"], key=lambda c: int(c["index"]))
            if self.cfg.use_chat:
                texts = tuple(c["message"]["content"] or "" for c in choices)
            else:
                texts = tuple(c["text"] for c in choices)
            tokens = int(data["usage"]["completion_tokens"])
            ended = tuple(
                c.get("finish_reason") == "length" or ("stop_reason" in c and c["stop_reason"] is None)
                for c in choices
            )
        except (KeyError, TypeError, ValueError) as e:
            raise EndpointError(
                f"{url}: malformed reply ({type(e).__name__} {e}): {_one_line(data)}"
            ) from None
        if len(texts) != n or not all(isinstance(t, str) for t in texts):
            raise EndpointError(
                f"{url}: malformed reply (asked for {n} texts, got {len(texts)}): {_one_line(data)}"
            )
        known = all(c.get("finish_reason") == "length" or "stop_reason" in c for c in choices)
        return Sampled(texts=texts, tokens=tokens, ended=ended if known else ())
