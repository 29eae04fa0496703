"""Keys, canonical bytes, signing and verifying (pure), the trusted-key lines and the node's
``trust:`` section, and the definition book refusing what is not signed."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import pytest
import strategies as s
from agent_support import two_node_ion
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ion.errors import ConfigError, DecodeError, InputError
from ion.model.command import Command, ModelRef, Ping, RollbackModel
from ion.model.definition import IonDefinition, IonDeleted, Signature
from ion.model.manifest import ModelManifest
from ion.model.messages import new_envelope
from ion.security import (
    ALGORITHM,
    Keyring,
    Refusal,
    Role,
    SigningKey,
    TrustConfig,
    TrustedKey,
    canonical_bytes,
    parse_public_key,
    parse_trusted_line,
    sign,
    signed_payload,
    trust_from_mapping,
    verify,
)
from ion.security.keystore import KeyStore, read_signing_key
from ion.wire.codec import decode, encode
from node.config import config_from_mapping
from node.reconcile import DefinitionBook

OPERATOR = SigningKey.generate()
PRODUCER = SigningKey.generate()
STRANGER = SigningKey.generate()
RING = Keyring.of(
    [
        TrustedKey(OPERATOR.public, frozenset({Role.OPERATOR}), "alice"),
        TrustedKey(PRODUCER.public, frozenset({Role.PRODUCER}), "trainer"),
    ]
)


def definition(version: int = 3) -> IonDefinition:
    return replace(two_node_ion("plant", "a", "b"), version=version, applied_by="alice")


def manifest() -> ModelManifest:
    return ModelManifest(model_id="ab" * 32, version="17", ion="plant", edge="model", size_bytes=9)


T = TypeVar("T")


def over_the_wire(body: T) -> T:
    env = decode(encode(new_envelope(body, source_node="op", now_ms=1)))  # type: ignore[arg-type]
    return env.body  # type: ignore[return-value]


# -- keys ------------------------------------------------------------------------------------


def test_a_public_key_line_round_trips_and_its_id_is_a_short_hash() -> None:
    text = OPERATOR.public.text()
    assert text.startswith("ed25519:")
    assert parse_public_key(text) == OPERATOR.public
    assert len(OPERATOR.key_id) == 16
    assert OPERATOR.key_id != PRODUCER.key_id


@pytest.mark.parametrize(
    "text",
    ["", "rsa:AAAA", "ed25519:not base64!", "ed25519:AAAA", "ed25519:" + "A" * 60],
)
def test_malformed_public_keys_are_input_errors(text: str) -> None:
    with pytest.raises(InputError):
        parse_public_key(text)


def test_a_private_key_round_trips_through_pem_and_never_shows_in_repr() -> None:
    pem = OPERATOR.to_pem()
    assert SigningKey.from_pem(pem).public == OPERATOR.public
    assert "PRIVATE" not in repr(OPERATOR) and OPERATOR.key_id in repr(OPERATOR)
    with pytest.raises(InputError, match="not an unencrypted PEM"):
        SigningKey.from_pem(b"-----BEGIN NOTHING-----\n")


# -- signing ---------------------------------------------------------------------------------


def test_a_signed_definition_verifies_after_crossing_the_wire() -> None:
    signed = sign(definition(), OPERATOR, now_ms=1234)
    assert signed.signature is not None
    assert signed.signature.algorithm == ALGORITHM
    assert signed.signature.key_id == OPERATOR.key_id
    assert signed.signature.signed_ms == 1234
    received = over_the_wire(signed)
    verdict = verify(received, RING)
    assert verdict.accepted and verdict.signer is not None and verdict.signer.name == "alice"
    assert "signed by alice" in verdict.reason


def test_canonical_bytes_ignore_the_signature_and_nothing_else() -> None:
    d = definition()
    signed = sign(d, OPERATOR, now_ms=1)
    assert canonical_bytes(signed) == canonical_bytes(d)
    assert canonical_bytes(replace(d, applied_ms=5)) != canonical_bytes(d)  # stamp is covered
    assert canonical_bytes(over_the_wire(signed)) == canonical_bytes(d)


@pytest.mark.parametrize(
    "change",
    [
        lambda d: replace(d, version=d.version + 1),
        lambda d: replace(d, applied_by="mallory"),
        lambda d: replace(d, pipelines=d.pipelines[:1]),
        lambda d: replace(d, labels={"x": "y"}),
        lambda d: replace(d, content_sha256="0" * 64),
    ],
)
def test_a_tampered_definition_has_a_bad_signature(change: object) -> None:
    signed = sign(definition(), OPERATOR, now_ms=1)
    tampered = change(signed)  # type: ignore[operator]
    verdict = verify(tampered, RING)
    assert not verdict.accepted and verdict.refusal is Refusal.BAD_SIGNATURE
    assert verdict.reason.startswith("bad signature")


def test_relabelling_a_signature_breaks_it() -> None:
    signed = sign(definition(), OPERATOR, now_ms=1)
    assert signed.signature is not None
    later = replace(signed, signature=replace(signed.signature, signed_ms=2))
    assert verify(later, RING).refusal is Refusal.BAD_SIGNATURE
    wrong_alg = replace(signed, signature=replace(signed.signature, algorithm="rsa"))
    assert verify(wrong_alg, RING).refusal is Refusal.BAD_SIGNATURE


def test_unsigned_untrusted_and_wrong_role_are_refused_with_their_reason() -> None:
    d = definition()
    unsigned = verify(d, RING)
    assert unsigned.refusal is Refusal.UNSIGNED and unsigned.reason.startswith("unsigned")
    stranger = verify(sign(d, STRANGER, now_ms=1), RING)
    assert stranger.refusal is Refusal.UNTRUSTED_KEY
    assert stranger.reason.startswith("untrusted key")
    # A producer key cannot tell nodes what to run; an operator key cannot ship models.
    producer_signed = verify(sign(d, PRODUCER, now_ms=1), RING)
    assert producer_signed.refusal is Refusal.UNTRUSTED_KEY
    assert "not trusted as operator" in producer_signed.reason
    assert verify(sign(manifest(), OPERATOR, now_ms=1), RING).refusal is Refusal.UNTRUSTED_KEY
    assert verify(sign(manifest(), PRODUCER, now_ms=1), RING).accepted
    assert "trusts none" in verify(d, Keyring()).reason


def test_development_mode_accepts_unsigned_but_never_a_bad_signature() -> None:
    d = definition()
    ok = verify(d, RING, development_mode=True)
    assert ok.accepted and ok.unsigned
    tampered = replace(sign(d, OPERATOR, now_ms=1), version=99)
    assert verify(tampered, RING, development_mode=True).refusal is Refusal.BAD_SIGNATURE
    foreign = sign(d, STRANGER, now_ms=1)
    assert verify(foreign, RING, development_mode=True).refusal is Refusal.UNTRUSTED_KEY


def test_a_signature_on_one_kind_of_message_does_not_pass_for_another() -> None:
    tomb = IonDeleted(name="plant", version=4, deleted_ms=9, deleted_by="alice")
    signed_tomb = sign(tomb, OPERATOR, now_ms=1)
    assert verify(over_the_wire(signed_tomb), RING).accepted
    assert signed_tomb.signature is not None
    # The same key id and time, the payload of a definition: the kinds differ.
    d = definition()
    assert signed_payload(d, key_id=OPERATOR.key_id, signed_ms=1) != signed_payload(
        tomb, key_id=OPERATOR.key_id, signed_ms=1
    )
    assert verify(replace(d, signature=signed_tomb.signature), RING).refusal is (
        Refusal.BAD_SIGNATURE
    )


def test_commands_and_manifests_sign_and_verify_over_the_wire() -> None:
    cmd = Command("c1", RollbackModel(ModelRef("plant", "model")), issued_by="alice", sequence=7)
    assert verify(over_the_wire(sign(cmd, OPERATOR, now_ms=3)), RING).accepted
    bad = replace(sign(cmd, OPERATOR, now_ms=3), action=Ping())
    assert verify(bad, RING).refusal is Refusal.BAD_SIGNATURE
    m = sign(manifest(), PRODUCER, now_ms=3)
    assert verify(over_the_wire(m), RING).accepted
    assert verify(replace(m, size_bytes=10), RING).refusal is Refusal.BAD_SIGNATURE


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    body=st.one_of(s.definitions, s.deletions, s.model_manifests, s.commands),
    position=st.integers(min_value=0),
    byte=st.integers(min_value=0, max_value=255),
)
def test_any_change_to_a_signed_message_on_the_wire_breaks_its_signature(
    body: IonDefinition | IonDeleted | ModelManifest | Command, position: int, byte: int
) -> None:
    """Whatever byte of the envelope changes: if the message still decodes and the node would
    accept it, then it is exactly what was signed."""
    key = PRODUCER if isinstance(body, ModelManifest) else OPERATOR
    signed = sign(body, key, now_ms=42)
    payload = bytearray(encode(new_envelope(signed, source_node="op", now_ms=1)))
    i = position % len(payload)
    if payload[i] == byte:
        return
    payload[i] = byte
    try:
        received = decode(bytes(payload)).body
    except DecodeError:
        return
    if type(received) is not type(signed):
        return
    verdict = verify(received, RING)
    if verdict.accepted:
        assert canonical_bytes(received) == canonical_bytes(signed)
        assert received.signature == signed.signature


@settings(max_examples=40, deadline=None)
@given(a=s.definitions, b=s.definitions)
def test_a_signature_never_carries_over_to_different_content(
    a: IonDefinition, b: IonDefinition
) -> None:
    signed = sign(a, OPERATOR, now_ms=1)
    moved = replace(b, signature=signed.signature)
    verdict = verify(moved, RING)
    assert verdict.accepted == (canonical_bytes(a) == canonical_bytes(b))


# -- trusted keys and the trust section --------------------------------------------------------


def test_trusted_key_lines_parse_roles_and_names() -> None:
    line = f"{OPERATOR.public.text()} operator,producer alice smith"
    t = parse_trusted_line(line)
    assert t.key == OPERATOR.public
    assert t.roles == {Role.OPERATOR, Role.PRODUCER}
    assert t.name == "alice smith"
    assert parse_trusted_line(t.line()) == t
    with pytest.raises(InputError, match="say what it is trusted for"):
        parse_trusted_line(f"{OPERATOR.public.text()} alice")
    with pytest.raises(InputError):
        parse_trusted_line(f"{OPERATOR.public.text()} operator,admin alice")


def test_the_same_key_twice_gets_both_roles() -> None:
    ring = Keyring.of(
        [
            TrustedKey(OPERATOR.public, frozenset({Role.OPERATOR}), "alice"),
            TrustedKey(OPERATOR.public, frozenset({Role.PRODUCER})),
        ]
    )
    held = ring.get(OPERATOR.key_id)
    assert held is not None and held.roles == {Role.OPERATOR, Role.PRODUCER}
    assert held.name == "alice"


def test_trust_section_reads_key_lines_files_and_a_signing_key(tmp_path: Path) -> None:
    keys_file = tmp_path / "trusted.pub"
    keys_file.write_text(f"# the training cluster\n\n{PRODUCER.public.text()} producer trainer\n")
    private = tmp_path / "producer.key"
    private.write_bytes(PRODUCER.to_pem())
    private.chmod(0o600)
    trust = trust_from_mapping(
        {
            "keys": [f"{OPERATOR.public.text()} operator alice", "trusted.pub"],
            "signing_key": "producer.key",
        },
        base_dir=tmp_path,
    )
    assert not trust.development_mode
    assert set(trust.keyring.keys) == {OPERATOR.key_id, PRODUCER.key_id}
    assert trust.signing_key is not None and trust.signing_key.public == PRODUCER.public


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"keyz": []}, "unknown key"),
        ({"keys": "ed25519:AAAA operator"}, "must be a list"),
        ({"development_mode": "yes"}, "true or false"),
        ({"keys": ["ed25519:AAAA operator"]}, r"keys\[0\]"),
        ({"keys": ["no-such-file.pub"]}, "neither a key line"),
        ({"signing_key": "missing.key"}, "signing_key: cannot read"),
    ],
)
def test_trust_section_problems_are_config_errors(
    tmp_path: Path, data: dict[str, object], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        trust_from_mapping(data, base_dir=tmp_path)


def test_a_private_key_others_can_read_is_refused(tmp_path: Path) -> None:
    private = tmp_path / "k.key"
    private.write_bytes(OPERATOR.to_pem())
    private.chmod(0o644)
    with pytest.raises(InputError, match="chmod 600"):
        read_signing_key(private)
    private.chmod(0o600)
    assert read_signing_key(private).public == OPERATOR.public


def test_node_config_is_secure_by_default_and_reads_trust(tmp_path: Path) -> None:
    default = config_from_mapping({"node": {"id": "edge-1"}})
    assert not default.trust.development_mode and len(default.trust.keyring) == 0
    cfg = config_from_mapping(
        {
            "node": {"id": "edge-1"},
            "trust": {"keys": [f"{OPERATOR.public.text()} operator"], "development_mode": True},
        },
        base_dir=tmp_path,
    )
    assert cfg.trust.development_mode and OPERATOR.key_id in cfg.trust.keyring.keys
    with pytest.raises(ConfigError, match="trust: unknown key"):
        config_from_mapping({"node": {"id": "e"}, "trust": {"dev": True}})


# -- the definition book ---------------------------------------------------------------------


def test_the_book_refuses_unsigned_forged_and_untrusted_definitions() -> None:
    trust = TrustConfig(keyring=RING)
    book = DefinitionBook()
    unsigned = book.offer(definition(3), trust)
    assert not unsigned.accepted and unsigned.reason.startswith("unsigned")
    forged = replace(sign(definition(3), OPERATOR, now_ms=1), version=9)
    assert book.offer(forged, trust).reason.startswith("bad signature")
    assert book.offer(sign(definition(3), STRANGER, now_ms=1), trust).reason.startswith(
        "untrusted key"
    )
    assert book.entries == {}  # nothing changed, not even the version to beat
    assert book.offer(sign(definition(3), OPERATOR, now_ms=1), trust).accepted
    # A genuine but older signed definition is still refused by its version.
    stale = book.offer(sign(definition(2), OPERATOR, now_ms=1), trust)
    assert not stale.accepted and stale.reason.startswith("stale")
    tomb = IonDeleted(name="plant", version=4)
    assert not book.offer(tomb, trust).accepted
    assert book.offer(sign(tomb, OPERATOR, now_ms=2), trust).accepted
    assert book.active() == {}


def test_the_book_in_development_mode_warns_once_and_refuses_bad_signatures(
    caplog: pytest.LogCaptureFixture,
) -> None:
    trust = TrustConfig(keyring=RING, development_mode=True)
    book = DefinitionBook()
    with caplog.at_level("WARNING", logger="node.reconcile"):
        assert book.offer(definition(3), trust).accepted
        assert book.offer(definition(4), trust).accepted
    assert sum("unsigned" in r.getMessage() for r in caplog.records) == 1
    bad = replace(sign(definition(5), OPERATOR, now_ms=1), applied_by="mallory")
    assert book.offer(bad, trust).reason.startswith("bad signature")
    assert book.entries["plant"].version == 4


def test_key_store_creates_0600_keys_and_never_overwrites(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys")
    created = store.create("alice", {Role.OPERATOR})
    assert created.private_file is not None
    assert os.stat(created.private_file).st_mode & 0o777 == 0o600
    assert os.stat(tmp_path / "keys").st_mode & 0o777 == 0o700
    key = store.signing_key("alice")
    assert key.public == created.trusted.key
    with pytest.raises(InputError, match="already exists"):
        store.create("alice", {Role.PRODUCER})
    with pytest.raises(InputError, match="key name"):
        store.create("../evil", {Role.OPERATOR})
    entries, problems = store.entries()
    assert [e.name for e in entries] == ["alice"] and problems == []


def test_signature_fields_are_what_the_wire_carries() -> None:
    signed = sign(definition(), OPERATOR, now_ms=5)
    assert isinstance(signed.signature, Signature)
    assert over_the_wire(signed).signature == signed.signature
