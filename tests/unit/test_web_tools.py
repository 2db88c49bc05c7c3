"""web_fetch (SSRF refusals, redirects, limits), web_search (offline error, SearXNG) and Linear, against real
local HTTP servers."""

import pytest

from qwend.runtime import Runtime
from qwend.settings import Settings
from tests.http_server import Reply, http_server

PAGE = "<html><head><title>Hello page</title><style>p{}</style></head><body><p>Hello   <b>world</b></p>" \
       "<script>alert(1)</script><p>Second line</p></body></html>"


def tools(tmp_path, **settings):
    return Runtime.create(Settings(_env_file=None, data_dir=tmp_path, **settings)).tools


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/", "http://localhost:5997/health", "http://[::1]/", "http://0.0.0.0/",
        "http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/", "http://192.168.1.1/", "http://100.64.0.1/",
        "http://2130706433/", "http://0x7f000001/", "http://[::ffff:127.0.0.1]/",
    ],
)
async def test_private_and_local_addresses_are_refused(tmp_path, url):
    result = await tools(tmp_path).invoke("web_fetch", {"url": url})
    assert result.success is False and "private or local address" in result.error


@pytest.mark.parametrize("url", ["file:///etc/passwd", "gopher://example.com/", "ftp://example.com/x"])
async def test_other_schemes_are_refused(tmp_path, url):
    result = await tools(tmp_path).invoke("web_fetch", {"url": url})
    assert result.success is False and "only http and https" in result.error


async def test_fetches_text_and_refuses_redirects_into_private_networks(tmp_path):
    routes = {
        "/page": lambda r: Reply(body=PAGE, headers={"Content-Type": "text/html; charset=utf-8"}),
        "/hop": lambda r: Reply(302, headers={"Location": "/page"}),
        "/to-loopback": lambda r: Reply(302, headers={"Location": "http://127.0.0.1:1/"}),
        "/to-metadata": lambda r: Reply(301, headers={"Location": "http://169.254.169.254/latest/"}),
        "/to-ten": lambda r: Reply(307, headers={"Location": "http://10.0.0.1/"}),
        "/binary": lambda r: Reply(body=b"\x00\x01", headers={"Content-Type": "application/octet-stream"}),
        "/big": lambda r: Reply(body="a" * 5000),
    }
    # the test server lives on 127.0.0.2, which is allowed here the way an intranet would be
    with http_server(routes, host="127.0.0.2") as (base, seen):
        registry = tools(tmp_path, fetch_allow_networks=["127.0.0.2/32"], fetch_max_bytes=1024)
        page = await registry.invoke("web_fetch", {"url": f"{base}/hop"})
        assert page.success, page.error
        assert page.result["url"] == f"{base}/page" and page.result["title"] == "Hello page"
        assert page.result["text"] == "Hello world\nSecond line" and page.result["status"] == 200
        assert seen[0].headers["Host"] == base.removeprefix("http://")
        for path in ("/to-loopback", "/to-metadata", "/to-ten"):
            refused = await registry.invoke("web_fetch", {"url": base + path})
            assert refused.success is False and "private or local address" in refused.error, path
        binary = await registry.invoke("web_fetch", {"url": f"{base}/binary"})
        assert binary.success is False and "application/octet-stream, not text" in binary.error
        big = await registry.invoke("web_fetch", {"url": f"{base}/big"})
        assert big.success and big.result["truncated"] is True and len(big.result["text"]) == 1024
        assert (await tools(tmp_path).invoke("web_fetch", {"url": f"{base}/page"})).success is False


async def test_web_search_without_network_is_a_clear_error(tmp_path):
    result = await tools(tmp_path).invoke("web_search", {"query": "Python programming tutorial", "num_results": 3})
    if result.success:  # a machine with internet: the seed's result shape
        assert {"title", "url", "snippet"} <= set(result.result[0])
    else:
        assert result.error.startswith("web search failed (DuckDuckGo)")


async def test_web_search_through_searxng(tmp_path):
    hits = {"results": [{"title": f"T{i}", "url": f"https://e.com/{i}", "content": f"S{i}"} for i in range(5)]}
    with http_server({"/search": lambda r: Reply(body=hits)}) as (base, seen):
        registry = tools(tmp_path, search_provider="searxng", searxng_url=base)
        result = await registry.invoke("web_search", {"query": "mlx apple", "num_results": 2})
    assert result.result == [{"title": "T0", "url": "https://e.com/0", "snippet": "S0"},
                             {"title": "T1", "url": "https://e.com/1", "snippet": "S1"}]
    assert "q=mlx+apple" in seen[0].path and "format=json" in seen[0].path


LINEAR_NODE = {
    "identifier": "ENG-12", "title": "Fix login", "description": "Users cannot log in", "url": "https://linear.app/x",
    "priority": 2, "updatedAt": "2026-11-20T10:00:00Z", "state": {"name": "In Progress"}, "assignee": {"name": "Ada"},
    "team": {"key": "ENG"},
}


async def test_linear_search_speaks_linear_graphql(tmp_path):
    with http_server({"/graphql": lambda r: Reply(body={"data": {"issues": {"nodes": [LINEAR_NODE]}}})}) as (base, seen):
        registry = tools(tmp_path, linear_api_key="lin_api_secret", linear_api_url=f"{base}/graphql")
        result = await registry.invoke("search_linear_issues", {"query": "login", "state": "In Progress", "limit": 5})
    assert result.result == [{
        "id": "ENG-12", "title": "Fix login", "state": "In Progress", "assignee": "Ada", "priority": 2,
        "url": "https://linear.app/x", "updated_at": "2026-11-20T10:00:00Z", "description": "Users cannot log in",
    }]
    import json

    sent = json.loads(seen[0].body)
    assert seen[0].headers["Authorization"] == "lin_api_secret"
    assert "issues(filter: $filter, first: $first" in sent["query"]
    assert sent["variables"] == {"first": 5, "filter": {
        "or": [{"title": {"containsIgnoreCase": "login"}}, {"description": {"containsIgnoreCase": "login"}}],
        "state": {"name": {"eqIgnoreCase": "In Progress"}},
    }}


async def test_linear_errors_are_reported_without_the_key(tmp_path):
    assert "set LINEAR_API_KEY" in (await tools(tmp_path).invoke("search_linear_issues", {})).error
    errors = {"errors": [{"message": "Authentication required, not authenticated"}]}
    with http_server({"/graphql": lambda r: Reply(400, body=errors)}) as (base, _):
        registry = tools(tmp_path, linear_api_key="lin_api_secret", linear_api_url=f"{base}/graphql")
        result = await registry.invoke("search_linear_issues", {"query": "x"})
    assert result.error == "Linear API error: Authentication required, not authenticated"
    assert "lin_api_secret" not in result.error


def test_a_tool_without_its_key_is_listed_and_callable_but_never_offered_to_a_model(tmp_path):
    keyless, keyed = tools(tmp_path / "a"), tools(tmp_path / "b", linear_api_key="lin_api_secret")
    assert "search_linear_issues" in keyless.names()  # /v1/tools lists it, a direct call says what is missing
    assert "search_linear_issues" not in [t.name for t in keyless.offered()]
    assert keyless.specs(["search_linear_issues", "get_current_datetime"]) == keyless.specs(["get_current_datetime"])
    assert "search_linear_issues" in [t.name for t in keyed.offered()]
    assert [s.name for s in keyed.specs(["search_linear_issues"])] == ["search_linear_issues"]
