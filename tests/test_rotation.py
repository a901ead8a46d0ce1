"""`gateway keys rotate signing|pseudonym|agent` and `gateway keys agent`: each key rotates
on its own, what was made with the old key stays usable, agents keep reading old and new
messages, and agent private keys live outside the gateway's keys."""

from __future__ import annotations

import base64
import os
import re
import shutil
import stat
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner, Result

from gateway import errors, keys, rotation
from gateway.cli import main
from gateway.crypto import AgentPrivateKey, Sealer, SigningKey, subject_ref
from gateway.policy import Policy, load_policy
from gateway.pseudonyms import PseudonymKeyring, PseudonymPeriod, pseudonym_key_id
from gateway.runtime import Core, build_core, ensure_demo_keys
from gateway.sdk.reader import AgentReader, Received, Rejected
from gateway.settings import Settings
from gateway.signed_notes import parse_handover, split_handovers, verify_handover

ROOT = Path(__file__).resolve().parent.parent
SUBJ_OLD = re.compile(r"subj_[0-9a-f]{32}")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _cli(*args: str) -> Result:
    res = CliRunner().invoke(main, list(args))
    assert "Traceback" not in res.output
    return res


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        policy_path=ROOT / "agents.yaml",
        keys_dir=tmp_path / "keys",
        ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}",
    )


@pytest.fixture
def policy(settings: Settings) -> Policy:
    policy = load_policy(settings.policy_path)
    ensure_demo_keys(settings, policy)
    return policy


def _seal(core: Core, agent: str, n: int) -> bytes:
    sealer = core.pipeline.sealers[agent]
    return sealer.seal(b'{"n":%d}' % n, ref=f"e{n}", disclosure_id=f"d{n}").message


def _read(reader: AgentReader, *messages: bytes) -> list[str]:
    got = []
    for item in reader.read_many((f"m{i}", m) for i, m in enumerate(messages)):
        assert isinstance(item, Received), item
        got.append(item.ref)
    return got


# --------------------------------------------------------------------------------------
# agent key pairs live with the agent


def test_keys_agent_writes_the_pair_outside_the_gateways_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    gw = tmp_path / "keys"
    assert _cli("keys", "init", "--dir", str(gw)).exit_code == 0
    res = _cli("keys", "agent", "shipping", "--dir", str(gw))
    assert res.exit_code == 0, res.output
    own = Path("agent-keys")  # the default --out
    private = keys.load_agent_private_key(own / "shipping.key")
    assert _mode(own / "shipping.key") == 0o600
    assert keys.load_agent_public_key(own / "shipping.pub") == private.public_key()
    assert keys.load_agent_public_key(gw / "agents" / "shipping.pub") == private.public_key()
    assert list((gw / "agents").iterdir()) == [gw / "agents" / "shipping.pub"]
    # The output says where each half went.
    assert "agent-keys/shipping.key" in res.output
    assert str(gw / "agents" / "shipping.pub") in res.output
    assert f"public_key: {private.public_key().to_text()}" in res.output


def test_readme_agent_commands_find_the_key_where_keys_agent_put_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## For agents\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    make, consume = (line.split("#")[0].split() for line in block.splitlines() if line.strip())
    assert make[:3] == ["gateway", "keys", "agent"] and consume[:3] == [
        "gateway",
        "agent",
        "consume",
    ]
    monkeypatch.chdir(tmp_path)
    _cli("keys", "init", "--dir", "keys")
    res = _cli(*make[1:], "--dir", "keys")
    assert res.exit_code == 0, res.output
    key = consume[consume.index("--key") + 1]
    assert key in res.output
    assert keys.load_agent_private_key(tmp_path / key).public_key() == (
        keys.load_agent_public_key(tmp_path / "keys" / "agents" / f"{make[3]}.pub")
    )


