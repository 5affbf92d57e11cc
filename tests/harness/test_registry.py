"""The one registry: lazy entries, aliases, collisions, type checks, and errors that name the real cause."""

import sys
import types

import pytest

from harness.domain import Domain
from harness.errors import ConfigError
from harness.registry import ALL, DOMAINS, MUTATIONS, Registry


def _module(monkeypatch, name, **attrs):
    mod = types.ModuleType(name)
    for k, v in attrs.items():
        setattr(mod, k, v)
    monkeypatch.setitem(sys.modules, name, mod)
    return mod


def test_lazy_entry_is_imported_on_first_use_only(monkeypatch):
    reg = Registry("widget", config_key="w")
    reg.lazy("a", "fake_widgets_mod:make", "alias_a")
    assert "a" in reg and "alias_a" in reg and reg.names() == ["a"]
    assert reg.describe() == {"a": "fake_widgets_mod:make"}  # listing imports nothing
    _module(monkeypatch, "fake_widgets_mod", make=len)
    assert reg.get("a") is len and reg.get("alias_a") is len


def test_collisions_and_aliases_are_refused():
    reg = Registry("widget", config_key="w")
    reg.add("a", len)
    reg.add("a", len)  # the same object again is fine
    with pytest.raises(ValueError, match="registered twice"):
        reg.add("a", abs)
    reg.lazy("b", "m:b", "bb")
    with pytest.raises(ValueError, match="alias 'bb' is registered twice"):
        reg.lazy("c", "m:c", "bb")


def test_type_check_on_registration_and_on_lookup(monkeypatch):
    reg = Registry("domain", config_key="tasks.*.domain", base=Domain)
    with pytest.raises(ConfigError, match="is not a Domain"):
        reg.add("x", int)
    _module(monkeypatch, "fake_not_a_domain", Thing=int)
    with pytest.raises(ConfigError, match="is not a Domain"):
        reg.get("fake_not_a_domain:Thing")


def test_missing_dependency_is_not_reported_as_unknown_name(monkeypatch, tmp_path):
    (tmp_path / "needs_missing_dep.py").write_text("import surely_not_installed_pkg\nclass D: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match="needs the package 'surely_not_installed_pkg'"):
        DOMAINS.get("needs_missing_dep:D")
    with pytest.raises(ConfigError, match="unknown domain 'nope'.*registered"):
        DOMAINS.get("nope")


def test_every_builtin_entry_resolves_and_passes_its_type_check():
    optional = {"vllm"}  # resolves to a module that imports vllm only when an engine is built
    for kind, reg in ALL.items():
        for name in reg.names():
            if name in optional:
                continue
            assert reg.get(name) is not None, (kind, name)


def test_mutations_declare_their_parameters():
    assert MUTATIONS.get("svd_official").needs_expert_svd
    assert MUTATIONS.get("gaussian").params == ("sigma",)
    assert not MUTATIONS.get("svd_additive").needs_expert_svd
