"""supplier_load.set_options under the in-process host: the rules the host applies to a run's writes.

Keep these when you change app.py: they show how a location with a bank account is written, and what a
full load and the insert-only options do to what is stored.
"""
from nuntiq_testing import TestHost  # first: it provides the modules componentize-py generates

import dataclasses

import pytest
from wit_world.imports import supplier_load


def record(cls, **given):
    """WIT records are dataclasses with every field required: the rest are None."""
    return cls(**{f.name: None for f in dataclasses.fields(cls)} | given)


def bank(number, **given):
    return record(supplier_load.SupplierBankAccount, bank_account_number=number, **given)


def supplier(number, *, addresses=(), banks=()):
    location = record(supplier_load.SupplierLocation, location_code="MAIN", addresses=list(addresses),
                      bank_accounts=list(banks))
    return record(supplier_load.Supplier, supplier_number=number, supplier_name=f"Supplier {number}",
                  locations=[location])


def load(h, suppliers, options=None):
    """One run that sets options (if any), queues and saves."""
    def run():
        if options:
            off = {"full_load": False, "address_insert_only": False, "bank_insert_only": False}
            supplier_load.set_options(supplier_load.LoadOptions(**off | options))
        supplier_load.queue(suppliers)
        supplier_load.save_all()
        return "{}"
    return h.run(run)


def stored_banks(h, number):
    return [b.bank_account_number for b in h.suppliers[(number, "")].locations[0].bank_accounts]


def test_a_full_load_replaces_every_stored_supplier():
    h = TestHost()
    load(h, [supplier("S-1"), supplier("S-2")])
    load(h, [supplier("S-2")], {"full_load": True})
    assert list(h.suppliers) == [("S-2", "")]


def test_full_load_is_refused_after_the_first_queue():
    h = TestHost()

    def late():
        supplier_load.queue([supplier("S-1")])
        supplier_load.set_options(supplier_load.LoadOptions(full_load=True, address_insert_only=False,
                                                            bank_insert_only=False))
        return "{}"
    with pytest.raises(AssertionError, match="full-load can only be chosen before"):
        h.run(late)
    assert h.suppliers == {}, "the run failed before it saved"


def test_bank_accounts_are_replaced_unless_bank_insert_only():
    h = TestHost()
    load(h, [supplier("S-1", banks=[bank("DE001", is_primary=True)])])
    load(h, [supplier("S-1", banks=[bank("DE002")])])
    assert stored_banks(h, "S-1") == ["DE002"]
    load(h, [supplier("S-1", banks=[bank("DE002", bank_name="changed"), bank("DE003")])], {"bank_insert_only": True})
    assert stored_banks(h, "S-1") == ["DE002", "DE003"]
    assert h.suppliers[("S-1", "")].locations[0].bank_accounts[0].bank_name is None, "a stored one is never changed"


def test_a_location_without_its_bank_accounts_list_is_refused():
    h = TestHost()
    broken = supplier("S-1")
    broken.locations[0].bank_accounts = None
    with pytest.raises(AssertionError, match="bank_accounts must be a list"):
        load(h, [broken])


def test_address_insert_only_adds_new_addresses_and_keeps_the_stored_ones():
    h = TestHost()
    street = lambda s: record(supplier_load.SupplierAddress, street=s)  # noqa: E731
    load(h, [supplier("S-1", addresses=[street("1 Main St")])])
    load(h, [supplier("S-1", addresses=[street("2 Side St")])], {"address_insert_only": True})
    assert [a.street for a in h.suppliers[("S-1", "")].locations[0].addresses] == ["1 Main St", "2 Side St"]
