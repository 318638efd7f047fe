"""The jwt-middleware command, run as a subprocess against a real key server."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

import httpx
import pytest

from jwt_middleware.testing import LocalIssuer, generate_key
from tests.support.servers import free_port


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
    """inspect prints the claims marked UNVERIFIED with the time to exp, never the token itself."""
    token = issuer.mint(subject="alice", claims={"iss": issuer.issuer})
    result = cli("inspect", token)
    assert result.returncode == 0
    assert "UNVERIFIED" in result.stdout
    assert '"sub": "alice"' in result.stdout
    assert "exp:" in result.stdout and "(in 4m" in result.stdout
    assert token not in result.stdout + result.stderr


def test_inspect_reads_stdin_and_warns(issuer: LocalIssuer) -> None:
    """inspect reads the token from stdin and warns of a missing exp, a jku header and no kid."""
    token = issuer.mint(expires_in=None, headers={"jku": "https://evil.example/jwks"}, kid=None)
    result = cli("inspect", stdin=token + "\n")
    assert result.returncode == 0
    out = result.stdout
    assert "warning: no exp" in out
    assert "warning: header 'jku' is present; it is never used to find keys" in out
    assert "warning: no kid" in out


def test_inspect_flags_alg_none_and_outside_allow_list(issuer: LocalIssuer) -> None:
    """inspect flags alg none as never accepted and HS256 as outside the allow-list."""
    none = "eyJhbGciOiJub25lIn0." + issuer.mint().split(".")[1] + "."
    assert "alg 'none' is never accepted" in cli("inspect", none).stdout
    hs = generate_key("HS256").sign({"sub": "x"})
    assert "alg HS256 is outside the allow-list" in cli("inspect", hs).stdout


@pytest.mark.parametrize("junk", ["abc", "a.b", "e30.e30.e30.e30", "!!.??.--"])
def test_inspect_refuses_junk_with_exit_3(junk: str) -> None:
    """inspect exits 3 with 'not a decodable JWT' for a string that is not a JWT."""
    result = cli("inspect", junk)
    assert result.returncode == 3
    assert "not a decodable JWT" in result.stderr


def test_verify_valid_token_exit_0(issuer: LocalIssuer) -> None:
    """verify exits 0 for a valid token and prints VALID with its subject and scopes."""
    result = cli("verify", issuer.mint(scope="read admin"), *verify_args(issuer))
    assert result.returncode == 0, result.stdout
    assert "VALID: sub='user-1' scopes=read admin" in result.stdout


def test_verify_through_discovery(issuer: LocalIssuer) -> None:
    """verify --discovery finds the keys through the issuer's discovery document, fetched once."""
    args = ["--issuer", issuer.issuer, "--audience", issuer.audience, "--discovery"]
    assert cli("verify", issuer.mint(), *args).returncode == 0
    assert issuer.discovery_requests == 1


def test_verify_explains_expiry_with_the_skew(issuer: LocalIssuer) -> None:
    """verify exits 1 on an expired token, saying by how long it is off and the 60s leeway."""
    result = cli("verify", issuer.mint(expires_in=-3600), *verify_args(issuer))
    assert result.returncode == 1
    assert "INVALID: token_expired" in result.stdout
    assert "off by 1h" in result.stderr and "leeway is 60s" in result.stderr


def test_verify_explains_audience_mismatch_with_both_values(issuer: LocalIssuer) -> None:
    """verify exits 1 on a wrong audience, printing the token's aud and the expected ones."""
    result = cli("verify", issuer.mint(audience="api://other"), *verify_args(issuer))
    assert result.returncode == 1
    assert "token aud: 'api://other'" in result.stderr
    assert f"expected one of ['{issuer.audience}']" in result.stderr


def test_verify_explains_unknown_kid_listing_known_kids(issuer: LocalIssuer) -> None:
    """verify exits 1 on an unknown kid (kid_unknown), listing the kids the JWKS has."""
    result = cli("verify", issuer.mint(kid="not-there"), *verify_args(issuer))
    assert result.returncode == 1
    assert "INVALID: kid_unknown" in result.stdout
    assert issuer.current_key.kid in result.stderr


