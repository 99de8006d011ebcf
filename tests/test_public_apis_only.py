"""The package builds and reads pydantic models through pydantic's public API only.

Setting a model's slots by hand (its `__dict__`, `__pydantic_fields_set__`, ...) works until a
pydantic minor release lays them out differently, and then fails in silence. This scans the
code under src/ (comments aside) for the names that such code needs.
"""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "see_persistence"

# Each with why it gives away a reach into pydantic's internals.
PRIVATE = {
    r"__pydantic_\w*": "pydantic's private attributes (validator, fields_set, extra, private, decorators...)",
    r"__private_attributes__|__class_vars__": "pydantic's private class attributes",
    r"__dict__\s*\[": "a class's or model's slot descriptors taken from its __dict__",
    r"object\.__setattr__|_object_setattr": "setting a frozen model's attributes behind its back",
    r"object\.__new__": "an instance made without its class's constructor",
    r"pydantic\._internal|from\s+pydantic\s+import\s+_": "pydantic's internal modules",
}


def _code_without_comments(path: Path) -> str:
    tokens = tokenize.generate_tokens(io.StringIO(path.read_text(encoding="utf-8")).readline)
    return " ".join(tok.string for tok in tokens if tok.type != tokenize.COMMENT)


def _offences(code: str) -> list[str]:
    return [f"{pattern}: {why}" for pattern, why in PRIVATE.items() if re.search(pattern, code)]


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_no_module_reaches_into_pydantic_internals(path):
    assert _offences(_code_without_comments(path)) == []


@pytest.mark.parametrize(
    "line",
    [
        'set_dict = BaseModel.__dict__["__dict__"].__set__',
        "model.__pydantic_fields_set__ = set()",
        "validate = Model.__pydantic_validator__.validate_python",
        "object.__setattr__(model, 'id', 'x')",
        "from pydantic._internal import _model_construction",
        "new = object.__new__(Model)",
    ],
)
def test_the_scan_finds_what_it_looks_for(line):
    assert _offences(line) != []


def test_the_scan_ignores_comments(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("x = 1  # a frozen dataclass's __init__ calls object.__setattr__\n")
    assert _offences(_code_without_comments(path)) == []
