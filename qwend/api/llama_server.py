"""Seed 004 (the llama-cpp-python server): /models, /setModel, /chat/completions, /restore_cache."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
