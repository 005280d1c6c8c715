"""``airflow-init`` of ``docker/compose.yaml``: prepare Airflow once, before its components start.

Runs ``airflow db migrate`` and creates the ``gpu`` pool (``tools.airflow_local.init_airflow``,
with the environment exactly as compose sets it: the metadata database on Postgres), then
writes the simple auth manager's passwords file, so that the admin of ``docker/.env``
(``AIRFLOW_ADMIN_USER``) logs in with ``AIRFLOW_ADMIN_PASSWORD`` instead of a password the
API server would generate and print to its log. Airflow 3's simple auth manager has no
``airflow users create``: its users are ``[core] simple_auth_manager_users`` and their
passwords are this file.

Usage (in the project image): ``python -m tools.airflow_init``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

PASSWORDS_FILE_ENV = "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"
ADMIN_USER_ENV = "AIRFLOW_ADMIN_USER"
ADMIN_PASSWORD_ENV = "AIRFLOW_ADMIN_PASSWORD"


def write_passwords(path: Path, passwords: Mapping[str, str]) -> dict[str, str]:
    """Merge ``passwords`` into the simple auth manager's JSON file (other users keep theirs); owner-only."""
    path = Path(path)
    current = {}
    if path.exists() and path.read_text().strip():
        current = json.loads(path.read_text())
    current.update(passwords)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(json.dumps(current) + "\n")
    os.chmod(path, 0o600)
    return current


def main(env: Mapping[str, str] | None = None) -> int:
    from tools.airflow_local import init_airflow

    env = dict(os.environ if env is None else env)
    init_airflow(Path(env["AIRFLOW_HOME"]), env)
    user, password, file = env.get(ADMIN_USER_ENV), env.get(ADMIN_PASSWORD_ENV), env.get(PASSWORDS_FILE_ENV)
    if user and password and file:
        write_passwords(Path(file), {user: password})
        print(f"Airflow: metadata database migrated, pool 'gpu' set, user {user!r} can log in")
    else:
        print(f"Airflow: metadata database migrated, pool 'gpu' set ({ADMIN_USER_ENV}, {ADMIN_PASSWORD_ENV} or {PASSWORDS_FILE_ENV} unset: no password written)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