def test_keys_agent_force_never_replaces_a_private_key(tmp_path: Path) -> None:
    gw, own = tmp_path / "keys", tmp_path / "own"
    _cli("keys", "init", "--dir", str(gw))
    assert _cli("keys", "agent", "shipping", "--dir", str(gw), "--out", str(own)).exit_code == 0
    before = (own / "shipping.key").read_bytes()
    for extra in ([], ["--force"]):
        res = _cli("keys", "agent", "shipping", "--dir", str(gw), "--out", str(own), *extra)
        assert res.exit_code == 2
        assert f"gateway keys rotate agent shipping --out {own}" in res.output
    assert (own / "shipping.key").read_bytes() == before

    # The gateway's copy alone (the agent made its pair elsewhere) is replaced with --force.
    other = tmp_path / "other"
    res = _cli("keys", "agent", "shipping", "--dir", str(gw), "--out", str(other))
    assert res.exit_code == 2 and "--force" in res.output
    res = _cli("keys", "agent", "shipping", "--dir", str(gw), "--out", str(other), "--force")
    assert res.exit_code == 0, res.output
    assert keys.load_agent_public_key(gw / "agents" / "shipping.pub") == (
        keys.load_agent_private_key(other / "shipping.key").public_key()
    )


def test_demo_keys_keep_agent_private_keys_beside_the_keys_dir(
    settings: Settings, policy: Policy
) -> None:
    # The gateway's own private keys only: no agent's private key among them.
    assert sorted(p.name for p in settings.keys_dir.rglob("*.key")) == [
        "gateway-signing.key",
        "pseudonym.key",
        "worker.key",
    ]
    demo = settings.keys_dir.parent / "agent-keys"
    for name in policy.agents:
        private = keys.load_agent_private_key(demo / f"{name}.key")
        assert keys.load_agent_public_key(settings.keys_dir / "agents" / f"{name}.pub") == (
            private.public_key()
        )
    # Gateway keys made afresh: the demo agents keep their pairs, the gateway gets their
    # public keys again.
    shutil.rmtree(settings.keys_dir)
    made = ensure_demo_keys(settings, policy)
    assert any("public key of agent shipping" in m for m in made)
    assert keys.load_agent_public_key(settings.keys_dir / "agents" / "shipping.pub") == (
        keys.load_agent_private_key(demo / "shipping.key").public_key()
    )


# --------------------------------------------------------------------------------------
# the gateway signing key


def test_rotate_signing_archives_the_old_key_and_writes_a_handover(
    settings: Settings, policy: Policy
) -> None:
    d = settings.keys_dir
    old = keys.load_verify_key(d / "gateway-signing.pub")
    res = _cli("keys", "rotate", "signing", "--dir", str(d))
    assert res.exit_code == 0, res.output
    new = keys.load_verify_key(d / "gateway-signing.pub")
    assert new != old
    assert keys.load_signing_key(d / "gateway-signing.key").public_key() == new
    assert _mode(d / "gateway-signing.key") == 0o600

    hist = d / "history" / "signing"
    old_id = old.key_id.replace(":", "-")
    new_id = new.key_id.replace(":", "-")
    assert keys.load_verify_key(hist / f"{old_id}.pub") == old
    note = (hist / f"{new_id}.handover").read_text()
    old_b64 = base64.b64encode(old.raw).decode()
    assert note.startswith(
        f"disclosure-gateway/key-handover/v1\nold {old.key_id} {old_b64}\nnew {new.key_id} "
    )
    assert verify_handover(note, [old]).new == new
    assert split_handovers((hist / "handover-chain").read_text()) == [note]
    assert old.key_id in res.output and new.key_id in res.output
    assert str(hist / f"{new_id}.handover") in res.output
    assert "PRIVATE KEY" not in res.output
    assert rotation.signing_key_history(d) == [old]


