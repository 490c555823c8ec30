"""Payout addresses: Base58Check, BIP173 bech32 and BIP350 bech32m (pool.consensus.address)."""

from __future__ import annotations

import pytest

from pool.consensus.address import (
    CHAINS,
    AddressError,
    _convertbits,
    address_to_script,
    b58check_decode,
    b58check_encode,
    b58decode,
    b58encode,
    bech32_decode,
    bech32_encode,
    chain_params,
    decode_segwit_address,
    encode_segwit_address,
    script_to_address,
)

BECH32 = 1
BECH32M = 0x2BC830A3

P2WSH_SCRIPT = "00201863143c14c5166804bd19203356da136c985678cd4d27a1b8c6329604903262"
P2TR_SCRIPT = "5120a60869f0dbcf1dc659c9cecbaf8050135ea9e8cdc487053f1dc6880949dc684c"

# The reference's payout scriptPubKey table (section 5).
PAYOUT_TABLE: list[tuple[str, str, str]] = [
    ("main", "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2",
     "76a91477bff20c60e522dfaa3350c39b030a5d004e839a88ac"),
    ("main", "3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy",
     "a914b472a266d0bd89c13706a4132ccfb16f7c3b9fcb87"),
    ("main", "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4",
     "0014751e76e8199196d454941c45d1b3a323f1433bd6"),
    ("main", "bc1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3qccfmv3", P2WSH_SCRIPT),
    ("main", "bc1p5cyxnuxmeuwuvkwfem96lqzszd02n6xdcjrs20cac6yqjjwudpxqkedrcr", P2TR_SCRIPT),
    ("regtest", "mrCDrCybB6J1vRfbwM5hemdJz73FwDBC8r",
     "76a914751e76e8199196d454941c45d1b3a323f1433bd688ac"),
    ("regtest", "2N3vVYSK5XRgVSGWy21PnsRmBUywSQNdCsf",
     "a914751e76e8199196d454941c45d1b3a323f1433bd687"),
    ("regtest", "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080",
     "0014751e76e8199196d454941c45d1b3a323f1433bd6"),
    ("regtest", "bcrt1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3qzf4jry",
     P2WSH_SCRIPT),
    ("regtest", "bcrt1p5cyxnuxmeuwuvkwfem96lqzszd02n6xdcjrs20cac6yqjjwudpxqvg32hk",
     P2TR_SCRIPT),
]  # fmt: skip


@pytest.mark.parametrize(("chain", "address", "script"), PAYOUT_TABLE)
def test_payout_table_address_to_script(chain: str, address: str, script: str) -> None:
    assert address_to_script(address, chain).hex() == script


@pytest.mark.parametrize(("chain", "address", "script"), PAYOUT_TABLE)
def test_payout_table_script_to_address(chain: str, address: str, script: str) -> None:
    assert script_to_address(bytes.fromhex(script), chain) == address


@pytest.mark.parametrize(("chain", "address", "script"), PAYOUT_TABLE)
def test_payout_table_address_surrounding_whitespace(chain: str, address: str, script: str) -> None:
    assert address_to_script(f"  {address}\n", chain).hex() == script


def test_testnet_chains_share_prefixes() -> None:
    for chain in ("test", "testnet4", "signet"):
        assert address_to_script("mrCDrCybB6J1vRfbwM5hemdJz73FwDBC8r", chain).hex() == (
            "76a914751e76e8199196d454941c45d1b3a323f1433bd688ac"
        )
        assert (
            address_to_script(
                "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sl5k7", chain
            ).hex()
            == P2WSH_SCRIPT
        )


def test_chain_names_match_getblockchaininfo() -> None:
    assert set(CHAINS) == {"main", "test", "testnet4", "signet", "regtest"}
    assert chain_params("main").hrp == "bc"
    assert chain_params("regtest").hrp == "bcrt"
    assert chain_params("signet").hrp == "tb"
    with pytest.raises(AddressError):
        chain_params("mainnet")
    with pytest.raises(AddressError):
        address_to_script("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2", "bitcoin")


# --- Base58Check ----------------------------------------------------------------------------------


def test_base58_leading_zeros() -> None:
    assert b58encode(b"") == ""
    assert b58encode(b"\0\0\0") == "111"
    assert b58decode("111") == b"\0\0\0"
    assert b58encode(b"\0\0\x01") == "112"
    assert b58decode("112") == b"\0\0\x01"