def test_verify_key_server_down_exit_4(issuer: LocalIssuer) -> None:
    """verify exits 4 with keys_unavailable when the key server is down."""
    token = issuer.mint()
    issuer.set_fault("down")
    result = cli("verify", token, *verify_args(issuer, "--timeout", "1"))
    assert result.returncode == 4
    assert "keys_unavailable" in result.stdout


def test_verify_configuration_error_exit_2(issuer: LocalIssuer) -> None:
    """verify without --audience is a configuration error: exit 2."""
    result = cli("verify", issuer.mint(), "--issuer", issuer.issuer, "--jwks-url", issuer.jwks_url)
    assert result.returncode == 2
    assert "--audience is required" in result.stderr


def test_jwks_lists_keys_and_skipped_entries(issuer: LocalIssuer) -> None:
    """jwks lists each key's kid, type, curve and use, and each skipped entry with its reason."""
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
    """jwks exits 4 when the key server answers 500."""
    issuer.set_fault("status", status=500)
    assert cli("jwks", issuer.jwks_url).returncode == 4


def test_console_script_is_declared() -> None:
    """The jwt-middleware console script points at jwt_middleware._cli:main."""
    from importlib.metadata import entry_points

    scripts = {e.name: e.value for e in entry_points(group="console_scripts")}
    assert scripts.get("jwt-middleware") == "jwt_middleware._cli:main"


# -- input: what a new user pastes -----------------------------------------------------------


def test_verify_undecodable_input_exits_3(issuer: LocalIssuer) -> None:
    """verify on input that is not a decodable JWT exits 3 (as documented), not 1."""
    result = cli("verify", "not-a-jwt", *verify_args(issuer))
    assert result.returncode == 3, result.stderr
    assert "not a decodable JWT" in result.stderr
    assert issuer.jwks_requests == 0


@pytest.mark.parametrize("command", ["inspect", "verify"])
def test_empty_input_says_no_token_was_given(issuer: LocalIssuer, command: str) -> None:
    """Empty stdin is a usage error (2) that says no token was given and how to pass one."""
    extra = verify_args(issuer) if command == "verify" else []
    result = cli(command, *extra, stdin="\n")
    assert result.returncode == 2
    assert "no token given" in result.stderr and "standard input" in result.stderr
    assert "segments" not in result.stderr and result.stdout == ""


@pytest.mark.parametrize("prefix", ["Bearer ", "bearer  ", "Authorization: Bearer "])
def test_pasted_bearer_prefix_is_dropped_with_a_note(issuer: LocalIssuer, prefix: str) -> None:
    """A pasted "Bearer "/"Authorization: Bearer " prefix is dropped, and stderr says so."""
    token = issuer.mint()
    result = cli("verify", *verify_args(issuer), stdin=prefix + token + "\n")
    assert result.returncode == 0, result.stderr
    assert "VALID" in result.stdout
    assert f"dropped the {prefix.strip()!r} prefix" in result.stderr
    assert token not in result.stdout + result.stderr


# -- configuration errors name the flags -----------------------------------------------------

_PYTHON_SPELLING = re.compile(r"=True|='|\ballow_any_|\bjwks_url\b|\bjwks_timeout\b|keys=|\w+_\w+=")


