from pathlib import Path

import pytest
from pydantic import ValidationError

from lptem_dask.config import (
    ClusterConfig,
    IngestConfig,
    config_from_mapping,
    config_hash,
    dump_config,
    load_config,
)
from lptem_dask.errors import ConfigError


def test_defaults_are_valid_and_frozen():
    cfg = ClusterConfig()
    assert cfg.kind == "local"
    assert cfg.dashboard_host == "127.0.0.1"
    with pytest.raises(ValidationError):
        cfg.kind = "slurm"  # type: ignore[misc]


def test_unknown_key_names_key_file_and_allowed(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("kind: local\nn_wrokers: 2\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, ClusterConfig)
    msg = str(err.value)
    assert "n_wrokers" in msg and str(path) in msg and "n_workers" in msg


def test_wrong_type_names_key_and_value(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("chunk_mb: lots\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, IngestConfig)
    assert "chunk_mb" in str(err.value) and "lots" in str(err.value)


def test_constraint_violation(tmp_path: Path):
    with pytest.raises(ConfigError, match="chunk_mb"):
        config_from_mapping(IngestConfig, {"chunk_mb": -1})


def test_literal_lists_allowed_values():
    with pytest.raises(ConfigError) as err:
        config_from_mapping(ClusterConfig, {"kind": "kubernetes"})
    assert "local" in str(err.value) and "slurm" in str(err.value)


@pytest.mark.parametrize("text", ["[1, 2", "- a\n- b\n", "just a string"])
def test_bad_yaml_or_not_mapping(tmp_path: Path, text: str):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="c.yaml"):
        load_config(path, ClusterConfig)


def test_missing_and_non_utf8_files(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml", ClusterConfig)
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"kind: \xff\xfe local\n")
    with pytest.raises(ConfigError, match="UTF-8"):
        load_config(bad, ClusterConfig)


def test_empty_yaml_gives_defaults(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("")
    assert load_config(path, IngestConfig) == IngestConfig()


def test_hash_is_stable_and_sensitive():
    a = IngestConfig()
    assert config_hash(a) == config_hash(IngestConfig())
    assert config_hash(a) != config_hash(IngestConfig(chunk_mb=16))
    assert dump_config(a)["chunk_mb"] == 32.0
