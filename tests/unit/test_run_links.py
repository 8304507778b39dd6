"""The hold and approve links: a token proves its run, action and expiry, and nothing else passes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from handlers.core.keys import run_key
from handlers.core.run_links import LinkRefusedError, make_link, read_token

KEY = b"k" * 32
RUN = ("/subscriptions/00000000-0000-0000-0000-00000000000a/resourceGroups/rg/providers/Microsoft.Maintenance/"
       "maintenanceConfigurations/mc-weekly/providers/Microsoft.Maintenance/applyUpdates/20261122020000")
NOW = datetime(2026, 11, 22, 1, 30, tzinfo=UTC)
CUTOFF = NOW + timedelta(minutes=20)


def token_of(url: str) -> tuple[str, str]:
    query = parse_qs(urlsplit(url).query)
    return query["run"][0], query["token"][0]


def test_a_link_names_its_action_and_run_and_reads_back() -> None:
    url = make_link(KEY, "https://app.example.test/", correlation_id=RUN, action="hold", expires=CUTOFF)
    assert url.startswith("https://app.example.test/api/maintenance/hold?run=")
    run, token = token_of(url)
    assert run == run_key(RUN)
    claims = read_token(KEY, token, run=run, action="hold", now=NOW)
    assert (claims.run, claims.action, claims.expires) == (run_key(RUN), "hold", CUTOFF)
    assert KEY.decode() not in url


@pytest.mark.parametrize(("change", "expected"), [
    (lambda run, token: (run, token[:-1] + ("A" if token[-1] != "A" else "B")), "not valid"),
    (lambda run, token: (run, token.split(".")[0] + "x." + token.split(".")[1]), "not valid"),
    (lambda run, token: (run, ""), "not valid"),
    (lambda run, token: (run, token + "." + token), "not valid"),
    (lambda run, token: (run_key(RUN.replace("2026112202", "2026112902")), token), "another run"),
    (lambda run, token: ("../" + run, token), "not valid"),
])
def test_a_changed_link_is_refused(change, expected: str) -> None:  # type: ignore[no-untyped-def]
    run, token = change(*token_of(make_link(KEY, "https://a", correlation_id=RUN, action="hold", expires=CUTOFF)))
    with pytest.raises(LinkRefusedError, match=expected):
        read_token(KEY, token, run=run, action="hold", now=NOW)


def test_a_link_is_refused_for_another_action_key_or_after_it_expires() -> None:
    run, token = token_of(make_link(KEY, "https://a", correlation_id=RUN, action="hold", expires=CUTOFF))
    with pytest.raises(LinkRefusedError, match="a hold link"):
        read_token(KEY, token, run=run, action="approve", now=NOW)
    with pytest.raises(LinkRefusedError, match="not from this app"):
        read_token(b"o" * 32, token, run=run, action="hold", now=NOW)
    with pytest.raises(LinkRefusedError, match="expired"):
        read_token(KEY, token, run=run, action="hold", now=CUTOFF)
    with pytest.raises(ValueError, match="action"):
        make_link(KEY, "https://a", correlation_id=RUN, action="delete", expires=CUTOFF)
