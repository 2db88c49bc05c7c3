"""Ollama: /api/chat, /api/generate, /api/tags, /api/ps, /api/show, /api/pull. A translator, nothing more."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
