"""Redaction: each kind of secret disappears, and ordinary logs and stack traces survive."""

from __future__ import annotations

import json

import pytest

from selfheal.evidence import redact
from selfheal.evidence.redact import REDACTED, Redactor
from selfheal.policy.model import PolicyError

# Made-up secrets in the shapes the real ones have.
AWS_ID = "AKIAIOSFODNN7EXAMPLE"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
GH = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
GH_PAT = "github_pat_11ABCDEFG0abcdefghijkl_mnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUV"
SLACK = "xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOpQrStUvWx"
STRIPE = "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkphbmUifQ"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n"
    "VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK\n"
    "-----END RSA PRIVATE KEY-----"
)


def redacted(text: str, r: Redactor | None = None) -> str:
    return (r or Redactor()).redact_text(text)


@pytest.mark.parametrize(
    ("text", "secret", "kept"),
    [
        (
            "GET /api Authorization: Bearer abc.def-ghi_jkl",
            "abc.def-ghi_jkl",
            "Authorization: Bearer",
        ),
        (
            'headers={"Authorization": "Basic dXNlcjpwYXNz"}',
            "dXNlcjpwYXNz",
            '"Authorization": "Basic',
        ),
        ("proxy-authorization=Token 0123456789abcdef", "0123456789abcdef", "proxy-authorization"),
        ("calling with bearer Zm9vYmFyYmF6cXV4", "Zm9vYmFyYmF6cXV4", "bearer"),
        ("Cookie: session=9f8e7d6c5b4a; theme=dark", "9f8e7d6c5b4a", "Cookie:"),
        ("X-Api-Key: k-98765-secret", "k-98765-secret", "X-Api-Key:"),
        ("connecting to postgres://shop:Pa55word!@db:5432/shop", "Pa55word!", "postgres://shop:"),
        ("redis://:hunter2hunter2@cache:6379/0", "hunter2hunter2", "@cache:6379"),
        (f"using key {AWS_ID} for s3", AWS_ID, "for s3"),
        (f"aws_secret_access_key = {AWS_SECRET}", AWS_SECRET, "aws_secret_access_key"),
        (f"GITHUB_TOKEN={GH} git push", GH, "git push"),
        (f"token {GH_PAT}", GH_PAT, "token"),
        (f"slack client init {SLACK}", SLACK, "slack client init"),
        (
            "posting to https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXX",
            "XXXXXXXXXXXX",
            "hooks",
        ),
        (f"charge failed, key={STRIPE}", STRIPE, "charge failed"),
        (f"id_token: {JWT}", JWT, "id_token"),
        (f"got jwt {JWT} from idp", JWT, "from idp"),
        ("key AIzaSyA-1234567890abcdefghijklmnopqrstu used", "AIzaSyA-1234567890abcdef", "used"),
        ("DB_PASSWORD=s3cr3t-v4lue", "s3cr3t-v4lue", "DB_PASSWORD="),
        ("password: correct horse", "correct", "password:"),
        ('{"user": "shop", "password": "p@ss w0rd"}', "p@ss w0rd", '"user": "shop"'),
        ("{'apiKey': 'abcd1234efgh'}", "abcd1234efgh", "'apiKey'"),
        ('client_secret="zzz-top-zzz"', "zzz-top-zzz", "client_secret="),
        ("level=info msg=login access_key=AKXYZ123 user=bob", "AKXYZ123", "user=bob"),
        ("GET /cb?code=1&token=tk_55aa66bb&state=x", "tk_55aa66bb", "state=x"),
        ("privateKey => 'mykeymaterial'", "mykeymaterial", "privateKey =>"),
        ("<password>xml-secret-1</password>", "xml-secret-1", "<password>"),
        ('{\\"credentials\\":\\"escaped-in-json\\"}', "escaped-in-json", "credentials"),
        ("auth: dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA==", "auth:"),
        (
            "map[Authorization:[Bearer abc123def456] Accept:[*/*]]",
            "abc123def456",
            "] Accept:[*/*]]",
        ),
        ("curl -u admin:hunter2 https://x", "hunter2", "curl -u admin:"),
        ("https://x-access-token:tok-12345@github.com/x", "tok-12345", "@github.com/x"),
        ("exec app --db-password hunter2 --user bob", "hunter2", "--user bob"),
    ],
)
def test_each_secret_shape_is_redacted(text: str, secret: str, kept: str) -> None:
    out = redacted(text)
    assert secret not in out
    assert REDACTED in out
    assert kept in out


