"""Which keys the review page loads (through ``gateway.ledger.access``, like the CLI): the
published public key first, the signing key's public half when that is missing, and a
reason to show when neither can be read."""

from __future__ import annotations

import shutil
from pathlib import Path

from gateway.keys import init_gateway_keys, load_signing_key, load_verify_key
from gateway.settings import Settings
from gateway.web.auth import Credentials
from gateway.web.config import ReviewConfig, config_from_settings
from tests.web.helpers import PASSWORD, USER, Seeded


def _config(fresh: Seeded, keys: Path) -> ReviewConfig:
    settings = Settings(ledger_url=fresh.url, keys_dir=keys)
    return config_from_settings(settings, Credentials.parse(USER, PASSWORD))


def test_the_published_public_key_comes_first(fresh: Seeded, tmp_path: Path) -> None:
    keys = tmp_path / "review-keys"
    shutil.copytree(fresh.keys, keys)
    other = init_gateway_keys(tmp_path / "other").paths.signing_pub
    shutil.copy(other, keys / "gateway-signing.pub")
    config = _config(fresh, keys)
    try:
        assert config.verify_key == load_verify_key(other)
        assert config.verify_key != load_signing_key(keys / "gateway-signing.key").public_key()
    finally:
        config.store.close()


def test_the_signing_key_stands_in_for_a_missing_public_key(fresh: Seeded, tmp_path: Path) -> None:
    keys = tmp_path / "review-keys"
    shutil.copytree(fresh.keys, keys)
    (keys / "gateway-signing.pub").unlink()
    config = _config(fresh, keys)
    try:
        assert config.verify_problem is None
        assert config.verify_key == load_signing_key(keys / "gateway-signing.key").public_key()
    finally:
        config.store.close()


def test_without_keys_the_reasons_say_what_to_do(fresh: Seeded, tmp_path: Path) -> None:
    config = _config(fresh, tmp_path / "no-keys")
    try:
        assert config.verify_key is None and config.pseudonym_key is None
        assert config.verify_problem and "gateway-signing.pub" in config.verify_problem
        assert "gateway keys init" in config.verify_problem
        assert config.pseudonym_problem and "pseudonym.key" in config.pseudonym_problem
    finally:
        config.store.close()
