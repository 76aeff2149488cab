"""Settings: the one module that reads the environment.

Resolves flags-then-`OCB_*`-then-legacy `OPENCLAW_*` names (and the legacy env files, read as
data, never executed) into plain values that ocb-plan and ocb-chain write into the document.
Later stages act on the document, not on the environment. Secrets (HF token, password) are
returned to the caller that needs them and never written into a settings dict.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Mapping

from . import retention
from .compression import COMPRESSIONS
from .errors import UsageError

if TYPE_CHECKING:
    from . import keycache

# Legacy env files: read as KEY=VALUE data when a variable is not in the process environment
# (a Space variable wins over a file, as in the legacy script).
LEGACY_ENV_FILES = ("/etc/profile.d/openclaw-env.sh", "~/.env.d/openclaw-backup.env")

# The home-dir folders the agent's tools write, by archive root name (legacy names kept, so a
# snapshot's layout reads the same as the legacy script's archives).
HOME_ROOTS = (
    ("root-config", "OPENCLAW_BACKUP_ROOT_CONFIG_DIR", ".config"),
    ("root-codex", "OPENCLAW_BACKUP_ROOT_CODEX_DIR", ".codex"),
    ("root-claude", "OPENCLAW_BACKUP_ROOT_CLAUDE_DIR", ".claude"),
    ("root-agents", "OPENCLAW_BACKUP_ROOT_AGENTS_DIR", ".agents"),
    ("root-ssh", "OPENCLAW_BACKUP_ROOT_SSH_DIR", ".ssh"),
    ("root-env", "OPENCLAW_BACKUP_ROOT_ENV_DIR", ".env.d"),
    ("root-lark-cli", "OPENCLAW_BACKUP_ROOT_LARK_CLI_DIR", ".lark-cli"),
)
NPM_ROOT = ("root-npm", "OPENCLAW_BACKUP_ROOT_NPM_DIR", ".npm")
STATE_ROOT = "openclaw-state"

# Regenerable bulk that dominates real installs. A pattern without "/" matches any path
# component; one with "/" matches the path relative to its root. SQLite -wal/-shm companions
# need no pattern: a database is archived as its backup-API copy, its companions never.
# Regenerable bulk. node_modules covers what `openclaw backup create` itself leaves out (the
# nested node_modules of extensions/, reinstalled by npm); cache is the gateway's cache/ (UI
# assets, 54 MB in a 2026.9.6 install, issue 12: taken as rebuilt by the gateway, not checked
# here); the rest: caches, logs and browser profiles of the tools under $HOME.
DEFAULT_EXCLUDES = (
    "node_modules",
    "__pycache__",
    "cache",
    ".cache",
    "Cache",
    "Code Cache",
    "GPUCache",
    "logs",
    "*.log",
    "browser/*/user-data",
)

ROOT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


@dataclass(frozen=True)
class Root:
    """One backed-up place: a directory, or a single file (legacy extra files)."""

    name: str
    path: str
    kind: str  # "dir" | "file"
    required: bool = False

    def as_dict(self) -> dict:
        return {"name": self.name, "path": self.path, "kind": self.kind, "required": self.required}


@dataclass
class Environment:
    """The process environment overlaid on the legacy env files (process wins)."""

    values: Mapping[str, str]
    home: str
    files_read: list[str] = field(default_factory=list)

    def get(self, *names: str, default: str | None = None) -> tuple[str | None, str | None]:
        """First non-empty value among names, with the name it came from."""
        for name in names:
            value = self.values.get(name)
            if value is not None and value.strip() != "":
                return value.strip(), name
        return default, None


def parse_env_file(text: str) -> dict[str, str]:
    """KEY=VALUE lines (optionally `export KEY=...`, optionally quoted); never evaluated."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].strip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def load_environment(environ: Mapping[str, str] | None = None) -> Environment:
    environ = dict(os.environ if environ is None else environ)
    home = environ.get("HOME") or os.path.expanduser("~")
    merged: dict[str, str] = {}
    files_read = []
    for name in LEGACY_ENV_FILES:
        path = name.replace("~", home, 1) if name.startswith("~") else name
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                merged.update(parse_env_file(handle.read()))
            files_read.append(path)
        except OSError:
            continue
    merged.update({k: v for k, v in environ.items() if v != ""})
    return Environment(values=merged, home=home, files_read=files_read)


