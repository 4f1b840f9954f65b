"""Every blueprint the app serves."""

from api.routes import generate, meta, tokenize

BLUEPRINTS = [meta.bp, generate.bp, tokenize.bp]
