"""GET / and GET /api/version: the liveness answers clients probe before anything else."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

bp = Blueprint("meta", __name__)

VERSION = "0.12.3"   # the Ollama API level we speak; clients parse it as semver


@bp.route("/", methods=["GET", "HEAD"])
def root() -> Response:
    return Response("Ollama is running", mimetype="text/plain")


@bp.route("/api/version", methods=["GET", "HEAD"])
def version() -> Response:
    return jsonify({"version": VERSION})
