"""The connector under pytest, against the in-process host (tests/nuntiq_testing.py)."""
from nuntiq_testing import TestHost  # first: it provides the modules componentize-py generates

import app
import pytest


def host():
    return TestHost("settings.example.json", fixtures="fixtures")


def test_a_row_maps_to_a_supplier_and_a_nameless_one_is_refused():
    supplier = app.read({"id": 7, "name": "Northwind", "active": False})
    assert (supplier.supplier_number, supplier.is_active) == ("S-7", False)
    with pytest.raises(ValueError):
        app.read({"id": 8, "name": " "})


def test_a_first_run_loads_every_row_and_sets_the_bad_one_aside():
    h = host()
    assert h.run(app.WitWorld().run)["fetched"] == 4
    assert sorted(n for n, _ in h.suppliers) == ["S-1001", "S-1002", "S-1004"]
    assert len(h.rejected) == 1
    assert h.cursor("suppliers") == "1004"


def test_a_second_run_asks_only_for_ids_after_the_cursor():
    h = host()
    h.run(app.WitWorld().run)
    h.respond("file:///v1/suppliers?after_id=1004", 200, '{"data": [{"id": 1005, "name": "Litware"}]}')
    assert h.run(app.WitWorld().run)["fetched"] == 1
    assert h.cursor("suppliers") == "1005"
    assert "after_id=1004" in h.requests[-1]
