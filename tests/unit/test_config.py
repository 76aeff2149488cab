"""config: env names, legacy aliases, value parsing, and the messages for bad values."""

import re

import pytest
from ocb import config
from ocb.errors import UsageError


def env(**values):
    return config.Environment(values=values, home="/home/agent")


@pytest.mark.parametrize("text, expected", [
    ("1048576", 1048576), ("1K", 1024), ("500M", 500 * 1024**2), ("1G", 1024**3), ("2gib", 2 * 1024**3),
])
def test_parse_size_reads_binary_units(text, expected):
    assert config.parse_size(env(OCB_VOLUME_SIZE=text), ("OCB_VOLUME_SIZE",), 1) == expected


@pytest.mark.parametrize("text", ["lots", "1.5G", "-1", "12", "5T", "1 K B"])
def test_parse_size_names_the_variable_on_bad_values(text):
    with pytest.raises(UsageError, match="OCB_VOLUME_SIZE"):
        config.parse_size(env(OCB_VOLUME_SIZE=text), ("OCB_VOLUME_SIZE",), 1)


@pytest.mark.parametrize("text", ["", "  "])
def test_an_empty_variable_is_unset(text):
    assert config.parse_size(env(OCB_VOLUME_SIZE=text), ("OCB_VOLUME_SIZE",), 7) == 7


@pytest.mark.parametrize("raw, url", [
    ("file:///srv/backups", "file:///srv/backups"),
    ("/srv/backups/", "file:///srv/backups"),
    ("hf://datasets/me/state", "hf://datasets/me/state"),
    ("hf://me/state", "hf://datasets/me/state"),
    ("me/state", "hf://datasets/me/state"),
])
def test_normalise_store_accepts_every_documented_form(raw, url):
    assert config.normalise_store(raw, "OCB_STORE") == url


@pytest.mark.parametrize("raw", ["file://relative/path", "just-a-name", "a/b/c d"])
def test_normalise_store_refuses_what_it_cannot_place(raw):
    with pytest.raises(UsageError, match="OCB_STORE"):
        config.normalise_store(raw, "OCB_STORE")


def test_env_file_is_read_as_data_never_run():
    parsed = config.parse_env_file('export A="x y"\nB=\'$(rm -rf /)\'\n# c=1\nnot a line\nC=plain\n')
    assert parsed == {"A": "x y", "B": "$(rm -rf /)", "C": "plain"}


def test_process_env_wins_over_legacy_env_file(tmp_path):
    (tmp_path / ".env.d").mkdir()
    (tmp_path / ".env.d" / "openclaw-backup.env").write_text("OCB_STORE=/from/file\nOCB_FULL_EVERY=4\n")
    loaded = config.load_environment({"HOME": str(tmp_path), "OCB_STORE": "/from/env"})
    assert loaded.get("OCB_STORE") == ("/from/env", "OCB_STORE")
    assert loaded.get("OCB_FULL_EVERY") == ("4", "OCB_FULL_EVERY")


def test_roots_follow_home_and_legacy_overrides():
    roots = config.resolve_roots(env(OPENCLAW_BACKUP_ROOT_SSH_DIR="/keys", OPENCLAW_BACKUP_NPM_ENABLED="false",
                                     OPENCLAW_BACKUP_EXTRA_DIRS="notes:/data/notes",
                                     OPENCLAW_BACKUP_EXTRA_FILES="gitconfig:/home/agent/.gitconfig"))
    by_name = {r.name: r for r in roots}
    assert by_name["openclaw-state"].path == "/home/agent/.openclaw" and by_name["openclaw-state"].required
    assert by_name["root-ssh"].path == "/keys"
    assert "root-npm" not in by_name
    assert by_name["notes"].kind == "dir" and by_name["gitconfig"].kind == "file"


def test_restore_side_follows_the_restore_npm_switch():
    names = [r.name for r in config.resolve_roots(env(OPENCLAW_RESTORE_NPM_ENABLED="no"), for_restore=True)]
    assert "root-npm" not in names


def test_a_root_name_used_twice_is_a_usage_error():
    with pytest.raises(UsageError, match="twice"):
        config.resolve_roots(env(OPENCLAW_BACKUP_EXTRA_DIRS="root-ssh:/x"))


