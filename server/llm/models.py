"""SQL tables of the LLM domain: providers, the models they serve, and the platform's default models."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from typecase.server.infra.sql import Base, JSONType, id_column, utcnow


class ProviderRow(Base):
    __tablename__ = "llm_providers"

    id: Mapped[str] = id_column()
    name: Mapped[str] = mapped_column(String(128), unique=True)
    type: Mapped[str] = mapped_column(String(32))  # openai_compatible | anthropic | local
    description: Mapped[str] = mapped_column(Text, default="")
    base_url: Mapped[str] = mapped_column(String(1024), default="")
    api_key_encrypted: Mapped[str | None] = mapped_column(Text)  # Fernet token; never returned
    api_key_hint: Mapped[str] = mapped_column(String(64), default="")  # the masked form shown to admins
    # Extra headers carry upstream credentials too: the values are sealed like the API key, the names are kept
    # beside them with masked values ({name: "****"}), which is what people are shown.
    extra_headers: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    extra_headers_encrypted: Mapped[str | None] = mapped_column(Text)  # Fernet token of {name: value}
    # NULL means "the platform default" (settings), so changing a default reaches every provider that kept it.
    connect_timeout_ms: Mapped[int | None] = mapped_column(Integer)
    first_token_timeout_ms: Mapped[int | None] = mapped_column(Integer)
    idle_timeout_ms: Mapped[int | None] = mapped_column(Integer)
    max_retries: Mapped[int | None] = mapped_column(Integer)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    create_time: Mapped[datetime] = mapped_column(default=utcnow)
    update_time: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ModelRow(Base):
    __tablename__ = "llm_models"

    id: Mapped[str] = id_column()
    provider_id: Mapped[str] = mapped_column(String(26), ForeignKey("llm_providers.id"), index=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    upstream_name: Mapped[str] = mapped_column(String(255), default="")
    type: Mapped[str] = mapped_column(String(16))  # llm | embedding | rerank
    description: Mapped[str] = mapped_column(Text, default="")
    context_length: Mapped[int] = mapped_column(Integer, default=0)
    max_output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    embedding_dimensions: Mapped[int] = mapped_column(Integer, default=0)
    online: Mapped[bool] = mapped_column(Boolean, default=True)
    max_concurrency: Mapped[int] = mapped_column(Integer, default=0)
    requests_per_minute: Mapped[int] = mapped_column(Integer, default=0)
    tokens_per_minute: Mapped[int] = mapped_column(BigInteger, default=0)
    fallback_model_ids: Mapped[list[str]] = mapped_column(JSONType, default=list)
    config: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # The admin's capability overrides ({"tools": false}); the provider type's defaults fill the rest.
    capabilities: Mapped[dict[str, bool] | None] = mapped_column(JSONType, default=dict)
    # "everyone", or "restricted": admins and the users granted the model (llm/access.py).
    access: Mapped[str] = mapped_column(String(16), default="everyone", server_default="everyone")
    create_time: Mapped[datetime] = mapped_column(default=utcnow)
    update_time: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class DefaultRow(Base):
    """One row per use ("chat", "flow", "knowledge_embedding", "title", "rerank")."""

    __tablename__ = "llm_defaults"

    purpose: Mapped[str] = mapped_column(String(32), primary_key=True)
    model_id: Mapped[str] = mapped_column(String(26), default="")
    update_time: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