def parse_bool(env: Environment, names: tuple[str, ...], default: bool) -> bool:
    value, name = env.get(*names)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in TRUE_WORDS:
        return True
    if lowered in FALSE_WORDS:
        return False
    raise UsageError(f"{name}={value!r}: expected one of true/false, yes/no, on/off, 1/0")


def parse_int(env: Environment, names: tuple[str, ...], default: int, minimum: int = 0) -> int:
    value, name = env.get(*names)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise UsageError(f"{name}={value!r}: expected a whole number") from None
    if number < minimum:
        raise UsageError(f"{name}={value!r}: must be at least {minimum}")
    return number


SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024**2, "mb": 1024**2,
              "mib": 1024**2, "g": 1024**3, "gb": 1024**3, "gib": 1024**3}


def parse_size(env: Environment, names: tuple[str, ...], default: int) -> int:
    """'1G', '500M', '1048576' -> bytes (binary units, as split(1) reads them)."""
    text, name = env.get(*names)
    if text is None:
        return default
    match = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    if not match or unit not in SIZE_UNITS:
        raise UsageError(f"{name}={text!r}: expected a size such as 1048576, 500M or 1G")
    size = int(match.group(1)) * SIZE_UNITS[unit]
    if size < 1024:
        raise UsageError(f"{name}={text!r}: must be at least 1 KiB")
    return size


def parse_named_paths(env: Environment, var: str) -> list[tuple[str, str]]:
    """Legacy "name:/path,name2:/path2" lists (OPENCLAW_BACKUP_EXTRA_DIRS / _FILES)."""
    raw, _ = env.get(var)
    if raw is None:
        return []
    pairs = []
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, path = item.partition(":")
        name, path = name.strip(), path.strip()
        if not sep or not name or not path:
            raise UsageError(f"{var}: entry {item!r} is not NAME:/absolute/path")
        if not ROOT_NAME.match(name) or name.startswith(".ocb"):
            raise UsageError(f"{var}: name {name!r} must be letters, digits, '.', '_' or '-'")
        pairs.append((name, os.path.abspath(os.path.expanduser(path))))
    return pairs


def parse_patterns(env: Environment, var: str) -> list[str]:
    raw, _ = env.get(var)
    if raw is None:
        return []
    return [p.strip() for p in re.split(r"[,\n]", raw) if p.strip()]


def resolve_roots(env: Environment, for_restore: bool = False) -> list[Root]:
    """The legacy source set: state dir, the home-dir roots, npm when enabled, extras."""
    home = env.home
    state, _ = env.get("OCB_STATE_DIR", "OPENCLAW_BACKUP_SOURCE_DIR", "OPENCLAW_STATE_DIR")
    roots = [Root(STATE_ROOT, os.path.abspath(state or os.path.join(home, ".openclaw")), "dir", True)]
    for name, var, default in HOME_ROOTS:
        path, _ = env.get(var)
        roots.append(Root(name, os.path.abspath(path or os.path.join(home, default)), "dir"))
    npm_var = "OPENCLAW_RESTORE_NPM_ENABLED" if for_restore else "OPENCLAW_BACKUP_NPM_ENABLED"
    if parse_bool(env, (npm_var,), True):
        path, _ = env.get(NPM_ROOT[1])
        roots.append(Root(NPM_ROOT[0], os.path.abspath(path or os.path.join(home, NPM_ROOT[2])), "dir"))
    for name, path in parse_named_paths(env, "OPENCLAW_BACKUP_EXTRA_DIRS"):
        roots.append(Root(name, path, "dir"))
    for name, path in parse_named_paths(env, "OPENCLAW_BACKUP_EXTRA_FILES"):
        roots.append(Root(name, path, "file"))
    seen: dict[str, Root] = {}
    for root in roots:
        if root.name in seen:
            raise UsageError(f"root name {root.name!r} is used twice ({seen[root.name].path} and {root.path})")
        seen[root.name] = root
    return roots


def normalise_store(raw: str, var: str) -> str:
    """Store URL in canonical form; each backend parses its own (stores.canonical_url)."""
    from .stores import canonical_url

    return canonical_url(raw, var)