@pytest.mark.parametrize("values, variable", [
    ({"OCB_INCREMENTAL": "maybe"}, "OCB_INCREMENTAL"),
    ({"OPENCLAW_MAX_INCREMENTAL_BACKUPS": "ten"}, "OPENCLAW_MAX_INCREMENTAL_BACKUPS"),
    ({"OCB_COMPRESSION": "lz4"}, "OCB_COMPRESSION"),
    ({"OPENCLAW_BACKUP_SPLIT_SIZE": "big"}, "OPENCLAW_BACKUP_SPLIT_SIZE"),
    ({"OCB_COMPRESSION_LEVEL": "30"}, "OCB_COMPRESSION_LEVEL=30"),
    ({"OPENCLAW_BACKUP_COMPRESSION_LEVEL": "30"}, "OPENCLAW_BACKUP_COMPRESSION_LEVEL=30"),
    ({"OCB_COMPRESSION": "gzip", "OCB_COMPRESSION_LEVEL": "10"}, "OCB_COMPRESSION_LEVEL=10"),
    ({"OCB_RETRY_SECONDS": "soon"}, "OCB_RETRY_SECONDS"),
    ({"OCB_RETRY_SECONDS": "-1"}, "OCB_RETRY_SECONDS"),
    ({"OCB_HUB_TIMEOUT": "0"}, "OCB_HUB_TIMEOUT"),
    ({"OCB_HUB_TIMEOUT": "slow"}, "OCB_HUB_TIMEOUT"),
    ({"OCB_SQLITE_TIMEOUT": "0"}, "OCB_SQLITE_TIMEOUT"),
    ({"OCB_SQLITE_TIMEOUT": "nan"}, "OCB_SQLITE_TIMEOUT"),
    ({"OCB_DELTA_MIN": "1X"}, "OCB_DELTA_MIN"),
    ({"OCB_PATH_PREFIX": "a/../b"}, "OCB_PATH_PREFIX"),
    ({"OPENCLAW_BACKUP_PATH_PREFIX": "/"}, "OPENCLAW_BACKUP_PATH_PREFIX"),
    ({"HF_ENDPOINT": "not a url"}, "HF_ENDPOINT"),
    ({"OCB_FULL_HOURS": "-2"}, "OCB_FULL_HOURS"),
])
@pytest.mark.parametrize("kind", ["backup", "restore"])
def test_bad_values_name_their_variable(values, variable, kind):
    with pytest.raises(UsageError, match=re.escape(variable)):
        config.resolve_settings(env(**values), kind)


def test_legacy_names_are_aliases():
    settings = config.resolve_settings(env(OPENCLAW_MAX_INCREMENTAL_BACKUPS="3",
                                           OPENCLAW_FULL_BACKUP_INTERVAL_HOURS="2",
                                           OPENCLAW_BACKUP_SPLIT_SIZE="100M",
                                           OPENCLAW_BACKUP_WORK_DIR="/scratch"), "backup")
    assert (settings.full_every, settings.full_hours) == (3, 2)
    assert settings.volume_size == 100 * 1024**2 and settings.work_dir == "/scratch"


def test_defaults_come_from_the_settings_class():
    settings = config.resolve_settings(env(), "backup")
    defaults = config.Settings(home="/home/agent", work_dir="/home/agent/.cache/ocb/work",
                               cache_dir="/home/agent/.cache/ocb")
    assert settings == defaults


def test_settings_survive_the_document():
    settings = config.resolve_settings(env(OCB_EXCLUDE="*.tmp", HF_ENDPOINT="http://127.0.0.1:9/"), "restore")
    assert settings.hub_endpoint == "http://127.0.0.1:9" and settings.roots
    assert config.Settings.from_doc({"settings": settings.as_dict()}) == settings


def test_env_file_settings_count_like_the_environment(tmp_path):
    (tmp_path / ".env.d").mkdir()
    (tmp_path / ".env.d" / "openclaw-backup.env").write_text(
        "HF_ENDPOINT=http://127.0.0.1:8808\nOPENCLAW_BACKUP_WORK_DIR=/from/file\nHF_TOKEN=secret-token\n")
    loaded = config.load_environment({"HOME": str(tmp_path)})
    settings = config.resolve_settings(loaded, "backup")
    assert settings.hub_endpoint == "http://127.0.0.1:8808" and settings.work_dir == "/from/file"
    assert config.store_secrets(loaded).hf_token == "secret-token"
    assert "secret-token" not in repr(config.store_secrets(loaded)) + repr(settings)


