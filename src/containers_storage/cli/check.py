"""``check``: report (and with ``-r`` repair) damaged layers, images and containers.

Output and exit codes are the Go CLI's: every problem under an ``<kind> <id>:`` heading (or Go's
JSON of the report, whose error values encode as ``{}``), exit 1 with a count of what was found
when not repairing, and exit 1 after a repair that left something behind (read-only stores, and
containers unless ``-f``).  As in Go, the store is shut down (forced) afterwards.
"""

from __future__ import annotations

from .. import TYPE_CHECKING
from .base import CommandError, Context, go_error_text

if TYPE_CHECKING:
    from typing import Any

    from ..check import CheckReport

_NANOSECOND = 1
_UNITS = {
    b"ns": _NANOSECOND,
    b"us": 1000,
    "µ".encode() + b"s": 1000,  # U+00B5 micro sign
    "μ".encode() + b"s": 1000,  # U+03BC Greek mu
    b"ms": 1000_000,
    b"s": 1000_000_000,
    b"m": 60 * 1000_000_000,
    b"h": 3600 * 1000_000_000,
}
_MAX = 1 << 63


def _time_quote(raw: bytes) -> str:
    """Go's time.quote: double quotes, ``"`` and ``\\`` escaped, every byte of a non-ASCII or
    control character as ``\\xNN``."""
    out = ['"']
    i = 0
    while i < len(raw):
        width = 1
        for n in (1, 2, 3, 4):
            try:
                if len(raw[i:i + n].decode("utf-8")) == 1:
                    width = n
                    break
            except UnicodeDecodeError:
                continue
        char = raw[i:i + width]
        if char[0] >= 0x80 or char[0] < 0x20:
            out.extend(f"\\x{b:02x}" for b in char)
        else:
            if char in (b'"', b"\\"):
                out.append("\\")
            out.append(char.decode())
        i += width
    out.append('"')
    return "".join(out)


def parse_go_duration(text: str) -> int:
    """Go's time.ParseDuration, in nanoseconds: ``[-+]?([0-9]*(\\.[0-9]*)?[a-z]+)+``, with
    Go's error texts (``time: invalid duration "x"`` and friends)."""
    orig = text.encode("utf-8", "surrogateescape")

    def invalid() -> CommandError:
        return CommandError(f"time: invalid duration {_time_quote(orig)}")

    s = orig
    neg = False
    if s[:1] in (b"-", b"+"):
        neg = s[:1] == b"-"
        s = s[1:]
    if s == b"0":
        return 0
    if not s:
        raise invalid()
    total = 0
    while s:
        if not (s[0] == 0x2E or 0x30 <= s[0] <= 0x39):
            raise invalid()
        # The integer part (overflow is an invalid duration).
        start = len(s)
        value = i = 0
        while i < len(s) and 0x30 <= s[i] <= 0x39:
            if value > _MAX // 10:
                raise invalid()
            value = value * 10 + s[i] - 0x30
            if value > _MAX:
                raise invalid()
            i += 1
        s = s[i:]
        pre = start != len(s)
        # The fraction (digits past what fits are dropped, not an error).
        post = False
        fraction, scale = 0, 1.0
        if s[:1] == b".":
            s = s[1:]
            start = len(s)
            i = 0
            overflow = False
            while i < len(s) and 0x30 <= s[i] <= 0x39:
                if not overflow:
                    if fraction > (_MAX - 1) // 10:
                        overflow = True
                    else:
                        y = fraction * 10 + s[i] - 0x30
                        if y > _MAX:
                            overflow = True
                        else:
                            fraction = y
                            scale *= 10
                i += 1
            s = s[i:]
            post = start != len(s)
        if not pre and not post:
            raise invalid()
        i = 0
        while i < len(s) and not (s[i] == 0x2E or 0x30 <= s[i] <= 0x39):
            i += 1
        if i == 0:
            raise CommandError(f"time: missing unit in duration {_time_quote(orig)}")
        unit_name, s = s[:i], s[i:]
        unit = _UNITS.get(unit_name)
        if unit is None:
            raise CommandError(f"time: unknown unit {_time_quote(unit_name)} in duration "
                               f"{_time_quote(orig)}")
        if value > _MAX // unit:
            raise invalid()
        value *= unit
        if fraction > 0:
            value += int(float(fraction) * (float(unit) / scale))
            if value > _MAX:
                raise invalid()
        total += value
        if total > _MAX:
            raise invalid()
    if neg:
        return -total
    if total > _MAX - 1:
        raise invalid()
    return total


def _report_json(report: CheckReport) -> dict[str, Any]:
    """Go's JSON of a CheckReport: exported maps only, keys sorted, each error value ``{}``."""
    names = ("Layers", "ROLayers", "Images", "ROImages", "Containers")
    return {name: {id: [{} for _ in errs] for id, errs in sorted(section.items())}
            for name, (_, section) in zip(names, report.sections(), strict=True)}


def _report_text(report: CheckReport) -> str:
    lines: list[str] = []
    for heading, section in report.sections():
        for id, errs in section.items():
            if errs:
                lines.append(f"{heading} {id}:\n")
            lines.extend(f" {err}\n" for err in errs)
    return "".join(lines)


def check(ctx: Context, args: list[str]) -> int:
    from ..check import RepairOptions, check_everything, check_most

    force = ctx.flag("force")
    repair = ctx.flag("repair") or force
    store = ctx.store
    try:
        options = check_most() if ctx.flag("quick") else check_everything()
        max_age = ctx.text("max")
        if max_age:
            options.layer_unreferenced_maximum_age = parse_go_duration(max_age)
        report = store.check(options)
        if ctx.json:
            ctx.out.json(_report_json(report))
        else:
            ctx.out.out(_report_text(report))
        if not repair:
            if report:
                raise CommandError(
                    f"{len(report.layers)} layer errors, {len(report.ro_layers)} read-only layer "
                    f"errors, {len(report.images)} image errors, {len(report.ro_images)} "
                    f"read-only image errors, {len(report.containers)} container errors")
            return 0
        failed = store.repair(report, RepairOptions(remove_containers=force))
        if failed:
            if ctx.json:
                ctx.out.json([{} for _ in failed])
            else:
                ctx.out.err("".join(f"{err}\n" for err in failed))
            raise CommandError(str(failed[0]))
        left = (f"{len(report.ro_layers)} read-only layer errors, {len(report.ro_images)} "
                "read-only image errors")
        if report.ro_layers or report.ro_images or (not force and report.containers):
            if not force:
                left += f", {len(report.containers)} container errors"
            raise CommandError(left)
        return 0
    finally:
        try:
            store.shutdown(force=True)
        except Exception as e:
            ctx.out.err(f"shutdown: {go_error_text(e)}\n")
