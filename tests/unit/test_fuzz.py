"""Fuzz: the document reader and every stage's run(), fed mutated documents in-process.

The documents are real ones, written by the stages themselves (bin/ocb-* on a small state,
sealed, cut into two volumes). Each example takes one of them, changes one to three fields
(removes it, or puts a value of another type, an absurd size, a path outside the work dir in
its place) and hands it to the stage the way cli.main does (document.parse, then error and skip
pass through, then run). A malformed document (a field removed, of another type, an absurd
number) may only be refused with BadDocument (exit 3), or taken when the change does not matter
to the stage; a well-formed one that describes another world (another hash, another store) may
also fail with that world's code: I/O (1), integrity (4), conflict (5). Anything else, an
internal error above all, is a bug. A refusal leaves everything outside the work dir as it
was (the store, the state, the cache), and whatever happens a decoy file that paths in the
documents point at stays as it was.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ocb import cli, document
from ocb.errors import EXIT_BAD_DOCUMENT, BadDocument, OcbError

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
BIN = os.path.join(ROOT, "bin")
PASSWORD = "fuzz password"
STAGES = ("pack", "seal", "split", "push", "pull")
# the document each stage reads: the previous stage's output
INPUT_OF = {"pack": "plan", "seal": "pack", "split": "seal", "push": "split", "pull": "chain"}
SECTION_OF = {"pack": "archive", "seal": "seal", "split": "volumes", "push": "push", "pull": "pull"}


def _environment(top: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OCB_", "OPENCLAW_"))}
    env.update(HOME=f"{top}/home", OCB_STORE=f"file://{top}/store", OCB_WORK_DIR=f"{top}/work",
               OCB_CACHE_DIR=f"{top}/cache", OCB_PASSWORD=PASSWORD, OCB_SCRYPT_LOG_N="10",
               OCB_VOLUME_SIZE="64K", OCB_LOG_FORMAT="text",
               OCB_KEY_CACHE="off")  # not this user's /dev/shm key cache, shared with every other run
    return env


def _run(verb: str, env: dict, stdin: bytes | None = None) -> bytes:
    done = subprocess.run([os.path.join(BIN, f"ocb-{verb}")], input=stdin, env=env, capture_output=True, check=False)
    assert done.returncode == 0, f"ocb-{verb}: {done.stderr.decode()}"
    return done.stdout


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A state, one snapshot in the store, and the documents of a second backup and a restore,
    each stage's input saved; `pristine` keeps every folder as it was, to reset between examples."""
    top = str(tmp_path_factory.mktemp("fuzz"))
    env = _environment(top)
    state = f"{top}/home/.openclaw"
    os.makedirs(f"{state}/sub")
    for n in range(5):
        with open(f"{state}/sub/file-{n}.txt", "w") as handle:
            handle.write(f"file {n}\n" * (n + 1))
    os.symlink("sub/file-1.txt", f"{state}/link")
    _run("backup", env)
    with open(f"{state}/bulk.bin", "wb") as handle:
        handle.write(os.urandom(100_000))  # two volumes of 64 KiB
    # the work dir as each stage left it: seal and split remove what they consumed
    pristine = f"{top}/pristine"
    docs = {}
    for verb in ("plan", "pack", "seal", "split"):
        docs[verb] = _run(verb, env, docs[INPUT_OF[verb]] if verb in INPUT_OF else None)
        shutil.copytree(f"{top}/work", f"{pristine}/work-after-{verb}", symlinks=True)
    docs["chain"] = _run("chain", env)
    shutil.copytree(f"{top}/work", f"{pristine}/work-after-chain", symlinks=True)
    # a decoy outside every folder ocb may write: absurd paths in the fuzzed documents aim at it
    decoy = f"{top}/decoy"
    os.makedirs(decoy)
    with open(f"{decoy}/precious.txt", "w") as handle:
        handle.write("must survive\n")
    for name in ("home", "store", "cache", "decoy"):
        shutil.copytree(f"{top}/{name}", f"{pristine}/{name}", symlinks=True)
    return {"top": top, "env": env, "docs": {k: json.loads(v) for k, v in docs.items()}, "pristine": pristine}


