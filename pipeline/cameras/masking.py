"""A camera URL fit for logs, errors, the state in Redis and tables: no password in it.

The password of the URL's user part is masked as for Redis (:func:`pipeline.settings.mask_url`);
many HTTP cameras also take their credentials in the query (``snapshot.cgi?user=admin&pwd=...``),
so query values whose name says password, key or token are masked too.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

from pipeline.settings import mask_url

#: Query parameters whose value is a secret (matched case-insensitively, by name).
SECRET_PARAMETER = re.compile(r"(?i)^(pass(word|wd)?|pwd|psw|secret|token|api_?key|key|auth|sig(nature)?)$")


def mask_camera_url(url: str) -> str:
    """``url`` with its password and the values of secret query parameters replaced by ``***``."""
    parts = urlsplit(mask_url(url))
    if not parts.query:
        return urlunsplit(parts)
    pairs = []
    for pair in parts.query.split("&"):
        name, equals, _ = pair.partition("=")
        pairs.append(f"{name}=***" if equals and SECRET_PARAMETER.match(name) else pair)
    return urlunsplit(parts._replace(query="&".join(pairs)))
