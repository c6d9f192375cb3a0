import datetime as dt

import pytest

from transforms.common.identifiers import (
    is_valid_organisationsnummer,
    is_valid_personnummer,
    luhn_digit,
    make_organisationsnummer,
    make_personnummer,
    mask_personnummer,
)


def test_luhn_digit_known_values():
    # Skatteverket's example 811218-9876 and a municipality's organisationsnummer
    assert luhn_digit("811218987") == 6
    assert luhn_digit("212000035") == 7


@pytest.mark.parametrize("pnr", ["19811218-9876", "811218-9876", "198112189876", "19850374-1236"])
def test_valid_personnummer(pnr):
    assert is_valid_personnummer(pnr)


@pytest.mark.parametrize("pnr", [
    "19811218-9875",     # wrong check digit
    "19811318-9876",     # month 13
    "19810230-1234",     # 30 February
    "1981121-89876",     # misplaced separator
    "",
    None,
    "19811218-987",      # too short
])
def test_invalid_personnummer(pnr):
    assert not is_valid_personnummer(pnr)


def test_plus_sign_for_centenarians_and_its_consistency():
    old = make_personnummer(dt.date(1920, 5, 17), 42, today=dt.date(2026, 1, 1))
    assert "+" in old and is_valid_personnummer(old)
    young = make_personnummer(dt.date(1990, 5, 17), 42, today=dt.date(2026, 1, 1))
    assert "-" in young
    # "+" on a 12-digit number of someone under 100 contradicts the century
    assert not is_valid_personnummer(young.replace("-", "+"))


def test_samordningsnummer_adds_sixty_to_the_day():
    s = make_personnummer(dt.date(1985, 3, 14), 123, samordning=True)
    assert s[6:8] == "74" and is_valid_personnummer(s)
    assert not is_valid_personnummer(s, allow_samordningsnummer=False)


def test_organisationsnummer():
    assert is_valid_organisationsnummer("212000-0357")
    assert is_valid_organisationsnummer("2120000357")
    assert not is_valid_organisationsnummer("212000-0358")
    assert not is_valid_organisationsnummer("201000-0350")  # third digit below 2: a person, not an organisation
    made = make_organisationsnummer("556677889")
    assert is_valid_organisationsnummer(made)
    with pytest.raises(ValueError):
        make_organisationsnummer("551")


def test_mask_keeps_only_the_century():
    assert mask_personnummer("19811218-9876") == "19XXXXXX-XXXX"
    assert mask_personnummer("811218-9876") == "XXXXXX-XXXX"
