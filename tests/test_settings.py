"""Configuration from the environment, and secrets kept out of sight."""

from __future__ import annotations

import os
import tempfile

import pytest

from pipeline import Settings
from pipeline.errors import BadSetting
from pipeline.settings import mask_url


def test_redis_url_wins_over_host_and_port() -> None:
    env = {"REDIS_URL": "redis://a:1/0", "REDIS_HOST": "b", "REDIS_PORT": "2"}
    assert Settings.from_env(env).redis_url == "redis://a:1/0"


def test_the_seeds_host_and_port_variables_work() -> None:
    assert Settings.from_env({"REDIS_HOST": "redis", "REDIS_PORT": "6380"}).redis_url == "redis://redis:6380"


def test_no_redis_configured_means_embedded() -> None:
    assert Settings.from_env({}).redis_url is None


def test_the_shared_redis_runtime_folder_is_per_user() -> None:
    xdg = {"XDG_RUNTIME_DIR": "/run/user/7"}
    assert Settings.from_env({**xdg, "FRAMEFLOW_RUNTIME_DIR": "/x/ff"}).runtime_dir == "/x/ff"
    assert Settings.from_env(xdg).runtime_dir == "/run/user/7/frameflow"
    assert Settings.from_env({}).runtime_dir == os.path.join(tempfile.gettempdir(), f"frameflow-{os.getuid()}")
    assert Settings.from_env({"FRAMEFLOW_SHARED_REDIS_GRACE_S": "2.5"}).shared_redis_grace_s == 2.5


def test_a_bad_number_names_the_variable() -> None:
    with pytest.raises(ValueError, match="FRAMEFLOW_LEASE_MS='soon' is not an integer"):
        Settings.from_env({"FRAMEFLOW_LEASE_MS": "soon"})


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("rediss://camera:s3cret@redis.local:6380/1", "rediss://camera:***@redis.local:6380/1"),
        ("redis://:s3cret@localhost/0", "redis://:***@localhost/0"),
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
    ],
)
def test_passwords_are_masked(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_the_allow_list_is_comma_separated_patterns() -> None:
    settings = Settings.from_env({"FRAMEFLOW_ALLOWED_PROCESSORS": " face-*, objects-1 ,,"})
    assert settings.allowed_processors == ("face-*", "objects-1")
    allowed = [
        name
        for name in ("face-1", "face-kitchen", "objects-1", "objects-2", "Face-1", "x")
        if settings.processor_allowed(name)
    ]
    assert allowed == ["face-1", "face-kitchen", "objects-1"]


def test_without_an_allow_list_every_id_is_allowed() -> None:
    for env in ({}, {"FRAMEFLOW_ALLOWED_PROCESSORS": " , "}):
        settings = Settings.from_env(env)
        assert settings.allowed_processors == ()
        assert settings.processor_allowed("anything-at-all")


def test_health_endpoints_bind_loopback_unless_configured() -> None:
    assert Settings.from_env({}).health_host == "127.0.0.1"
    assert Settings.from_env({"FRAMEFLOW_HEALTH_HOST": "0.0.0.0"}).health_host == "0.0.0.0"


def test_the_health_port_is_unset_a_port_or_0_for_any_free_one() -> None:
    assert Settings.from_env({}).health_port is None
    assert Settings.from_env({"HEALTH_PORT": "0"}).health_port == 0
    assert Settings.from_env({"HEALTH_PORT": "9301"}).health_port == 9301
    for bad in ("abc", "-1", "65536"):
        with pytest.raises(ValueError, match=f"HEALTH_PORT='{bad}' is not"):
            Settings.from_env({"HEALTH_PORT": bad})


def test_durability_is_primary_unless_replicated_is_asked_for() -> None:
    assert (Settings.from_env({}).durability, Settings.from_env({}).replica_timeout_ms) == ("primary", 1000)
    chosen = Settings.from_env({"FRAMEFLOW_DURABILITY": "Replicated", "FRAMEFLOW_REPLICA_TIMEOUT_MS": "250"})
    assert (chosen.durability, chosen.replica_timeout_ms) == ("replicated", 250)
    with pytest.raises(BadSetting, match="FRAMEFLOW_DURABILITY='safe' is not one of primary, replicated"):
        Settings.from_env({"FRAMEFLOW_DURABILITY": "safe"})
    with pytest.raises(BadSetting, match="FRAMEFLOW_REPLICA_TIMEOUT_MS='0' must be 1 or more"):
        Settings.from_env({"FRAMEFLOW_REPLICA_TIMEOUT_MS": "0"})
