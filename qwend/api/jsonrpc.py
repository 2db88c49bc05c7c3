"""Seed 003: POST /create_session and JSON-RPC 2.0 over WS /ws/{session_id}. A translator, nothing more."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
