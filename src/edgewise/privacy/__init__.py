"""The privacy guard: detect how sensitive a request is, keep it inside the tiers cleared
for it, and redact it reversibly when the operator allows a redacted escalation."""