def resolve_store(env: Environment, flag_value: str | None) -> str:
    """The backup store: --store, else OCB_STORE, else the legacy OPENCLAW_BACKUP_DATASET_REPO."""
    if flag_value:
        return normalise_store(flag_value, "--store")
    raw, name = env.get("OCB_STORE", "OPENCLAW_BACKUP_DATASET_REPO")
    if raw is None:
        raise UsageError("no store configured: set OCB_STORE (file:///path or hf://datasets/OWNER/NAME)")
    return normalise_store(raw, name or "OCB_STORE")


def resolve_restore_stores(env: Environment, flag_value: str | None) -> tuple[str, str | None]:
    """(store to restore from, fallback when it does not exist).

    OCB_RESTORE_STORE / OPENCLAW_RESTORE_DATASET_REPO name another source; as in the legacy
    script, a source that does not exist falls back to the backup store.
    """
    if flag_value:
        return normalise_store(flag_value, "--store"), None
    raw, name = env.get("OCB_RESTORE_STORE", "OPENCLAW_RESTORE_DATASET_REPO")
    if raw is None:
        return resolve_store(env, None), None
    restore = normalise_store(raw, name or "OCB_RESTORE_STORE")
    backup_raw, _ = env.get("OCB_STORE", "OPENCLAW_BACKUP_DATASET_REPO")
    fallback = resolve_store(env, None) if backup_raw is not None else None
    return restore, (fallback if fallback != restore else None)


# -- the resolved settings: one typed object, written whole into each document ----------------


@dataclass(frozen=True)
class Settings:
    """Every non-secret setting a stage acts on, with its one default.

    ocb-plan and ocb-chain resolve it from the environment and write it into the document
    (`settings`); later stages read it back with `from_doc`, never from the environment.
    The document parser checks each field's type and range (document.SETTINGS).
    """

    home: str
    work_dir: str
    cache_dir: str
    path_prefix: str = "backups"
    retry_seconds: float = 300.0
    # connect/read/write timeout of every Hub request: a stalled connection fails after this
    # long and is retried within retry_seconds; above the Hub's own ~60 s answer limit
    hub_timeout: float = 75.0
    private: bool = True
    hub_endpoint: str | None = None  # HF_ENDPOINT; None: the library's default (huggingface.co)
    compression: str = "zstd"
    compression_level: int = COMPRESSIONS["zstd"].default_level
    volume_size: int = 1024**3
    full_every: int = 10
    full_hours: int = 24
    incremental: bool = True
    excludes: tuple[str, ...] = DEFAULT_EXCLUDES
    includes: tuple[str, ...] = ()
    seal: bool = False
    scrypt_log_n: int = 17
    kdf: str = "argon2id"  # what new snapshots are sealed with (seal.py); scrypt when chosen
    argon2_memory: int = 64 * 1024**2
    delta_min: int = 4 * 1024**2
    sqlite_timeout: float = 30.0
    lock_wait: float = 900.0  # ocb-restore waits this long for the lock: one backup's worth
    # retention (ocb-prune): the default policy is retention.DEFAULT_POLICY; a policy given in
    # the environment (any OCB_KEEP_*, or the legacy OPENCLAW_BACKUP_KEEP_COUNT) replaces it whole
    keep_last: int = retention.DEFAULT_POLICY.last
    keep_hourly: int = retention.DEFAULT_POLICY.hourly
    keep_daily: int = retention.DEFAULT_POLICY.daily
    keep_weekly: int = retention.DEFAULT_POLICY.weekly
    keep_monthly: int = retention.DEFAULT_POLICY.monthly
    keep_yearly: int = retention.DEFAULT_POLICY.yearly
    keep_within: str = ""  # a duration (2d, 36h, 1y6m); "" for none
    prune_every: str = "full"  # after which backups ocb-backup prunes: full | off | N
    squash_commits: int = 300  # squash the Hub branch's history past this many commits (0: never)
    reclaim: bool = True  # after a prune on the Hub: delete unreferenced LFS objects, squash
    # s3:// stores (resolve_s3); None: the SDK's own default (AWS, its region chain)
    s3_endpoint: str | None = None
    s3_region: str | None = None
    s3_path_style: bool = False
    s3_checksums: str = "when_supported"  # botocore's request/response checksum setting
    s3_part_size: int = 64 * 1024**2  # volumes larger than this go up in multipart parts of it
    roots: tuple[Root, ...] = ()  # restore documents: where each root goes back

    def policy(self) -> retention.Policy:
        """The retention policy these settings name (keep_within checked by resolve_settings)."""
        return retention.Policy(self.keep_last, self.keep_hourly, self.keep_daily, self.keep_weekly,
                                self.keep_monthly, self.keep_yearly,
                                retention.parse_duration(self.keep_within) if self.keep_within else retention.Duration())

    def as_dict(self) -> dict:
        value = {f.name: getattr(self, f.name) for f in fields(self)}
        value["excludes"], value["includes"] = list(self.excludes), list(self.includes)
        value["roots"] = [r.as_dict() for r in self.roots]
        return value

    @classmethod
    def from_doc(cls, doc: dict) -> "Settings":
        """The settings of a document the parser has checked; absent fields take their default
        (a document saved by an older ocb)."""
        value = dict(doc["settings"])
        known = {f.name for f in fields(cls)}
        value = {k: v for k, v in value.items() if k in known}
        value.setdefault("home", os.path.expanduser("~"))  # older documents may lack it
        for name in ("excludes", "includes"):
            if name in value:
                value[name] = tuple(value[name])
        value["roots"] = tuple(Root(r["name"], r["path"], r["kind"], bool(r.get("required", False)))
                               for r in value.get("roots", ()))
        return cls(**value)


