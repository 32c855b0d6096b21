"""gRPC status codes as Go spells them (google.golang.org/grpc/codes String()): how SPIRE's CLI
errors, audit lines and telemetry ``status`` labels name a code ("Canceled", "PermissionDenied")."""

from __future__ import annotations

GO_CODES = [
    "OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound",
    "AlreadyExists", "PermissionDenied", "ResourceExhausted", "FailedPrecondition",
    "Aborted", "OutOfRange", "Unimplemented", "Internal", "Unavailable", "DataLoss",
    "Unauthenticated",
]


def go_code(code: int) -> str:
    return GO_CODES[code] if 0 <= code < len(GO_CODES) else f"Code({code})"