def test_base58_known_vectors() -> None:
    # from Core's src/test/data/base58_encode_decode.json
    vectors = [
        ("61", "2g"),
        ("626262", "a3gV"),
        ("636363", "aPEr"),
        ("73696d706c792061206c6f6e6720737472696e67", "2cFupjhnEsSn59qHXstmK2ffpLv2"),
        (
            "00eb15231dfceb60925886b67d065299925915aeb172c06647",
            "1NS17iag9jJgTHD1VXjvLCEnZuQ3rJDE9L",
        ),
        ("516b6fcd0f", "ABnLTmg"),
        ("bf4f89001e670274dd", "3SEo3LWLoPntC"),
        ("572e4794", "3EFU7m"),
        ("ecac89cad93923c02321", "EJDM8drfXA6uyA"),
        ("10c8511e", "Rt5zm"),
        ("00000000000000000000", "1111111111"),
    ]
    for hex_data, text in vectors:
        assert b58encode(bytes.fromhex(hex_data)) == text
        assert b58decode(text).hex() == hex_data


def test_base58check_round_trip_and_burn_address() -> None:
    assert b58check_encode(bytes(21)) == "1111111111111111111114oLvT2"
    assert b58check_decode("1111111111111111111114oLvT2") == bytes(21)
    assert address_to_script("1111111111111111111114oLvT2", "main") == (
        b"\x76\xa9\x14" + bytes(20) + b"\x88\xac"
    )


def test_base58_invalid_checksum_rejected() -> None:
    bad = "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN3"  # last character changed
    with pytest.raises(AddressError, match="checksum"):
        b58check_decode(bad)
    with pytest.raises(AddressError, match="checksum"):
        address_to_script(bad, "main")
    with pytest.raises(AddressError):
        address_to_script("3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLz", "main")


@pytest.mark.parametrize(
    "bad",
    [
        "0BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2",
        "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVNl",
        "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVNO",
        "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVNI",
    ],
)
def test_base58_invalid_characters_rejected(bad: str) -> None:
    with pytest.raises(AddressError):
        address_to_script(bad, "main")


def test_base58_wrong_payload_length_rejected() -> None:
    for payload in (bytes(20), bytes(22), b"\x00"):
        with pytest.raises(AddressError):
            address_to_script(b58check_encode(payload), "main")


def test_base58_unknown_version_byte_rejected() -> None:
    wif_like = b58check_encode(b"\x80" + bytes(20))
    with pytest.raises(AddressError, match="version byte 128"):
        address_to_script(wif_like, "main")


def test_empty_and_garbage_rejected() -> None:
    for text in ("", "   ", "1", "bc1", "hello world", "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7k"):
        with pytest.raises(AddressError):
            address_to_script(text, "main")


# --- wrong network -------------------------------------------------------------------------------


def test_mainnet_bech32_on_regtest_names_networks() -> None:
    with pytest.raises(AddressError) as exc:
        address_to_script("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", "regtest")
    msg = str(exc.value)
    assert "main" in msg
    assert "regtest" in msg


def test_regtest_bech32_on_mainnet_names_networks() -> None:
    with pytest.raises(AddressError) as exc:
        address_to_script("bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080", "main")
    msg = str(exc.value)
    assert "regtest" in msg
    assert "main" in msg


def test_testnet_addresses_on_main_rejected() -> None:
    with pytest.raises(AddressError, match="main"):
        address_to_script("tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sl5k7", "main")
    with pytest.raises(AddressError, match="main"):
        address_to_script("mrCDrCybB6J1vRfbwM5hemdJz73FwDBC8r", "main")
    with pytest.raises(AddressError, match="main"):
        address_to_script("2N3vVYSK5XRgVSGWy21PnsRmBUywSQNdCsf", "main")


def test_mainnet_base58_on_regtest_rejected() -> None:
    with pytest.raises(AddressError, match="regtest"):
        address_to_script("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2", "regtest")
    with pytest.raises(AddressError, match="regtest"):
        address_to_script("3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy", "regtest")


def test_mainnet_address_on_testnets_rejected() -> None:
    for chain in ("test", "testnet4", "signet"):
        with pytest.raises(AddressError):
            address_to_script("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", chain)
        with pytest.raises(AddressError):
            address_to_script("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2", chain)


def test_uppercase_bech32_accepted() -> None:
    assert address_to_script("BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4", "main").hex() == (
        "0014751e76e8199196d454941c45d1b3a323f1433bd6"
    )
    assert (
        address_to_script(
            "BCRT1P5CYXNUXMEUWUVKWFEM96LQZSZD02N6XDCJRS20CAC6YQJJWUDPXQVG32HK", "regtest"
        ).hex()
        == P2TR_SCRIPT
    )


def test_mixed_case_bech32_rejected() -> None:
    with pytest.raises(AddressError, match="mixed case"):
        address_to_script("bc1qW508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", "main")