def _reset(world, stage_name: str) -> None:
    top, pristine = world["top"], world["pristine"]
    for name in ("home", "store", "work", "cache", "decoy"):
        shutil.rmtree(f"{top}/{name}", ignore_errors=True)
        source = f"{pristine}/work-after-{INPUT_OF[stage_name]}" if name == "work" else f"{pristine}/{name}"
        shutil.copytree(source, f"{top}/{name}", symlinks=True)
    shutil.rmtree(f"{top}/restored", ignore_errors=True)


def _listing(top: str, names=("home", "store", "cache", "decoy")) -> dict:
    """Everything outside the work dir, with contents: what a refused document must not change."""
    seen = {}
    for name in names:
        for base, dirs, files in os.walk(f"{top}/{name}"):
            for entry in dirs + files:
                path = os.path.join(base, entry)
                st = os.lstat(path)
                digest = None
                if os.path.isfile(path) and not os.path.islink(path):
                    with open(path, "rb") as handle:
                        digest = hashlib.sha256(handle.read()).hexdigest()
                seen[os.path.relpath(path, top)] = (st.st_mode, st.st_size, digest)
    for extra in os.listdir(top):
        if extra not in ("home", "store", "work", "cache", "decoy", "pristine", "restored"):
            seen[extra] = "unexpected"
    return seen


def _paths(value, prefix=()):
    """Every path (a tuple of keys and indices) into a JSON value."""
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, prefix + (key,))
    elif isinstance(value, list):
        for number, child in enumerate(value):
            yield from _paths(child, prefix + (number,))


def _strange_values(top: str) -> list:
    return [None, True, False, 0, -1, 1, 2**63, 10**30, -(2**31), 1.5, float("1e308"), "", "x", "0",
            "/", "/etc/passwd", f"{top}/decoy", f"{top}/decoy/precious.txt", f"{top}/work/../decoy",
            "../../../../etc", "openclaw-backup-20991231-235959", "../openclaw-backup-20991231-235959",
            "file:///", [], {}, ["x"], [None], {"x": 1}, "\udcff", "a" * 5000]


def _at(doc, path: tuple):
    for key in path:
        doc = doc[key]
    return doc


def _mutate(doc: dict, path: tuple, action) -> dict:
    """Remove the field at `path` (action is the string "remove") or set it to `action`."""
    if not path:
        return action if action != "remove" else {}
    mutated = copy.deepcopy(doc)
    parent = mutated
    for key in path[:-1]:
        parent = parent[key]
    if action == "remove":
        if isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent.pop(path[-1])
    else:
        parent[path[-1]] = action
    return mutated


def _feed(stage_name: str, raw: bytes, world) -> dict | None:
    """What cli.main does with stdin, in-process: parse, pass errors and skips on, run."""
    stage = __import__(f"ocb.stages.{stage_name}", fromlist=["run"])
    args = cli.build_parser(stage_name, stage).parse_args(["--to", f"{world['top']}/restored"] if stage_name == "pull" else [])
    doc = document.parse(raw)
    if doc.get("error") is not None or doc.get("skip") is not None:
        return doc
    document.require(doc, stage.KIND, stage.NEEDS, stage_name)
    return stage.run(doc, args)


# fields a stage writes as null when there is nothing to say (no parent, an empty store...)
NULLABLE = {"base", "base_snapshot", "parent", "diverged_from", "latest", "params", "seal"}
# fields whose absence describes an older, valid document: a chain link with no store_id is one
# sealed before the associated data bound the store (form 1), so removing it is another world
# (the seal then fails: exit 4), not a malformed document
OPTIONAL = {"store_id"}


def _malformed(path: tuple, original, action) -> bool:
    """Whether a mutation makes the document malformed (a removed field, another type, an absurd
    number), which only exit 3 may answer; a value of the same type instead describes another
    world, which the stage may take, or fail on with that world's code (I/O, integrity, conflict)."""
    if action is None and path and path[-1] in NULLABLE:
        return False
    if action == "remove" and path and path[-1] in OPTIONAL:
        return False
    if action == "remove" or type(original) is not type(action):
        return True
    return isinstance(action, (int, float)) and not isinstance(action, bool) and not 0 <= action <= 2**53


