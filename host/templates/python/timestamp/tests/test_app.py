"""The connector under pytest, against the in-process host (tests/nuntiq_testing.py)."""
from nuntiq_testing import TestHost  # first: it provides the modules componentize-py generates

import app
import pytest


def host():
    return TestHost("settings.example.json", fixtures="fixtures")


def test_a_row_maps_to_a_supplier_and_a_bad_date_is_refused():
    updated_at, supplier = app.read({"id": "S-1", "name": "Northwind", "active": False,
                                     "updated_at": "2024-05-01T11:00:00+02:00"})
    assert app.iso(updated_at) == "2024-05-01T09:00:00Z"
    assert (supplier.supplier_number, supplier.is_active) == ("S-1", False)
    with pytest.raises(ValueError, match="not a timestamp"):
        app.read({"id": "S-2", "name": "x", "updated_at": "yesterday"})


def test_a_first_run_loads_every_page_and_sets_the_bad_row_aside():
    h = host()
    h.params["since_override"] = "2024-01-01T00:00:00Z"
    result = h.run(app.WitWorld().run)
    assert result["fetched"] == 4
    assert sorted(n for n, _ in h.suppliers) == ["S-1001", "S-1002", "S-1003"]
    assert len(h.rejected) == 1
    assert h.cursor("suppliers") == "2024-05-02T10:15:00Z"


def test_a_second_run_starts_a_second_before_the_committed_cursor():
    h = host()
    h.params["since_override"] = "2024-01-01T00:00:00Z"
    h.run(app.WitWorld().run)
    del h.params["since_override"]
    h.respond("file:///v1/suppliers?updated_after=2024-05-02T10:14:59Z&page=1", 200,
              '{"data": [{"id": "S-1002", "name": "Contoso", "updated_at": "2024-05-03T08:00:00Z"}], "next_page": null}')
    assert h.run(app.WitWorld().run)["fetched"] == 1
    assert h.cursor("suppliers") == "2024-05-03T08:00:00Z"
    assert h.suppliers[("S-1002", "")].supplier_name == "Contoso"
    assert [c for c in h.calls if c[0] == "complete"] == [("complete", "2024-05-02T10:15:00Z"),
                                                          ("complete", "2024-05-03T08:00:00Z")]