def test_store_for_restore_prefers_the_restore_repo():
    values = env(OPENCLAW_BACKUP_DATASET_REPO="me/backup", OPENCLAW_RESTORE_DATASET_REPO="me/other")
    assert config.resolve_restore_stores(values, None) == ("hf://datasets/me/other", "hf://datasets/me/backup")
    assert config.resolve_store(values, None) == "hf://datasets/me/backup"
    assert config.resolve_restore_stores(env(OPENCLAW_BACKUP_DATASET_REPO="me/b"), None) == ("hf://datasets/me/b", None)


def test_no_store_is_a_usage_error():
    with pytest.raises(UsageError, match="OCB_STORE"):
        config.resolve_store(env(), None)


@pytest.mark.parametrize("values, sealed", [
    ({}, False),
    ({"OCB_PASSWORD": "pw"}, True),
    ({"OCB_PASSWORD": "pw", "OCB_SEAL": "off"}, False),
    ({"OPENCLAW_BACKUP_ENCRYPTION_ENABLED": "true", "OPENCLAW_BACKUP_ENCRYPTION_PASSWORD": "pw"}, True),
    ({"OPENCLAW_BACKUP_ENCRYPTION_PASSWORD": "pw"}, False),  # legacy: only when enabled
])
def test_sealing_is_on_when_a_password_is_set(values, sealed):
    assert config.resolve_seal(env(**values))[0] is sealed


@pytest.mark.parametrize("values, message", [
    ({"OCB_SEAL": "on"}, "OCB_SEAL=on"),
    ({"OCB_SEAL": "maybe"}, "OCB_SEAL"),
    ({"OPENCLAW_BACKUP_ENCRYPTION_ENABLED": "true"}, "OPENCLAW_BACKUP_ENCRYPTION_PASSWORD"),
    ({"OCB_PASSWORD_FILE": "/nonexistent/pw"}, "OCB_PASSWORD_FILE"),
    ({"OCB_SCRYPT_LOG_N": "30", "OCB_PASSWORD": "pw"}, "OCB_SCRYPT_LOG_N"),
])
def test_sealing_misconfiguration_is_a_usage_error(values, message):
    with pytest.raises(UsageError, match=message):
        config.resolve_seal(env(**values))


def test_the_password_never_enters_settings():
    settings = config.resolve_settings(env(OCB_PASSWORD="hunter2-secret"), "backup")
    assert "hunter2-secret" not in repr(settings.as_dict()) and settings.seal is True


def test_password_file_is_read_without_its_newline(tmp_path):
    (tmp_path / "pw").write_bytes(b"from file\n")
    assert config.seal_password(env(OCB_PASSWORD_FILE=str(tmp_path / "pw"))) == b"from file"


def test_a_token_saved_by_hf_auth_login_is_found(tmp_path):
    (tmp_path / ".cache" / "huggingface").mkdir(parents=True)
    (tmp_path / ".cache" / "huggingface" / "token").write_text("hf_saved\n")
    assert config.store_secrets(config.Environment(values={}, home=str(tmp_path))).hf_token == "hf_saved"
    values = {"HF_TOKEN": "hf_env"}
    assert config.store_secrets(config.Environment(values=values, home=str(tmp_path))).hf_token == "hf_env"
    assert config.store_secrets(config.Environment(values={}, home=str(tmp_path / "none"))).hf_token is None


def test_the_default_retention_policy_and_when_ocb_backup_prunes():
    settings = config.resolve_settings(env(), "backup")
    assert str(settings.policy()) == "last 24, hourly 48, daily 14, weekly 8, monthly 12"
    assert (settings.prune_every, settings.squash_commits, settings.reclaim) == ("full", 300, True)


@pytest.mark.parametrize("values, policy", [
    ({"OCB_KEEP_DAILY": "7"}, "daily 7"),  # a policy given replaces the default whole
    ({"OPENCLAW_BACKUP_KEEP_COUNT": "48"}, "last 48"),  # the legacy keep_count is keep-last
    ({"OCB_KEEP_LAST": "3", "OPENCLAW_BACKUP_KEEP_COUNT": "48"}, "last 3"),
    ({"OCB_KEEP_WITHIN": "1y6m", "OCB_KEEP_HOURLY": "0"}, "within 1y6m"),
])
def test_a_retention_policy_from_the_environment(values, policy):
    assert str(config.resolve_settings(env(**values), "prune").policy()) == policy


