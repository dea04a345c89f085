"""Reading the YAML files an operator writes (``cameras.yml``, the MQTT mapping).

Every such file fails the same three ways (unreadable, not YAML, wrong in a field); the
first two are said here, in one line naming the file, so each reader adds only its own
field checks. PyYAML is safe-loaded only: a file never builds Python objects.
"""

from __future__ import annotations

from typing import Any


def read_yaml_file(path: str, kind: str, error_type: type[Exception]) -> Any:
    """The data of the YAML file at ``path``.

    Raises:
      error_type: the file cannot be read, or is not YAML; one line starting with ``kind`` and ``path``.
    """
    import yaml

    try:
        with open(path, encoding="utf-8") as file:
            return yaml.safe_load(file)
    except OSError as error:
        raise error_type(f"{kind} {path}: {error.strerror or error}") from None
    except yaml.YAMLError as error:
        raise error_type(f"{kind} {path} is not YAML: {' '.join(str(error).split())}") from None