def _check(stage_name: str, raw: bytes, decoy_is_named: bool = False, *, world, monkeypatch) -> OcbError | None:
    """Feed the document and return how the stage refused it (None: it took it). A refusal
    (BadDocument) must leave everything outside the work dir as it was; the decoy stays as it
    was whatever happens, unless the document names it as a folder of its own. Anything but an
    ocb error propagates: an internal error (exit 70) is a bug."""
    for key, value in world["env"].items():
        monkeypatch.setenv(key, value)
    _reset(world, stage_name)
    before = _listing(world["top"])
    outcome = None
    try:
        _feed(stage_name, raw, world)
    except OcbError as exc:
        outcome = exc
    if isinstance(outcome, BadDocument):
        assert str(outcome), "a refusal must say why"
        after = _listing(world["top"])
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        assert not changed, f"ocb-{stage_name} refused the document ({outcome}) but changed {changed[:5]}"
    if not decoy_is_named:
        after = _listing(world["top"], names=("decoy",))
        assert after == {k: v for k, v in before.items() if k.startswith("decoy")}, \
            f"ocb-{stage_name} changed the decoy outside every folder it may write"
    return outcome


def _check_mutations(stage_name: str, doc: dict, mutations: list, world, monkeypatch) -> None:
    """`mutations`: (path, value or "remove", malformed). Malformed ones may only be refused with
    exit 3 (or be of no matter to the stage); well-formed ones may also meet a world that
    contradicts them: I/O (1), integrity (4), conflict (5)."""
    decoy = f"{world['top']}/decoy"

    def apply(selected: list) -> tuple[bytes, bool]:
        mutated = doc
        for path, action, _ in selected:
            mutated = _mutate(mutated, path, action)
        named = any(isinstance(action, str) and os.path.realpath(action) == decoy for _, action, _ in selected)
        return json.dumps(mutated).encode("utf-8", "surrogatepass"), named

    outcome = _check(stage_name, *apply(mutations), world=world, monkeypatch=monkeypatch)
    if outcome is None or isinstance(outcome, BadDocument):
        return
    assert outcome.code in (1, 4, 5), f"ocb-{stage_name}: exit {outcome.code} for a mutated document: {outcome}"
    malformed = [m for m in mutations if m[2]]
    if not malformed:
        return
    try:
        raw, named = apply(malformed)
    except (KeyError, IndexError, TypeError):
        return  # they only make sense after the well-formed ones
    alone = _check(stage_name, raw, named, world=world, monkeypatch=monkeypatch)
    assert alone is None or isinstance(alone, BadDocument), \
        f"ocb-{stage_name}: exit {alone.code}, not {EXIT_BAD_DOCUMENT}, for {[m[:2] for m in malformed]}: {alone}"


# Mutations a stage is known to mishandle, each with a skipped test saying what to fix (none now).
KNOWN_BROKEN: dict[str, set[tuple]] = {}


def _stage_test(stage_name: str):
    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                    HealthCheck.too_slow])
    @given(data=st.data())
    def test(world, monkeypatch, data):
        doc = world["docs"][INPUT_OF[stage_name]]
        # not the whole document (the reader's own tests do that), nor what is known to break
        paths = [p for p in sorted(_paths(doc), key=repr)[1:] if p[:2] not in KNOWN_BROKEN.get(stage_name, ())]
        values = _strange_values(world["top"])
        mutations, current = [], doc
        for _ in range(data.draw(st.integers(1, 3), label="mutations")):
            path = data.draw(st.sampled_from(paths), label="path")
            action = data.draw(st.sampled_from(["remove", *values]), label="value")
            try:
                # judged against the document as the stage wrote it: a field set twice is only
                # as malformed as its last value
                before = _at(doc, path)
            except (KeyError, IndexError, TypeError):
                before = _at(current, path)
            mutations.append((path, action, _malformed(path, before, action)))
            current = _mutate(current, path, action)
            paths = [p for p in sorted(_paths(current), key=repr)[1:] if p[:2] not in KNOWN_BROKEN.get(stage_name, ())]
            if not paths:
                break
        _check_mutations(stage_name, doc, mutations, world, monkeypatch)

    test.__name__ = f"test_ocb_{stage_name}_refuses_mutated_documents_with_exit_3_and_no_side_effect"
    return test


