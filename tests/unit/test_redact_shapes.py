"""Redaction against realistic shapes: every secret goes, ordinary evidence stays readable.

Each case is a log line or block as a real program prints it, with a made-up secret in
the shape the real one has. ``SHAPES`` must leak nothing; ``READABLE`` must come out
unchanged. A 1 MiB log mixing both checks the two at once and bounds the time taken.
"""

from __future__ import annotations

import random
import time

import pytest

from selfheal.evidence import detectors
from selfheal.evidence.redact import REDACTED, Redactor

R20 = "u8jzPde0IgxLd6GncfBA"
R24 = "epfJBd0Kh8oOOL8dKLzdocJ2"
R32 = "isAjIhKtJ0RlgLKOmxgJTeKdNnFRIBXu"
R36 = "DL7DxtpYlSXpfKtHF4vUCsMehGAkWvj7FAc9"
R40 = "QeWJKY40uvSwMFLZDe1f8rESQedUStPKR0CsTy4Q"
R48 = "wb8DwkNhFdnXsiVpzz63FfkCzJr4i0B3JrTAwR4y9ojfljoQ"
R64 = "oaF1LlqsajAIxNKu8iS2G8NPRVdD53X83RZJzzzzgEOzdmenCkhvMdgaKjIg8xNb"
R88 = "e3nNyjOq9wMxEhh2FDEEtfjgVvVqE1SkHbn88HxjSI6bWHtP3fS2qHx6kwXoIIXGvOoNZYW2mZp0zVZomHFwUbbY"
HEX32 = "d6608697a8d41bed440e50454f31af31"

RSA_BODY = (
    "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n"
    "VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK\n"
)
OPENSSH_BODY = (
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "QyNTUxOQAAACBxW1hU2vGqY8n0mYkV3d7ZC9xXpPq5rJm3lK0bQ8zFhgAAAJgq7z9BKu8/\n"
)
PGP_BODY = (
    "Version: GnuPG v2\n\n"
    "lQOYBGN2xKABCADHz3k6QFv0pZ1X7yVJd9m2bWq4tR8sLc5nEoGiKjH0aPuYfVwM\n"
    "x9Tr3eQ1sLk5Bd2Nq8vW4zY7pH6cF0mJ3gA1oXiR5uE2tK9lD8bS7yC4nV0wZ6qa\n"
    "=Xk7q\n"
)

