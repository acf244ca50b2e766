import subprocess
import sys
import textwrap

import pytest

from clgrid.catalog import declared


def _module(tmp_path, monkeypatch, source: str, name: str = "labmethods") -> str:
    pkg = tmp_path / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "mine.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    return f"{name}.mine"


def test_class_and_module_literals_are_read_with_their_bases(tmp_path, monkeypatch):
    module = _module(tmp_path, monkeypatch, """
        import torch_that_does_not_exist  # never imported: the source is only parsed
        FACTS = {"kind": "method"}
        class Base:
            PARAMS = {"lr": {"default": 0.1}}
        class Child(Base, object):
            PARAMS: dict = {"lam": {"default": 1.0, "minimum": 0}}
            other = 3
    """)
    found = declared.declarations(module, ("FACTS", "PARAMS"))
    assert [(d.cls, d.bases, d.values) for d in found] == [
        (None, (), {"FACTS": {"kind": "method"}}),
        ("Base", (), {"PARAMS": {"lr": {"default": 0.1}}}),
        ("Child", ("Base", "object"), {"PARAMS": {"lam": {"default": 1.0, "minimum": 0}}}),
    ]


def test_a_declaration_that_runs_code_is_refused_with_its_line(tmp_path, monkeypatch):
    module = _module(tmp_path, monkeypatch, """
        class M:
            PARAMS = {"lr": float("0.1")}
    """, name="labmethods_bad")
    with pytest.raises(declared.DeclarationError, match=r"mine\.py:3: a declaration must be a literal"):
        declared.declarations(module, ("PARAMS",))


def test_clgrid_modules_are_found_without_importing_their_package():
    # clgrid.methods' __init__ imports torch; finding a method's source must not.
    code = ("import sys; from clgrid.catalog import declared; "
            "print(declared.module_file('clgrid.methods.ewc').name); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["ewc.py", "False"]


def test_a_missing_module_is_named():
    with pytest.raises(declared.DeclarationError, match="no_such_lab_package"):
        declared.declarations("no_such_lab_package.methods", ("PARAMS",))
