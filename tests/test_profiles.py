"""Profiles and credentials (SPEC §4): loading, merging, resolution order, 1Password, no leaks."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ursa.credentials import _clear_op_cache
from ursa.errors import ConfigurationError
from ursa.profiles import ROLES, Credentials, Profile, load_profile, resolve_credentials

SECRET = "s3cr3t-DO-NOT-LEAK-5f0c9a"
KEY_ID = "AKID-DISTINCT-77ab"

# Verbatim from SPEC §4.
SPEC_TOML = """\
[profiles.r2-test]
endpoint = "http://127.0.0.1:8333"      # any S3-compatible endpoint
region = "auto"
allow_http = true                       # plain http only when asked for
catalog = "s3://ursa-catalog/catalog.lance"   # or a local path
raw_bucket = "ursa-raw"                 # bucket name, or a file:// URI for a local store
assets_bucket = "ursa-assets"           # omit: no assets store
access_key_id = "..."                   # optional here; see resolution order
secret_access_key = "..."
[profiles.r2-test.credentials.assets]   # optional per-role override: raw, assets, catalog
access_key_id = "op://Engineering/ursa-assets/access_key_id"
secret_access_key = "op://Engineering/ursa-assets/secret_access_key"

[profiles.local]
root = "/data/ursa-local"               # catalog at root/catalog.lance, raw at root/raw/
"""

WriteConfig = Callable[[str], Path]


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """No URSA_* variables, a fresh HOME without a config file, an empty op cache."""
    for name in list(os.environ):
        if name.startswith("URSA_"):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    _clear_op_cache()
    yield home
    _clear_op_cache()


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> WriteConfig:
    def write(text: str) -> Path:
        path = tmp_path / "config.toml"
        path.write_text(text)
        monkeypatch.setenv("URSA_CONFIG", str(path))
        return path

    return write


# --- built-ins and the config file -----------------------------------------------------------


def test_spec_example_parses(config: WriteConfig) -> None:
    config(SPEC_TOML)
    p = load_profile("r2-test")
    assert (p.endpoint, p.region, p.allow_http) == ("http://127.0.0.1:8333", "auto", True)
    assert p.catalog == "s3://ursa-catalog/catalog.lance"
    assert (p.raw_bucket, p.assets_bucket) == ("ursa-raw", "ursa-assets")
    assert dict(p.credentials["assets"]) == {
        "access_key_id": "op://Engineering/ursa-assets/access_key_id",
        "secret_access_key": "op://Engineering/ursa-assets/secret_access_key",
    }
    assert resolve_credentials(p, "raw") == Credentials("...", "...")

    local = load_profile("local")
    assert local.root == "/data/ursa-local"
    assert local.catalog == "/data/ursa-local/catalog.lance"
    assert local.raw_bucket == "file:///data/ursa-local/raw/"
    assert local.assets_bucket is None


def test_r2_builtin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("URSA_R2_ACCOUNT_ID", "acc123")
    p = load_profile("r2")
    assert p.endpoint == "https://acc123.r2.cloudflarestorage.com"
    assert p.require_endpoint() == p.endpoint
    assert (p.region, p.allow_http) == ("auto", False)
    assert p.catalog == "s3://ursa-catalog/catalog.lance"
    assert (p.raw_bucket, p.assets_bucket) == ("ursa-raw", "ursa-assets")


def test_r2_test_builtin_uses_test_buckets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("URSA_R2_ACCOUNT_ID", "acc123")
    p = load_profile("r2-test")
    assert p.endpoint == "https://acc123.r2.cloudflarestorage.com"
    assert p.catalog == "s3://ursa-catalog-test/catalog.lance"
    assert (p.raw_bucket, p.assets_bucket) == ("ursa-raw-test", "ursa-assets-test")


def test_r2_without_account_id_loads_but_has_no_endpoint() -> None:
    p = load_profile("r2")
    assert p.endpoint is None
    with pytest.raises(ConfigurationError) as e:
        p.require_endpoint()
    assert "URSA_R2_ACCOUNT_ID" in str(e.value) and "endpoint" in str(e.value)


def test_config_account_id_wins_over_env(
    config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("URSA_R2_ACCOUNT_ID", "from-env")
    config('[profiles.r2]\naccount_id = "from-config"\n')
    assert load_profile("r2").endpoint == "https://from-config.r2.cloudflarestorage.com"


def test_config_overrides_builtin_field_by_field(config: WriteConfig) -> None:
    config('[profiles.r2]\nassets_bucket = "other-assets"\nendpoint = "https://s3.example"\n')
    p = load_profile("r2")
    assert (p.assets_bucket, p.endpoint) == ("other-assets", "https://s3.example")
    assert (p.raw_bucket, p.catalog) == ("ursa-raw", "s3://ursa-catalog/catalog.lance")


def test_config_adds_a_profile(config: WriteConfig) -> None:
    config('[profiles.minio]\nendpoint = "https://minio.lan"\nraw_bucket = "r"\n')
    p = load_profile("minio")
    assert (p.name, p.endpoint, p.raw_bucket, p.assets_bucket) == (
        "minio",
        "https://minio.lan",
        "r",
        None,
    )


def test_default_config_path_is_read(clean_env: Path) -> None:
    path = clean_env / ".config" / "ursa" / "config.toml"
    path.parent.mkdir(parents=True)
    path.write_text('[profiles.r2]\nraw_bucket = "from-default-file"\n')
    assert load_profile("r2").raw_bucket == "from-default-file"


def test_missing_default_config_means_no_overrides() -> None:
    assert load_profile("r2").raw_bucket == "ursa-raw"


def test_missing_explicit_config_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("URSA_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigurationError, match=r"nope\.toml"):
        load_profile("r2")


def test_unknown_profile(config: WriteConfig) -> None:
    path = config('[profiles.minio]\nendpoint = "https://minio.lan"\n')
    with pytest.raises(ConfigurationError) as e:
        load_profile("nosuch")
    assert "'nosuch'" in str(e.value) and str(path) in str(e.value)
    assert "minio" in str(e.value)  # lists what is known


def test_local_default_root_is_under_home(clean_env: Path) -> None:
    p = load_profile("local")
    root = clean_env / ".local" / "share" / "ursa"
    assert p.root == str(root)
    assert p.catalog == f"{root}/catalog.lance"
    assert p.raw_bucket == f"file://{root}/raw/"
    assert p.assets_bucket is None


def test_local_root_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("URSA_LOCAL_ROOT", str(tmp_path / "store"))
    assert load_profile("local").catalog == f"{tmp_path}/store/catalog.lance"


def test_local_root_from_config_wins_and_set_fields_are_kept(
    config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("URSA_LOCAL_ROOT", "/from/env")
    config('[profiles.local]\nroot = "/cfg/root"\ncatalog = "s3://cat/catalog.lance"\n')
    p = load_profile("local")
    assert p.root == "/cfg/root"
    assert p.raw_bucket == "file:///cfg/root/raw/"
    assert p.catalog == "s3://cat/catalog.lance"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[profiles.r2\n", "not valid TOML"),
        ('[profiles.r2]\nallow_http = "yes"\n', "allow_http"),
        ("[profiles.r2]\nraw_bucket = 3\n", "raw_bucket"),
        ('[profiles.r2]\nraw_buckets = "x"\n', "raw_buckets"),
        ('[profiles.r2.credentials.archive]\naccess_key_id = "a"\n', "archive"),
        ('[profiles.r2.credentials.raw]\ntoken = "a"\n', "token"),
        ('[profiles.r2.credentials]\nraw = "a"\n', "credentials.raw"),
        ('profiles = "r2"\n', "profiles"),
        ('[profile.r2]\nraw_bucket = "x"\n', "profile"),
        ('[profiles."bad name"]\nraw_bucket = "x"\n', "bad name"),
        # Anywhere in the file, not only in the requested profile's entry.
        ("[profiles.other]\nbogus = 1\n", "bogus"),
    ],
)
def test_malformed_config(config: WriteConfig, text: str, expected: str) -> None:
    path = config(text)
    with pytest.raises(ConfigurationError) as e:
        load_profile("r2")
    assert str(path) in str(e.value) and expected in str(e.value)


def test_plain_http_needs_allow_http(config: WriteConfig) -> None:
    path = config('[profiles.dev]\nendpoint = "http://127.0.0.1:9000"\n')
    with pytest.raises(ConfigurationError) as e:
        load_profile("dev")
    assert "allow_http" in str(e.value) and str(path) in str(e.value)
    with pytest.raises(ConfigurationError, match="allow_http"):
        Profile(name="dev", endpoint="http://127.0.0.1:9000")
    assert Profile(name="dev", endpoint="http://127.0.0.1:9000", allow_http=True).allow_http
    with pytest.raises(ConfigurationError, match="https://"):
        Profile(name="dev", endpoint="ftp://host")


# --- Profile objects ---------------------------------------------------------------------------


def test_profile_object_is_normalised(clean_env: Path) -> None:
    p = load_profile(Profile(name="mine", root="~/data", account_id="acc"))
    assert p.root == f"{clean_env}/data"
    assert p.catalog == f"{clean_env}/data/catalog.lance"
    assert p.raw_bucket == f"file://{clean_env}/data/raw/"
    assert p.endpoint == "https://acc.r2.cloudflarestorage.com"
    full = Profile(name="full", endpoint="https://e", catalog="/c", raw_bucket="r")
    assert load_profile(full) == full


def test_profile_object_ignores_config_file(config: WriteConfig) -> None:
    config('[profiles.mine]\nraw_bucket = "from-config"\n')
    assert load_profile(Profile(name="mine", raw_bucket="given")).raw_bucket == "given"


def test_with_overrides() -> None:
    p = load_profile("r2")
    q = p.with_overrides(raw_bucket="elsewhere")
    assert (p.raw_bucket, q.raw_bucket, q.catalog) == ("ursa-raw", "elsewhere", p.catalog)
    with pytest.raises(ConfigurationError):
        p.with_overrides(endpoint="http://insecure")
    assert len({p, q}) == 2  # still hashable despite the credentials mapping


def test_credentials_table_is_frozen_copy() -> None:
    table = {"raw": {"access_key_id": "a", "secret_access_key": "b"}}
    p = Profile(name="x", credentials=table)
    table["raw"]["access_key_id"] = "changed"
    assert p.credentials["raw"]["access_key_id"] == "a"
    with pytest.raises(TypeError):
        p.credentials["raw"]["access_key_id"] = "c"  # type: ignore[index]
    with pytest.raises(ConfigurationError, match="archive"):
        Profile(name="x", credentials={"archive": {}})


def test_bucket_role() -> None:
    p = load_profile("r2")
    names = ("ursa-raw", "ursa-assets", "ursa-catalog", "ursa-raw-test", "ursa")
    assert [p.bucket_role(b) for b in names] == [
        "raw",
        "assets",
        "catalog",
        None,
        None,
    ]
    local = load_profile(Profile(name="l", root="/r"))
    assert local.bucket_role("r") is None
    assert local.bucket_role("catalog.lance") is None


# --- credential resolution order ---------------------------------------------------------------


def pair(prefix: str) -> dict[str, str]:
    return {"access_key_id": f"{prefix}-id", "secret_access_key": f"{prefix}-secret"}


@pytest.fixture
def every_source(monkeypatch: pytest.MonkeyPatch) -> Profile:
    """Profile 'my-prof' with a key pair in each of the four sources for role raw."""
    for var, value in [
        ("URSA_MY_PROF_RAW_ACCESS_KEY_ID", "role-env-id"),
        ("URSA_MY_PROF_RAW_SECRET_ACCESS_KEY", "role-env-secret"),
        ("URSA_MY_PROF_ACCESS_KEY_ID", "profile-env-id"),
        ("URSA_MY_PROF_SECRET_ACCESS_KEY", "profile-env-secret"),
    ]:
        monkeypatch.setenv(var, value)
    return Profile(
        name="my-prof",
        access_key_id="fields-id",
        secret_access_key="fields-secret",
        credentials={"raw": pair("table")},
    )


def test_order_1_per_role_table(every_source: Profile) -> None:
    assert resolve_credentials(every_source, "raw") == Credentials("table-id", "table-secret")


def test_order_2_profile_fields(every_source: Profile) -> None:
    p = every_source.with_overrides(credentials={})
    assert resolve_credentials(p, "raw") == Credentials("fields-id", "fields-secret")


def test_order_3_role_env(every_source: Profile) -> None:
    p = every_source.with_overrides(credentials={}, access_key_id=None, secret_access_key=None)
    assert resolve_credentials(p, "raw") == Credentials("role-env-id", "role-env-secret")


def test_order_4_profile_env_for_every_role(
    every_source: Profile, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("URSA_MY_PROF_RAW_ACCESS_KEY_ID")
    monkeypatch.delenv("URSA_MY_PROF_RAW_SECRET_ACCESS_KEY")
    p = every_source.with_overrides(credentials={}, access_key_id=None, secret_access_key=None)
    for role in ROLES:
        assert resolve_credentials(p, role) == Credentials("profile-env-id", "profile-env-secret")


def test_per_role_override_applies_to_its_role_only(every_source: Profile) -> None:
    p = every_source.with_overrides(credentials={"assets": pair("assets")})
    assert resolve_credentials(p, "assets") == Credentials("assets-id", "assets-secret")
    assert resolve_credentials(p, "raw") == Credentials("fields-id", "fields-secret")
    assert resolve_credentials(p, "catalog") == Credentials("fields-id", "fields-secret")


def test_role_env_applies_to_its_role_only(every_source: Profile) -> None:
    p = every_source.with_overrides(credentials={}, access_key_id=None, secret_access_key=None)
    assert resolve_credentials(p, "assets") == Credentials("profile-env-id", "profile-env-secret")


def test_empty_env_values_count_as_unset(
    every_source: Profile, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("URSA_MY_PROF_RAW_ACCESS_KEY_ID", "")
    monkeypatch.setenv("URSA_MY_PROF_RAW_SECRET_ACCESS_KEY", "")
    p = every_source.with_overrides(credentials={}, access_key_id=None, secret_access_key=None)
    assert resolve_credentials(p, "raw") == Credentials("profile-env-id", "profile-env-secret")


def test_half_a_pair_is_an_error_not_a_fallthrough(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("URSA_MY_PROF_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("URSA_MY_PROF_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("URSA_MY_PROF_RAW_SECRET_ACCESS_KEY", SECRET)
    with pytest.raises(ConfigurationError) as e:
        resolve_credentials(Profile(name="my-prof"), "raw")
    message = str(e.value)
    assert "URSA_MY_PROF_RAW_ACCESS_KEY_ID" in message and "access key id" in message
    assert SECRET not in message


def test_missing_credentials_message(config: WriteConfig) -> None:
    path = config("")
    with pytest.raises(ConfigurationError) as e:
        resolve_credentials(load_profile("r2-test"), "assets")
    message = str(e.value)
    for needed in [
        "'r2-test'",
        "'assets'",
        "URSA_R2_TEST_ASSETS_ACCESS_KEY_ID",
        "URSA_R2_TEST_ASSETS_SECRET_ACCESS_KEY",
        "URSA_R2_TEST_ACCESS_KEY_ID",
        "URSA_R2_TEST_SECRET_ACCESS_KEY",
        "[profiles.r2-test.credentials.assets]",
        "access_key_id",
        "secret_access_key",
        str(path),
    ]:
        assert needed in message


def test_unknown_role_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="archive"):
        resolve_credentials(Profile(name="x", access_key_id="i", secret_access_key="s"), "archive")


# --- 1Password ---------------------------------------------------------------------------------

FAKE_OP = """\
#!/bin/sh
printf '%s\\n' "$*" >> "{log}"
case "$2" in
  op://vault/item/id) echo "{key_id}" ;;
  op://vault/item/secret) echo "{secret}" ;;
  op://vault/item/leaky) echo "{secret}"; echo "[ERROR] half-broken" >&2; exit 1 ;;
  *) echo "[ERROR] item not found" >&2; exit 1 ;;