_BASE = ["--issuer", "{iss}", "--audience", "{aud}", "--jwks-url", "{jwks}"]


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--issuer", "{iss}", "--jwks-url", "{jwks}"], ["--audience", "--any-audience"]),
        (["--audience", "{aud}", "--jwks-url", "{jwks}"], ["--issuer", "--any-issuer"]),
        ([*_BASE, "--any-audience"], ["--audience", "--any-audience"]),
        (["--issuer", "{iss}", "--audience", "", "--jwks-url", "{jwks}"], ["--audience"]),
        (
            ["--issuer", "{iss}", "--audience", "{aud}", "--jwks-url", "http://keys.example/k"],
            ["--jwks-url"],
        ),
        (
            ["--issuer", "{iss}", "--issuer", "https://b.example", "--audience", "{aud}"],
            ["--issuer", "--jwks-url"],
        ),
        (["--issuer", "http://idp.example", "--audience", "{aud}"], ["--issuer"]),
        ([*_BASE, "--algorithms", ","], ["--algorithms"]),
        ([*_BASE, "--algorithms", "HS256"], ["--algorithms"]),
        ([*_BASE, "--algorithms", "none"], ["--algorithms"]),
        ([*_BASE, "--algorithms", "XX999"], ["--algorithms"]),
        ([*_BASE, "--leeway", "-1"], ["--leeway"]),
        ([*_BASE, "--leeway", "7200"], ["--leeway"]),
        ([*_BASE, "--typ", " "], ["--typ"]),
        ([*_BASE, "--require-claim", ""], ["--require-claim"]),
        ([*_BASE, "--timeout", "0"], ["--timeout"]),
    ],
)
def test_configuration_errors_name_cli_flags(
    issuer: LocalIssuer, flags: list[str], named: list[str]
) -> None:
    """Every configuration error exits 2 and names CLI flags, never Python arguments."""
    values = {"iss": issuer.issuer, "aud": issuer.audience, "jwks": issuer.jwks_url}
    result = cli("verify", issuer.mint(), *(f.format(**values) for f in flags))
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: configuration: ")
    for flag in named:
        assert flag in result.stderr, result.stderr
    assert not _PYTHON_SPELLING.search(result.stderr), result.stderr
    assert issuer.jwks_requests == 0


# -- explanations ----------------------------------------------------------------------------


def test_verify_typ_mismatch_names_both_typs(issuer: LocalIssuer) -> None:
    """typ_mismatch says the token's typ and the expected one."""
    result = cli("verify", issuer.mint(), *verify_args(issuer, "--typ", "at+jwt"))
    assert result.returncode == 1
    assert "INVALID: typ_mismatch" in result.stdout
    assert "token typ: 'JWT'; expected 'at+jwt'" in result.stderr


def test_verify_keys_unavailable_says_it_once(issuer: LocalIssuer) -> None:
    """keys_unavailable explains the key server problem once, and where to look further."""
    token = issuer.mint()
    issuer.set_fault("status", status=503)
    result = cli("verify", token, *verify_args(issuer, "--timeout", "1"))
    assert result.returncode == 4
    assert "keys_unavailable" in result.stdout
    output = (result.stdout + result.stderr).splitlines()
    problem = [line for line in output if "HTTP 503" in line]
    assert len(problem) == 1, result.stderr
    assert f"jwt-middleware jwks {issuer.jwks_url}" in result.stderr


# -- jwks: what went wrong, in words, without secrets -----------------------------------------


def test_jwks_connection_refused_names_host_and_port() -> None:
    """A refused connection says so, with host and port."""
    port = free_port()
    result = cli("jwks", f"http://127.0.0.1:{port}/jwks.json")
    assert result.returncode == 4
    assert f"connection refused by 127.0.0.1:{port}" in result.stderr
    assert "ConnectError" not in result.stderr


def test_jwks_timeout_says_timed_out(issuer: LocalIssuer) -> None:
    """A key server that does not answer in time is reported as a timeout, with the limit."""
    issuer.set_fault("slow", delay=10)
    result = cli("jwks", issuer.jwks_url, "--timeout", "0.5")
    assert result.returncode == 4
    assert f"timed out: 127.0.0.1:{issuer.port}" in result.stderr and "0.5s" in result.stderr