for _name in STAGES:
    globals()[f"test_ocb_{_name}_refuses_mutated_documents_with_exit_3_and_no_side_effect"] = _stage_test(_name)


@pytest.mark.parametrize("mutation", ["remove", "rename"])
def test_ocb_pack_refuses_a_plan_whose_roots_miss_a_root_of_its_index(mutation, world, monkeypatch):
    doc = world["docs"]["plan"]
    doc = _mutate(doc, ("plan", "roots", 0), "remove") if mutation == "remove" else _mutate(doc, ("plan", "roots", 0, "name"), "x")
    with pytest.raises(BadDocument, match="plan.roots"):
        _feed("pack", json.dumps(doc).encode(), world)


@pytest.mark.parametrize("stage_name", ["seal", "split"])
def test_a_document_whose_seal_was_removed_after_pack_sealed_is_refused(stage_name, world, monkeypatch):
    # found by the fuzzer: without `seal`, split cut the sealed file against the plain size
    # (exit 4) and seal would have sealed it a second time
    doc = world["docs"][INPUT_OF[stage_name]]
    assert doc["archive"]["path"].endswith(".ocbs"), "the fuzz world seals as it packs"
    for key, value in world["env"].items():
        monkeypatch.setenv(key, value)
    _reset(world, stage_name)
    with pytest.raises(BadDocument, match="field 'seal' is missing"):
        _feed(stage_name, json.dumps(_mutate(doc, ("seal",), "remove")).encode(), world)


@pytest.mark.parametrize("stage_name", STAGES)
def test_each_stage_takes_its_unmutated_document(stage_name, world, monkeypatch):
    """The control: the fuzzed documents are good ones, so what is refused is the mutation."""
    for key, value in world["env"].items():
        monkeypatch.setenv(key, value)
    _reset(world, stage_name)
    out = _feed(stage_name, json.dumps(world["docs"][INPUT_OF[stage_name]]).encode(), world)
    assert out.get("error") is None and out.get(SECTION_OF[stage_name]) is not None


# -- the reader ---------------------------------------------------------------------------------

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
                    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=400), JSON.map(lambda v: json.dumps(v).encode()),
                 st.dictionaries(st.sampled_from(["ocb", "kind", "error", "skip", "id", "store", "settings"]), JSON)
                 .map(lambda v: json.dumps(v).encode())))
def test_the_reader_gives_a_document_or_bad_document_only(raw):
    try:
        doc = document.parse(raw)
    except BadDocument as exc:
        assert str(exc)
        return
    assert isinstance(doc, dict) and doc["ocb"] == 1 and doc["kind"] in document.KINDS


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_the_reader_refuses_every_truncation_of_a_real_document(world, data):
    raw = json.dumps(world["docs"]["split"], indent=2).encode()
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(BadDocument):
        document.parse(raw[:cut])


# -- what the fuzz found: each was an internal error, a wrong exit code or a write outside ------