esac
"""
OP_PAIR = {"access_key_id": "op://vault/item/id", "secret_access_key": "op://vault/item/secret"}


@pytest.fixture
def op_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in `op` first on PATH; returns the file it logs its arguments to."""
    bin_dir, log = tmp_path / "bin", tmp_path / "op.log"
    bin_dir.mkdir()
    op = bin_dir / "op"
    op.write_text(FAKE_OP.format(log=log, key_id=KEY_ID, secret=SECRET))
    op.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    return log


def op_calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_op_reference_read_once_per_process(op_log: Path) -> None:
    p = Profile(
        name="x",
        access_key_id="op://vault/item/id",
        secret_access_key="op://vault/item/secret",
        credentials={"assets": OP_PAIR},
    )
    expected = Credentials(KEY_ID, SECRET)  # trailing newline stripped
    assert resolve_credentials(p, "assets") == expected
    assert resolve_credentials(p, "assets") == expected
    assert resolve_credentials(p, "raw") == expected  # same references, other source
    assert op_calls(op_log) == ["read op://vault/item/id", "read op://vault/item/secret"]
    assert SECRET not in op_log.read_text()  # only references on op's command line

    _clear_op_cache()
    resolve_credentials(p, "raw")
    assert len(op_calls(op_log)) == 4