def test_jwks_tls_failure_says_tls(issuer: LocalIssuer) -> None:
    """https:// to a plain-HTTP port is reported as a TLS failure."""
    result = cli("jwks", f"https://127.0.0.1:{issuer.port}/.well-known/jwks.json")
    assert result.returncode == 4
    assert f"TLS failure: the handshake with 127.0.0.1:{issuer.port} failed" in result.stderr


def test_jwks_dns_failure_says_dns() -> None:
    """A name that does not resolve is reported as a DNS failure (.invalid never resolves)."""
    result = cli("jwks", "https://no-such-host.invalid/jwks.json", "--timeout", "2")
    assert result.returncode == 4
    assert "DNS failure: 'no-such-host.invalid'" in result.stderr


def test_jwks_messages_redact_credentials_and_query_values(issuer: LocalIssuer) -> None:
    """URL credentials and the query never appear in messages, as text or JSON."""
    issuer.set_fault("status", status=500)
    base = issuer.jwks_url.replace("http://", "http://alice:hunter2@")
    for extra in ([], ["--json"]):
        result = cli("jwks", base + "?api_key=s3cret", *extra)
        assert result.returncode == 4
        both = result.stdout + result.stderr
        assert "hunter2" not in both and "alice" not in both and "s3cret" not in both
        assert "***@127.0.0.1" in both and "jwks.json?***" in both


@pytest.mark.parametrize(
    ("mode", "params", "why"),
    [
        ("huge", {"size": 200_000}, "sent a body over 51200 bytes"),
        ("encoding", {"encoding": "gzip", "size": 40_000_000}, "over 51200 bytes once decoded"),
        ("encoding", {"encoding": "gzip, gzip"}, "stacked content codings"),
        ("content_type", {"content_type": "text/html"}, "sent Content-Type 'text/html'"),
        ("drip_body", {"interval": 0.05}, "no complete answer within 1s (the total limit)"),
    ],
)
def test_jwks_refuses_what_the_middleware_refuses(
    issuer: LocalIssuer, mode: str, params: dict[str, Any], why: str
) -> None:
    """jwks fetches with the middleware's limits: an oversized body, a gzip bomb, stacked
    codings, a non-JSON media type and a server that never finishes are refused with exit 4."""
    issuer.set_fault(mode, **params)
    result = cli("jwks", issuer.jwks_url, "--timeout", "0.5")
    assert result.returncode == 4, result.stdout
    assert why in result.stderr, result.stderr
    assert result.stdout == "" and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("case", "password"),
    [
        ("listed", "hunter2"),
        ("listed", "hunt@er2"),
        ("refused", "hunter2"),
        ("unreachable", "hunt@er2"),
        ("not a url", "hunt/er2"),  # httpx ends the authority at '/': no URL, a usage error
        ("not a url", "hunt er2#x"),
    ],
)
def test_jwks_never_prints_url_credentials(issuer: LocalIssuer, case: str, password: str) -> None:
    """No part of a URL's user, password (even one holding '@', '/', ' ' or '#') or query is
    printed, as text or JSON: keys listed, refused, unreachable, or the URL unusable."""
    port = free_port() if case == "unreachable" else issuer.port
    url = f"http://alice:{password}@127.0.0.1:{port}/.well-known/jwks.json?key=s3cret"
    if case == "refused":
        issuer.set_fault("content_type", content_type="text/html")
    expected = {"listed": 0, "refused": 4, "unreachable": 4, "not a url": 2}[case]
    for extra in ([], ["--json"]):
        result = cli("jwks", url, *extra)
        assert result.returncode == expected, result.stderr
        both = result.stdout + result.stderr
        for secret in ("alice", "hunt", "er2", "s3cret"):
            assert secret not in both, both
        assert "Traceback" not in both


def test_jwks_timeout_must_be_positive(issuer: LocalIssuer) -> None:
    """jwks --timeout 0 (or negative) is a usage error (2) that names the flag; nothing is
    fetched."""
    for value in ("0", "-1"):
        result = cli("jwks", issuer.jwks_url, "--timeout", value)
        assert result.returncode == 2 and "--timeout must be a positive" in result.stderr
    assert issuer.jwks_requests == 0


