"""Credentials: cloud and SaaS API keys, tokens, private keys, passwords in assignments.

Vendor keys with a fixed prefix (``AKIA``, ``ghp_``, ``xoxb-``, ``AIza``, ``sk_live_``…)
are found on shape alone; the formats are the vendors' documented ones (and those
gitleaks / trufflehog use). Shapeless secrets — an AWS secret access key (40 base64
characters), a bearer token, a random string after ``api_key`` — need a key word
nearby *and* enough entropy (≥ 3.0 bits per character over ≥ 16 characters), so
a hash in a commit message or a long identifier is not a secret. ``password=``,
``token:`` and similar assignments report the assigned value, in code, config files,
JSON, URLs with credentials (``postgres://user:pw@host``) and prose ("my password is …").
"""

from __future__ import annotations

import re

from edgewise.privacy.recognizers.base import RegexRecognizer, Rule, shannon_entropy, words

__all__ = ["SecretsRecognizer"]

_KEY_WORDS = words([
    "key", "keys", "secret", "secrets", "token", "tokens", "credential", "credentials",
    "api", "apikey", "auth", "bearer", "password", "passwd", "pwd", "aws", "access",
    "private", "signing", "client_secret", "secret_key", "access_key", "api_key",
    "aws_secret_access_key", "authorization",
])

# Names of variables/keys whose value is a secret. Matched case-insensitively as a
# whole identifier, possibly with a prefix (DB_PASSWORD, stripeSecretKey, "x-api-key").
_SECRET_NAME = (
    r"(?:[A-Za-z0-9]+[_.\-])*"
    r"(?:pass(?:word|wd|phrase)?|pwd|secret(?:[_\-]?key)?|client[_\-]?secret|"
    r"(?:api|access|auth|private|secret|signing|encryption|master)[_\-]?key|apikey|"
    r"(?:access|auth|refresh|session|bearer|api|id)?[_\-]?token|credentials?)"
)
_PLACEHOLDER = re.compile(
    r"^(?:\*+|x+|\.+|#+|-+|null|none|nil|true|false|undefined|changeme|redacted|"
    r"<[^>]*>|\$\{[^}]*\}?|\$[A-Z_][A-Z0-9_]*|\{\{[^}]*\}\}|%\([^)]*\)s|%s|"
    r"your[_\-a-z]*|example|password|secret|token|string|str|env|os\.environ.*|"
    r"getenv.*|process\.env.*)$", re.IGNORECASE)


def _not_placeholder(value: str) -> bool:
    v = value.strip("'\"`")
    return len(v) >= 4 and not _PLACEHOLDER.match(v) and len(set(v)) > 2


def _bare_secret(value: str) -> bool:
    # Unquoted values in prose ("the token: expires") are words; a secret has a digit or
    # a symbol, or is long.
    return _not_placeholder(value) and (not value.isalpha() or len(value) >= 12)


def _high_entropy(value: str) -> bool:
    return len(value) >= 16 and shannon_entropy(value) >= 3.0 and any(
        c.isdigit() for c in value) and any(c.isalpha() for c in value)


