"""A server with credentials: API keys made by ``taskorch keys create`` and an OAuth issuer
whose JWKS is a local file; with its Envoy gateway and tiny models (chat needs one)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests import databases
from tests.inference.tiny_models import build_tiny_models
from tests.servers import ServerProcess

ISSUER = "https://idp.example.test"
AUDIENCE = "taskorch-api"
TINY_TEXT_MODEL = "tiny-gpt2"


def taskorch(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Runs the ``taskorch`` command as an operator would."""
    done = subprocess.run(
        [sys.executable, "-m", "taskorch", *args], capture_output=True, text=True, timeout=120
    )
    if check and done.returncode != 0:
        raise AssertionError(f"taskorch {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done


def create_key(database_url: str, tenant: str, role: str = "user") -> str:
    """A new key: the last line of ``taskorch keys create``'s output."""
    done = taskorch(
        "keys", "create", "--tenant", tenant, "--role", role, "--database-url", database_url
    )
    return done.stdout.strip().splitlines()[-1]


@dataclass
class Issuer:
    """An OAuth identity provider: signing keys, its JWKS file, and tokens on demand."""

    jwks_path: Path
    rsa_key: Any = field(default_factory=lambda: rsa.generate_private_key(65537, 2048))
    ec_key: Any = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    # Same kid as the RSA key, but not in the JWKS: a forged signature.
    forger: Any = field(default_factory=lambda: rsa.generate_private_key(65537, 2048))

    def write_jwks(self) -> None:
        keys = []
        for kid, key, alg in (("rsa-1", self.rsa_key, "RS256"), ("ec-1", self.ec_key, "ES256")):
            public = json.loads(
                jwt.algorithms.get_default_algorithms()[alg].to_jwk(key.public_key())
            )
            keys.append({**public, "kid": kid, "alg": alg, "use": "sig"})
        self.jwks_path.write_text(json.dumps({"keys": keys}))

    def token(
        self,
        tenant: str | None = "acme",
        *,
        scope: str = "taskorch:user",
        audience: str = AUDIENCE,
        issuer: str = ISSUER,
        lifetime: float = 300,
        not_before: float | None = None,
        algorithm: str = "RS256",
        forged: bool = False,
        kid: str | None = None,
    ) -> str:
        now = time.time()
        claims: dict[str, Any] = {
            "iss": issuer,
            "aud": audience,
            "sub": "user-1",
            "iat": int(now),
            "exp": int(now + lifetime),
            "scope": scope,
        }
        if tenant is not None:
            claims["tenant"] = tenant
        if not_before is not None:
            claims["nbf"] = int(not_before)
        if algorithm == "ES256":
            key, default_kid = self.ec_key, "ec-1"
        else:
            key, default_kid = (self.forger if forged else self.rsa_key), "rsa-1"
        return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": kid or default_kid})


@dataclass
class Secured:
    server: ServerProcess
    database_url: str
    issuer: Issuer
    admin: str  # role admin (tenant ops)
    acme: str  # role user, tenant acme
    globex: str  # role user, tenant globex
    acme_worker: str  # role worker, tenant acme
    globex_worker: str  # role worker, tenant globex

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.server.grpc_addr)


def tiny_repository(root: Path) -> Path:
    """A model repository with the tiny text-generation model (built once, cached)."""
    tiny = build_tiny_models()
    root.mkdir(parents=True, exist_ok=True)
    (root / TINY_TEXT_MODEL).symlink_to(tiny.models_dir / TINY_TEXT_MODEL)
    return root


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    workdir = tmp_path_factory.mktemp("secured")
    url = databases.new_database(workdir)
    issuer = Issuer(workdir / "jwks.json")
    issuer.write_jwks()
    keys = {
        "admin": create_key(url, "ops", "admin"),
        "acme": create_key(url, "acme"),
        "globex": create_key(url, "globex"),
        "acme_worker": create_key(url, "acme", "worker"),
        "globex_worker": create_key(url, "globex", "worker"),
    }
    process = ServerProcess(
        workdir=workdir,
        database_url=url,
        gateway=True,
        models_dir=tiny_repository(workdir / "models"),
        auth="keys,oauth",
        args=(
            "--workers",
            "0",
            "--oauth-jwks",
            str(issuer.jwks_path),
            "--oauth-issuer",
            ISSUER,
            "--oauth-audience",
            AUDIENCE,
        ),
    )
    process.start()
    yield Secured(process, url, issuer, **keys)
    process.stop()
    databases.discard(url)
