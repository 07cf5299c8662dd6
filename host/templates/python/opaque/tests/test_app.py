"""The connector under pytest, against the in-process host (tests/nuntiq_testing.py)."""
from nuntiq_testing import TestHost  # first: it provides the modules componentize-py generates

import app
import pytest


def host():
    return TestHost("settings.example.json", fixtures="fixtures")


def test_a_row_maps_to_a_supplier_and_a_malformed_one_is_refused():
    supplier = app.read({"id": "S-7", "name": "Northwind", "active": False})
    assert (supplier.supplier_number, supplier.is_active) == ("S-7", False)
    with pytest.raises(ValueError):
        app.read({"id": "S-8", "active": "sometimes"})


def test_a_first_run_follows_the_feed_and_sets_the_bad_row_aside():
    h = host()
    assert h.run(app.WitWorld().run)["fetched"] == 4
    assert sorted(n for n, _ in h.suppliers) == ["S-1001", "S-1002", "S-1003"]
    assert len(h.rejected) == 1
    assert h.cursor("suppliers") == "tok-3"


def test_a_second_run_reads_from_the_committed_token():
    h = host()
    h.run(app.WitWorld().run)
    assert h.run(app.WitWorld().run)["fetched"] == 0
    assert h.cursor("suppliers") == "tok-4"
    assert h.requests[-1].endswith("since=tok-3")


def test_the_same_token_twice_is_refused_as_the_host_refuses_it():
    h = host()
    h.run(app.WitWorld().run)
    h.respond("file:///v1/suppliers/changes?since=tok-3", 200, '{"data": [], "next_token": "tok-3"}')
    with pytest.raises(AssertionError, match="CURSOR_REGRESSION"):
        h.run(app.WitWorld().run)
    assert h.cursor("suppliers") == "tok-3"
