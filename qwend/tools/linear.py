"""`search_linear_issues`: issues from Linear's GraphQL API (`LINEAR_API_KEY`), by text and workflow state."""

from __future__ import annotations

from typing import Any

import httpx

from qwend.tools.base import ToolContext, ToolError, tool

QUERY = """
query SearchIssues($filter: IssueFilter, $first: Int) {
  issues(filter: $filter, first: $first, orderBy: updatedAt) {
    nodes {
      identifier title description url priority updatedAt
      state { name }
      assignee { name }
      team { key }
    }
  }
}
"""


@tool(timeout=20, needs="linear_api_key")
async def search_linear_issues(
    context: ToolContext, query: str | None = None, state: str | None = None, limit: int = 10
) -> list[dict[str, Any]]:
    """Search Linear issues by text and/or workflow state.

    Args:
        query: Words to look for in issue titles and descriptions.
        state: A workflow state name, for example "In Progress", "Todo" or "Done".
        limit: Most issues to return (1 to 50).
    """
    settings = context.settings
    if settings.linear_api_key is None:
        raise ToolError("Linear is not configured: set LINEAR_API_KEY to a Linear personal API key")
    variables = {"filter": issue_filter(query, state), "first": max(1, min(limit, 50))}
    try:
        async with httpx.AsyncClient(timeout=15, trust_env=False) as client:
            response = await client.post(
                settings.linear_api_url,
                json={"query": QUERY, "variables": variables},
                headers={"Authorization": settings.linear_api_key.get_secret_value()},
            )
    except httpx.HTTPError as exc:
        raise ToolError(f"Linear API unreachable: {exc}") from None
    try:
        body = response.json()
    except ValueError:
        raise ToolError(f"Linear API answered {response.status_code} without JSON") from None
    if body.get("errors"):
        raise ToolError("Linear API error: " + "; ".join(e.get("message", "?") for e in body["errors"]))
    if response.status_code != 200:
        raise ToolError(f"Linear API answered {response.status_code}")
    return [_issue(node) for node in body["data"]["issues"]["nodes"]]


def issue_filter(query: str | None, state: str | None) -> dict[str, Any]:
    conditions: dict[str, Any] = {}
    if query:
        conditions["or"] = [
            {"title": {"containsIgnoreCase": query}},
            {"description": {"containsIgnoreCase": query}},
        ]
    if state:
        conditions["state"] = {"name": {"eqIgnoreCase": state}}
    return conditions


def _issue(node: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": node.get("identifier"),
        "title": node.get("title"),
        "state": (node.get("state") or {}).get("name"),
        "assignee": (node.get("assignee") or {}).get("name"),
        "priority": node.get("priority"),
        "url": node.get("url"),
        "updated_at": node.get("updatedAt"),
        "description": (node.get("description") or "")[:500],
    }