def test_pem_private_key_block_and_gcp_service_account_json() -> None:
    out = redacted(f"loaded key\n{PEM}\nnext line")
    assert "MIIEowIBAAKCAQEAu1SU1Lf" not in out
    assert out.startswith("loaded key\n-----BEGIN RSA PRIVATE KEY-----[REDACTED]")
    assert out.endswith("\nnext line")
    sa = json.dumps(
        {
            "type": "service_account",
            "project_id": "shop-prod",
            "private_key_id": "3f1c2a9b8e7d6c5b4a39281706f5e4d3c2b1a098",
            "private_key": PEM.replace("RSA ", "") + "\n",
            "client_email": "ci@shop-prod.iam.gserviceaccount.com",
        }
    )
    out = redacted(f"credentials file: {sa}")
    assert "MIIEowIBAAKCAQEAu1SU1Lf" not in out
    assert "3f1c2a9b8e7d6c5b4a39281706f5e4d3c2b1a098" not in out
    assert "ci@shop-prod.iam.gserviceaccount.com" in out


def test_unterminated_pem_block_is_still_redacted() -> None:
    out = redacted(PEM.split("-----END")[0])
    assert "MIIEowIBAAKCAQEAu1SU1Lf" not in out


NORMAL_TRACES = [
    # Python: code lines that mention tokens and passwords, exception names with "Token".
    'Traceback (most recent call last):\n  File "/app/auth/tokens.py", line 12, in check\n'
    '    token = request.headers["Authorization"].split()[1]\n'
    "    conn = psycopg2.connect(password=settings.DB_PASSWORD)\n"
    "jwt.exceptions.ExpiredSignatureError: Signature has expired",
    "KeyError: 'password'",
    'psycopg2.OperationalError: FATAL:  password authentication failed for user "shop"',
    # JVM frames with secret-sounding classes and file:line.
    "io.jsonwebtoken.ExpiredJwtException: JWT expired at 2026-11-28T08:00:00Z\n"
    "\tat com.shop.auth.TokenService.validate(TokenService.java:42)\n"
    "\tat com.shop.auth.PasswordEncoder.matches(PasswordEncoder.java:7) ~[app.jar:1.0]\n"
    "\t... 12 common frames omitted",
    # Go and Node frames.
    "goroutine 1 [running]:\nmain.loadSecret(0xc000010000)\n\t/src/secret.go:17 +0x1d",
    "TypeError: token.split is not a function\n    at parseAuth (/app/auth.js:3:9)\n"
    "    at node:internal/process/task_queues:95:5",
    # Signature lines with annotations (FastAPI), as they show in tracebacks.
    "    async def me(token: str = Depends(oauth2_scheme)):",
    "    def login(password: Optional[str] = None) -> User:",
    # Ordinary log fields.
    "GET /health 200 1.2ms host=checkout-7d9f:8080 secretName=db-creds tokens_used=12",
    "author=jane passenger=3 keyboard=us",
]


@pytest.mark.parametrize("text", NORMAL_TRACES)
def test_stack_traces_and_ordinary_logs_stay_intact(text: str) -> None:
    r = Redactor()
    assert r.redact_text(text) == text
    assert r.total == 0


def test_env_values_known_to_the_collector_are_redacted_anywhere() -> None:
    base = Redactor()
    r = base.with_literals(["s3cr3t-db-pw", "short", "info"])
    out = r.redact_text("boot: dsn=postgres:5432 using s3cr3t-db-pw; level info; short")
    assert "s3cr3t-db-pw" not in out
    assert "level info; short" in out  # under 6 characters: not redacted by value
    assert r.counts["env-value"] == 1
    assert base.total == 0  # the per-incident redactor counts on its own


def test_counts_name_the_rules() -> None:
    r = Redactor()
    r.redact_text(f"Authorization: Bearer abcdefgh12345 and {AWS_ID} and password=x1y2z3")
    assert r.counts["authorization-header"] == 1
    assert r.counts["aws-access-key-id"] == 1
    assert r.counts["key-value"] == 1
    assert r.total == 3


def test_policy_patterns_extend_the_rules() -> None:
    r = Redactor(extra_patterns=[r"CUST-\d{6}", r"pin (?P<value>\d{4})"])
    out = r.redact_text("customer CUST-123456 entered pin 9876 ok")
    assert out == f"customer {REDACTED} entered pin {REDACTED} ok"
    assert r.counts["policy[0]"] == 1


def test_an_invalid_policy_pattern_names_the_field() -> None:
    with pytest.raises(PolicyError) as e:
        Redactor(extra_patterns=["ok", "(unclosed"])
    assert e.value.field == "spec.redaction.patterns[1]"