FOUND = [
    ("split", ("settings", "volume_size"), 0, "settings.volume_size"),  # ZeroDivisionError
    ("seal", ("settings", "scrypt_log_n"), False, "settings.scrypt_log_n"),  # exit 2
    ("seal", ("settings", "scrypt_log_n"), None, "settings.scrypt_log_n"),  # TypeError
    ("seal", ("id",), "remove", "document.id"),  # KeyError
    ("seal", ("settings", "cache_dir"), "/etc/passwd", "settings.cache_dir"),  # FileExistsError
    ("push", ("archive", "bytes"), "remove", "archive.bytes"),  # KeyError
    ("push", ("created_at_utc",), "remove", "created_at_utc"),  # KeyError
    ("push", ("plan", "type"), "remove", "plan.type"),  # KeyError
    ("push", ("plan", "base"), "remove", "plan.base"),  # exit 5: taken for an empty store
    ("push", ("plan", "parent_chain", 0), {}, "plan.parent_chain[0]"),  # KeyError; a broken meta
    ("push", ("seal",), True, "'seal'"),  # AttributeError
    ("push", ("id",), "/etc/passwd", "'document.id'"),  # a meta path outside the prefix
    ("push", ("settings", "path_prefix"), "/", "settings.path_prefix"),  # exit 5
    ("push", ("volumes", "files", 0, "name"), "", "volumes.files[0].name"),  # wrote the prefix itself
    ("push", ("seal", "params", "aead"), "\udcff", "seal.params.aead"),  # UnicodeEncodeError
    ("push", ("plan", "dir"), "/", "plan.dir"),  # push removes plan.dir when it is done
    ("pull", ("store",), "remove", "'store'"),  # KeyError
    ("pull", ("settings", "roots"), ["x"], "settings.roots[0]"),  # TypeError
    ("pull", ("settings", "home"), True, "settings.home"),  # TypeError
    ("pull", ("settings", "delta_min"), None, "settings.delta_min"),  # TypeError
    ("pull", ("settings", "path_prefix"), "/etc/passwd", "settings.path_prefix"),  # NotADirectoryError
    ("pull", ("settings", "work_dir"), "/etc/passwd", "settings.work_dir"),  # NotADirectoryError
    ("pull", ("meta", "chain", 0, "sealed"), "remove", "sealed"),  # exit 4, read as unsealed
    ("pull", ("meta", "chain", 0, "volumes", 0, "size"), 2**63, "size"),  # exit 4
    ("pull", ("chain", "target"), "", "chain.target"),  # exit 4
    ("pack", ("plan", "changes"), None, "plan.changes"),  # AttributeError
    ("pack", ("settings", "compression_level"), 2**63, "settings.compression_level"),  # OverflowError
    ("pack", ("settings", "sqlite_timeout"), "", "settings.sqlite_timeout"),  # ValueError
    ("pack", ("id",), "hf://datasets/x/y", "'document.id'"),  # an archive path with slashes
]


@pytest.mark.parametrize("stage_name, path, value, field_name", FOUND,
                         ids=[f"{s}-{'.'.join(map(str, p))}={v!r}"[:60] for s, p, v, _ in FOUND])
def test_what_the_fuzz_found_is_exit_3_naming_the_field(stage_name, path, value, field_name, world, monkeypatch):
    raw = json.dumps(_mutate(world["docs"][INPUT_OF[stage_name]], path, value)).encode("utf-8", "surrogatepass")
    refusal = _check(stage_name, raw, world=world, monkeypatch=monkeypatch)
    assert isinstance(refusal, BadDocument) and field_name in str(refusal), refusal


@pytest.mark.parametrize("raw", [b"[" * 100_000, b'{"ocb": 1, "kind": "backup", "x": NaN}',
                                 b'{"ocb": 1, "kind": "backup", "settings": {"retry_seconds": Infinity}}'])
def test_the_reader_refuses_deep_nesting_nan_and_infinity(raw):
    with pytest.raises(BadDocument):
        document.parse(raw)


def test_a_work_dir_of_slash_cannot_make_seal_consume_a_file_outside_the_snapshot(world, monkeypatch, tmp_path):
    """settings.work_dir "/" made every path "inside the work dir": seal sealed a file anywhere
    and deleted it. Work files must lie in the snapshot's own folder, work_dir/<id>."""
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    doc = _mutate(_mutate(world["docs"]["pack"], ("settings", "work_dir"), "/"), ("archive", "path"), str(victim))
    refusal = _check("seal", json.dumps(doc).encode(), world=world, monkeypatch=monkeypatch)
    assert isinstance(refusal, BadDocument) and "outside the work dir" in str(refusal)
    assert victim.read_text() == "keep me\n"
