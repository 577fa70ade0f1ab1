"""HMAC-SHA256 signatures of outgoing webhook bodies (notifications and the webhook router).

The receiver recomputes ``HMAC-SHA256(secret, raw body)`` and compares it, in constant time, with
the ``X-Abstats-Signature: sha256=<hex>`` header (the GitHub webhook convention).
``X-Abstats-Delivery`` carries an id that stays the same across retries of one delivery, so a
receiver can drop a repeat it has already processed.
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Abstats-Signature"
DELIVERY_HEADER = "X-Abstats-Delivery"


def sign(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(body: bytes, secret: str, signature: str) -> bool:
    return hmac.compare_digest(sign(body, secret), signature)