# (name, text, secrets that must not survive, text that must survive)
SHAPES: list[tuple[str, str, tuple[str, ...], str]] = [
    # --- Go %+v and %#v struct prints, Go maps
    ("go-struct", "db config: {Host:db Port:5432 User:shop Password:xyz5ecret Token:" + R20 + "}",
     ("xyz5ecret", R20), "Host:db Port:5432 User:shop"),
    ("go-struct-quoted", 'cfg=&main.Config{User:"shop", Password:"s3cr3t pass"}',
     ("s3cr3t pass",), 'User:"shop"'),
    ("go-map", "headers map[Accept:[*/*] apiKey:kq8s7d6f5g4h]", ("kq8s7d6f5g4h",), "Accept:[*/*]"),
    ("go-struct-nested", "opts={Addr:redis:6379 Password:r3d1sPw DB:0}", ("r3d1sPw",),
     "Addr:redis:6379"),
    # --- command lines
    ("mysql-attached", "exec: mysql -h db -u root -pS3cretPw shop", ("S3cretPw",), "-u root"),
    ("mysqldump-attached", "+ mysqldump --single-transaction -uadmin -p'x y!z' shop",
     ("x y!z",), "mysqldump --single-transaction"),
    ("sshpass", "running: sshpass -p hunter22 ssh deploy@10.0.0.7", ("hunter22",), "ssh deploy@"),
    ("sshpass-attached", "sshpass -phunter22 scp a b", ("hunter22",), "scp a b"),
    ("redis-cli", "redis-cli -h cache -a r3disPassw0rd ping", ("r3disPassw0rd",), "ping"),
    ("docker-login", "docker login -u ci -p dckrPw123456 registry.local", ("dckrPw123456",),
     "registry.local"),
    ("flag-quoted", 'app --db-password "correct horse battery" --port 80',
     ("correct horse battery", "horse"), "--port 80"),
    ("flag-equals", "app --api-key=" + R32 + " --verbose", (R32,), "--verbose"),
    ("curl-user", "curl -u admin:hunter2 https://x", ("hunter2",), "curl -u admin:"),
    # --- vendor tokens
    ("gitlab-pat", "git clone https://oauth2:glpat-Xy7Qw3Er5Ty1Ui9Op0As@gitlab.com/g/p.git",
     ("glpat-Xy7Qw3Er5Ty1Ui9Op0As", "Xy7Qw3Er5Ty1Ui9Op0As"), "gitlab.com/g/p.git"),
    ("gitlab-pat-bare", "export CI_TOKEN glpat-abcdefghij0123456789", ("abcdefghij0123456789",),
     "export"),
    ("gitlab-runner", "registering with glrt-t3_" + R20, (R20,), "registering with"),
    ("openai-proj", "openai init key=sk-proj-" + R48 + "T3BlbkFJ" + R20, (R48, R20), "openai init"),
    ("openai-proj-no-marker", "Using sk-proj-" + R40 + "_" + R24 + " for chat", (R40, R24),
     "for chat"),
    ("openai-legacy", "OPENAI sk-" + R48, (R48,), "OPENAI"),
    ("anthropic", "x sk-ant-api03-" + R64 + "AA", (R64,), "x "),
    ("github-classic", "remote: ghp_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8", ("a1B2c3D4e5F6",), ""),
    ("github-fine", "token github_pat_11ABCDEFG0" + R64, (R64,), "token"),
    ("aws-key-id", "using AKIAIOSFODNN7EXAMPLE for s3", ("AKIAIOSFODNN7EXAMPLE",), "for s3"),
    ("aws-secret", "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
     ("wJalrXUtnFEMI",), "aws_secret_access_key"),
    ("aws-session", "x-amz-security-token: " + R88, (R88,), "x-amz-security-token"),
    ("vault-hvs", "VAULT_TOKEN hvs.CAESIJ" + R48, (R48,), "VAULT_TOKEN"),
    ("vault-header", "X-Vault-Token: hvs." + R24, (R24,), "X-Vault-Token"),
    ("slack-bot", "slack xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOpQrStUvWx", ("AbCdEfGh",),
     "slack"),
    ("slack-webhook", "POST https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXXXXXX",
     ("XXXXXXXXXXXXXXXX",), "POST"),
    ("stripe", "charge failed, key=sk_live_4eC39HqLyjWDarjtT1zdp7dc", ("4eC39HqLy",), "charge"),
    ("google-api", "maps key AIzaSyA-1234567890abcdefghijklmnopqrstu", ("AIzaSyA-12345",), "maps"),
    ("google-oauth", "access ya29.a0AfH6SM" + R64, (R64,), "access"),
    ("sendgrid", "mail SG." + R20 + "AB." + R40 + "xyz", (R40,), "mail"),
    ("twilio", "twilio sid AC" + HEX32, (HEX32,), "twilio sid"),
    ("npm", "//registry.npmjs.org/:_authToken=npm_" + R36, (R36,), "registry.npmjs.org"),
    ("pypi", "twine upload -p pypi-AgEIcHlwaS5vcmc" + R88, (R88,), "twine upload"),
    ("dockerhub", "using dckr_pat_" + R24, (R24,), "using"),
    ("huggingface", "HF hf_" + R36, (R36,), "HF"),
    ("jwt", "id_token: eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.SflKxwRJSMeKKF2QT4fwpMeJf36",
     ("SflKxwRJSMeKKF2QT4fwpMeJf36", "eyJzdWIiOiIxMjM0In0"), "id_token"),
    ("azure-storage", "DefaultEndpointsProtocol=https;AccountName=shop;AccountKey=" + R88[:86]
     + "==;EndpointSuffix=core.windows.net", (R88[:40],), "AccountName=shop"),
    ("azure-sas", "GET https://acct.blob.core.windows.net/c/b.txt?sv=2022-11-02&sr=b"
     "&sig=AbCdEf%2BgHiJkLmN0pQ%3D&se=2026-12-01T00:00:00Z", ("AbCdEf%2BgHiJkLmN0pQ",),
     "sr=b&sig="),
    ("azure-sas-servicebus", "SharedAccessSignature sr=sb%3A%2F%2Fns&sig=Zx9Yw8Vu7%3D&se=1700",
     ("Zx9Yw8Vu7",), "SharedAccessSignature sr="),
    ("sentry-dsn", "sentry dsn https://" + HEX32 + "@o12345.ingest.sentry.io/678", (HEX32,),
     "@o12345.ingest.sentry.io/678"),
    # --- URLs
    ("url-plain", "connecting to postgres://shop:Pa55word!@db:5432/shop", ("Pa55word!",),
     "@db:5432/shop"),
    ("url-slash", "dsn=postgres://u:pa/ss0rd@db/x failed", ("pa/ss0rd", "ss0rd"), "failed"),
    ("url-at", "amqp://app:p@ss@rabbit:5672/ connection reset", ("p@ss",), "@rabbit:5672/"),
    ("url-both", "mongodb://root:a/b@c#d@mongo-0.mongo:27017/admin", ("a/b@c#d", "b@c#d"),
     "@mongo-0.mongo:27017/admin"),
    ("url-empty-user", "redis://:hunter2hunter2@cache:6379/0", ("hunter2hunter2",), "@cache:6379"),
    # --- key/value, quoted with spaces
    ("kv-dquote-spaces", 'password="correct horse battery staple" user=bob',
     ("correct horse", "battery staple"), "user=bob"),
    ("kv-squote-spaces", "PASSWORD='my secret pass' LEVEL=info", ("my secret pass",),
     "LEVEL=info"),
    ("kv-json-spaces", '{"user": "shop", "password": "p@ss w0rd"}', ("p@ss w0rd",),
     '"user": "shop"'),
    ("kv-json-escaped", '{\\"client_secret\\":\\"a b c d\\"}', ("a b c d",), "client_secret"),
    ("kv-yaml-spaces", "  password: correct horse battery\n  user: bob",
     ("correct horse battery", "horse"), "user: bob"),
    ("kv-logfmt", "level=info msg=login access_key=AKXYZ123 user=bob", ("AKXYZ123",), "user=bob"),
    ("kv-query", "GET /cb?code=1&token=tk_55aa66bb&state=x", ("tk_55aa66bb",), "state=x"),
    ("kv-env", "DB_PASSWORD=s3cr3t-v4lue", ("s3cr3t-v4lue",), "DB_PASSWORD="),
    ("kv-spanish", "contraseña=Hola1234Mundo", ("Hola1234Mundo",), "contraseña="),
    ("kv-xml", "<password>xml-secret-1</password>", ("xml-secret-1",), "<password>"),
    ("kv-ruby", "privateKey => 'mykeymaterial'", ("mykeymaterial",), "privateKey =>"),
    # --- headers
    ("auth-bearer", "GET /api Authorization: Bearer abc.def-ghi_jkl", ("abc.def-ghi_jkl",),
     "Authorization: Bearer"),
    ("auth-basic", 'headers={"Authorization": "Basic dXNlcjpwYXNz"}', ("dXNlcjpwYXNz",),
     '"Authorization": "Basic'),
    ("cookie", "Cookie: session=9f8e7d6c5b4a; theme=dark", ("9f8e7d6c5b4a",), "Cookie:"),
    ("set-cookie", "Set-Cookie: sid=" + R32 + "; Path=/; HttpOnly", (R32,), "Set-Cookie:"),
    # --- key blocks
    ("pem-rsa", "loaded\n-----BEGIN RSA PRIVATE KEY-----\n" + RSA_BODY
     + "-----END RSA PRIVATE KEY-----\nnext", ("MIIEowIBAAKCAQEAu1SU1", "VTLw7onLRnrq0"), "next"),
    ("pem-openssh", "-----BEGIN OPENSSH PRIVATE KEY-----\n" + OPENSSH_BODY
     + "-----END OPENSSH PRIVATE KEY-----", ("b3BlbnNzaC1rZXkt", "QyNTUxOQAAACBx"), "OPENSSH"),
    ("pem-pgp", "-----BEGIN PGP PRIVATE KEY BLOCK-----\n" + PGP_BODY
     + "-----END PGP PRIVATE KEY BLOCK-----\ndone", ("lQOYBGN2xKABCAD", "x9Tr3eQ1sLk5"), "done"),
    ("pem-json-escaped", '{"private_key": "-----BEGIN PRIVATE KEY-----\\n'
     + RSA_BODY.replace("\n", "\\n") + '-----END PRIVATE KEY-----\\n"}',
     ("MIIEowIBAAKCAQEAu1SU1",), "private_key"),
    ("pem-cut-front", "[... 512 bytes truncated ...]\n" + RSA_BODY
     + "-----END RSA PRIVATE KEY-----\nstarted", ("VTLw7onLRnrq0", "MIIEowIBAAKCAQEAu1SU1"),
     "started"),
    ("putty", "PuTTY-User-Key-File-2: ssh-rsa\nEncryption: none\nPrivate-Lines: 2\n"
     + RSA_BODY + "Private-MAC: 0a1b", ("VTLw7onLRnrq0",), "Encryption: none"),
    # --- nothing names it: the entropy rule
    ("entropy-bare", "generated client credential " + R40 + " for tenant 7", (R40,),
     "for tenant 7"),
    ("entropy-base64", "blob 'QWxhZGRpbjpvcGVuIHNlc2FtZSBhbmQgbW9yZQ7x9Kq2' stored",
     ("QWxhZGRpbjpvcGVuIHNlc2FtZSBhbmQ",), "stored"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "secrets", "kept"), [c[1:] for c in SHAPES], ids=[c[0] for c in SHAPES]
)
def test_no_secret_survives(text: str, secrets: tuple[str, ...], kept: str) -> None:
    r = Redactor()
    out = r.redact_text(text)
    leaked = [s for s in secrets if s in out]
    assert not leaked, out
    assert REDACTED in out
    assert kept in out, out
    assert r.total >= 1