@dataclass(frozen=True)
class StoreSecrets:
    """What a store needs that must never enter a document, argv or a log line."""

    hf_token: str | None = None
    # s3:// stores: explicit keys (AWS_ACCESS_KEY_ID...) or a profile; none of them: the SDK's
    # own credential chain (shared files, SSO, container and instance roles)
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    aws_session_token: str | None = None
    aws_profile: str | None = None

    def __repr__(self) -> str:  # never print a secret, even in a traceback
        shown = ", ".join(f"{f.name}={'<set>' if getattr(self, f.name) else None}" for f in fields(self))
        return f"StoreSecrets({shown})"


def parse_seconds(env: Environment, names: tuple[str, ...], default: float, minimum: float,
                  inclusive: bool = True) -> float:
    raw, name = env.get(*names)
    if raw is None:
        return default
    try:
        value = float(raw)
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError
    except ValueError:
        raise UsageError(f"{name}={raw!r}: expected a number of seconds") from None
    if value < minimum or (not inclusive and value == minimum):
        raise UsageError(f"{name}={raw!r}: expected a number of seconds {'from' if inclusive else 'above'} {minimum:g}")
    return value


def parse_wait(env: Environment, name: str, default: float) -> float:
    """Seconds (600), or a number with s, m or h (90s, 10m, 1h), as the entrypoint reads times."""
    raw, _ = env.get(name)
    if raw is None:
        return default
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smh]?)", raw)
    if not match or float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)] > 10**6:
        raise UsageError(f"{name}={raw!r}: expected seconds, or a number with s, m or h (90s, 10m, 1h)")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


KEEP_VARS = (
    ("keep_last", ("OCB_KEEP_LAST", "OPENCLAW_BACKUP_KEEP_COUNT")),
    ("keep_hourly", ("OCB_KEEP_HOURLY",)),
    ("keep_daily", ("OCB_KEEP_DAILY",)),
    ("keep_weekly", ("OCB_KEEP_WEEKLY",)),
    ("keep_monthly", ("OCB_KEEP_MONTHLY",)),
    ("keep_yearly", ("OCB_KEEP_YEARLY",)),
)
PRUNE_EVERY = re.compile(r"^(full|off|[0-9]{1,9})$")


def check_duration(value: str, name: str) -> str:
    """A --keep-within / OCB_KEEP_WITHIN value in its canonical form; UsageError naming `name`."""
    try:
        return str(retention.parse_duration(value))
    except ValueError as exc:
        raise UsageError(f"{name}: {exc}") from None