def test_op_reference_in_env(op_log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("URSA_X_ACCESS_KEY_ID", "plain-id")
    monkeypatch.setenv("URSA_X_SECRET_ACCESS_KEY", "op://vault/item/secret")
    assert resolve_credentials(Profile(name="x"), "raw") == Credentials("plain-id", SECRET)
    assert op_calls(op_log) == ["read op://vault/item/secret"]


@pytest.mark.parametrize("ref", ["op://vault/item/missing", "op://vault/item/leaky"])
def test_op_failure(op_log: Path, ref: str) -> None:
    p = Profile(name="x", access_key_id="plain-id", secret_access_key=ref)
    with pytest.raises(ConfigurationError) as e:
        resolve_credentials(p, "catalog")
    message = str(e.value)
    assert "'x'" in message and "'catalog'" in message and ref in message
    assert "op signin" in message and "[ERROR]" in message  # op's own reason is passed on
    assert SECRET not in message


def test_op_not_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    p = Profile(name="x", credentials={"raw": OP_PAIR})
    with pytest.raises(ConfigurationError) as e:
        resolve_credentials(p, "raw")
    message = str(e.value)
    assert "'x'" in message and "'raw'" in message and "op://vault/item/id" in message
    assert "not on PATH" in message


# --- secrets stay out of reprs and messages ----------------------------------------------------


def test_no_secret_in_reprs() -> None:
    p = Profile(
        name="x",
        access_key_id=KEY_ID,
        secret_access_key=SECRET,
        credentials={"raw": {"access_key_id": KEY_ID, "secret_access_key": SECRET}},
    )
    for text in (repr(p), str(p)):
        assert SECRET not in text and KEY_ID not in text
    creds = resolve_credentials(p, "raw")
    assert creds.secret_access_key == SECRET
    for text in (repr(creds), str(creds)):
        assert SECRET not in text and KEY_ID in text


def test_no_secret_in_config_errors(config: WriteConfig) -> None:
    bad = [
        f'[profiles.r2]\nsecret_access_key = "{SECRET}"\nbogus = 1\n',
        f'[profiles.r2]\nsecret_access_key = "{SECRET}\n',  # unterminated string
        f'[profiles.r2]\nsecret_access_key = "{SECRET}"\nendpoint = "http://h"\n',
        f'[profiles.r2.credentials.raw]\naccess_key_id = "{SECRET}"\nsecret_access_key = 1\n',
    ]
    for text in bad:
        config(text)
        with pytest.raises(ConfigurationError) as e:
            load_profile("r2")
        assert SECRET not in str(e.value)
