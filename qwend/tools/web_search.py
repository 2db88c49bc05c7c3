"""`web_search`: DuckDuckGo through `ddgs` (no key), or a SearXNG instance's JSON API when one is configured."""

from __future__ import annotations

import anyio
import httpx

from qwend.tools.base import ToolContext, ToolError, tool


@tool(timeout=20, group="web")
async def web_search(query: str, context: ToolContext, num_results: int = 5) -> list[dict[str, str]]:
    """Search the web and return a title, URL and snippet for each result.

    Args:
        query: What to search for.
        num_results: How many results to return (1 to 20).
    """
    if not query.strip():
        raise ToolError("query is empty")
    count = max(1, min(num_results, 20))
    settings = context.settings
    if settings.search_provider == "searxng":
        return await _searxng(settings.searxng_url, query, count, settings.fetch_timeout)
    return await anyio.to_thread.run_sync(_duckduckgo, query, count, settings.fetch_timeout, abandon_on_cancel=True)


def _duckduckgo(query: str, count: int, timeout: float) -> list[dict[str, str]]:
    from ddgs import DDGS
    from ddgs.exceptions import DDGSException

    try:
        hits = DDGS(timeout=int(timeout)).text(query, max_results=count, backend="duckduckgo")
    except DDGSException as exc:
        # ddgs wraps DNS failures, rate limits and changed pages alike; the model gets the reason, not a 500
        raise ToolError(f"web search failed (DuckDuckGo): {_first_line(exc)}") from None
    return [{"title": h.get("title", ""), "url": h.get("href", ""), "snippet": h.get("body", "")} for h in hits]


async def _searxng(base_url: str | None, query: str, count: int, timeout: float) -> list[dict[str, str]]:
    if not base_url:
        raise ToolError("search_provider is searxng but QWEND_SEARXNG_URL is not set")
    url = base_url.rstrip("/") + "/search"
    try:
        async with httpx.AsyncClient(timeout=timeout, trust_env=False) as client:
            response = await client.get(url, params={"q": query, "format": "json"})
            response.raise_for_status()
            hits = response.json().get("results", [])
    except (httpx.HTTPError, ValueError) as exc:
        raise ToolError(f"web search failed (SearXNG at {base_url}): {exc}") from None
    return [
        {"title": h.get("title", ""), "url": h.get("url", ""), "snippet": h.get("content", "")} for h in hits[:count]
    ]


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    if "DNS" in text or "resolv" in text:
        return "the search engine's address cannot be resolved (is this machine offline?)"
    return (text.splitlines() or [type(exc).__name__])[0][:300]