def test_agent_trusting_only_the_old_key_reads_old_and_new_messages(
    settings: Settings, policy: Policy, tmp_path: Path
) -> None:
    # What the agent was given before the rotation: a copy of the public key.
    saved = tmp_path / "trusted" / "gateway-signing.pub"
    saved.parent.mkdir(mode=0o700)
    shutil.copy(settings.signing_public_key_path, saved)
    agent_key = keys.demo_agent_private_key(settings.keys_dir, "shipping")

    before = build_core(settings, policy)
    old_msgs = [_seal(before, "shipping", n) for n in (1, 2)]
    assert before.handover == ()

    rotation.rotate_signing_key(settings.keys_dir)
    after = build_core(settings, policy)
    assert len(after.handover) == 1
    new_msgs = [_seal(after, "shipping", n) for n in (3, 4)]

    reader = AgentReader("shipping", agent_key, saved)
    assert _read(reader, *old_msgs, *new_msgs) == ["e1", "e2", "e3", "e4"]
    assert [h.new for h in reader.learned_gateway_keys] == [after.verify_key]

    # Rotated again: the envelope carries the whole chain, the agent still follows.
    rotation.rotate_signing_key(settings.keys_dir)
    third = build_core(settings, policy)
    assert len(third.handover) == 2
    fresh = AgentReader("shipping", agent_key, saved)
    assert _read(fresh, *old_msgs, _seal(third, "shipping", 5)) == ["e1", "e2", "e5"]

    # The CLI says which key it came to trust.
    out = tmp_path / "topic.jsonl"
    out.write_bytes(b"\n".join([*old_msgs, _seal(third, "shipping", 6)]) + b"\n")
    res = _cli(
        "agent", "read", str(out), "--agent", "shipping", "--key", str(agent_key),
        "--gateway-key", str(saved),
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert f"trusted gateway key {third.verify_key.key_id}" in res.output
    assert "3 message(s) read" in res.output


def test_envelopes_carry_the_latest_handovers_and_older_keys_take_the_chain_file(
    settings: Settings, policy: Policy, tmp_path: Path
) -> None:
    first = tmp_path / "first.pub"
    shutil.copy(settings.signing_public_key_path, first)
    agent_key = keys.demo_agent_private_key(settings.keys_dir, "shipping")
    for _ in range(3):
        rotation.rotate_signing_key(settings.keys_dir)
    core = build_core(settings, policy)
    assert settings.envelope_handovers == 2 and len(core.handover) == 2
    msg = _seal(core, "shipping", 1)
    assert orjson.loads(msg)["envelope"]["handover"] == list(core.handover)
    wide = build_core(settings.model_copy(update={"envelope_handovers": 16}), policy)
    assert len(wide.handover) == 3
    assert build_core(settings.model_copy(update={"envelope_handovers": 0}), policy).handover == ()

    # The first key is three hand-overs back: the message alone does not lead to it...
    (rejected,) = AgentReader("shipping", agent_key, first).read_many([("m1", msg)])
    assert isinstance(rejected, Rejected) and "no hand-over" in rejected.error
    # ...the chain file does.
    chain = settings.keys_dir / "history" / "signing" / "handover-chain"
    notes = split_handovers(chain.read_text())
    assert notes[1:] == list(core.handover) and len(notes) == 3
    reader = AgentReader("shipping", agent_key, first, handovers=notes)
    assert _read(reader, msg) == ["e1"]
    topic = tmp_path / "topic.jsonl"
    topic.write_bytes(msg + b"\n")
    args = ["agent", "read", str(topic), "--agent", "shipping", "--key", str(agent_key)]
    assert _cli(*args, "--gateway-key", str(first)).exit_code == 1
    res = _cli(*args, "--gateway-key", str(first), "--handover", str(chain))
    assert res.exit_code == 0, res.output
    assert "1 message(s) read" in res.output
    # A chain file that was tampered with is refused as a whole.
    bad = tmp_path / "bad-chain"
    bad.write_text(chain.read_text().replace("time 2", "time 1", 1))
    res = _cli(*args, "--gateway-key", str(first), "--handover", str(bad))
    assert res.exit_code == 2 and "does not check" in res.output


def test_agent_given_several_gateway_keys_on_the_command_line(
    settings: Settings, policy: Policy, tmp_path: Path
) -> None:
    first = tmp_path / "first.pub"
    shutil.copy(settings.signing_public_key_path, first)
    old_msg = _seal(build_core(settings, policy), "shipping", 1)
    rotation.rotate_signing_key(settings.keys_dir)
    # A message without hand-over (a gateway that signs with an unrelated key the agent
    # was told about): only the keys given on the command line count.
    other = SigningKey.generate()
    other_pub = tmp_path / "other.pub"
    other_pub.write_bytes(other.public_key().to_pem())
    pub = keys.load_agent_public_key(settings.keys_dir / "agents" / "shipping.pub")
    new_msg = Sealer("shipping", pub, other).seal(b"{}", ref="e2", disclosure_id="d2")
    topic = tmp_path / "topic.jsonl"
    topic.write_bytes(old_msg + b"\n" + new_msg.message + b"\n")
    agent_key = str(keys.demo_agent_private_key(settings.keys_dir, "shipping"))
    args = ["agent", "read", str(topic), "--agent", "shipping", "--key", agent_key]
    res = _cli(*args, "--gateway-key", str(first))
    assert res.exit_code == 1 and "1 rejected" in res.output
    res = _cli(*args, "--gateway-key", str(first), "--gateway-key", str(other_pub))
    assert res.exit_code == 0, res.output
    assert "2 message(s) read" in res.output


def test_a_tampered_handover_file_stops_start_up(settings: Settings, policy: Policy) -> None:
    done = rotation.rotate_signing_key(settings.keys_dir)
    attacker = SigningKey.generate()
    note = done.handover_path.read_text()
    real = parse_handover(note).new
    forged = note.replace(
        base64.b64encode(real.raw).decode(), base64.b64encode(attacker.public_key().raw).decode()
    )
    done.handover_path.write_text(forged)
    with pytest.raises(errors.KeyFileError, match=re.escape(str(done.handover_path))):
        build_core(settings, policy)


def test_a_refused_handover_stops_the_signing_rotation(settings: Settings, policy: Policy) -> None:
    d = settings.keys_dir
    before = (d / "gateway-signing.key").read_bytes()
    seen: list[str] = []

    def refuse(note: str, path: Path) -> None:
        seen.append(note)
        assert path.read_text() == note  # written before anything is replaced
        raise errors.LedgerError("the ledger refused the hand-over")

    with pytest.raises(errors.LedgerError, match="refused"):
        rotation.rotate_signing_key(d, before_switch=refuse)
    assert len(seen) == 1
    assert (d / "gateway-signing.key").read_bytes() == before
    assert not list((d / "history" / "signing").glob("*.handover"))
    build_core(settings, policy)  # the old key is still in use
    # Called before the new key takes over, with the note that hands over to it.
    got: list[str] = []
    done = rotation.rotate_signing_key(d, before_switch=lambda note, path: got.append(note))
    assert got == [done.handover] and verify_handover(got[0], [done.old]).new == done.new


def test_interrupted_signing_rotation_is_finished_by_running_it_again(
    settings: Settings, policy: Policy
) -> None:
    d = settings.keys_dir
    old_pub = (d / "gateway-signing.pub").read_bytes()
    done = rotation.rotate_signing_key(d)
    # A crash after the private key was replaced, before the public key was.
    keys.write_key_file(d / "gateway-signing.pub", old_pub, private=False, replace=True)
    with pytest.raises(errors.KeyFileError, match="does not match"):
        build_core(settings, policy)
    again = rotation.rotate_signing_key(d)
    assert again.resumed and again.new == done.new and again.old == done.old
    assert keys.load_verify_key(d / "gateway-signing.pub") == done.new
    build_core(settings, policy)
    # A mismatch nothing explains is not "finished" by inventing a hand-over.
    keys.write_key_file(
        d / "gateway-signing.pub",
        SigningKey.generate().public_key().to_pem(),
        private=False,
        replace=True,
    )
    with pytest.raises(errors.KeyFileError, match="no hand-over explains it"):
        rotation.rotate_signing_key(d)


# --------------------------------------------------------------------------------------
# the pseudonym key


def test_before_any_rotation_refs_are_the_original_format(
    settings: Settings, policy: Policy
) -> None:
    core = build_core(settings, policy)
    master = keys.load_pseudonym_key(settings.pseudonym_key_path)
    assert core.pseudonyms.periods == PseudonymKeyring.single(master).periods
    assert core.pseudonyms.periods == (PseudonymPeriod(master, original=True),)
    assert core.pseudonyms.subject_refs("C-1001") == [subject_ref(master, "C-1001")]
    assert SUBJ_OLD.fullmatch(core.pseudonyms.subject_ref("C-1001"))


def test_rotate_pseudonym_starts_a_new_period(settings: Settings, policy: Policy) -> None:
    d = settings.keys_dir
    before = build_core(settings, policy)
    old_master = before.pseudonym_master
    old_ref = before.pseudonyms.subject_ref("C-1001")
    old_agent_keys = dict(before.engine.pseudonym_keys)

    res = _cli("keys", "rotate", "pseudonym", "--dir", str(d))
    assert res.exit_code == 0, res.output
    old_id, new_master = pseudonym_key_id(old_master), keys.load_pseudonym_key(d / "pseudonym.key")
    new_id = pseudonym_key_id(new_master)
    assert new_master != old_master and new_id != old_id
    archived = d / "history" / "pseudonym" / f"{old_id}.key"
    assert keys.load_pseudonym_key(archived) == old_master
    assert _mode(archived) == 0o600 and _mode(d / "pseudonym.key") == 0o600
    assert old_id in res.output and new_id in res.output

    after = build_core(settings, policy)
    ring = after.pseudonyms
    assert after.pseudonym_master == new_master == ring.master
    new_ref = ring.subject_ref("C-1001")
    assert re.fullmatch(rf"subj_{new_id}_[0-9a-f]{{32}}", new_ref)
    # Every period's ref, current first; the original ref is unchanged.
    assert ring.subject_refs("C-1001") == [new_ref, old_ref]
    assert ring.period_of(new_ref) == ring.current
    assert ring.period_of(old_ref) == PseudonymPeriod(old_master, original=True)
    unknown = next(f"{i:04x}" for i in range(5) if f"{i:04x}" != new_id)
    assert ring.period_of(f"subj_{unknown}_{'0' * 32}") is None
    assert ring.period_of("subj_not-a-ref") is None
    # New period, new agent pseudonyms.
    assert after.engine.pseudonym_keys == ring.agent_keys(policy.agents)
    assert all(after.engine.pseudonym_keys[a] != old_agent_keys[a] for a in policy.agents)

    rotation.rotate_pseudonym_key(d)
    third = rotation.load_pseudonym_keyring(d)
    refs = third.subject_refs("C-1001")
    assert len(refs) == 3 and refs[1:] == [new_ref, old_ref] and len(set(refs)) == 3
    assert [p.original for p in third.periods] == [False, False, True]


def test_pseudonym_history_files_are_checked(settings: Settings, policy: Policy) -> None:
    d = settings.keys_dir
    old_id = pseudonym_key_id(keys.load_pseudonym_key(d / "pseudonym.key"))
    rotation.rotate_pseudonym_key(d)
    archived = d / "history" / "pseudonym" / f"{old_id}.key"
    archived.chmod(0o644)
    with pytest.raises(errors.KeyFileError, match=re.escape(f"chmod 600 {archived}")):
        build_core(settings, policy)
    archived.chmod(0o600)
    # A key file that is not the key its name says.
    good = archived.read_bytes()
    keys.write_key_file(archived, os.urandom(32).hex().encode(), private=True, replace=True)
    with pytest.raises(errors.KeyFileError, match="holds the key with id"):
        build_core(settings, policy)
    keys.write_key_file(archived, good, private=True, replace=True)
    build_core(settings, policy)


def test_interrupted_pseudonym_rotation_is_finished_by_running_it_again(
    settings: Settings, policy: Policy
) -> None:
    d = settings.keys_dir
    first = keys.load_pseudonym_key(d / "pseudonym.key").hex() + "\n"
    done = rotation.rotate_pseudonym_key(d)
    # A crash after the periods file named the new key, before pseudonym.key was replaced.
    keys.write_key_file(d / "pseudonym.key", first.encode(), private=True, replace=True)
    with pytest.raises(errors.KeyFileError, match="interrupted"):
        build_core(settings, policy)
    again = rotation.rotate_pseudonym_key(d)
    assert again.resumed and again.new_key_id == done.new_key_id
    assert build_core(settings, policy).pseudonyms.current.key_id == done.new_key_id


def test_pseudonym_key_ids_never_collide(
    settings: Settings, policy: Policy, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = settings.keys_dir
    current = keys.load_pseudonym_key(d / "pseudonym.key")
    fresh = os.urandom(32)
    offered = iter([current, fresh])
    monkeypatch.setattr(rotation, "_new_pseudonym_master", lambda: next(offered))
    done = rotation.rotate_pseudonym_key(d)
    assert done.new_key_id == pseudonym_key_id(fresh)


# --------------------------------------------------------------------------------------
# agent key pairs


def test_rotate_agent_keeps_the_backlog_readable(tmp_path: Path) -> None:
    gw, own = tmp_path / "keys", tmp_path / "agent-keys"
    _cli("keys", "init", "--dir", str(gw))
    _cli("keys", "agent", "shipping", "--dir", str(gw), "--out", str(own))
    signing = keys.load_signing_key(gw / "gateway-signing.key")

    def seal(n: int) -> bytes:
        pub = keys.load_agent_public_key(gw / "agents" / "shipping.pub")
        sealer = Sealer("shipping", pub, signing)
        return sealer.seal(b"{}", ref=f"e{n}", disclosure_id=f"d{n}").message

    backlog = seal(1)
    old = keys.load_agent_private_key(own / "shipping.key")
    res = _cli("keys", "rotate", "agent", "shipping", "--dir", str(gw), "--out", str(own))
    assert res.exit_code == 0, res.output
    archived = own / f"shipping.{old.key_id.replace(':', '-')}.key"
    assert keys.load_agent_private_key(archived).public_key() == old.public_key()
    assert _mode(archived) == 0o600
    new = keys.load_agent_private_key(own / "shipping.key")
    assert new.public_key() != old.public_key()
    assert keys.load_agent_public_key(gw / "agents" / "shipping.pub") == new.public_key()
    assert keys.load_agent_public_key(own / "shipping.pub") == new.public_key()
    assert str(archived) in res.output and new.public_key().to_text() in res.output
    assert not list((gw / "agents").glob("*.key"))

    fresh = seal(2)
    reader = AgentReader("shipping", own / "shipping.key", gw / "gateway-signing.pub")
    assert _read(reader, backlog, fresh) == ["e1", "e2"]
    # Twice: both earlier keys are kept and used.
    rotation.rotate_agent_key("shipping", own, gw)
    reader = AgentReader("shipping", own / "shipping.key", gw / "gateway-signing.pub")
    assert _read(reader, backlog, fresh, seal(3)) == ["e1", "e2", "e3"]
    assert len(list(own.glob("shipping.x25519-*.key"))) == 2

    # The current key alone cannot open the backlog, and says which key it needs.
    alone = tmp_path / "alone"
    alone.mkdir(mode=0o700)
    shutil.copy(own / "shipping.key", alone / "shipping.key")
    only_new = AgentReader("shipping", alone / "shipping.key", gw / "gateway-signing.pub")
    rejected = list(only_new.read_many([("m", backlog)]))
    assert len(rejected) == 1 and old.key_id in getattr(rejected[0], "error", "")


def test_rotate_agent_without_install_and_without_a_pair(tmp_path: Path) -> None:
    gw, own = tmp_path / "keys", tmp_path / "agent-keys"
    _cli("keys", "init", "--dir", str(gw))
    res = _cli("keys", "rotate", "agent", "shipping", "--dir", str(gw), "--out", str(own))
    assert res.exit_code == 2
    assert f"gateway keys agent shipping --out {own}" in res.output
    _cli("keys", "agent", "shipping", "--dir", str(gw), "--out", str(own))
    installed = (gw / "agents" / "shipping.pub").read_bytes()
    res = _cli("keys", "rotate", "agent", "shipping", "--out", str(own), "--no-install")
    assert res.exit_code == 0, res.output
    assert (gw / "agents" / "shipping.pub").read_bytes() == installed
    assert (own / "shipping.pub").read_bytes() != installed


def test_archived_agent_key_must_match_its_name(tmp_path: Path) -> None:
    own = tmp_path / "agent-keys"
    gw = tmp_path / "keys"
    keys.init_gateway_keys(gw)
    keys.issue_agent_keypair("shipping", own, gw)
    stranger = AgentPrivateKey.generate()
    wrong = own / "shipping.x25519-0000000000000000.key"
    keys.write_key_file(wrong, stranger.to_pem(), private=True)
    with pytest.raises(errors.KeyFileError, match="rename it to"):
        rotation.load_agent_private_keys(own / "shipping.key")


def test_keys_show_reports_the_history(settings: Settings, policy: Policy) -> None:
    d = settings.keys_dir
    rotation.rotate_signing_key(d)
    rotation.rotate_pseudonym_key(d)
    res = _cli("keys", "show", "--dir", str(d))
    assert res.exit_code == 0, res.output
    assert "1 earlier key(s) kept, a chain of 1 hand-over(s)" in res.output
    assert "(original)" in res.output


def test_keys_show_flags_an_agent_private_key_on_the_gateway(tmp_path: Path) -> None:
    gw = tmp_path / "keys"
    keys.init_gateway_keys(gw)
    keys.create_agent_keypair(gw, "shipping")  # how older versions left agents' keys
    res = _cli("keys", "show", "--dir", str(gw))
    assert f"its private key {gw / 'agents' / 'shipping.key'} is on the gateway" in res.output
