"""Checks that keep the user documentation true to the code.

- every request field declared in ``junebug/api/schemas.py`` has a row in the HTTP API
  page (required fields marked as such);
- every error type in ``junebug/api/errors.py`` has a row with its status and description;
- every route registered on the Klein app is listed;
- every relative link in README.md and docs/ points at a file that exists.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from junebug.api import errors, schemas

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
HTTP_API = DOCS / "http-api.md"

#: Links to pages other people are still writing: reported as xfail while missing,
#: checked like any other link once the file exists.
PENDING_PAGES = {"docs/performance.md"}

METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}


def http_api_text() -> str:
    return HTTP_API.read_text(encoding="utf-8")


def table_rows(text: str, first_cell: str) -> list[str]:
    """Markdown table rows whose first cell is exactly ``first_cell``."""
    rows = []
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.lstrip().startswith("|") and cells and cells[0] == first_cell:
            rows.append(line)
    return rows


# -- request fields ------------------------------------------------------------------


def schema_fields() -> list[tuple[str, str, bool]]:
    """(schema name, field, required) for every documented request body."""
    found = []
    for name, schema in (
        ("CHANNEL_CREATE", schemas.CHANNEL_CREATE),
        ("MESSAGE_SEND", schemas.MESSAGE_SEND),
    ):
        required = set(schema.get("required", []))
        for field in schema["properties"]:
            found.append((name, field, field in required))
    return found


def test_channel_schemas_share_their_properties():
    # The page documents CHANNEL_PROPERTIES once, for create and modify alike.
    assert schemas.CHANNEL_CREATE["properties"] is schemas.CHANNEL_PROPERTIES
    assert schemas.CHANNEL_UPDATE["properties"] is schemas.CHANNEL_PROPERTIES
    assert "required" not in schemas.CHANNEL_UPDATE


@pytest.mark.parametrize(("schema", "field", "required"), schema_fields(), ids=lambda v: str(v))
def test_every_request_field_is_documented(schema, field, required):
    rows = table_rows(http_api_text(), f"`{field}`")
    assert rows, f"{schema}.{field} has no table row (| `{field}` | ...) in docs/http-api.md"
    if required:
        assert any("**required**" in row for row in rows), (
            f"{schema}.{field} is required but its row in docs/http-api.md does not say so"
        )


def test_nullable_fields_are_documented_as_nullable():
    text = http_api_text()
    for _, field, _ in schema_fields():
        spec = {**schemas.CHANNEL_PROPERTIES, **schemas.MESSAGE_SEND["properties"]}[field]
        kinds = spec.get("type")
        if isinstance(kinds, list) and "null" in kinds:
            rows = table_rows(text, f"`{field}`")
            assert any("null" in row.split("|")[2] for row in rows), (
                f"{field} accepts null; its type column in docs/http-api.md should say so"
            )


# -- error types ---------------------------------------------------------------------


def error_classes() -> list[type[errors.JunebugError]]:
    found, todo = [], [errors.JunebugError]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub.__module__ == errors.__name__:
                found.append(sub)
            todo.append(sub)
    return sorted(found, key=lambda cls: cls.__name__)


def test_there_are_error_classes_to_check():
    assert len(error_classes()) >= 10


@pytest.mark.parametrize("cls", error_classes(), ids=lambda cls: cls.__name__)
def test_every_error_type_is_documented_with_status_and_description(cls):
    error = cls("x")
    rows = table_rows(http_api_text(), f"`{error.type}`")
    assert rows, f"error type {error.type} ({cls.__name__}) is not in docs/http-api.md"
    assert any(f"| {error.status} |" in row and f"`{error.description}`" in row for row in rows), (
        f"docs/http-api.md has no row for {error.type} with status {error.status} "
        f"and description {error.description!r}"
    )


def test_body_validation_error_types_are_documented():
    text = http_api_text()
    for kind in ("invalid_body", "invalid_config", "generic error"):
        assert f"`{kind}`" in text, kind


# -- routes --------------------------------------------------------------------------


def registered_routes() -> list[str]:
    from junebug.api.app import JunebugApi

    api = JunebugApi(manager=None, backends=SimpleNamespace(config=None))
    routes = set()
    for rule in api.app.url_map.iter_rules():
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"<\1>", rule.rule)
        for method in sorted((rule.methods or set()) & METHODS):
            routes.add(f"{method} {path}")
    return sorted(routes)


def test_routes_are_found():
    assert "POST /channels/" in registered_routes()


@pytest.mark.parametrize("route", registered_routes())
def test_every_route_is_documented(route):
    assert f"`{route}`" in http_api_text(), f"route {route} is not in docs/http-api.md"


# -- links ---------------------------------------------------------------------------

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def relative_links() -> list[tuple[str, str]]:
    found = []
    for page in markdown_files():
        text = page.read_text(encoding="utf-8")
        # Links inside fenced code blocks are examples, not links.
        text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
        for target in LINK.findall(text):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue
            found.append((str(page.relative_to(ROOT)), target))
    return found


def test_the_docs_have_links_to_check():
    pages = {page for page, _ in relative_links()}
    assert "README.md" in pages and "docs/http-api.md" in pages


@pytest.mark.parametrize(("page", "target"), relative_links(), ids=lambda v: str(v))
def test_every_relative_link_resolves(page, target):
    path = target.split("#", 1)[0]
    resolved = ((ROOT / page).parent / path).resolve()
    name = str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(resolved)
    if name in PENDING_PAGES and not resolved.exists():
        pytest.xfail(f"{name} is still being written")
    assert resolved.exists(), f"{page} links to {target}, which does not exist"


@pytest.mark.parametrize("page", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_anchor_link_within_a_page_resolves(page):
    text = page.read_text(encoding="utf-8")
    anchors = {heading_anchor(h) for h in re.findall(r"^#+\s+(.*)$", text, flags=re.MULTILINE)}
    body = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    for target in LINK.findall(body):
        if target.startswith("#"):
            assert target[1:] in anchors, f"{page.name}: no heading for {target}"


def heading_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to -."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")