def test_jwks_not_an_http_url_is_usage_error() -> None:
    """A jwks URL that is not http(s) is a usage error (2), not an unreachable server."""
    result = cli("jwks", "ftp://keys.example/jwks")
    assert result.returncode == 2
    assert "not an http:// or https:// URL" in result.stderr


# -- streams and help ------------------------------------------------------------------------


def test_results_on_stdout_explanations_on_stderr(issuer: LocalIssuer) -> None:
    """The verdict is on stdout; why it failed, and every error, is on stderr."""
    result = cli("verify", issuer.mint(audience="api://other"), *verify_args(issuer))
    assert result.stdout.strip() == "INVALID: audience_mismatch"
    assert "token aud: 'api://other'" in result.stderr
    bad = cli("inspect", "abc")
    assert bad.stdout == "" and "not a decodable JWT" in bad.stderr


@pytest.mark.parametrize("command", [[], ["inspect"], ["verify"], ["jwks"], ["serve-issuer"]])
def test_help_is_written_for_a_terminal(command: list[str]) -> None:
    """--help has no reStructuredText markup and lists the exit codes."""
    result = cli(*command, "--help")
    assert result.returncode == 0
    assert "``" not in result.stdout
    assert "exit codes:" in result.stdout and "4  the keys could not be fetched" in result.stdout


# -- exit codes ------------------------------------------------------------------------------


def test_exit_codes_of_every_command(issuer: LocalIssuer) -> None:
    """0 ok · 1 invalid · 2 usage/config · 3 not a JWT · 4 keys not fetched, for each command."""
    good, expired = issuer.mint(), issuer.mint(expires_in=-3600)
    codes = {
        ("inspect", good): cli("inspect", good).returncode,
        ("inspect", "junk"): cli("inspect", "junk").returncode,
        ("inspect", "usage"): cli("inspect", "--algorithms").returncode,
        ("verify", good): cli("verify", good, *verify_args(issuer)).returncode,
        ("verify", expired): cli("verify", expired, *verify_args(issuer)).returncode,
        ("verify", "usage"): cli("verify", good, "--issuer", issuer.issuer).returncode,
        ("verify", "junk"): cli("verify", "a.b", *verify_args(issuer)).returncode,
        ("jwks", good): cli("jwks", issuer.jwks_url).returncode,
        ("jwks", "usage"): cli("jwks").returncode,
    }
    issuer.set_fault("down")
    codes["verify", "down"] = cli("verify", good, *verify_args(issuer)).returncode
    codes["jwks", "down"] = cli("jwks", issuer.jwks_url).returncode
    assert list(codes.values()) == [0, 3, 2, 0, 1, 2, 3, 0, 2, 4, 4]


# -- --json ----------------------------------------------------------------------------------


def test_verify_json_shape_without_the_token(issuer: LocalIssuer) -> None:
    """verify --json prints one object (valid, reason, detail, explanation, claims); no token."""
    token = issuer.mint(scope="read")
    ok = cli("verify", token, *verify_args(issuer, "--json"))
    assert ok.returncode == 0
    data = json.loads(ok.stdout)
    assert data == {
        "valid": True,
        "reason": None,
        "detail": None,
        "explanation": [],
        "claims": data["claims"],
    }
    assert data["claims"]["sub"] == "user-1" and data["claims"]["scope"] == "read"
    bad_token = issuer.mint(expires_in=-3600)
    bad = cli("verify", bad_token, *verify_args(issuer, "--json"))
    assert bad.returncode == 1
    verdict = json.loads(bad.stdout)
    assert verdict["valid"] is False and verdict["reason"] == "token_expired"
    assert verdict["claims"] is None and any("off by 1h" in e for e in verdict["explanation"])
    junk = json.loads(cli("verify", "junk", *verify_args(issuer, "--json")).stdout)
    assert junk["valid"] is False and junk["reason"] == "malformed_token"
    usage = json.loads(cli("verify", token, "--json", "--issuer", issuer.issuer).stdout)
    assert usage["error"] == "usage" and "--audience" in usage["detail"]
    for output in (ok, bad):
        assert token not in output.stdout + output.stderr
        assert bad_token not in output.stdout + output.stderr


