"""Security: the hash-chained audit log of routing decisions (``edgewise.security.audit``).

Node identity (mTLS) and scoped tokens will live here too (see DESIGN.md).
"""

from edgewise.security.audit import AuditEntry, AuditLog, VerifyReport, load_key
from edgewise.security.audit_record import AuditRecord, Redaction

__all__ = ["AuditEntry", "AuditLog", "AuditRecord", "Redaction", "VerifyReport", "load_key"]
