"""Secret-free views of a configuration (SPEC §2): `***` for resolved
`${file:...}` values and for keys named like *key|*token|*secret|*password."""

from __future__ import annotations

import json
from pathlib import Path

from nexo_actors.config import load_config
from nexo_actors.config.redact import MASK, redact_tree, redacted_dump, scrub
from tests.support.confdir import write_conf

FILE_SECRET = "file-secret-5d1e0a9b"
ENV_SECRET = "env-secret-77c2b4f0"
INLINE_SECRET = "inline-secret-1a2b3c4d"


def test_redact_tree_masks_secret_named_keys() -> None:
    tree = {"api_key": "a1", "Access_Token": "t1", "client_secret": "s1", "db_password": "p1",
            "token_file": "/run/secrets/t", "keys": ["k"], "name": "kate", "empty_key": ""}
    assert redact_tree(tree, []) == {
        "api_key": MASK, "Access_Token": MASK, "client_secret": MASK, "db_password": MASK,
        "token_file": "/run/secrets/t", "keys": ["k"], "name": "kate", "empty_key": ""}


def test_redact_tree_masks_values_holding_a_resolved_secret() -> None:
    tree = {"url": f"nats://user:{FILE_SECRET}@nats:4222", "group": FILE_SECRET,
            "list": [FILE_SECRET, "x"], "n": 3}
    assert redact_tree(tree, [FILE_SECRET]) == {"url": MASK, "group": MASK, "list": [MASK, "x"],
                                                "n": 3}


def test_redacted_dump_shows_no_secret(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "group.txt").write_text(FILE_SECRET)
    conf = write_conf(tmp_path / "conf", tmp_path / "data", llm={"providers": {
        "echo": {"api_key": "${API_KEY}", "group_id": "${file:secrets/group.txt}"},
        "other": {"api_flavor": "echo", "api_key": INLINE_SECRET}}})
    config = load_config(conf, env={"API_KEY": ENV_SECRET}, cwd=tmp_path)
    dump = redacted_dump(config)
    providers = dump["llm"]["providers"]
    assert providers["echo"]["api_key"] == MASK
    assert providers["echo"]["group_id"] == MASK
    assert providers["other"]["api_key"] == MASK
    assert providers["echo"]["prefix"] == "echo: "
    text = json.dumps(dump)
    for secret in (FILE_SECRET, ENV_SECRET, INLINE_SECRET):
        assert secret not in text


def test_scrub_masks_raw_and_escaped_forms() -> None:
    secret = 'pa"ss\\word-9'
    text = f"raw {secret} json {json.dumps(secret)} repr {secret!r}"
    out = scrub(text, [secret])
    assert out == f'raw {MASK} json "{MASK}" repr \'{MASK}\''


def test_scrub_leaves_very_short_values_alone() -> None:
    assert scrub("a cat sat", ["a"]) == "a cat sat"