def _deployment() -> dict[str, object]:
    last_applied = json.dumps(
        {"spec": {"template": {"spec": {"containers": [{"env": [{"value": "s3cr3t-db-pw"}]}]}}}}
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "checkout",
            "annotations": {redact.LAST_APPLIED: last_applied, "team": "payments"},
            "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
        },
        "spec": {
            "template": {
                "spec": {
                    "serviceAccountName": "checkout",
                    "initContainers": [
                        {"name": "migrate", "env": [{"name": "DB_URL", "value": "pg://u:p@db/x"}]}
                    ],
                    "containers": [
                        {
                            "name": "app",
                            "image": "shop/checkout:1.4.2",
                            "args": ["--api-key=abcdef123456", "--port=8080"],
                            "env": [
                                {"name": "DB_PASSWORD", "value": "s3cr3t-db-pw"},
                                {"name": "LOG_LEVEL", "value": "info"},
                                {
                                    "name": "API_TOKEN",
                                    "valueFrom": {"secretKeyRef": {"name": "api", "key": "token"}},
                                },
                            ],
                            "volumeMounts": [{"name": "tls", "mountPath": "/tls"}],
                        }
                    ],
                    "volumes": [{"name": "tls", "secret": {"secretName": "checkout-tls"}}],
                }
            }
        },
    }


def test_object_redaction_of_a_deployment() -> None:
    dep = _deployment()
    r = Redactor()
    out = r.redact_object(dep)
    text = json.dumps(out)
    assert "s3cr3t-db-pw" not in text
    assert "pg://u:p@db/x" not in text
    assert "abcdef123456" not in text
    assert "managedFields" not in text
    tpl = out["spec"]["template"]["spec"]  # type: ignore[index]
    env = tpl["containers"][0]["env"]
    assert [e["name"] for e in env] == ["DB_PASSWORD", "LOG_LEVEL", "API_TOKEN"]
    assert env[0]["value"] == REDACTED
    assert env[1]["value"] == REDACTED
    # References stay as names, never resolved.
    assert env[2]["valueFrom"] == {"secretKeyRef": {"name": "api", "key": "token"}}
    assert tpl["volumes"][0]["secret"] == {"secretName": "checkout-tls"}
    assert tpl["initContainers"][0]["env"][0]["value"] == REDACTED
    assert tpl["containers"][0]["args"][1] == "--port=8080"
    assert out["metadata"]["annotations"] == {  # type: ignore[index]
        redact.LAST_APPLIED: REDACTED,
        "team": "payments",
    }
    # The input is left as it was (a deep copy is redacted).
    assert dep["metadata"]["managedFields"]  # type: ignore[index]
    assert r.counts["env-value"] == 3


def test_a_secret_object_loses_its_data() -> None:
    out = Redactor().redact_object(
        {"kind": "Secret", "metadata": {"name": "x"}, "data": {"pw": "czNjcjN0"}}
    )
    assert out["data"] == REDACTED


def test_env_values_are_collected_from_pods_and_templates() -> None:
    dep = _deployment()
    assert sorted(redact.env_values(dep)) == ["info", "pg://u:p@db/x", "s3cr3t-db-pw"]
    pod = {"spec": dep["spec"]["template"]["spec"]}  # type: ignore[index]
    assert sorted(redact.env_values(pod)) == ["info", "pg://u:p@db/x", "s3cr3t-db-pw"]


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("DB_PASSWORD", True),
        ("dbPassword", True),
        ("clientSecret", True),
        ("api_key", True),
        ("X-Auth-Token", True),
        ("AWS_SECRET_ACCESS_KEY", True),
        ("sessionId", True),
        ("secretName", False),
        ("secretKeyRef", False),
        ("author", False),
        ("passenger", False),
        ("TokenExpiredError", False),
        ("key", False),
        ("monkey", False),
        ("token_count", False),
        ("max_tokens", False),
        ("tokenExpiresAt", False),
        ("GITHUBTOKEN", True),
        ("accessToken", True),
    ],
)
def test_secret_looking_keys(key: str, secret: bool) -> None:
    assert redact.is_secret_key(key) is secret


def test_secret_flag_values_in_separate_args_are_redacted() -> None:
    pod = {
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "command": ["/app", "--db-password", "hunter2hunter2", "--port", "8080"],
                    "args": ["-token", "tk-777", "--verbose"],
                }
            ]
        }
    }
    out = Redactor().redact_object(pod)
    c = out["spec"]["containers"][0]
    assert c["command"] == ["/app", "--db-password", REDACTED, "--port", "8080"]
    assert c["args"] == ["-token", REDACTED, "--verbose"]
