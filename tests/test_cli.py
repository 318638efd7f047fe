"""The jwt-middleware command, run as a subprocess against a real key server."""

from __future__ import annotations

import subprocess
import sys

import pytest

from jwt_middleware.testing import LocalIssuer, generate_key


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jwt_middleware", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def verify_args(issuer: LocalIssuer, *extra: str) -> list[str]:
    return [
        "--issuer",
        issuer.issuer,
        "--audience",
        issuer.audience,
        "--jwks-url",
        issuer.jwks_url,
        *extra,
    ]


def test_inspect_decodes_without_trusting_and_never_prints_the_token(issuer: LocalIssuer) -> None:
    token = issuer.mint(subject="alice", claims={"iss": issuer.issuer})
    result = cli("inspect", token)
    assert result.returncode == 0
    assert "UNVERIFIED" in result.stdout
    assert '"sub": "alice"' in result.stdout
    assert "exp:" in result.stdout and "(in 4m" in result.stdout
    assert token not in result.stdout + result.stderr


def test_inspect_reads_stdin_and_warns(issuer: LocalIssuer) -> None:
    token = issuer.mint(expires_in=None, headers={"jku": "https://evil.example/jwks"}, kid=None)
    result = cli("inspect", stdin=token + "\n")
    assert result.returncode == 0
    out = result.stdout
    assert "warning: no exp" in out
    assert "warning: header 'jku' is present; it is never used to find keys" in out
    assert "warning: no kid" in out


def test_inspect_flags_alg_none_and_outside_allow_list(issuer: LocalIssuer) -> None:
    none = "eyJhbGciOiJub25lIn0." + issuer.mint().split(".")[1] + "."
    assert "alg 'none' is never accepted" in cli("inspect", none).stdout
    hs = generate_key("HS256").sign({"sub": "x"})
    assert "alg HS256 is outside the allow-list" in cli("inspect", hs).stdout


@pytest.mark.parametrize("junk", ["", "abc", "a.b", "e30.e30.e30.e30", "!!.??.--"])
def test_inspect_refuses_junk_with_exit_3(junk: str) -> None:
    result = cli("inspect", junk or "-", stdin="")
    assert result.returncode == 3
    assert "not a decodable JWT" in result.stdout


def test_verify_valid_token_exit_0(issuer: LocalIssuer) -> None:
    result = cli("verify", issuer.mint(scope="read admin"), *verify_args(issuer))
    assert result.returncode == 0, result.stdout
    assert "VALID: sub='user-1' scopes=read admin" in result.stdout


def test_verify_through_discovery(issuer: LocalIssuer) -> None:
    args = ["--issuer", issuer.issuer, "--audience", issuer.audience, "--discovery"]
    assert cli("verify", issuer.mint(), *args).returncode == 0
    assert issuer.discovery_requests == 1


def test_verify_explains_expiry_with_the_skew(issuer: LocalIssuer) -> None:
    result = cli("verify", issuer.mint(expires_in=-3600), *verify_args(issuer))
    assert result.returncode == 1
    assert "INVALID: token_expired" in result.stdout
    assert "off by 1h" in result.stdout and "leeway is 60s" in result.stdout


def test_verify_explains_audience_mismatch_with_both_values(issuer: LocalIssuer) -> None:
    result = cli("verify", issuer.mint(audience="api://other"), *verify_args(issuer))
    assert result.returncode == 1
    assert "token aud: 'api://other'" in result.stdout
    assert f"expected one of ['{issuer.audience}']" in result.stdout


def test_verify_explains_unknown_kid_listing_known_kids(issuer: LocalIssuer) -> None:
    result = cli("verify", issuer.mint(kid="not-there"), *verify_args(issuer))
    assert result.returncode == 1
    assert "INVALID: kid_unknown" in result.stdout
    assert issuer.current_key.kid in result.stdout


def test_verify_key_server_down_exit_4(issuer: LocalIssuer) -> None:
    token = issuer.mint()
    issuer.set_fault("down")
    result = cli("verify", token, *verify_args(issuer, "--timeout", "1"))
    assert result.returncode == 4
    assert "keys_unavailable" in result.stdout


def test_verify_configuration_error_exit_2(issuer: LocalIssuer) -> None:
    result = cli("verify", issuer.mint(), "--issuer", issuer.issuer, "--jwks-url", issuer.jwks_url)
    assert result.returncode == 2
    assert "audience is required" in result.stdout


def test_jwks_lists_keys_and_skipped_entries(issuer: LocalIssuer) -> None:
    issuer.add_key(generate_key("ES256", kid="ec-1"), publish=True)
    enc = {**generate_key("RS256", kid="enc-1").public_jwk(), "use": "enc"}
    issuer.set_fault("wrong_shape", body={"keys": [*issuer.jwks()["keys"], enc]})
    result = cli("jwks", issuer.jwks_url)
    assert result.returncode == 0
    assert issuer.current_key.kid in result.stdout and "RS256" in result.stdout
    row = next(line for line in result.stdout.splitlines() if line.startswith("ec-1"))
    assert row.split()[1:4] == ["EC", "P-256", "sig"]
    assert "ec-1" in result.stdout and "P-256" in result.stdout
    assert "skipped: key 'enc-1': key use is 'enc'" in result.stdout


def test_jwks_unreachable_exit_4(issuer: LocalIssuer) -> None:
    issuer.set_fault("status", status=500)
    assert cli("jwks", issuer.jwks_url).returncode == 4


def test_console_script_is_declared() -> None:
    from importlib.metadata import entry_points

    scripts = {e.name: e.value for e in entry_points(group="console_scripts")}
    assert scripts.get("jwt-middleware") == "jwt_middleware.cli:main"
