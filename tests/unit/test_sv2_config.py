"""[stratum_v2]: defaults, the authority key file's default place, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from pool.config import ConfigError, parse_config

NODE = {"rpc_url": "http://127.0.0.1:18443", "rpc_user": "u", "rpc_password": "p"}


def parse(**tables: dict[str, object]) -> object:
    return parse_config({"node": NODE, "pool": {"data_dir": "/d"}, **tables}, Path("/base"))


def test_off_by_default_with_the_key_in_data_dir() -> None:
    config = parse_config({"node": NODE, "pool": {"data_dir": "/d"}}, Path("/base"))
    sv2 = config.stratum_v2
    assert sv2.port == 0 and sv2.certificate_validity_days == 365
    assert sv2.authority_key_file == Path("/d/sv2_authority.key")
    assert sv2.host == config.stratum.host


def test_host_follows_stratum_and_paths_are_relative_to_the_config() -> None:
    config = parse_config(
        {
            "node": NODE, "stratum": {"host": "127.0.0.1"},
            "stratum_v2": {"port": 3336, "authority_key_file": "keys/a.key"},
        },
        Path("/base"),
    )  # fmt: skip
    assert config.stratum_v2.host == "127.0.0.1" and config.stratum_v2.port == 3336
    assert config.stratum_v2.authority_key_file == Path("/base/keys/a.key")


def test_served_by_worker_processes_too() -> None:
    config = parse_config(
        {"node": NODE, "stratum": {"workers": 2}, "stratum_v2": {"port": 3336}}, Path("/base")
    )
    assert config.stratum.workers == 2 and config.stratum_v2.port == 3336


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        ({"stratum_v2": {"port": 3333}, "stratum": {"workers": 2}}, "already used by [stratum]"),
        (
            {"stratum_v2": {"port": 3343}, "stratum": {"tls_port": 3343}},
            "already used by [stratum]",
        ),
        ({"stratum_v2": {"port": 3333}}, "already used by [stratum]"),
        ({"stratum_v2": {"port": 70000}}, "[stratum_v2] port must be between 0 and 65535"),
        ({"stratum_v2": {"certificate_validity_days": 0}}, "must be greater than 0"),
        ({"stratum_v2": {"prot": 3336}}, "[stratum_v2] has unknown key 'prot'"),
    ],
)
def test_one_line_errors(tables: dict[str, dict[str, object]], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse(**tables)
    assert message in str(error.value) and "\n" not in str(error.value)
