"""Tests for ocb.keycache: keys kept in memory-backed storage only, this user's only, and only
for the password they came from; and seal's use of it (no KDF run for a cached key)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile

import pytest
from ocb import config, fsutil, keycache, seal

PASSWORD = b"key cache password"
KDF = seal.KdfParams(log_n=10, r=8, p=1)
SHM = keycache.DEFAULT_PARENT

needs_shm = pytest.mark.skipif(fsutil.filesystem_type(SHM) not in keycache.MEMORY_FILESYSTEMS,
                               reason=f"{SHM} is not a memory filesystem here")


@pytest.fixture
def shm_dir():
    parent = tempfile.mkdtemp(prefix="ocb-test-keycache-", dir=SHM)
    yield os.path.join(parent, "keys")
    shutil.rmtree(parent, ignore_errors=True)


def entries(directory: str) -> list[str]:
    return sorted(n for n in os.listdir(directory) if n.endswith(keycache.ENTRY_SUFFIX))


@needs_shm
def test_a_key_put_is_got_back_for_the_same_password_kdf_and_salt_and_kept_0600_in_a_0700_folder(shm_dir):
    cache = keycache.KeyCache(shm_dir)
    assert cache.usable
    salt, key = b"s" * 16, b"k" * 32
    cache.put(PASSWORD, KDF.as_dict(), salt, key)
    assert cache.get(PASSWORD, KDF.as_dict(), salt) == key
    assert stat.S_IMODE(os.lstat(shm_dir).st_mode) == 0o700
    (name,) = entries(shm_dir)
    assert stat.S_IMODE(os.lstat(os.path.join(shm_dir, name)).st_mode) == 0o600
    # another salt, other parameters: not this entry
    assert cache.get(PASSWORD, KDF.as_dict(), b"t" * 16) is None
    assert cache.get(PASSWORD, seal.KdfParams(log_n=11).as_dict(), salt) is None


@needs_shm
def test_another_password_never_gets_the_cached_key(shm_dir):
    cache = keycache.KeyCache(shm_dir)
    cache.put(PASSWORD, KDF.as_dict(), b"s" * 16, b"k" * 32)
    assert cache.get(b"another password", KDF.as_dict(), b"s" * 16) is None
    assert cache.any(b"another password", KDF.as_dict()) is None
    assert cache.any(PASSWORD, KDF.as_dict()) == (b"s" * 16, b"k" * 32)


@needs_shm
def test_the_key_is_not_in_the_entry_s_name_and_a_damaged_entry_is_passed_over(shm_dir):
    cache = keycache.KeyCache(shm_dir)
    key = bytes(range(32))
    cache.put(PASSWORD, KDF.as_dict(), b"s" * 16, key)
    (name,) = entries(shm_dir)
    assert key.hex() not in name
    path = os.path.join(shm_dir, name)
    entry = json.loads(open(path, encoding="utf-8").read())
    entry["key"] = bytes(32).hex()  # the check no longer matches
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(entry, handle)
    assert cache.get(PASSWORD, KDF.as_dict(), b"s" * 16) is None
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("{not json")
    assert cache.get(PASSWORD, KDF.as_dict(), b"s" * 16) is None


@needs_shm
def test_an_entry_that_is_a_symlink_or_open_to_others_is_not_read(shm_dir):
    cache = keycache.KeyCache(shm_dir)
    cache.put(PASSWORD, KDF.as_dict(), b"s" * 16, b"k" * 32)
    (name,) = entries(shm_dir)
    path = os.path.join(shm_dir, name)
    os.chmod(path, 0o644)
    assert cache.get(PASSWORD, KDF.as_dict(), b"s" * 16) is None
    os.chmod(path, 0o600)
    os.rename(path, path + ".real")
    os.symlink(path + ".real", path)
    assert cache.get(PASSWORD, KDF.as_dict(), b"s" * 16) is None


def test_a_folder_on_a_disk_is_refused_and_nothing_is_written_there():
    disk = os.path.dirname(os.path.abspath(__file__))  # the checkout, never on tmpfs in CI
    if fsutil.filesystem_type(disk) in keycache.MEMORY_FILESYSTEMS:
        pytest.skip("the checkout is on a memory filesystem here")
    directory = os.path.join(disk, "ocb-test-keycache-refused")
    cache = keycache.KeyCache(directory, explicit=True)
    assert not cache.usable and "not on a memory filesystem" in cache.refused
    cache.put(PASSWORD, KDF.as_dict(), b"s" * 16, b"k" * 32)
    assert not os.path.exists(directory)
    assert keycache.open_cache((directory, True)) is None


@needs_shm
def test_a_folder_open_to_others_or_not_a_folder_is_refused(shm_dir):
    os.mkdir(shm_dir, 0o755)
    os.chmod(shm_dir, 0o755)
    cache = keycache.KeyCache(shm_dir)
    assert not cache.usable and "mode 755" in cache.refused
    os.rmdir(shm_dir)
    open(shm_dir, "w").close()
    assert "not a folder" in keycache.KeyCache(shm_dir).refused


@needs_shm
@pytest.mark.skipif(os.getuid() != 0, reason="needs root to make a folder another user's")
def test_a_folder_another_user_made_first_is_refused(shm_dir):
    # on a shared /dev/shm, another user may squat on our name before we create it
    os.mkdir(shm_dir, 0o700)
    os.chown(shm_dir, 1000, 1000)
    cache = keycache.KeyCache(shm_dir)
    assert not cache.usable and "belongs to uid 1000" in cache.refused


@needs_shm
def test_a_keyring_with_a_warm_cache_runs_no_kdf_and_opens_what_a_cold_one_sealed(shm_dir):
    cache = keycache.KeyCache(shm_dir)
    key = seal.derive_password_key(PASSWORD, KDF, key_cache=cache)
    cold = seal.KeyRing(PASSWORD)
    assert cold.password_key(KDF, key.kdf_salt)._key == key._key and cold.derivations == 1
    warm = seal.KeyRing(PASSWORD, cache)
    assert warm.password_key(KDF, key.kdf_salt)._key == key._key
    assert warm.derivations == 0


@needs_shm
def test_a_machine_with_no_recorded_salt_seals_under_the_salt_of_a_cached_key(shm_dir, tmp_path):
    # a container that has just restored a chain: its key is cached, its ocb cache is new
    cache = keycache.KeyCache(shm_dir)
    restored = seal.KeyRing(PASSWORD, cache).password_key(KDF, b"r" * 16)
    key = seal.cached_password_key(str(tmp_path), PASSWORD, KDF, cache)
    assert key.kdf_salt == b"r" * 16 and key._key == restored._key
    recorded = json.loads((tmp_path / seal.KDF_SALT_DIR / seal.KDF_SALT_FILE).read_text())
    assert recorded["salt"] == (b"r" * 16).hex()
    # and with another password nothing cached applies: a new salt, a new key
    other = seal.cached_password_key(str(tmp_path / "other"), b"other", KDF, cache)
    assert other.kdf_salt != b"r" * 16


def test_the_setting_says_where_or_off():
    env = config.load_environment({"HOME": "/home/u"})
    assert config.key_cache_dir(env) == (keycache.default_dir(), False)
    assert config.key_cache_dir(config.load_environment({"HOME": "/home/u", "OCB_KEY_CACHE": "off"})) is None
    named = config.key_cache_dir(config.load_environment({"HOME": "/home/u", "OCB_KEY_CACHE": "/dev/shm/mine"}))
    assert named == ("/dev/shm/mine", True)