def resolve_policy(env: Environment) -> dict[str, int | str]:
    """The keep_* settings: the default policy, or, when any OCB_KEEP_* (or the legacy
    OPENCLAW_BACKUP_KEEP_COUNT, which is keep-last) is set, exactly the rules set there."""
    given = {field_: parse_int(env, names, 0) for field_, names in KEEP_VARS if env.get(*names)[0] is not None}
    within, within_name = env.get("OCB_KEEP_WITHIN")
    if within is not None:
        given["keep_within"] = check_duration(within, f"{within_name}={within!r}")
    if not given:
        return {}
    policy: dict[str, int | str] = {field_: 0 for field_, _ in KEEP_VARS}
    policy["keep_within"] = ""
    policy.update(given)
    if not any(policy.values()):
        raise UsageError("OCB_KEEP_*: a policy that keeps nothing (every rule 0) would leave only the latest "
                         "snapshot: set at least one rule above 0")
    return policy


def resolve_settings(env: Environment, kind: str) -> Settings:
    """The settings of a `kind` ("backup" or "restore") document, every value checked here,
    each bad one named by its variable."""
    home = env.home
    cache, _ = env.get("OCB_CACHE_DIR", "OPENCLAW_BACKUP_METADATA_DIR")
    work, _ = env.get("OCB_WORK_DIR", "OPENCLAW_BACKUP_WORK_DIR")
    prefix_raw, prefix_name = env.get("OCB_PATH_PREFIX", "OPENCLAW_BACKUP_PATH_PREFIX", default=Settings.path_prefix)
    prefix = prefix_raw.strip("/")
    if not prefix or any(part in ("", ".", "..") for part in prefix.split("/")):
        raise UsageError(f"{prefix_name or 'OCB_PATH_PREFIX'}={prefix_raw!r}: expected a relative folder such as backups")
    endpoint, endpoint_name = env.get("HF_ENDPOINT")
    if endpoint is not None and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", endpoint):
        raise UsageError(f"{endpoint_name}={endpoint!r}: expected an http(s) URL such as https://huggingface.co")
    compression, compression_name = env.get("OCB_COMPRESSION", default="zstd")
    if compression not in COMPRESSIONS:
        raise UsageError(f"{compression_name}={compression!r}: expected one of {', '.join(COMPRESSIONS)}")
    limits = COMPRESSIONS[compression]
    level_names = ("OCB_COMPRESSION_LEVEL", "OPENCLAW_BACKUP_COMPRESSION_LEVEL")
    level = parse_int(env, level_names, limits.default_level, 1)
    if level > limits.max_level:
        _, level_name = env.get(*level_names)
        raise UsageError(f"{level_name}={level}: out of range for {compression} (1..{limits.max_level})")
    default_excludes = parse_bool(env, ("OCB_DEFAULT_EXCLUDES",), True)
    seal_on, log_n = resolve_seal(env)
    prune_every, prune_name = env.get("OCB_PRUNE_EVERY", default=Settings.prune_every)
    prune_every = prune_every.lower()
    if not PRUNE_EVERY.match(prune_every):
        raise UsageError(f"{prune_name}={prune_every!r}: expected full (each backup that starts a new chain), "
                         "off, or a number N (every Nth backup)")
    if prune_every.isdigit():
        prune_every = str(int(prune_every)) if int(prune_every) else "off"
    kdf, argon2_memory = resolve_kdf(env)
    return Settings(
        home=home,
        work_dir=os.path.abspath(work or os.path.join(home, ".cache", "ocb", "work")),
        cache_dir=os.path.abspath(cache or os.path.join(home, ".cache", "ocb")),
        path_prefix=prefix,
        retry_seconds=parse_seconds(env, ("OCB_RETRY_SECONDS",), Settings.retry_seconds, 0),
        hub_timeout=parse_seconds(env, ("OCB_HUB_TIMEOUT",), Settings.hub_timeout, 0, inclusive=False),
        private=parse_bool(env, ("OCB_PRIVATE", "OPENCLAW_BACKUP_PRIVATE"), Settings.private),
        hub_endpoint=endpoint.rstrip("/") if endpoint else None,
        compression=compression,
        compression_level=level,
        volume_size=parse_size(env, ("OCB_VOLUME_SIZE", "OPENCLAW_BACKUP_SPLIT_SIZE"), Settings.volume_size),
        full_every=parse_int(env, ("OCB_FULL_EVERY", "OPENCLAW_MAX_INCREMENTAL_BACKUPS"), Settings.full_every, 0),
        full_hours=parse_int(env, ("OCB_FULL_HOURS", "OPENCLAW_FULL_BACKUP_INTERVAL_HOURS"), Settings.full_hours, 0),
        incremental=parse_bool(env, ("OCB_INCREMENTAL", "OPENCLAW_INCREMENTAL_BACKUP"), Settings.incremental),
        excludes=(DEFAULT_EXCLUDES if default_excludes else ()) + tuple(parse_patterns(env, "OCB_EXCLUDE")),
        includes=tuple(parse_patterns(env, "OCB_INCLUDE")),
        seal=seal_on,
        scrypt_log_n=log_n,
        kdf=kdf,
        argon2_memory=argon2_memory,
        delta_min=parse_size(env, ("OCB_DELTA_MIN",), Settings.delta_min),
        sqlite_timeout=parse_seconds(env, ("OCB_SQLITE_TIMEOUT",), Settings.sqlite_timeout, 0, inclusive=False),
        lock_wait=parse_wait(env, "OCB_LOCK_WAIT", Settings.lock_wait),
        prune_every=prune_every,
        squash_commits=parse_int(env, ("OCB_SQUASH_COMMITS",), Settings.squash_commits, 0),
        reclaim=parse_bool(env, ("OCB_RECLAIM",), Settings.reclaim),
        **resolve_policy(env),  # type: ignore[arg-type]
        **resolve_s3(env),
        roots=tuple(resolve_roots(env, for_restore=True)) if kind == "restore" else (),
    )