@pytest.mark.parametrize("values, name", [
    ({"OCB_KEEP_DAILY": "x"}, "OCB_KEEP_DAILY"), ({"OCB_KEEP_WITHIN": "2w"}, "OCB_KEEP_WITHIN"),
    ({"OCB_KEEP_LAST": "0"}, "OCB_KEEP"), ({"OCB_PRUNE_EVERY": "sometimes"}, "OCB_PRUNE_EVERY"),
    ({"OCB_SQUASH_COMMITS": "-1"}, "OCB_SQUASH_COMMITS"), ({"OCB_RECLAIM": "maybe"}, "OCB_RECLAIM"),
])
def test_a_bad_retention_setting_names_its_variable(values, name):
    with pytest.raises(UsageError, match=name):
        config.resolve_settings(env(**values), "prune")


@pytest.mark.parametrize("text, value", [("full", "full"), ("OFF", "off"), ("0", "off"), ("012", "12")])
def test_prune_every_reads_full_off_or_a_number(text, value):
    assert config.resolve_settings(env(OCB_PRUNE_EVERY=text), "backup").prune_every == value
# -- s3:// store settings (resolve_s3) -----------------------------------------------------------

def test_the_hugging_face_buckets_preset_sets_what_its_gateway_needs():
    settings = config.resolve_settings(env(OCB_S3_PRESET="hf:my-org"), "backup")
    assert settings.s3_endpoint == "https://s3.hf.co/my-org" and settings.s3_region == "us-east-1"
    assert settings.s3_path_style is True and settings.s3_checksums == "when_required"
    assert settings.s3_part_size == 2 * 1024**3
    # each variable still overrides its part of the preset
    tuned = config.resolve_settings(env(OCB_S3_PRESET="hf", OCB_S3_ENDPOINT="http://127.0.0.1:9/ns/",
                                        OCB_S3_PART_SIZE="64M"), "backup")
    assert tuned.s3_endpoint == "http://127.0.0.1:9/ns" and tuned.s3_part_size == 64 * 1024**2
    assert tuned.s3_checksums == "when_required"


def test_s3_settings_fall_back_to_the_aws_names_and_path_style_follows_the_endpoint():
    aws = config.resolve_settings(env(AWS_DEFAULT_REGION="eu-west-3"), "backup")
    assert (aws.s3_endpoint, aws.s3_region, aws.s3_path_style) == (None, "eu-west-3", False)
    minio = config.resolve_settings(env(AWS_ENDPOINT_URL="http://minio:9000"), "restore")
    assert minio.s3_endpoint == "http://minio:9000" and minio.s3_path_style is True
    assert config.resolve_settings(env(AWS_ENDPOINT_URL="http://minio:9000", OCB_S3_PATH_STYLE="off"),
                                   "backup").s3_path_style is False
    assert config.Settings.from_doc({"settings": minio.as_dict()}) == minio


@pytest.mark.parametrize("values, variable", [
    ({"OCB_S3_PRESET": "minio"}, "OCB_S3_PRESET"),
    ({"OCB_S3_PRESET": "hf"}, "OCB_S3_PRESET"),  # no namespace and no endpoint
    ({"OCB_S3_ENDPOINT": "s3.hf.co"}, "OCB_S3_ENDPOINT"),
    ({"OCB_S3_REGION": "Europe West"}, "OCB_S3_REGION"),
    ({"OCB_S3_PATH_STYLE": "sometimes"}, "OCB_S3_PATH_STYLE"),
    ({"OCB_S3_CHECKSUMS": "never"}, "OCB_S3_CHECKSUMS"),
    ({"OCB_S3_PART_SIZE": "1M"}, "OCB_S3_PART_SIZE"),
])
def test_bad_s3_values_name_their_variable(values, variable):
    with pytest.raises(UsageError, match=re.escape(variable)):
        config.resolve_settings(env(**values), "backup")


def test_s3_keys_are_secrets_never_settings():
    values = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI-secret",
              "AWS_SESSION_TOKEN": "session-secret"}
    settings = config.resolve_settings(env(**values), "backup")
    assert not any(v in str(settings.as_dict()) for v in values.values())
    secrets = config.store_secrets(env(**values))
    assert secrets.aws_secret_access_key == "wJalrXUtnFEMI-secret"
    assert not any(v in repr(secrets) for v in values.values())