def test_the_shape_suite_is_large_and_leaks_nothing() -> None:
    leaks = [name for name, text, secrets, _ in SHAPES for s in secrets if s in redact(text)]
    assert len(SHAPES) >= 60
    assert leaks == []


def redact(text: str) -> str:
    return Redactor().redact_text(text)


READABLE = [
    # Stack traces of each runtime.
    'Traceback (most recent call last):\n  File "/app/auth/tokens.py", line 12, in check\n'
    '    token = request.headers["Authorization"].split()[1]\n'
    "jwt.exceptions.ExpiredSignatureError: Signature has expired",
    "java.lang.IllegalStateException: Failed to load ApplicationContext\n"
    "\tat org.springframework.test.context.cache.DefaultCacheAwareContextLoaderDelegate"
    ".loadContext(DefaultCacheAwareContextLoaderDelegate.java:132)\n"
    "\tat com.shop.auth.TokenService$$EnhancerBySpringCGLIB$$5f3a2b1c.validate(<generated>)\n"
    "Caused by: org.postgresql.util.PSQLException: FATAL: password authentication failed",
    "panic: runtime error: invalid memory address or nil pointer dereference\n"
    "[signal SIGSEGV: segmentation violation code=0x1 addr=0x0 pc=0x4a5b3c]\n\n"
    "goroutine 17 [running]:\nmain.(*Server).handleToken(0xc0001a2000, {0x7f3e2c, 0xc00012e0f0})\n"
    "\t/go/src/github.com/shop/checkout/server.go:88 +0x1d4\ncreated by main.main in goroutine 1",
    "TypeError: Cannot read properties of undefined (reading 'secret')\n"
    "    at verify (/app/node_modules/jsonwebtoken/verify.js:103:21)\n"
    "    at node:internal/process/task_queues:95:5",
    # Ids and hashes.
    "request 123e4567-e89b-12d3-a456-426614174000 failed; trace=4bf92f3577b34da6a3ce929d0e0e4736",
    "REQUEST 123E4567-E89B-12D3-A456-426614174000 ULID 01ARZ3NDEKTSV4RRFFQ69G5FAV",
    "deployed commit 3f1c2a9b8e7d6c5b4a39281706f5e4d3c2b1a098 (short 3f1c2a9)",
    "GET https://github.com/shop/checkout/commit/3f1c2a9b8e7d6c5b4a39281706f5e4d3c2b1a098 200",
    "pulling registry.local/shop/checkout@sha256:"
    "9b2a6c8e1f0d3b5a7c9e2f4d6b8a0c1e3f5d7b9a2c4e6f8d0b1a3c5e7f9d2b4a",
    "fetch https://cdn.example.com/assets/app.5f3a2b1c9d8e7f6a.js integrity sha1-"
    "0c5f2e9a7b3d1f8e6a4c2b0d9e7f5a3c",
    # Times.
    "2026-11-28T08:00:00.123456Z INFO started in 1.234s at 1764316800.5 (epoch ms 1764316800123)",
    "I1128 08:00:00.000123       1 controller.go:123] Observed a panic",
    # Kubernetes names and objects.
    "pod shop/checkout-7d9f8c6b5-x2x7k container app restarted; rs checkout-7d9f8c6b5",
    "Back-off pulling image registry.local/shop/checkout:1.4.2-rc.1+build.77",
    "volume secret-volume from secret db-creds (secretName=db-creds) mounted at /etc/creds",
    'Error: secret "api-token" not found; configmap "checkout-config" key "FEATURES"',
    "arn:aws:iam::123456789012:role/CheckoutServiceRole-ABC123def456",
    'serviceaccount system:serviceaccount:shop:checkout cannot get resource "secrets"',
    # Ordinary fields and code that mention secrets without holding one.
    "GET /health 200 1.2ms host=checkout-7d9f:8080 secretName=db-creds tokens_used=12",
    "KeyError: 'password'",
    "    async def me(token: str = Depends(oauth2_scheme)):",
    "author=jane passenger=3 keyboard=us monkey=1",
    "S3ClientBuilderV2Factory getUserProfileByEmailAddressV3 handleOAuth2CallbackRequest",
    "/var/lib/kubelet/pods/8d3a0f5e-2c1b-4a6d-9e7f-0b1c2d3e4f5a/volumes/kubernetes.io~secret",
    "http://checkout.shop.svc.cluster.local:8080/api/v1/orders/@me failed",
    "ssh -p 2222 deploy@10.0.0.7; psql -p 5432 -U shop",
]


