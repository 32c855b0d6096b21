"""``experimental.feature_flags``, checked as SPIRE's fflag.Load: a flag SPIRE does not know
stops start-up; ``i_am_a_test_flag`` does nothing (in SPIRE too); ``wit-svid`` turns on
WIT-SVIDs on the server, which spire_py does not build, so it is warned about (the agent
reads no flag)."""

from __future__ import annotations

from typing import Sequence

from .schema import Ctx

TEST_FLAG = "i_am_a_test_flag"
WIT_SVID = "wit-svid"
KNOWN = (TEST_FLAG, WIT_SVID)


def check_feature_flags(ctx: Ctx, side: str, flags: Sequence[str]) -> None:
    path = [side, "experimental", "feature_flags"]
    bad = sorted(f for f in flags if f not in KNOWN)
    if bad:
        raise ctx.error(path, f"error loading feature flags: unknown feature flag(s): [{' '.join(bad)}]")
    if side == "server" and WIT_SVID in flags:
        ctx.warn(path, f'feature flag "{WIT_SVID}" is not acted on by spire_py yet: WIT-SVIDs are not issued')