def test_inspect_json_shape(issuer: LocalIssuer) -> None:
    """inspect --json prints header, claims and warnings, marked unverified; no token."""
    token = issuer.mint(expires_in=None)
    result = cli("inspect", token, "--json")
    assert result.returncode == 0
    data = json.loads(result.stdout)
    assert sorted(data) == ["claims", "header", "verified", "warnings"]
    assert data["verified"] is False and data["header"]["alg"] == "RS256"
    assert data["claims"]["sub"] == "user-1"
    assert "no exp: refused by default (require_exp=True)" in data["warnings"]
    assert token not in result.stdout
    junk = cli("inspect", "junk", "--json")
    assert junk.returncode == 3 and json.loads(junk.stdout)["error"] == "not_a_jwt"


def test_jwks_json_shape(issuer: LocalIssuer) -> None:
    """jwks --json lists each key's kid, kty, crv, size, use and algorithms."""
    issuer.add_key(generate_key("ES256", kid="ec-1"), publish=True)
    result = cli("jwks", issuer.jwks_url, "--json")
    assert result.returncode == 0
    data = json.loads(result.stdout)
    assert data["url"] == issuer.jwks_url and data["skipped"] == []
    by_kid = {key["kid"]: key for key in data["keys"]}
    assert by_kid["ec-1"] == {
        "kid": "ec-1",
        "kty": "EC",
        "crv": "P-256",
        "size": 256,
        "use": "sig",
        "algorithms": ["ES256"],
    }
    assert by_kid[issuer.current_key.kid]["algorithms"] == ["RS256"]
    issuer.set_fault("down")
    down = cli("jwks", issuer.jwks_url, "--json")
    assert down.returncode == 4 and json.loads(down.stdout)["error"] == "keys_unavailable"


# -- serve-issuer ----------------------------------------------------------------------------


def test_serve_issuer_serves_a_token_that_verifies() -> None:
    """serve-issuer prints URLs and a token that verify accepts against it; SIGTERM exits 0."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jwt_middleware",
            "serve-issuer",
            "--alg",
            "ES256",
            "--audience",
            "api://demo",
            "--scope",
            "read write",
            "--sub",
            "alice",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        printed: dict[str, str] = {}
        for line in process.stdout:
            name, _, value = line.partition(":")
            if value.startswith(" ") and " " not in name:
                printed[name] = value.strip()
            if line.startswith("export "):
                printed["export"] = line.strip()
            if line.startswith("serving"):
                break
        issuer_url, token = printed["issuer"], printed["token"]
        assert printed["jwks"] == issuer_url + "/.well-known/jwks.json"
        assert printed["discovery"] == issuer_url + "/.well-known/openid-configuration"
        assert printed["token-url"].startswith(issuer_url + "/token")
        assert f"JWT_ISSUER={issuer_url} JWT_AUDIENCE=api://demo" in printed["export"]
        assert httpx.get(printed["jwks"], timeout=5).json()["keys"][0]["alg"] == "ES256"
        result = cli(
            "verify",
            token,
            "--issuer",
            issuer_url,
            "--audience",
            "api://demo",
            "--jwks-url",
            printed["jwks"],
        )
        assert result.returncode == 0, result.stderr
        assert "VALID: sub='alice' scopes=read write" in result.stdout
        assert (
            cli(
                "verify", token, "--issuer", issuer_url, "--audience", "api://demo", "--discovery"
            ).returncode
            == 0
        )
    finally:
        process.terminate()
        _, errors = process.communicate(timeout=10)  # reads and closes both pipes
        assert process.returncode == 0
        assert "Traceback" not in errors