@pytest.mark.parametrize("text", READABLE)
def test_evidence_stays_readable(text: str) -> None:
    r = Redactor()
    assert r.redact_text(text) == text
    assert r.total == 0


def test_the_vendor_detectors_are_detect_secrets_plugins() -> None:
    names = detectors.detector_names()
    assert {"GitLabTokenDetector", "OpenAIDetector", "AzureStorageKeyDetector"} <= set(names)
    # Addresses are evidence; private keys are removed whole by the block rules.
    assert "IPPublicDetector" not in names
    assert "PrivateKeyDetector" not in names


def test_entropy_rule_tells_key_material_from_ids() -> None:
    assert detectors.looks_random(R40)
    assert detectors.looks_random(R24)
    assert not detectors.looks_random("3f1c2a9b8e7d6c5b4a39281706f5e4d3c2b1a098")
    assert not detectors.looks_random("123e4567-e89b-12d3-a456-426614174000")
    assert not detectors.looks_random("getUserProfileByEmailAddressV3")
    assert not detectors.looks_random("checkout-7d9f8c6b5-x2x7k")


# --- policy patterns: the regex engine, with a time limit --------------------------------


def test_a_catastrophic_policy_pattern_cannot_freeze_redaction() -> None:
    r = Redactor(extra_patterns=[r"(a+)+$", r"CUST-\d{6}"])
    evil = "a" * 5000 + "!"
    text = f"customer CUST-123456 ok\n{evil}\nTraceback (most recent call last):\nValueError: x"
    t0 = time.monotonic()
    out = r.redact_text(text)
    took = time.monotonic() - t0
    assert took < 3.0
    assert r.counts["policy[0]-timeout"] == 1
    # The line the pattern could not decide is removed (fail closed), the rest is kept and
    # the other patterns still ran.
    assert evil not in out
    assert "ValueError: x" in out
    assert "CUST-123456" not in out
    assert r.counts["policy[1]"] == 1


