"""The composition root: create_app wires settings, the store, the model pool and the routes together."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask, current_app

import engine
from api import guard
from api.config import Settings
from api.errors import APIError, not_found, register_error_handlers
from api.model_pool import ModelPool, ModelRecord, read_record
from engine.quant import set_threads
from registry.errors import InvalidName, ModelNotFound
from registry.names import ModelName
from registry.store import Store


@dataclass
class Services:
    settings: Settings
    store: Store
    pool: ModelPool

    def find(self, name: str) -> ModelRecord:
        """The stored model called ``name``: 400 for an invalid name, 404 when absent."""
        try:
            parsed = ModelName.parse(name)
        except InvalidName:
            if not name:
                raise not_found("model '' not found") from None
            raise APIError(400, "invalid model name") from None
        try:
            return read_record(self.store, parsed)
        except ModelNotFound:
            raise not_found(f"model '{name}' not found") from None


def services() -> Services:
    return current_app.extensions["pollama"]


def create_app(settings: Settings | None = None, *, store: Store | None = None,
               pool: ModelPool | None = None) -> Flask:
    from api.routes import BLUEPRINTS

    settings = settings or Settings.from_env()
    store = store or Store(settings.models_dir)
    pool = pool or ModelPool(engine.load_model, threads=settings.num_threads, max_loaded=settings.max_loaded_models,
                             num_parallel=settings.num_parallel, on_thread_start=set_threads,
                             max_queue=settings.max_queue)
    app = Flask("pollama")
    app.json.ensure_ascii = False
    app.json.sort_keys = False
    app.extensions["pollama"] = Services(settings, store, pool)
    for bp in BLUEPRINTS:
        app.register_blueprint(bp)
    register_error_handlers(app)
    guard.install(app, loopback=guard.is_loopback(settings.bind[0]), origins=settings.origins,
                  api_key=settings.api_key)
    return app
