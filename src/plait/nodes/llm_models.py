"""The ``llm`` library as the llm node uses it: loaded once, on first use, and
models found by name (or made for an ``api_base``).

Only the llm node imports this module, and it imports ``llm`` itself only when a
workflow with an ``llm`` node is validated or run.

What loading costs, and what is deferred. ``import llm`` is about 0.55 s here
(sqlite_utils, pydantic, httpx2, click: llm's own imports). Finding a model
loads llm's plugins, and its built-in OpenAI plugin does ``import openai`` at
the top, another ~1.1 s, although it touches the ``openai`` package only when
it makes a client, that is when a call to an OpenAI model is made. So before
the plugins load, ``openai`` is put in ``sys.modules`` as a stand-in
(:class:`_Deferred`) that imports the real package on first use of any of its
attributes and forwards to it from then on. A workflow on the offline ``echo``
model, or one whose OpenAI-compatible calls go through the aiohttp path,
never imports ``openai``; a plugin that uses ``openai`` at import time
(``from openai import OpenAI``) gets the real package at that moment, so
nothing changes for it but the time of the import.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import sys
import threading
import types
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from plait.nodes.base import NodeError

MODEL_ENV_VAR = "PLAIT_LLM_MODEL"
OPENAI_PLUGIN = "llm.default_plugins.openai_models"

# Imported by llm's plugins when they load but used only when a call is made.
_DEFERRED = ("openai",)
# What the import system (and ``isinstance``) reads from a module without using
# it; everything else on a stand-in imports the real module.
_PASS_THROUGH = frozenset(("__spec__", "__name__", "__class__"))

# How many model ids an "unknown model" message lists.
_MODELS_LISTED = 8

_load_lock = threading.Lock()
_llm: Any = None


def _invalid(message: str) -> NodeError:
    return NodeError(message, retryable=False)


# ---------------------------------------------------------------------------
# loading llm


class _Deferred(types.ModuleType):
    """A stand-in for a module not imported yet.

    The first use of an attribute imports the real module through the normal
    import system (its own locks make concurrent first uses safe) and every
    use after that is forwarded to it, so code that bound the stand-in (a
    plugin's ``import openai``) sees the real module's current state.
    """

    def __getattribute__(self, name: str) -> Any:
        if name in _PASS_THROUGH:
            return super().__getattribute__(name)
        return getattr(_real_module(super().__getattribute__("__name__")), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(_real_module(super().__getattribute__("__name__")), name, value)

    def __delattr__(self, name: str) -> None:
        delattr(_real_module(super().__getattribute__("__name__")), name)

    def __dir__(self) -> Iterable[str]:
        return dir(_real_module(super().__getattribute__("__name__")))


_real: dict[str, types.ModuleType] = {}
_swap_lock = threading.Lock()


def _real_module(name: str) -> types.ModuleType:
    module = _real.get(name)
    if module is not None:
        return module
    with _swap_lock:
        if isinstance(sys.modules.get(name), _Deferred):
            del sys.modules[name]
    module = importlib.import_module(name)
    _real[name] = module
    return module


def _defer(name: str) -> None:
    if name in sys.modules:
        return
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return
    if spec is None:
        return  # not installed: the plugin's own import fails as it would have
    stand_in = _Deferred(name)
    object.__setattr__(stand_in, "__spec__", spec)
    sys.modules[name] = stand_in


def deferred_loaded(name: str) -> bool:
    """Whether a deferred module has really been imported (for tests and benchmarks)."""
    module = sys.modules.get(name)
    return module is not None and not isinstance(module, _Deferred)


def load_llm() -> Any:
    """``llm`` with its plugins loaded.

    llm's own plugin loading is not safe to run from two threads at once (it
    flags itself loaded before it has registered the plugins, so a second
    thread can see no models), hence it runs once, here, under a lock.
    """
    global _llm
    if _llm is not None:
        return _llm
    with _load_lock:
        if _llm is None:
            for name in _DEFERRED:
                _defer(name)
            import llm

            llm.load_plugins()
            _llm = llm
    return _llm


# ---------------------------------------------------------------------------
# models


def resolve(name: str | None, api_base: str | None = None, keyed: bool = False) -> Any:
    """The model object for a name (an id or alias), or an OpenAI-compatible
    model at ``api_base``. Unknown names raise a non-retryable NodeError."""
    llm = load_llm()
    if api_base:
        model = _api_base_model(name or "", api_base, keyed)
    else:
        wanted = name or os.environ.get(MODEL_ENV_VAR, "").strip() or llm.get_default_model()
        try:
            model = llm.get_model(wanted)
        except llm.UnknownModelError:
            raise _invalid(unknown_model_message(wanted, name is None))
    tune_openai_client(model)
    return model


def _api_base_model(name: str, api_base: str, keyed: bool) -> Any:
    """An OpenAI-compatible chat model served at ``api_base``, the way llm makes
    one from an ``extra-openai-models.yaml`` entry.

    Only the node's own ``key`` is ever sent there: never the stored OpenAI
    key nor ``$OPENAI_API_KEY``, which belong to another server.
    """
    from llm.default_plugins.openai_models import Chat

    model = Chat(
        model_id=name,
        model_name=name,
        api_base=api_base,
        vision=True,  # the server decides what it takes; llm must not refuse first
        supports_schema=True,
    )
    # With a key, llm's get_key(explicit) resolves it as a key alias or the key
    # itself; without one the plugin sends a placeholder, as for any keyless
    # OpenAI-compatible model.
    model_any: Any = model
    model_any.needs_key = "api_base" if keyed else None
    model_any.key_env_var = None
    return model


def unknown_model_message(wanted: str, defaulted: bool) -> str:
    llm = load_llm()
    entries = llm.get_models_with_aliases()
    ids = [entry.model.model_id for entry in entries]
    names = ids + [str(alias) for entry in entries for alias in entry.aliases]
    close = difflib.get_close_matches(wanted, names, n=3, cutoff=0.6)
    listed = list(dict.fromkeys([*close, *ids]))[:_MODELS_LISTED]
    more = f", ... ({len(ids)} in all; `llm models` lists them)" if len(ids) > len(listed) else ""
    source = ""
    if defaulted:
        from_env = os.environ.get(MODEL_ENV_VAR, "").strip()
        source = f" (from ${MODEL_ENV_VAR})" if from_env else " (llm's default model)"
    message = f"unknown model '{wanted}'{source}."
    if close:
        message += f" Did you mean '{close[0]}'?"
    return (
        f"{message} Available: {', '.join(listed)}{more}. "
        "More models come from llm plugins (`llm install llm-...`), "
        "or give 'api_base' for an OpenAI-compatible server"
    )


def is_openai_plugin(model: Any) -> bool:
    return type(model).__module__ == OPENAI_PLUGIN


def is_openai_chat(model: Any) -> bool:
    """A chat-completions model of llm's OpenAI plugin that talks to the API
    directly (no Azure-style ``api_type``/``api_version``/``api_engine``): the
    aiohttp path can make its request."""
    if not is_openai_plugin(model) or type(model).__name__ != "Chat":
        return False
    return not (
        getattr(model, "api_type", None)
        or getattr(model, "api_version", None)
        or getattr(model, "api_engine", None)
    )


def provider_of(model: Any) -> str:
    """Who serves a model, for the default limiter key ``llm:PROVIDER/MODEL``:
    ``openai``, or the host of an OpenAI-compatible server, or the plugin's
    name (``llm_anthropic`` → ``anthropic``)."""
    if is_openai_plugin(model):
        api_base = getattr(model, "api_base", None)
        if api_base:
            parts = urlsplit(api_base)
            return (parts.netloc.rpartition("@")[2] or api_base).lower()
        return "openai"
    top = type(model).__module__.split(".")[0]
    return top.removeprefix("llm_").removeprefix("llm-") or top


# ---------------------------------------------------------------------------
# the openai client of the OpenAI plugin

_seen = threading.local()


def _remember_headers(response: Any) -> None:
    _seen.headers = response.headers


def forget_headers() -> None:
    _seen.headers = None


def last_headers() -> Mapping[str, str] | None:
    """The headers of the last response the OpenAI plugin's client received in
    this thread (set by a hook on that client; None when there was none)."""
    return getattr(_seen, "headers", None)


def tune_openai_client(model: Any) -> None:
    """For a model of llm's OpenAI plugin: one client per model and key, without
    inner retries, and one that lets the node see the response headers.

    The plugin builds a new ``openai.OpenAI`` client for every call, and each
    one loads the system's CA certificates afresh (~17 ms of CPU, measured)
    and opens new connections: in a parallel batch of thousands that is the
    bottleneck. The client is documented as safe to share between threads, so
    one per model and key is kept, which also pools connections. Retries
    belong to plait: the client would otherwise retry a 429 twice on its own,
    silently, before plait sees anything. Its response hook keeps the
    headers, for the run's limiter (``x-ratelimit-*``).
    """
    if not is_openai_plugin(model):
        return
    original = getattr(model, "get_client", None)
    if not callable(original) or getattr(original, "_plait_tuned", False):
        return
    clients: dict[tuple[Any, bool], Any] = {}
    lock = threading.Lock()

    def get_client(key: Any = None, *, async_: bool = False) -> Any:
        cache_key = (key, async_)
        client = clients.get(cache_key)
        if client is None:
            with lock:
                client = clients.get(cache_key)
                if client is None:
                    client = _configured(original(key, async_=async_), async_)
                    clients[cache_key] = client
        return client

    get_client._plait_tuned = True  # type: ignore[attr-defined]
    model.get_client = get_client


def _configured(client: Any, async_: bool) -> Any:
    with_options = getattr(client, "with_options", None)
    if not callable(with_options):
        return client
    options: dict[str, Any] = {"max_retries": 0}
    # LLM_OPENAI_SHOW_RESPONSES gives the client llm's logging transport: keep it.
    if not async_ and not os.environ.get("LLM_OPENAI_SHOW_RESPONSES"):
        import openai

        options["http_client"] = openai.DefaultHttpxClient(event_hooks={"response": [_remember_headers]})
    return with_options(**options)


# ---------------------------------------------------------------------------
# options


def options_fields(model: Any) -> dict[str, Any] | None:
    fields = getattr(getattr(model, "Options", None), "model_fields", None)
    return fields if isinstance(fields, dict) else None


def option_problems(model: Any, model_id: str, options: Mapping[str, Any], unchecked: Iterable[str] = ()) -> list[str]:
    """What is wrong with these options for this model, checked against its
    ``Options`` class (names and values; ``unchecked`` names are checked by
    name only, their values come from templates)."""
    if not options:
        return []
    options_class = getattr(model, "Options", None)
    fields = options_fields(model)
    if options_class is None or fields is None:
        return []
    unsupported = [name for name in options if name not in fields]
    if unsupported:
        accepted = ", ".join(sorted(fields)) or "none"
        return [
            f"model '{model_id}' does not support {' or '.join(repr(u) for u in unsupported)} "
            f"(the options it takes: {accepted}); remove it or pick another model"
        ]
    skip = set(unchecked)
    values = {name: value for name, value in options.items() if name not in skip}
    if not values:
        return []
    try:
        options_class(**values)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        return [f"model '{model_id}': {validation_text(exc)}"]
    return []


def validation_text(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc)
    parts = []
    for error in errors():
        where = ".".join(str(loc) for loc in error.get("loc", ())) or "options"
        parts.append(f"'{where}': {error.get('msg', 'invalid')} (got {error.get('input')!r})")
    return "; ".join(parts) or str(exc)
