"""Every blueprint the app serves."""

from api.routes import blobs, chat, create, generate, meta, models, tokenize, transfer

BLUEPRINTS = [meta.bp, generate.bp, chat.bp, tokenize.bp, models.bp, blobs.bp, create.bp, transfer.bp]
