"""The one exception tree of edgewise.

Errors from llama.cpp, httpx, sqlite, YAML and the OS are converted where they enter
(``raise X(...) from exc``); only ``edgewise.api`` turns them into OpenAI-shaped HTTP
errors. Every message says what was wrong and how to fix it, and never quotes request
content (prompts may be sensitive).

::

    EdgewiseError
    ├── ConfigError              bad YAML / flag: names the key path and what is allowed
    ├── ModelError
    │   ├── ModelNotFoundError   a model name or path that is not installed
    │   └── ModelIntegrityError  a model file whose sha256 does not match the catalogue
    ├── EngineError              the inference engine failed to load or to generate
    ├── JobStoreError            the durable async-job queue cannot be opened, read or written
    │   └── JobStateError            a transition the job's current state does not allow
    ├── AuditError               the audit log cannot be opened, read or written
    │   └── AuditKeyError            its HMAC key is unset, too short, or not the one it was
    │                                written with
    ├── PrivacyError             the privacy guard cannot classify a request (bad input to
    │                            the detector, or Presidio/spaCy failed); never quotes text
    ├── RouterError              a learned router's directory, its training data or its
    │                            embedding model is missing, malformed or tampered with
    ├── RequestError             the client's fault -> 4xx
    │   ├── InvalidRequestError      400, malformed or unsupported parameters
    │   ├── ContextLengthError       400, prompt (+ max_tokens) does not fit the context
    │   ├── BudgetError              400, no eligible tier is within x-edgewise-max-cost
    │   ├── ClearanceError           403, the data may not go to any tier that could serve it
    │   ├── UnknownModelError        404, the request names a model (or tier) not served here
    │   ├── PayloadTooLargeError     413, request body over the configured limit
    │   ├── AuthenticationError      401, no credential, or one that is malformed, expired,
    │   │                                 from another CA or fleet, or badly signed
    │   ├── ForbiddenError           403, a valid identity that may not do this (scope,
    │   │                                 revoked node, a SAN or node name not allowed)
    │   └── RateLimitedError         429, too many failed attempts from this client
    ├── UnavailableError         the node cannot take the request now -> 429 / 503
    │   ├── OverloadedError          429, the admission queue is full (has retry_after)
    │   ├── ShuttingDownError        503, the node is draining
    │   ├── NoTierAvailableError     503, every eligible tier is down (async: queued instead)
    │   └── GuardUnavailableError    503, the privacy guard is loading, failed to load, or
    │                                     failed on this request (the request is not routed)
    ├── PKIError                 the fleet's CA or a node's key/certificate files cannot be
    │                                 created, read or decrypted (names the file and the fix)
    ├── ControlStoreError        the control plane's database (SQLite / PostgreSQL) cannot
    │                                 be opened, migrated, read or written
    ├── FleetError               a node agent cannot join, renew or reach the control plane
    ├── FederatedError           federated fine-tuning cannot go on
    │   ├── AggregationError         client updates that cannot be combined (shapes, a
    │   │                            frozen LoRA A that differs, no updates)
    │   └── PrivacyBudgetError       the next round would spend more than the ε budget
    └── SupplyError              the model supply chain (``edgewise build``) failed
        ├── RecipeError              a recipe with unknown stages or keys, or bad values
        ├── DatasetError             a dataset that does not parse (names file and line)
        ├── DoesNotFitError          no variant fits a hardware profile (says what would)
        ├── MissingDependencyError   an optional dependency is absent (names the extra)
        └── StageError               a stage failed; the run resumes from it next time
"""

from __future__ import annotations

__all__ = [
    "AggregationError",
    "AuditError",
    "AuditKeyError",
    "AuthenticationError",
    "BudgetError",
    "ClearanceError",
    "ConfigError",
    "ConflictError",
    "ContextLengthError",
    "ControlStoreError",
    "DatasetError",
    "DoesNotFitError",
    "EdgewiseError",
    "EngineError",
    "FederatedError",
    "FleetError",
    "ForbiddenError",
    "GuardUnavailableError",
    "InvalidRequestError",
    "JobStateError",
    "JobStoreError",
    "MissingDependencyError",
    "ModelError",
    "ModelIntegrityError",
    "ModelNotFoundError",
    "NoTierAvailableError",
    "OverloadedError",
    "PKIError",
    "PayloadTooLargeError",
    "PrivacyBudgetError",
    "PrivacyError",
    "RateLimitedError",
    "RecipeError",
    "RequestError",
    "RouterError",
    "ShuttingDownError",
    "StageError",
    "SupplyError",
    "UnavailableError",
    "UnknownModelError",
]


class EdgewiseError(Exception):
    """Base class of every error edgewise raises on purpose."""


class ConfigError(EdgewiseError):
    """A configuration file or flag is invalid; the message names the key path."""


class ModelError(EdgewiseError):
    """A model could not be found or verified."""


class ModelNotFoundError(ModelError):
    """A model name or path that is not installed."""


class ModelIntegrityError(ModelError):
    """A model file whose digest does not match the one recorded in the catalogue."""


class EngineError(EdgewiseError):
    """The inference engine failed (load, tokenize or generate)."""


class RouterError(EdgewiseError):
    """A learned router cannot be trained, loaded or run: a bad data line (file and line
    named), a router directory that is incomplete or altered, a missing embedding model."""


class JobStoreError(EdgewiseError):
    """The async-job store (SQLite) could not be opened, read or written.

    The message names the database path and what to do about it (free disk space, fix
    permissions, move a corrupt file aside).
    """