def test_policy_patterns_use_the_regex_engine_syntax() -> None:
    # \p{Lu} and possessive/atomic groups are regex-module syntax.
    r = Redactor(extra_patterns=[r"ORDER-\p{Lu}{3}\d++"])
    assert r.redact_text("placed ORDER-ABC123 now") == f"placed {REDACTED} now"


# --- a 1 MiB log: no leak, readable, fast -------------------------------------------------


def realistic_log(size: int, *, seed: int = 11) -> tuple[str, list[str], list[str]]:
    """A log of about ``size`` bytes: ordinary lines, stack traces, and the shapes above.

    Returns the log, the secrets planted in it, and readable lines planted in it.
    """
    rnd = random.Random(seed)
    ordinary = [
        "2026-11-28T08:00:{s:02d}.{ms:03d}Z INFO  http GET /api/v1/orders/{n} 200 {ms}ms "
        "user_id={n} trace=4bf92f3577b34da6a3ce929d0e0e{n:04d} pod=checkout-7d9f8c6b5-x2x7k",
        '{{"ts":"2026-11-28T08:00:{s:02d}Z","level":"debug","msg":"cache hit","key":"order:{n}",'
        '"ttl_seconds":300,"bytes":{ms}}}',
        "I1128 08:00:{s:02d}.{ms:06d}       1 reflector.go:{n}] Listing and watching *v1.Pod",
        "2026-11-28 08:00:{s:02d},{ms:03d} WARN  [pool-2-thread-{n}] c.s.c.OrderService - retry "
        "{n} for order 123e4567-e89b-12d3-a456-4266141{n:05d}",
    ]
    secrets: list[str] = []
    readable: list[str] = []
    parts: list[str] = []
    total = 0
    i = 0
    while total < size:
        i += 1
        if i % 50 == 0:
            _name, text, found, _kept = SHAPES[(i // 50) % len(SHAPES)]
            secrets.extend(found)
            chunk = text
        elif i % 73 == 0:
            chunk = READABLE[(i // 73) % len(READABLE)]
            readable.append(chunk)
        else:
            chunk = rnd.choice(ordinary).format(
                s=i % 60, ms=rnd.randrange(1000), n=rnd.randrange(10_000)
            )
        parts.append(chunk)
        total += len(chunk) + 1
    return "\n".join(parts) + "\n", secrets, readable


def test_a_mebibyte_log_leaks_nothing_and_takes_well_under_a_second_per_mib() -> None:
    log, secrets, readable = realistic_log(1 << 20)
    r = Redactor()
    t0 = time.perf_counter()
    out = r.redact_text(log)
    took = time.perf_counter() - t0
    assert [s for s in secrets if s in out] == []
    assert all(line in out for line in readable)
    # Measured at 0.3 s here (0.2 s for a log without planted secrets); the bound leaves
    # room for a busy shared machine.
    assert took < 3.0, f"{took:.2f}s for 1 MiB"


def test_in_a_large_log_a_value_on_the_line_after_its_key_still_goes() -> None:
    # Large texts are scanned only around the lines holding a rule's hint: the line after
    # is part of it, as a header value may be folded onto it.
    filler = "".join(f"2026-11-28T08:00:00Z INFO request {i} ok\n" for i in range(2000))
    # Neither value looks random and the cookie's is on its own line: only the header
    # rule, run on the hint's line and the next, can see it.
    text = filler + "Set-Cookie:\n  flavour=plain-cookie-value\n" + filler + "Cookie: a=other-one"
    out = redact(text)
    assert "plain-cookie-value" not in out
    assert "other-one" not in out
    assert out.count("request 1999 ok") == 2
