"""Every blueprint the app serves."""

from api.routes import blobs, chat, create, embed, generate, meta, models, openai, ps, tokenize, transfer

BLUEPRINTS = [meta.bp, generate.bp, chat.bp, tokenize.bp, models.bp, blobs.bp, create.bp, transfer.bp, openai.bp,
               embed.bp, ps.bp]