# --- BIP173 -------------------------------------------------------------------------------------

BIP173_VALID_STRINGS = [
    "A12UEL5L",
    "a12uel5l",
    "an83characterlonghumanreadablepartthatcontainsthenumber1andtheexcludedcharactersbio1tt5tgs",
    "abcdef1qpzry9x8gf2tvdw0s3jn54khce6mua7lmqqqxw",
    "11" + "q" * 82 + "c8247j",  # 90 characters, the maximum
    "split1checkupstagehandshakeupstreamerranterredcaperred2y9e3w",
    "?1ezyfcl",
]

BIP173_INVALID_STRINGS = [
    "\x20" + "1nwldj5",  # HRP character out of range
    "\x7f" + "1axkwrx",  # HRP character out of range
    "\x80" + "1eym55h",  # HRP character out of range
    # overall max length exceeded
    "an84characterslonghumanreadablepartthatcontainsthenumber1andtheexcludedcharactersbio1569pvx",
    "pzry9x0s0muk",  # no separator character
    "1pzry9x0s0muk",  # empty HRP
    "x1b4n0q5v",  # invalid data character
    "li1dgmt3",  # too short checksum
    "de1lg7wt" + "\xff",  # invalid character in checksum
    "A1G7SGD8",  # checksum calculated with uppercase form of HRP
    "10a06t8",  # empty HRP
    "1qzzfhee",  # empty HRP
]


@pytest.mark.parametrize("text", BIP173_VALID_STRINGS)
def test_bip173_valid_strings(text: str) -> None:
    hrp, data, const = bech32_decode(text)
    assert const == BECH32
    assert bech32_encode(hrp, data, const) == text.lower()


@pytest.mark.parametrize("text", BIP173_INVALID_STRINGS)
def test_bip173_invalid_strings(text: str) -> None:
    with pytest.raises(AddressError):
        bech32_decode(text)


# BIP173 valid segwit addresses that are still valid after BIP350 (witness v0).
BIP173_VALID_ADDRESSES = [
    ("main", "BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4",
     "0014751e76e8199196d454941c45d1b3a323f1433bd6"),
    ("test", "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sl5k7", P2WSH_SCRIPT),
    ("test", "tb1qqqqqp399et2xygdj5xreqhjjvcmzhxw4aywxecjdzew6hylgvsesrxh6hy",
     "0020000000c4a5cad46221b2a187905e5266362b99d5e91c6ce24d165dab93e86433"),
]  # fmt: skip

# BIP173's v1+ examples used a bech32 checksum; BIP350 made them invalid.
BIP173_SUPERSEDED_V1PLUS = [
    "bc1pw508d6qejxtdg4y5r3zarvary0c5xw7kw508d6qejxtdg4y5r3zarvary0c5xw7k7grplx",
    "BC1SW50QA3JX3S",
    "bc1zw508d6qejxtdg4y5r3zarvaryvg6kdaj",
]

BIP173_INVALID_ADDRESSES = [
    ("main", "tc1qw508d6qejxtdg4y5r3zarvary0c5xw7kg3g4ty"),  # invalid human-readable part
    ("test", "tc1qw508d6qejxtdg4y5r3zarvary0c5xw7kg3g4ty"),
    ("main", "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t5"),  # invalid checksum
    ("main", "BC13W508D6QEJXTDG4Y5R3ZARVARY0C5XW7KN40WF2"),  # invalid witness version
    ("main", "bc1rw5uspcuh"),  # invalid program length
    ("main",
     "bc10w508d6qejxtdg4y5r3zarvary0c5xw7kw508d6qejxtdg4y5r3zarvary0c5xw7kw5rljs90"),
    ("main", "BC1QR508D6QEJXTDG4Y5R3ZARVARYV98GJ9P"),  # v0 program length (BIP141)
    ("test", "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sL5k7"),  # mixed case
    ("main", "bc1zw508d6qejxtdg4y5r3zarvaryvqyzf3du"),  # zero padding of more than 4 bits
    ("test", "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3pjxtptv"),  # non-zero pad
    ("main", "bc1gmk9yu"),  # empty data section
]  # fmt: skip


@pytest.mark.parametrize(("chain", "address", "script"), BIP173_VALID_ADDRESSES)
def test_bip173_valid_addresses(chain: str, address: str, script: str) -> None:
    assert address_to_script(address, chain).hex() == script
    assert script_to_address(bytes.fromhex(script), chain) == address.lower()


@pytest.mark.parametrize("address", BIP173_SUPERSEDED_V1PLUS)
def test_bip173_v1plus_with_bech32_checksum_rejected(address: str) -> None:
    with pytest.raises(AddressError, match="bech32m"):
        address_to_script(address, "main")