class JobStateError(JobStoreError):
    """A job transition its current state does not allow, or a job id that does not exist.

    ``job_id`` and ``state`` (``None`` for an unknown id) say which job and where it is.
    """

    def __init__(self, message: str, *, job_id: str, state: str | None):
        super().__init__(message)
        self.job_id = job_id
        self.state = state


class AuditError(EdgewiseError):
    """The audit log (SQLite) could not be opened, read or written.

    The message names the file and the fix. Tampering found by ``verify`` is not raised
    but reported (:class:`edgewise.security.audit.VerifyReport`).
    """


class AuditKeyError(AuditError):
    """The audit log's HMAC key is missing, too short, or not the one it was created with."""


class PrivacyError(EdgewiseError):
    """The privacy guard could not classify a request.

    Raised for input the detector cannot take (a non-text segment, an unknown declared
    level) and for failures inside Presidio/spaCy (the original exception is chained).
    The message never quotes the scanned text. A caller that routes on the result must
    fail closed: treat the request as unclassifiable, not as public.
    """


class RequestError(EdgewiseError):
    """The request is at fault. ``status`` and ``code`` drive the HTTP error; ``headers``
    are added to the error response (the router says what it decided there)."""

    status: int = 400
    error_type: str = "invalid_request_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers: dict[str, str] = {}
        if code is not None:
            self.code = code


class InvalidRequestError(RequestError):
    """Malformed or unsupported request parameters (400)."""


class ContextLengthError(RequestError):
    """The prompt does not fit the model's context window (400, like OpenAI)."""

    code = "context_length_exceeded"


class BudgetError(RequestError):
    """No eligible tier would answer within the request's ``x-edgewise-max-cost`` (400)."""

    code = "budget_exceeded"


class ClearanceError(RequestError):
    """The request's data is more sensitive than every tier that could serve it may
    receive (403, like OpenAI's ``permission_error``)."""

    status = 403
    error_type = "permission_error"
    code = "clearance"


class UnknownModelError(RequestError):
    """The request names a model or tier this node does not serve (404)."""

    status = 404
    error_type = "not_found_error"
    code = "model_not_found"


class PayloadTooLargeError(RequestError):
    """The request body is larger than ``serving.max_body_bytes`` (413)."""

    status = 413
    code = "payload_too_large"


class AuthenticationError(RequestError):
    """No credential, or one that does not authenticate: malformed, expired, signed by
    another CA or key, for another fleet or audience, a join token unknown or used (401)."""

    status = 401
    error_type = "authentication_error"
    code = "unauthenticated"


class ForbiddenError(RequestError):
    """An authenticated caller that may not do this: a token without the scope, a
    revoked node, a CSR asking for names its join token does not allow (403)."""

    status = 403
    error_type = "permission_error"
    code = "forbidden"


class ConflictError(RequestError):
    """The request contradicts the current state: a second active rollout of one model,
    a rollout that is not in a state the action applies to (409)."""

    status = 409
    code = "conflict"


class RateLimitedError(RequestError):
    """Too many failed attempts from one client (join-token guessing): 429 with
    ``retry_after`` seconds."""

    status = 429
    error_type = "rate_limit_error"
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float, param: str | None = None):
        super().__init__(message, param=param)
        self.retry_after = retry_after
        self.headers["Retry-After"] = str(max(1, round(retry_after)))


class UnavailableError(EdgewiseError):
    """The node cannot take this request right now."""

    status: int = 503
    error_type: str = "service_unavailable"
    code: str | None = "unavailable"

    def __init__(self, message: str, *, retry_after: float | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.headers: dict[str, str] = {}
        if code is not None:
            self.code = code


class OverloadedError(UnavailableError):
    """The admission queue is full (429 with ``Retry-After``)."""

    status = 429
    error_type = "rate_limit_error"
    code = "queue_full"


class ShuttingDownError(UnavailableError):
    """The node is draining in-flight requests before exit (503)."""

    code = "shutting_down"


class NoTierAvailableError(UnavailableError):
    """Every tier eligible for the request is down (503; with ``x-edgewise-async`` the
    request is queued instead)."""


class GuardUnavailableError(UnavailableError):
    """The privacy guard cannot screen requests (loading, failed to load, or failed on
    this one): nothing is routed unscreened (503)."""

    code = "privacy_guard_unavailable"


class PKIError(EdgewiseError):
    """A CA, key or certificate file cannot be created, read or decrypted (a wrong
    ``$EDGEWISE_CA_PASSPHRASE``, a missing or corrupt file); names the file and the fix."""


class ControlStoreError(EdgewiseError):
    """The control plane's database cannot be opened, migrated, read or written; names
    the database (without its password) and the fix."""


class FleetError(EdgewiseError):
    """A node agent cannot join, renew its certificate or reach the control plane
    (a wrong ``--ca-sha256``, a refused token, a network error); says what to do."""


class FederatedError(EdgewiseError):
    """Federated fine-tuning (``edgewise federate``) cannot go on."""


class AggregationError(FederatedError):
    """Client updates that cannot be aggregated; the message names the client and the
    tensor."""


class PrivacyBudgetError(FederatedError):
    """The next round would spend more privacy budget than ``privacy.max_epsilon``."""


class SupplyError(EdgewiseError):
    """The model supply chain (``edgewise build``) failed."""


class RecipeError(SupplyError):
    """A build recipe or hardware profile is invalid; the message names the key path."""


class DatasetError(SupplyError):
    """A dataset file does not parse; the message names the file and the line."""


class DoesNotFitError(SupplyError):
    """No built variant fits a hardware profile; the message says what the profile
    allows and what the smallest variant needs."""


class MissingDependencyError(SupplyError):
    """An optional dependency is not installed; the message names the extra to install."""


class StageError(SupplyError):
    """A pipeline stage failed. Completed stages are kept; the next run resumes here."""
