import json
import logging
import pickle

import pytest

from flyops.secret import MASK, RedactingEncoder, Secret, redact


def test_every_rendering_is_masked(caplog):
    s = Secret("hunter2-value")
    assert repr(s) == f"Secret({MASK!r})"
    assert str(s) == MASK and f"{s}" == MASK and f"{s:>20}" == MASK
    assert "hunter2" not in json.dumps({"k": s}, cls=RedactingEncoder)
    with caplog.at_level(logging.INFO):
        logging.getLogger("t").info("value %s %r", s, s)
    assert "hunter2" not in caplog.text
    assert s.reveal() == "hunter2-value"


def test_exceptions_and_containers_do_not_leak():
    s = Secret("hunter2-value")
    assert "hunter2" not in str(ValueError(s)) and "hunter2" not in repr([s, {"a": s}])


def test_pydantic_dump_is_masked():
    from pydantic import BaseModel

    class M(BaseModel):
        password: Secret

    m = M(password="hunter2-value")
    assert m.password.reveal() == "hunter2-value"
    assert "hunter2" not in m.model_dump_json() and "hunter2" not in repr(m)


def test_immutable_and_not_picklable():
    s = Secret("x")
    with pytest.raises(AttributeError):
        s._value = "y"
    with pytest.raises(TypeError):
        pickle.dumps(s)


def test_fingerprint_is_stable_and_not_the_plain_sha256():
    import hashlib

    assert Secret("a").fingerprint() == Secret("a").fingerprint() != Secret("b").fingerprint()
    assert Secret("a").fingerprint() not in hashlib.sha256(b"a").hexdigest()


def test_redact_masks_longest_first():
    out = redact("pw=abcdef and abcdefgh", [Secret("abcdef"), Secret("abcdefgh")])
    assert "abcdef" not in out and out.count(MASK) == 2
