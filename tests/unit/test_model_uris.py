"""Model URIs: the four spellings parse, print back canonically, and bad ones name the problem."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loopline.core.errors import InvalidArgumentError
from loopline.core.models import MAX_VERSION, ModelURI

NAMES = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
ALIASES = NAMES.filter(lambda alias: not alias.isdigit())
VERSIONS = st.integers(min_value=1, max_value=MAX_VERSION)


@pytest.mark.parametrize(("text", "expected"), [
    ("models:/churn/7", ModelURI("churn", 7)),
    ("churn/7", ModelURI("churn", 7)),
    ("models:/churn@champion", ModelURI("churn", alias="champion")),
    ("churn@champion", ModelURI("churn", alias="champion")),
    ("models:/churn@latest", ModelURI("churn", alias="latest")),
    ("my.model_v-2/12", ModelURI("my.model_v-2", 12)),
    ("churn@v2", ModelURI("churn", alias="v2")),
])
def test_each_spelling_parses_to_the_same_reference(text: str, expected: ModelURI) -> None:
    assert ModelURI.parse(text) == expected


def test_latest_is_an_alias_meaning_the_highest_version() -> None:
    assert ModelURI.parse("churn@latest").is_latest
    assert not ModelURI.parse("churn@champion").is_latest
    assert not ModelURI.parse("churn/1").is_latest


def test_printing_gives_the_canonical_uri() -> None:
    assert str(ModelURI.parse("churn/7")) == "models:/churn/7"
    assert str(ModelURI.parse("churn@champion")) == "models:/churn@champion"


@pytest.mark.parametrize(("text", "problem"), [
    ("churn", "names neither a version"),
    ("models:/churn", "names neither a version"),
    ("churn/0", "names neither a version"),
    ("churn/007", "names neither a version"),
    ("churn/-1", "names neither a version"),
    ("churn/1.5", "names neither a version"),
    ("churn/ 1", "names neither a version"),
    (f"churn/{MAX_VERSION + 1}", "whole number from 1"),
    ("churn@", "must be 1-128 characters"),
    ("churn@42", "all digits"),
    ("churn@bad alias", "must be 1-128 characters"),
    ("@champion", "must be 1-128 characters"),
    ("/1", "must be 1-128 characters"),
    ("models:/a/b/1", "must be 1-128 characters"),
    ("churn/1@x", "must be 1-128 characters"),
    ("runs:/abc/model", "only the 'models:/' scheme"),
    ("models:churn/1", "only the 'models:/' scheme"),
    ("models://churn/1", "must be 1-128 characters"),
    ("", "names neither a version"),
    ("x" * 129 + "/1", "must be 1-128 characters"),
])
def test_bad_uris_are_refused_naming_the_text_the_problem_and_the_forms(
        text: str, problem: str) -> None:
    with pytest.raises(InvalidArgumentError, match=problem) as caught:
        ModelURI.parse(text)
    assert caught.value.field == "model"
    assert repr(text) in caught.value.message
    assert "expected models:/NAME/VERSION or models:/NAME@ALIAS" in caught.value.message


def test_a_non_text_uri_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="is not text"):
        ModelURI.parse(7)  # type: ignore[arg-type]


@pytest.mark.parametrize(("fields", "problem"), [
    ({"version": 1, "alias": "champion"}, "not both nor neither"),
    ({}, "not both nor neither"),
    ({"version": 0}, "whole number from 1"),
    ({"version": True}, "whole number from 1"),
    ({"alias": "12"}, "all digits"),
])
def test_building_a_uri_checks_it_names_exactly_one_valid_target(
        fields: dict[str, object], problem: str) -> None:
    with pytest.raises(InvalidArgumentError, match=problem):
        ModelURI("churn", **fields)  # type: ignore[arg-type]


def test_coerce_passes_a_uri_through_and_parses_text() -> None:
    uri = ModelURI("churn", 3)
    assert ModelURI.coerce(uri) is uri
    assert ModelURI.coerce("churn/3") == uri


@given(NAMES, VERSIONS)
def test_version_uris_round_trip_in_both_spellings(name: str, version: int) -> None:
    uri = ModelURI(name, version)
    assert ModelURI.parse(str(uri)) == uri
    assert ModelURI.parse(f"{name}/{version}") == uri
    assert str(uri) == f"models:/{name}/{version}"


@given(NAMES, ALIASES)
def test_alias_uris_round_trip_in_both_spellings(name: str, alias: str) -> None:
    uri = ModelURI(name, alias=alias)
    assert ModelURI.parse(str(uri)) == uri
    assert ModelURI.parse(f"{name}@{alias}") == uri


@given(st.text(max_size=40))
def test_any_text_parses_or_is_refused_with_an_invalid_argument(text: str) -> None:
    try:
        uri = ModelURI.parse(text)
    except InvalidArgumentError as exc:
        assert exc.field == "model"
    else:
        assert ModelURI.parse(str(uri)) == uri
