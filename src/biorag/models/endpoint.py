"""Where an OpenAI-compatible server is, the names it serves, and the pre-flight that asks
it before an experiment opens any run (the `model_preflight` of the openai backend)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import httpx

from biorag.errors import BioragError, ConfigError
from biorag.models.config import ModelConfig

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
PREFLIGHT_TIMEOUT_S = 10.0  # the pre-flight's /models request; a running server answers at once


def base_url_of(cfg: ModelConfig) -> str:
    return (cfg.base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")


def served_name(cfg: ModelConfig, adapter: str | None) -> str:
    """The model name the server knows: `id`, or for a lora arm the adapter's folder name
    (vLLM serves an adapter as `--lora-modules NAME=PATH`)."""
    name = Path(adapter).name if adapter else cfg.id
    if not name:
        raise ConfigError(f"model '{cfg.name}': set `id` to the model name the server knows")
    return name


def preflight(cfg: ModelConfig, adapters: list[str | None]) -> None:
    """One GET of the server's `/models` before an experiment starts: it answers, and it
    serves the model and each adapter asked for; else one paragraph saying what to check.
    A configured tokenizer is loaded here too, so a missing one also fails before any run."""
    names = sorted({served_name(cfg, a) for a in adapters})
    base_url = base_url_of(cfg)
    url = f"{base_url}/models"
    key = os.environ.get(cfg.api_key_env)
    check = (
        "Is the server running (`vllm serve` takes minutes to load a model) and reachable from "
        "this machine? Is that URL its /v1 root (set it with model.base_url=URL or "
        f"$OPENAI_BASE_URL)? Does it need an API key in ${cfg.api_key_env} "
        f"({'set' if key else 'not set'} now)?"
    )
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    timeout = min(float(cfg.options.get("timeout_s", PREFLIGHT_TIMEOUT_S)), PREFLIGHT_TIMEOUT_S)
    try:
        response = httpx.get(url, headers=headers, timeout=timeout)
    except httpx.HTTPError as e:
        raise BioragError(
            f"model '{cfg.name}' ({', '.join(names)}): no answer from {url} before any run started "
            f"({type(e).__name__}: {e or 'no reply'}). {check}"
        ) from None
    if response.status_code in (401, 403):
        raise BioragError(
            f"model '{cfg.name}': {url} refused the request ({response.status_code}: "
            f"{response.text[:200]}). {check}"
        )
    if response.status_code == 404:  # a server without a model list: nothing more to ask
        log.warning("%s: %s has no model list (404); not checking that it serves %s",
                    cfg.name, url, ", ".join(names))
    elif response.status_code != 200:
        raise BioragError(
            f"model '{cfg.name}': {url} answered {response.status_code} "
            f"({response.text[:200]}) before any run started. {check}"
        )
    else:
        try:
            served = {str(m["id"]) for m in response.json()["data"]}
        except (ValueError, KeyError, TypeError):
            raise BioragError(f"model '{cfg.name}': {url} did not answer an OpenAI model list "
                              f"({response.text[:200]}). {check}") from None
        missing = [n for n in names if n not in served]
        if missing:
            raise BioragError(
                f"model '{cfg.name}': the server at {base_url} does not serve "
                f"{', '.join(map(repr, missing))}; it serves {', '.join(sorted(served)) or 'nothing'}. "
                "Set model.id to the name it serves (`vllm serve ... --served-model-name NAME`), "
                "and serve each lora arm's adapter under its folder name "
                "(`--lora-modules NAME=PATH`)."
            )
        log.info("%s: %s serves %s", cfg.name, base_url, ", ".join(names))
    if cfg.options.get("tokenizer"):
        from biorag.models.loading import load_tokenizer

        load_tokenizer(cfg, str(cfg.options["tokenizer"]))