@pytest.mark.parametrize(("chain", "address"), BIP173_INVALID_ADDRESSES)
def test_bip173_invalid_addresses(chain: str, address: str) -> None:
    with pytest.raises(AddressError):
        address_to_script(address, chain)


def test_bip173_wrong_hrp_rejected_by_segwit_decoder() -> None:
    with pytest.raises(AddressError):
        decode_segwit_address(
            "bc", "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sl5k7"
        )
    with pytest.raises(AddressError):
        decode_segwit_address("tb", "tc1qw508d6qejxtdg4y5r3zarvary0c5xw7kg3g4ty")


# --- BIP350 -------------------------------------------------------------------------------------

BIP350_VALID_STRINGS = [
    "A1LQFN3A",
    "a1lqfn3a",
    "an83characterlonghumanreadablepartthatcontainsthetheexcludedcharactersbioandnumber11sg7hg6",
    "abcdef1l7aum6echk45nj3s0wdvt2fg8x9yrzpqzd3ryx",
    "11llllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllludsr8",
    "split1checkupstagehandshakeupstreamerranterredcaperredlc445v",
    "?1v759aa",
]

BIP350_INVALID_STRINGS = [
    "\x20" + "1xj0phk",  # HRP character out of range
    "\x7f" + "1g6xzxy",  # HRP character out of range
    "\x80" + "1vctc34",  # HRP character out of range
    # overall max length exceeded
    "an84characterslonghumanreadablepartthatcontainsthetheexcludedcharactersbioandnumber11d6pts4",
    "qyrz8wqd2c9m",  # no separator character
    "1qyrz8wqd2c9m",  # empty HRP
    "y1b0jsk6g",  # invalid data character
    "lt1igcx5c0",  # invalid data character
    "in1muywd",  # too short checksum
    "mm1crxm3i",  # invalid character in checksum
    "au1s5cgom",  # invalid character in checksum
    "M1VUXWEZ",  # checksum calculated with uppercase form of HRP
    "16plkw9",  # empty HRP
    "1p2gdwpf",  # empty HRP
]


@pytest.mark.parametrize("text", BIP350_VALID_STRINGS)
def test_bip350_valid_strings(text: str) -> None:
    hrp, data, const = bech32_decode(text)
    assert const == BECH32M
    assert bech32_encode(hrp, data, const) == text.lower()


@pytest.mark.parametrize("text", BIP350_INVALID_STRINGS)
def test_bip350_invalid_strings(text: str) -> None:
    with pytest.raises(AddressError):
        bech32_decode(text)


BIP350_VALID_ADDRESSES = [
    ("main", "BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4",
     "0014751e76e8199196d454941c45d1b3a323f1433bd6"),
    ("test", "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sl5k7", P2WSH_SCRIPT),
    ("main", "bc1pw508d6qejxtdg4y5r3zarvary0c5xw7kw508d6qejxtdg4y5r3zarvary0c5xw7kt5nd6y",
     "5128751e76e8199196d454941c45d1b3a323f1433bd6751e76e8199196d454941c45d1b3a323f1433bd6"),
    ("main", "BC1SW50QGDZ25J", "6002751e"),
    ("main", "bc1zw508d6qejxtdg4y5r3zarvaryvaxxpcs", "5210751e76e8199196d454941c45d1b3a323"),
    ("test", "tb1qqqqqp399et2xygdj5xreqhjjvcmzhxw4aywxecjdzew6hylgvsesrxh6hy",
     "0020000000c4a5cad46221b2a187905e5266362b99d5e91c6ce24d165dab93e86433"),
    ("test", "tb1pqqqqp399et2xygdj5xreqhjjvcmzhxw4aywxecjdzew6hylgvsesf3hn0c",
     "5120000000c4a5cad46221b2a187905e5266362b99d5e91c6ce24d165dab93e86433"),
    ("main", "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0",
     "512079be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"),
]  # fmt: skip

