"""/docs and /redoc load everything from the daemon: no CDN, so they work offline."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from runyard.api.app import create_app
from runyard.app import Runyard
from runyard.config.loader import load_config

# Every URL a page names, in an attribute or in its script.
URL = re.compile(r"""(?:src|href|url|spec-url)\s*[=:]\s*["']([^"']+)["']""")


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    path = tmp_path / "runyard.toml"
    path.write_text('[daemon]\ndata_dir = "data"\n\n[tasks.hello]\nrun = "true"\n')
    with TestClient(create_app(Runyard(load_config(path, environ={}), environ={}))) as client:
        yield client


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_pages_name_no_external_url_and_every_asset_answers(
    client: TestClient, page: str
) -> None:
    response = client.get(page)
    assert response.status_code == 200
    html = response.text
    assert "http://" not in html and "https://" not in html and "//cdn" not in html
    urls = URL.findall(html)
    assets = [url for url in urls if url != "/openapi.json"]
    assert assets, html  # the check above must not pass on a page that names nothing
    for url in urls:
        assert url.startswith("/"), url
        answer = client.get(url)
        assert answer.status_code == 200, url
        assert len(answer.content) > 1000, url


def test_the_swagger_ui_scripts_are_the_real_ones(client: TestClient) -> None:
    script = client.get("/docs/assets/swagger-ui-bundle.js")
    assert script.headers["content-type"].startswith("text/javascript")
    assert b"SwaggerUIBundle" in script.content
    assert client.get("/docs/assets/swagger-ui.css").headers["content-type"].startswith("text/css")


def test_an_unknown_asset_is_a_clear_404(client: TestClient) -> None:
    missing = client.get("/docs/assets/nope.js")
    assert missing.status_code == 404
    assert "nope.js" in missing.json()["detail"]
