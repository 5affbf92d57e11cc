"""One small registry for every extension point: names -> objects, resolved lazily.

Every pluggable part of the harness (domains, engines, mutations, parent samplers, merge methods, code
sandboxes, episode shells, SQL backends, world builders, methods and leaderboards) is found through a
``Registry``. Entries are either objects registered with the ``@REGISTRY.register("name")`` decorator or
lazy ``"module:attr"`` strings that are imported only when first asked for, so listing what exists
(``cycleqd doctor``, the CLI help) imports nothing heavy, and the core names the project's own modules only
as strings (the layering test forbids real imports from harness/ into domains/, envs/ or leaderboards/).

A config may also name any object directly as ``package.module:attr`` (an out-of-tree plugin), or list
modules under ``plugins:`` whose decorators register new names. Registering a name twice with two
different objects is an error, as is an object of the wrong type (a registry may declare a base class).
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Iterable

from harness.errors import ConfigError


def load_ref(ref: str, config_key: str) -> Any:
    """The object ``attr`` of module ``module``; a one-line ConfigError naming ``config_key`` when either
    is missing. A missing *dependency* of that module is reported as such, never as an unknown name."""
    mod, _, attr = ref.partition(":")
    if not mod or not attr:
        raise ConfigError(f"{config_key}: {ref!r} is not a 'package.module:attr' reference")
    try:
        module = importlib.import_module(mod)
    except ModuleNotFoundError as exc:
        missing = exc.name or "?"
        if mod == missing or mod.startswith(missing + "."):
            raise ConfigError(f"{config_key}: cannot import {mod!r} for {ref!r} (no such module)") from None
        raise ConfigError(f"{config_key}: {ref!r} needs the package {missing!r}, which is not installed "
                          f"(pip install it or the project's matching extra)") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"{config_key}: module {mod!r} has no attribute {attr!r}") from None


def _ref_of(obj: Any) -> str | None:
    mod, name = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    return f"{mod}:{name}" if mod and name else None


class Registry:
    """Named entries of one kind.

    ``base``: a class (or a lazy ``"module:Class"`` string) every entry must subclass (for classes) or be
    an instance of (for objects); ``check``: any other predicate on the loaded object.
    """

    def __init__(self, kind: str, *, config_key: str, base: type | str | None = None,
                 check: Callable[[Any], bool] | None = None):
        self.kind = kind
        self.config_key = config_key
        self._base = base
        self._check = check
        self._entries: dict[str, Any] = {}  # name -> object or "module:attr"
        self._aliases: dict[str, str] = {}

    # -- registration -------------------------------------------------------------------------------
    def lazy(self, name: str, ref: str, *aliases: str) -> None:
        """A built-in entry, imported on first use."""
        self._bind(name, ref)
        for a in aliases:
            self._alias(a, name)

    def register(self, name: str, *aliases: str) -> Callable[[Any], Any]:
        """Decorator: ``@DOMAINS.register("name")`` on a class or function."""

        def deco(obj: Any) -> Any:
            self._verify(name, obj)
            self._bind(name, obj)
            for a in aliases:
                self._alias(a, name)
            return obj

        return deco

    def add(self, name: str, obj: Any) -> Any:
        """Register an object (not a decorator)."""
        return self.register(name)(obj)

    def _bind(self, name: str, entry: Any) -> None:
        if name in self._aliases:
            raise ValueError(f"{self.kind} {name!r}: already an alias of {self._aliases[name]!r}")
        old = self._entries.get(name)
        if old is not None and old is not entry and old != entry:
            # the decorator of a lazily listed built-in registers the very object the string names: fine
            if not (isinstance(old, str) and old == _ref_of(entry)) and not (
                    isinstance(entry, str) and entry == _ref_of(old)):
                raise ValueError(f"{self.kind} {name!r} is registered twice ({old!r} and {entry!r})")
            if isinstance(entry, str):
                return  # keep the loaded object
        self._entries[name] = entry

    def _alias(self, alias: str, name: str) -> None:
        if alias in self._entries or self._aliases.get(alias, name) != name:
            raise ValueError(f"{self.kind} alias {alias!r} is registered twice")
        self._aliases[alias] = name

    def unregister(self, name: str) -> None:
        """Remove a name (tests that register temporary entries clean up with this)."""
        self._entries.pop(name, None)
        for a in [a for a, n in self._aliases.items() if n == name]:
            del self._aliases[a]

    # -- lookup -------------------------------------------------------------------------------------
    def names(self) -> list[str]:
        return sorted(self._entries)

    def aliases(self) -> dict[str, str]:
        return dict(self._aliases)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self._entries or name in self._aliases)

    def canonical(self, name: str) -> str:
        """The registered name for ``name`` (aliases resolved; refs stay as given)."""
        if ":" in name:
            return name
        name = self._aliases.get(name, name)
        if name not in self._entries:
            raise ConfigError(f"{self.config_key}: unknown {self.kind} {name!r} (registered: {self.names()})")
        return name

    def get(self, name: str) -> Any:
        """The object for a registered name, an alias or a ``package.module:attr`` reference."""
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{self.config_key}: expected a {self.kind} name, got {name!r}")
        if ":" in name:
            obj = load_ref(name, self.config_key)
            self._verify(name, obj)
            return obj
        key = self.canonical(name)
        entry = self._entries[key]
        if isinstance(entry, str):
            obj = load_ref(entry, f"{self.config_key} ({self.kind} {key!r})")
            self._verify(key, obj)
            self._entries[key] = obj
            return obj
        return entry

    def describe(self) -> dict[str, str]:
        """name -> where it lives (for doctor and the CLI help), without importing anything."""
        out = {}
        for n, e in sorted(self._entries.items()):
            out[n] = e if isinstance(e, str) else (_ref_of(e) or repr(e))
        return out

    # -- checks -------------------------------------------------------------------------------------
    def _base_class(self) -> type | None:
        if isinstance(self._base, str):
            self._base = load_ref(self._base, f"{self.kind} registry base")
        return self._base

    def _verify(self, name: str, obj: Any) -> None:
        base = self._base_class()
        if base is not None:
            ok = issubclass(obj, base) if isinstance(obj, type) else isinstance(obj, base)
            if not ok:
                raise ConfigError(f"{self.config_key}: {name!r} is not a {base.__name__} "
                                  f"(a {self.kind} must be one), got {obj!r}")
        if self._check is not None and not self._check(obj):
            raise ConfigError(f"{self.config_key}: {name!r} is not a valid {self.kind}: {obj!r}")


def import_plugins(modules: Iterable[str], config_key: str = "plugins") -> None:
    """Import the modules a config lists under ``plugins:`` so their decorators register their names."""
    for i, mod in enumerate(modules):
        try:
            importlib.import_module(mod)
        except ImportError as exc:
            raise ConfigError(f"{config_key}.{i}: cannot import plugin module {mod!r} ({exc})") from None


# -- the registries and the project's own entries -----------------------------------------------------
DOMAINS = Registry("domain", config_key="tasks.*.domain", base="harness.domain:Domain")
DOMAINS.lazy("coding", "domains.coding:CodingDomain")
DOMAINS.lazy("os", "domains.os_interaction:OSDomain", "os_interaction")
DOMAINS.lazy("db", "domains.db:DBDomain")
DOMAINS.lazy("sam", "domains.sam.domain:SAMDomain")
DOMAINS.lazy("vector_world", "domains.vector_world:VectorWorldDomain")

ENGINES = Registry("engine", config_key="engine.kind", base="harness.engines.base:ChatEngine")
ENGINES.lazy("hf", "harness.engines.hf:HFEngine")
ENGINES.lazy("vllm", "harness.engines.vllm_engine:VLLMEngine")

MUTATIONS = Registry("mutation", config_key="qd.mutation", base="harness.merging.mutations:Mutation")
for _name, _cls in (("none", "NoMutation"), ("svd", "SVDScaleMutation"), ("svd_additive", "SVDAdditiveMutation"),
                    ("svd_official", "SVDOfficialMutation"), ("gaussian", "GaussianMutation"),
                    ("gaussian_official", "GaussianOfficialMutation")):
    MUTATIONS.lazy(_name, f"harness.merging.mutations:{_cls}")

SAMPLERS = Registry("parent sampler", config_key="qd.sampler", check=callable)
SAMPLERS.lazy("elite", "harness.qd.sampling:elite_weights_paper")
SAMPLERS.lazy("elite_official", "harness.qd.sampling:elite_weights_official")
SAMPLERS.lazy("random", "harness.qd.sampling:uniform_weights")

MERGE_METHODS = Registry("merge method", config_key="merge method", base="harness.merging.methods:MergeMethod")
for _name in ("mean", "linear", "task_arithmetic", "ties", "dare_linear", "dare_ties"):
    MERGE_METHODS.lazy(_name, f"harness.merging.methods:{_name.upper()}")

CODE_SANDBOXES = Registry("code sandbox", config_key="tasks.*.params.backend",
                          base="envs.sandbox.base:CodeSandbox")
CODE_SANDBOXES.lazy("bubblewrap", "envs.sandbox.local:LocalSandbox", "local")
CODE_SANDBOXES.lazy("docker", "envs.sandbox.docker:DockerSandbox")

EPISODE_SHELLS = Registry("episode shell", config_key="tasks.*.params.backend",
                          base="envs.sandbox.base:EpisodeShell")
EPISODE_SHELLS.lazy("rootfs", "envs.sandbox.rootfs_shell:RootfsShell", "local")
EPISODE_SHELLS.lazy("docker", "envs.sandbox.docker:DockerShell")

SQL_BACKENDS = Registry("SQL backend", config_key="tasks.*.params.backend", base="envs.sql.base:SQLBackend")
SQL_BACKENDS.lazy("sqlite", "envs.sql.sqlite:SQLiteBackend")
SQL_BACKENDS.lazy("mariadb", "envs.sql.mariadb:MariaDBBackend", "mysql")

WORLD_BUILDERS = Registry("world builder", config_key="model.builder.kind", check=callable)
WORLD_BUILDERS.lazy("vector_world", "domains.vector_world:build_vector_world")
WORLD_BUILDERS.lazy("mini", "domains.mini.world:build_mini_llm")
WORLD_BUILDERS.lazy("sam", "domains.sam.world:build_sam_world")

METHODS = Registry("method", config_key="method", check=callable)
for _name in ("model", "world_model", "merge", "task_arithmetic_lambda", "cmaes", "nsga2", "policy_gradient", "cycleqd"):
    METHODS.lazy(_name, f"leaderboards.methods:{_name}")

LEADERBOARDS = Registry("leaderboard", config_key="leaderboard", base="harness.leaderboard:Leaderboard")
LEADERBOARDS.lazy("mini", "leaderboards.mini_tables:LEADERBOARD")
LEADERBOARDS.lazy("sam", "leaderboards.sam_table4:LEADERBOARD")
LEADERBOARDS.lazy("table", "leaderboards.table:LEADERBOARD")
LEADERBOARDS.lazy("retention", "leaderboards.retention:LEADERBOARD")  # Table 3 through lm-eval (the lmeval extra)

# what `cycleqd run / resume / report` write from a run directory (tables, elite maps, plots)
RUN_REPORTS = Registry("run report", config_key="report", check=callable)
RUN_REPORTS.lazy("files", "leaderboards.emit:emit_run")
RUN_REPORTS.lazy("main_table", "leaderboards.emit:main_table")
RUN_REPORTS.lazy("seed_spread", "leaderboards.seed_spread:summarize")  # `cycleqd spread`: several seeds' reports
RUN_REPORTS.lazy("mini_join", "leaderboards.mini_sittings:join")  # `cycleqd join`: two sittings as one report

ALL: dict[str, Registry] = {
    "domains": DOMAINS, "engines": ENGINES, "mutations": MUTATIONS, "samplers": SAMPLERS,
    "merge methods": MERGE_METHODS, "code sandboxes": CODE_SANDBOXES, "episode shells": EPISODE_SHELLS,
    "SQL backends": SQL_BACKENDS, "world builders": WORLD_BUILDERS, "methods": METHODS,
    "leaderboards": LEADERBOARDS, "run reports": RUN_REPORTS,
}