BIP350_INVALID_ADDRESSES = [
    ("main", "tc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vq5zuyut"),  # invalid HRP
    ("test", "tc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vq5zuyut"),
    # bech32 instead of bech32m
    ("main", "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqh2y7hd"),
    ("test", "tb1z0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqglt7rf"),
    ("main", "BC1S0XLXVLHEMJA6C4DQV22UAPCTQUPFHLXM9H8Z3K2E72Q4K9HCZ7VQ54WELL"),
    # bech32m instead of bech32
    ("main", "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kemeawh"),
    ("test", "tb1q0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vq24jc47"),
    # invalid character in checksum
    ("main", "bc1p38j9r5y49hruaue7wxjce0updqjuyyx0kh56v8s25huc6995vvpql3jow4"),
    ("main", "BC130XLXVLHEMJA6C4DQV22UAPCTQUPFHLXM9H8Z3K2E72Q4K9HCZ7VQ7ZWS8R"),  # witness v17
    ("main", "bc1pw5dgrnzv"),  # program length 1
    # program length 41
    ("main", "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7v8n0nx0muaewav253zgeav"),
    ("main", "BC1QR508D6QEJXTDG4Y5R3ZARVARYV98GJ9P"),  # v0 program length 16
    ("test", "tb1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vq47Zagq"),  # mixed case
    # zero padding of more than 4 bits
    ("main", "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7v07qwwzcrf"),
    # non-zero padding in 8-to-5 conversion
    ("test", "tb1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vpggkg4j"),
    ("main", "bc1gmk9yu"),  # empty data section
]


@pytest.mark.parametrize(("chain", "address", "script"), BIP350_VALID_ADDRESSES)
def test_bip350_valid_addresses(chain: str, address: str, script: str) -> None:
    assert address_to_script(address, chain).hex() == script
    assert script_to_address(bytes.fromhex(script), chain) == address.lower()


@pytest.mark.parametrize(("chain", "address"), BIP350_INVALID_ADDRESSES)
def test_bip350_invalid_addresses(chain: str, address: str) -> None:
    with pytest.raises(AddressError):
        address_to_script(address, chain)


def test_v1_with_bech32_checksum_message() -> None:
    # The same taproot program as the reference's P2TR row, encoded with the bech32 constant.
    program = bytes.fromhex(P2TR_SCRIPT)[2:]
    wrong = bech32_encode("bc", [1] + _convertbits(program, 8, 5, True), BECH32)
    with pytest.raises(AddressError, match="bech32m"):
        address_to_script(wrong, "main")


def test_v0_with_bech32m_checksum_rejected() -> None:
    program = bytes.fromhex("751e76e8199196d454941c45d1b3a323f1433bd6")
    wrong = bech32_encode("bc", [0] + _convertbits(program, 8, 5, True), BECH32M)
    with pytest.raises(AddressError, match="bech32"):
        address_to_script(wrong, "main")


def test_encode_segwit_address_picks_checksum_by_version() -> None:
    program = bytes(range(32))
    for witver in range(17):
        for hrp in ("bc", "tb", "bcrt"):
            address = encode_segwit_address(hrp, witver, program)
            _, _, const = bech32_decode(address)
            assert const == (BECH32 if witver == 0 else BECH32M)
            assert decode_segwit_address(hrp, address) == (witver, program)


# --- script_to_address -------------------------------------------------------------------------


@pytest.mark.parametrize("chain", sorted(CHAINS))
def test_script_to_address_round_trip_each_type(chain: str) -> None:
    h20 = bytes(range(1, 21))
    h32 = bytes(range(100, 132))
    scripts = [
        b"\x76\xa9\x14" + h20 + b"\x88\xac",  # P2PKH
        b"\xa9\x14" + h20 + b"\x87",  # P2SH
        b"\x00\x14" + h20,  # P2WPKH
        b"\x00\x20" + h32,  # P2WSH
        b"\x51\x20" + h32,  # P2TR
    ]
    for script in scripts:
        address = script_to_address(script, chain)
        assert address is not None
        assert address_to_script(address, chain) == script


def test_script_to_address_non_standard_is_none() -> None:
    commitment = bytes.fromhex("6a24aa21a9ed") + bytes(32)
    assert script_to_address(commitment, "main") is None
    assert script_to_address(b"\x6a", "main") is None
    assert script_to_address(b"", "main") is None
    assert script_to_address(bytes.fromhex("4104") + bytes(64) + b"\xac", "main") is None  # P2PK


def test_script_to_address_invalid_v0_length_is_none() -> None:
    # A v0 program of 16 bytes is not an address (BIP141): BIP173/BIP350 list the address
    # BC1QR508D6QEJXTDG4Y5R3ZARVARYV98GJ9P as invalid.
    script = bytes.fromhex("0010751e76e8199196d454941c45d1b3a323")
    assert script_to_address(script, "main") is None


def test_script_to_address_result_always_decodes() -> None:
    # Every address produced must be accepted back (no unparsable addresses).
    for op in [0x00] + list(range(0x51, 0x61)):
        for length in range(2, 41):
            script = bytes([op, length]) + bytes([0x5A]) * length
            address = script_to_address(script, "main")
            if address is not None:
                assert address_to_script(address, "main") == script
