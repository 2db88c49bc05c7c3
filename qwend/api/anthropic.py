"""Anthropic: POST /v1/messages (text, tools, streaming events). A translator, nothing more."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
