"""Requests to a `digitnet serve` app in process, through FastAPI's TestClient."""

from __future__ import annotations


def post(client, content: bytes, name: str = "digit.png", **params):
    """POST /predict with `content` as the multipart field `file`; `params` go in the query."""
    return client.post("/predict", params=params, files={"file": (name, content, "image/png")})
