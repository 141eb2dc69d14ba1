"""Jira credentials from a Kubernetes Secret (pure: the Secret body as the API returns it)."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from selfheal.clients.jira import (
    JiraCredentials,
    JiraCredentialsError,
    credentials_from_secret,
    from_settings,
    secret_ref,
)
from selfheal.settings import Settings


def _secret(**data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"namespace": "selfheal-system", "name": "jira"},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def test_username_and_token_mean_basic_auth() -> None:
    c = credentials_from_secret(_secret(username="bot@example.com", token="t0k"))
    assert c == JiraCredentials(username="bot@example.com", token="t0k")
    assert c.kind == "basic"


def test_token_alone_means_a_bearer_token() -> None:
    c = credentials_from_secret(_secret(token="pat-123"))
    assert c.username is None
    assert c.kind == "bearer"
    assert c.token == "pat-123"


def test_the_trailing_newline_of_echo_piped_to_base64_is_dropped() -> None:
    c = credentials_from_secret(_secret(username="bot\n", token="t0k\n"))
    assert (c.username, c.token) == ("bot", "t0k")


def test_the_token_never_shows_in_repr() -> None:
    c = credentials_from_secret(_secret(username="bot", token="very-secret-value"))
    assert "very-secret-value" not in repr(c)
    assert "very-secret-value" not in str(c)


def test_a_missing_token_names_the_secret_and_the_key() -> None:
    with pytest.raises(JiraCredentialsError, match=r"selfheal-system/jira: key `token`"):
        credentials_from_secret(_secret(username="bot"))


def test_bad_base64_names_the_key_and_the_fix() -> None:
    body = _secret(username="bot", token="x")
    body["data"]["token"] = "%%%not-base64"
    with pytest.raises(
        JiraCredentialsError, match=r"data\.token is not valid base64.*--from-literal"
    ):
        credentials_from_secret(body, name="ops/jira-creds")


def test_a_colon_in_the_username_is_refused() -> None:
    with pytest.raises(JiraCredentialsError, match="username"):
        credentials_from_secret(_secret(username="a:b", token="t"))


def test_string_data_is_accepted_when_data_lacks_the_key() -> None:
    body = _secret(username="bot")
    body["stringData"] = {"token": "plain"}
    assert credentials_from_secret(body).token == "plain"


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("ops/jira", ("ops", "jira")),
        ("jira", ("selfheal-system", "jira")),
        (None, None),
    ],
)
def test_the_secret_reference_of_the_settings(
    ref: str | None, expected: tuple[str, str] | None
) -> None:
    assert secret_ref(Settings(jira_secret=ref)) == expected


def test_a_malformed_secret_reference_names_the_setting() -> None:
    with pytest.raises(JiraCredentialsError, match="jira_secret"):
        secret_ref(Settings(jira_secret="a/b/c"))


def test_no_url_means_no_client() -> None:
    assert from_settings(Settings(), credentials=None) is None
    jira = from_settings(
        Settings(jira_url="http://127.0.0.1:1/", jira_timeout=3.0), credentials=None
    )
    assert jira is not None
    assert (jira.url, jira.timeout) == ("http://127.0.0.1:1", 3.0)