def _rules() -> list[Rule]:
    r = re.compile
    return [
        # --- vendor keys with a documented prefix -------------------------------------
        Rule("AWS_ACCESS_KEY", "aws access key id",
             r(r"(?<![A-Z0-9])(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|ANPA|ANVA|APKA)"
               r"[A-Z2-7]{16}(?![A-Z0-9])"), 0.9),
        Rule("AWS_SECRET_KEY", "aws secret access key",
             r(r"(?<![A-Za-z0-9/+=])([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])"), 0.0, group=1,
             context=words(["aws", "secret", "secret_access_key", "aws_secret_access_key",
                            "secretaccesskey", "secret access key"]),
             context_score=0.85, window=(80, 0), validate=_high_entropy),
        Rule("GITHUB_TOKEN", "github token",
             r(r"(?<![A-Za-z0-9_])(?:gh[pousr]_[A-Za-z0-9]{36,255}|"
               r"github_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59}|github_pat_[A-Za-z0-9_]{40,255})"
               r"(?![A-Za-z0-9_])"), 0.95),
        Rule("OPENAI_API_KEY", "openai key",
             r(r"(?<![A-Za-z0-9_\-])sk-(?:(?:proj|svcacct|admin)-)?[A-Za-z0-9_\-]{20,200}"
               r"(?![A-Za-z0-9_\-])"), 0.9, validate=lambda v: _high_entropy(v[3:])),
        Rule("SLACK_TOKEN", "slack token",
             r(r"(?<![A-Za-z0-9])xox[abposre]-[A-Za-z0-9\-]{10,250}"), 0.95),
        Rule("SLACK_TOKEN", "slack webhook",
             r(r"https://hooks\.slack\.com/(?:services|workflows)/[A-Za-z0-9_/\-]{20,}"),
             0.9),
        Rule("GOOGLE_API_KEY", "google api key",
             r(r"(?<![A-Za-z0-9_\-])AIza[0-9A-Za-z_\-]{35}(?![A-Za-z0-9_\-])"), 0.95),
        Rule("STRIPE_KEY", "stripe secret/restricted key",
             r(r"(?<![A-Za-z0-9_])(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{16,247}"
               r"(?![A-Za-z0-9_])"), 0.95),
        Rule("JWT", "json web token",
             r(r"(?<![A-Za-z0-9_\-])eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\."
               r"[A-Za-z0-9_\-]{8,}(?![A-Za-z0-9_\-])"), 0.9),
        Rule("PRIVATE_KEY", "pem private key",
             r(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
               r"(?:[\s\S]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
               r"|[A-Za-z0-9+/=:\s\-,]*)"), 1.0),
        # --- credentials in assignments, URLs and prose -------------------------------
        Rule("PASSWORD", "url credentials",
             r(r"\b[a-zA-Z][a-zA-Z0-9+.\-]{1,20}://[^\s:/@'\"]{1,64}:([^\s@/'\"]{3,128})@"
               r"[A-Za-z0-9.\-\[]"),
             0.9, group=1, validate=_not_placeholder),
        Rule("SECRET", "secret assignment",
             r(r"(?i)[\"']?\b(?P<name>" + _SECRET_NAME + r")\b[\"']?\s*(?::=|=>|[:=])\s*"
               r"(?:[\"'`](?P<q>[^\"'`\s]{4,256})[\"'`]|(?P<bare>[^\s\"'`,;)}\]]{4,256}))"),
             0.85, group="q", validate=_not_placeholder),
        Rule("SECRET", "secret assignment (unquoted)",
             r(r"(?i)[\"']?\b(?P<name>" + _SECRET_NAME + r")\b[\"']?\s*(?::=|=>|[:=])\s*"
               r"(?P<bare>[^\s\"'`,;)}\]]{4,256})"),
             0.8, group="bare", validate=_bare_secret),
        Rule("PASSWORD", "password in prose",
             r(r"(?i)\b(?:password|passcode|passphrase|pin code|pwd)\s+(?:is|was|=|:)\s+"
               r"[\"'`]?([^\s\"'`]{4,128}?)[\"'`]?(?=[.,;]?(?:\s|$))"),
             0.75, group=1, validate=_not_placeholder),
        Rule("SECRET", "bearer token",
             r(r"(?i)\b(?:bearer|token)\s+([A-Za-z0-9\-._~+/]{16,}=*)"), 0.0, group=1,
             context=words(["authorization", "bearer", "token", "header", "curl", "auth"]),
             context_score=0.8, window=(40, 0), validate=_high_entropy),
        Rule("SECRET", "high-entropy string near a key word",
             r(r"(?<![A-Za-z0-9+/_\-])([A-Za-z0-9+/_\-]{20,256}={0,2})(?![A-Za-z0-9+/_\-=])"),
             0.0, group=1, context=_KEY_WORDS, context_score=0.7, window=(40, 0),
             validate=lambda v: _high_entropy(v) and shannon_entropy(v) >= 3.5),
    ]


class SecretsRecognizer(RegexRecognizer):
    """API keys, tokens, private keys and passwords (entity types in ``SECRET_ENTITIES``)."""

    def __init__(self) -> None:
        super().__init__("EdgewiseSecretsRecognizer", _rules())