S3_CHECKSUMS = ("when_supported", "when_required")
S3_MIN_PART = 5 * 1024**2  # S3's smallest part (but the last)
S3_MAX_PART = 5 * 1024**3  # and its largest
# Hugging Face Storage Buckets through their S3 gateway (hub-docs storage-buckets-s3.md): the
# namespace in the endpoint, one region, path-style addressing, no trailing checksums (the
# gateway does not parse aws-chunked framing), and large parts (as few as possible)
HF_BUCKETS_ENDPOINT = "https://s3.hf.co/"
HF_BUCKETS = {"s3_region": "us-east-1", "s3_path_style": True, "s3_checksums": "when_required",
              "s3_part_size": 2 * 1024**3}


def resolve_s3(env: Environment) -> dict:
    """The s3:// store settings: OCB_S3_PRESET (hf:NAMESPACE, Hugging Face Storage Buckets),
    then OCB_S3_ENDPOINT, OCB_S3_REGION, OCB_S3_PATH_STYLE, OCB_S3_CHECKSUMS, OCB_S3_PART_SIZE,
    each overriding the preset; the endpoint and region fall back to the AWS_* names."""
    values: dict = {}
    preset, preset_name = env.get("OCB_S3_PRESET")
    if preset is not None:
        kind, _, namespace = preset.partition(":")
        if kind != "hf" or (namespace and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", namespace)):
            raise UsageError(f"{preset_name}={preset!r}: expected hf:NAMESPACE (Hugging Face Storage Buckets: "
                             "your user or organisation name)")
        values.update(HF_BUCKETS)
        if namespace:
            values["s3_endpoint"] = HF_BUCKETS_ENDPOINT + namespace
    endpoint, endpoint_name = env.get("OCB_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
    if endpoint is not None:
        if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", endpoint):
            raise UsageError(f"{endpoint_name}={endpoint!r}: expected an http(s) URL such as https://minio.example:9000")
        values["s3_endpoint"] = endpoint.rstrip("/")
    if preset is not None and "s3_endpoint" not in values:
        raise UsageError(f"{preset_name}={preset!r}: name the namespace (hf:NAMESPACE) or set OCB_S3_ENDPOINT")
    region, region_name = env.get("OCB_S3_REGION", "AWS_REGION", "AWS_DEFAULT_REGION")
    if region is not None:
        if not re.fullmatch(r"[a-z0-9-]{1,40}", region):
            raise UsageError(f"{region_name}={region!r}: expected a region name such as us-east-1")
        values["s3_region"] = region
    # self-hosted endpoints (MinIO, Ceph) rarely serve bucket subdomains: path-style there
    default_path_style = values.get("s3_path_style", "s3_endpoint" in values)
    values["s3_path_style"] = parse_bool(env, ("OCB_S3_PATH_STYLE",), default_path_style)
    checksums, checksums_name = env.get("OCB_S3_CHECKSUMS")
    if checksums is not None:
        if checksums not in S3_CHECKSUMS:
            raise UsageError(f"{checksums_name}={checksums!r}: expected one of {', '.join(S3_CHECKSUMS)}")
        values["s3_checksums"] = checksums
    part = parse_size(env, ("OCB_S3_PART_SIZE",), values.get("s3_part_size", Settings.s3_part_size))
    if not S3_MIN_PART <= part <= S3_MAX_PART:
        _, part_name = env.get("OCB_S3_PART_SIZE")
        raise UsageError(f"{part_name or 'OCB_S3_PART_SIZE'}={part}: S3 parts are 5 MiB to 5 GiB")
    values["s3_part_size"] = part
    return values


def store_secrets(env: Environment | None = None) -> StoreSecrets:
    """The store credentials (secrets: handed to the store, never written into a document or log)."""
    env = env or load_environment()
    token, _ = env.get("HF_TOKEN", "HUGGINGFACE_HUB_TOKEN")
    if token is None:
        token = _saved_hf_token(env)
    key_id, _ = env.get("AWS_ACCESS_KEY_ID")
    secret, _ = env.get("AWS_SECRET_ACCESS_KEY")
    session, _ = env.get("AWS_SESSION_TOKEN")
    profile, _ = env.get("AWS_PROFILE")
    return StoreSecrets(hf_token=token, aws_access_key_id=key_id, aws_secret_access_key=secret,
                        aws_session_token=session, aws_profile=profile)


def _saved_hf_token(env: Environment) -> str | None:
    """The token `hf auth login` saved (HF_TOKEN_PATH, else $HF_HOME/token, else
    ~/.cache/huggingface/token), as the library itself would find it."""
    path, _ = env.get("HF_TOKEN_PATH")
    if path is None:
        hf_home, _ = env.get("HF_HOME")
        path = os.path.join(hf_home or os.path.join(env.home, ".cache", "huggingface"), "token")
    try:
        with open(os.path.expanduser(path), encoding="utf-8") as handle:
            return handle.read().strip() or None
    except OSError:
        return None


def under_lock(env: Environment | None = None) -> bool:
    """Whether this stage runs under the lock of ocb-backup / ocb-restore (lib/sh/lock.sh sets
    OCB_UNDER_LOCK=1): its run dirs are then marked, so the next locked run may sweep them
    when this one dies, while a pipe run or replayed by hand is never swept."""
    return (env or load_environment()).values.get("OCB_UNDER_LOCK") == "1"


def key_cache_dir(env: Environment | None = None) -> tuple[str, bool] | None:
    """Where password keys are cached for this machine's life (keycache.py): OCB_KEY_CACHE, a
    folder on tmpfs or ramfs, or off; by default /dev/shm/ocb-keys-<uid>. Returns (folder,
    whether the user named it), or None when off."""
    from . import keycache  # imported when used: --show-config, once per run, never needs it

    env = env or load_environment()
    value, _ = env.get("OCB_KEY_CACHE")
    if not value:
        return keycache.default_dir(), False
    if value.lower() in FALSE_WORDS:
        return None
    return os.path.abspath(os.path.expanduser(value)), True


def key_cache(env: Environment | None = None) -> keycache.KeyCache | None:
    """The key cache the stages derive through (None: off, or its folder refused)."""
    from . import keycache

    return keycache.open_cache(key_cache_dir(env))


def seal_password(env: Environment | None = None) -> bytes | None:
    """The sealing password (a secret): OCB_PASSWORD, else the file OCB_PASSWORD_FILE names,
    else the legacy OPENCLAW_BACKUP_ENCRYPTION_PASSWORD when OPENCLAW_BACKUP_ENCRYPTION_ENABLED.

    Never returned into a settings dict, never part of a message.
    """
    env = env or load_environment()
    password = env.values.get("OCB_PASSWORD") or None
    if password is None:
        path, _ = env.get("OCB_PASSWORD_FILE")
        if path is not None:
            try:
                with open(path, "rb") as handle:
                    secret = handle.read().rstrip(b"\r\n")
            except OSError as exc:
                raise UsageError(f"OCB_PASSWORD_FILE={path!r}: cannot read it ({exc.strerror})") from None
            if not secret:
                raise UsageError(f"OCB_PASSWORD_FILE={path!r}: the file is empty")
            return secret
    if password is None and parse_bool(env, ("OPENCLAW_BACKUP_ENCRYPTION_ENABLED",), False):
        password = env.values.get("OPENCLAW_BACKUP_ENCRYPTION_PASSWORD") or None
        if password is None:
            raise UsageError("OPENCLAW_BACKUP_ENCRYPTION_ENABLED=true but OPENCLAW_BACKUP_ENCRYPTION_PASSWORD is not set")
    return password.encode("utf-8") if password is not None else None


# ocb's own env file holds the token (README: cron users put it there): it never goes into
# an unsealed snapshot (plan adds this exclude when a snapshot is not sealed)
OWN_ENV_FILE_NAME = os.path.basename(LEGACY_ENV_FILES[1])


def seal_explicitly_off(env: Environment) -> bool:
    """OCB_SEAL=off: unsealed snapshots on purpose, even onto a store whose latest is sealed."""
    return env.get("OCB_SEAL", default="auto")[0] == "off"


def resolve_seal(env: Environment) -> tuple[bool, int]:
    """Whether snapshots are sealed (on when a password is set), and the KDF cost."""
    mode, name = env.get("OCB_SEAL", default="auto")
    if mode not in ("auto", "on", "off"):
        raise UsageError(f"{name}={mode!r}: expected on, off or auto")
    has_password = seal_password(env) is not None
    if mode == "on" and not has_password:
        raise UsageError("OCB_SEAL=on but no password: set OCB_PASSWORD or OCB_PASSWORD_FILE")
    log_n = parse_int(env, ("OCB_SCRYPT_LOG_N",), Settings.scrypt_log_n, 10)
    if log_n > 22:
        raise UsageError(f"OCB_SCRYPT_LOG_N={log_n}: at most 22 (scrypt memory doubles with each step)")
    return has_password and mode != "off", log_n


KDFS = ("argon2id", "scrypt")


def resolve_kdf(env: Environment) -> tuple[str, int]:
    """The KDF new snapshots are sealed with: OCB_KDF (argon2id by default; scrypt when
    OCB_SCRYPT_LOG_N alone is set, which is how the tests ask for a cheap one), and Argon2id's
    memory, OCB_ARGON2_MEMORY (default 64M; 1M..1G)."""
    name, var = env.get("OCB_KDF")
    if name is None:
        name = "scrypt" if env.get("OCB_SCRYPT_LOG_N")[0] is not None else "argon2id"
    elif name not in KDFS:
        raise UsageError(f"{var}={name!r}: expected one of {', '.join(KDFS)}")
    memory = parse_size(env, ("OCB_ARGON2_MEMORY",), Settings.argon2_memory)
    if not 1024**2 <= memory <= 1024**3 or memory % 1024:
        raise UsageError(f"OCB_ARGON2_MEMORY={env.get('OCB_ARGON2_MEMORY')[0]!r}: expected 1M to 1G")
    return name, memory


# -- reading what the legacy script wrote (legacy.py, ocb-chain, ocb-pull) ---------------------


def restore_archive(env: Environment) -> str | None:
    """OPENCLAW_RESTORE_ARCHIVE: one backup to restore instead of the latest (a snapshot id,
    or the legacy script's archive name); legacy.archive_request tells which."""
    return env.get("OPENCLAW_RESTORE_ARCHIVE")[0]


def legacy_metadata_dir(env: Environment) -> str:
    """Where the legacy archive root `backup-info` (the script's own metadata dir) goes back:
    OPENCLAW_BACKUP_METADATA_DIR, else the script's default /root/.backup-info under HOME."""
    path, _ = env.get("OPENCLAW_BACKUP_METADATA_DIR")
    return os.path.abspath(path or os.path.join(env.home, ".backup-info"))


def legacy_password(env: Environment | None = None) -> bytes | None:
    """The password of legacy encrypted archives (a secret): the sealing password, else
    OPENCLAW_BACKUP_ENCRYPTION_PASSWORD even without _ENABLED (the legacy restore needed
    only the password)."""
    env = env or load_environment()
    password = seal_password(env)
    if password is None:
        legacy = env.values.get("OPENCLAW_BACKUP_ENCRYPTION_PASSWORD") or None
        password = legacy.encode("utf-8") if legacy is not None else None
    return password
