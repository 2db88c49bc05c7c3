"""Seed 002 (the LM Studio proxy): /help, /models/load, /models/unload and the /chat routes. A translator."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
