"""The run report as a page a person reads after a maintenance run: one self-contained HTML5
document (inline CSS, no script, nothing fetched) that opens offline, from a blob link or a mail,
and prints. Its values come from tags, script output and Azure's error messages: every one is
escaped. Status words are always written out; colour only repeats them."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from html import escape
from typing import Any

from handlers.core.ids import name_of

TOOLKIT = "update-manager-maintenance-toolkit"
# Longer text is cut, the whole of it a click away in a <details>; less in the narrow table cells.
DETAIL_CHARS, CELL_CHARS = 300, 160
OK, WARN, BAD, NONE = "ok", "warn", "bad", "none"
_TONES = {
    "succeeded": OK, "reused": OK, "not-needed": OK, "notneeded": OK, "completed": OK, "passed": OK, "ready": OK,
    "failed": BAD, "timed-out": BAD, "late": BAD, "window exceeded": BAD,
    "completedwithwarnings": WARN, "inprogress": WARN, "pending": WARN, "issued": WARN, "unknown": WARN,
    "required": WARN, "started": WARN, "cancelled": WARN, "accepted": WARN, "empty": WARN,
}
_KINDS, _PRE_ACTIONS = {"vm": "VM", "arc": "Arc server"}, {"start": "start", "none": "no action", "skip": "skipped"}
_UNREPORTED = ("", "not reported", "not-reported", "notstarted")  # no result for the run (yet)
_DRY_FLAG = '<span class="dryflag">DRY RUN</span>'
_QUIET = (None, "", "none", "not-needed")  # an action or outcome not worth a word of its own
# The header's figures: (counts key, label, tone when above zero); _ONLY_WHEN_ANY only when above zero.
_FIGURES = (("machines", "machines", NONE), ("patched", "patched", OK), ("failed", "failed", BAD),
            ("needs_reboot", "need a reboot", WARN), ("not_reported", "not reported", WARN),
            ("started", "started", NONE), ("restored", "restored", NONE), ("snapshots_failed", "snapshots failed", BAD),
            ("guest_failed", "in-guest failed", BAD), ("unhealthy", "unhealthy", BAD),
            ("rollback_candidates", "rollback candidates", BAD))
_ONLY_WHEN_ANY = ("guest_failed", "unhealthy", "rollback_candidates")
_COLUMNS = (("Machine", 14), ("Before patching", 12), ("Snapshots", 18), ("In guest", 12), ("Patching", 19),
            ("After patching", 10), ("Health after patching", 15))

_CSS = """
:root{color-scheme:light}*{box-sizing:border-box}body{margin:0;background:#f4f5f7;color:#1b1f24;
font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;-webkit-print-color-adjust:exact;
print-color-adjust:exact}header.top{background:#13233f;color:#fff;padding:18px 28px 22px}h1{margin:0;font-size:26px}
h1 .cfg{color:#9fd0ff}.meta{margin:4px 0 14px;color:#d4dbe6}.meta b{color:#fff;font-weight:600}.states{display:flex;
flex-wrap:wrap;gap:10px 28px;margin-bottom:16px}.states .b{font-size:15px;padding:2px 10px}.states div{display:flex;
align-items:center;gap:8px;font-size:15px;color:#d4dbe6}.figs{display:grid;
grid-template-columns:repeat(auto-fit,minmax(106px,1fr));gap:10px}.fig{background:#fff;color:#1b1f24;border-radius:8px;
padding:8px 12px;border-top:6px solid #9aa3ad}.fig .n{display:block;font-size:34px;font-weight:700;line-height:1.1}
.fig .l{font-size:13px;color:#444c56}.fig.ok{border-top-color:#1e7b46}.fig.warn{border-top-color:#c98a00}
.fig.bad{border-top-color:#c0282f}.fig.bad .n{color:#a1161f}main{padding:16px 28px 8px}.banner{border-radius:8px;
padding:12px 16px;margin:0 0 14px;border:2px solid}.banner h2{margin:0 0 6px;font-size:16px}.banner ul{margin:0;
padding-left:20px}.banner p{margin:6px 0 0}.banner .detail{font-size:14px;color:inherit}.banner.bad{background:#fdecee;
border-color:#c0282f;color:#5c0f14}.banner.warn{background:#fff6db;border-color:#c98a00;color:#4a3800}
.banner.dry{background:#e8eefc;border-color:#3557b7;color:#14296b;font-size:16px}table{width:100%;
border-collapse:collapse;table-layout:fixed;background:#fff;font-size:13px}th{position:sticky;top:0;background:#2b3a55;
color:#fff;text-align:left;padding:8px;font-weight:600}td{padding:8px;border-bottom:1px solid #d8dde3;
vertical-align:top;overflow-wrap:anywhere}tr td:first-child{border-left:6px solid #8a939d}
tr.r-bad td:first-child{border-left-color:#c0282f}tr.r-warn td:first-child{border-left-color:#c98a00}
tr.r-ok td:first-child{border-left-color:#1e7b46}tr.r-bad{background:#fffafa}.name{font-size:15px;font-weight:700}
.sub{color:#57606a;font-size:12px}.b{display:inline-block;border-radius:4px;padding:0 6px;font-weight:600;
font-size:12px;border:1px solid}.b.ok{background:#d1e7dd;color:#0b4127;border-color:#8cc4a6}.b.bad{background:#f8d7da;
color:#7a1820;border-color:#e39aa1}.b.warn{background:#fff0c2;color:#5a4300;border-color:#e0b84a}
.b.none{background:#e6e8eb;color:#3a4047;border-color:#b8bec5}.line{margin:2px 0}.lbl{color:#57606a}
ul.l{margin:3px 0 0;padding-left:16px}ul.l li{margin:1px 0}ul.bare{padding:0;list-style:none}ul.bare li{margin:0 0 5px}
.fail,.fail .detail,.rb{color:#7a1820}.rb{font-weight:700}.snap{font-size:12px;color:#2d333a;font-weight:400}
h1 .dryflag{font-size:18px;vertical-align:middle}.detail{color:#3a4047;font-size:12px}summary{cursor:pointer}
.more{color:#3557b7;text-decoration:underline}details pre{white-space:pre-wrap;overflow-wrap:anywhere;font-size:12px;
background:#f4f5f7;padding:6px;margin:4px 0}footer{padding:10px 28px 24px;color:#444c56;font-size:12px}
footer code{display:block;overflow-wrap:anywhere}.dryflag{background:#3557b7;color:#fff;padding:1px 8px;
border-radius:4px;font-weight:700}@page{size:A4 landscape;margin:10mm}@media print{body{background:#fff;font-size:11px}
th{position:static}thead{display:table-header-group}tr{break-inside:avoid}header.top{padding:10px 14px}
main,footer{padding:8px 0}table{font-size:10px}.b,.detail,.snap,.sub,details pre{font-size:9px}.name{font-size:12px}
.fig .n{font-size:24px}details pre{font-family:inherit}details::details-content{content-visibility:visible;
display:contents}summary .more{display:none}@supports selector(::details-content){details summary{display:none}}}
"""


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def _s(value: Any) -> str:
    return "" if value is None else str(value)


def _e(value: Any) -> str:
    return escape(_s(value), quote=True)


def _tone(word: Any) -> str:
    w = _s(word).strip().lower()
    return WARN if w.startswith("not-requested") else _TONES.get(w, NONE)


def _badge(word: Any, tone: str | None = None) -> str:
    text = _s(word).strip()
    return f'<span class="b {tone or _tone(text)}">{_e(text or "—")}</span>'


def _time(value: Any) -> str:
    """`YYYY-MM-DD HH:MM UTC` (escaped), from an ISO string or a datetime; "—" for none."""
    if not value:
        return "—"
    try:
        when = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    except ValueError:
        return _e(value)
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _duration(seconds: Any) -> str:
    """`12 s`, `1 min 05 s`, `2 h 03 min`; "" for none."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
        return ""
    hours, rest = divmod(round(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def _long(text: Any, limit: int = DETAIL_CHARS) -> str:
    """A detail, cut to `limit` characters with the whole of it in a <details>."""
    text = _s(text).strip()
    if len(text) <= limit:
        return f'<div class="detail">{_e(text)}</div>' if text else ""
    return (f'<details class="detail"><summary>{_e(text[:limit].rstrip())}… <span class="more">show all '
            f'{len(text)} characters</span></summary><pre>{_e(text)}</pre></details>')


def _items(values: list[str], css: str = "") -> str:
    return f'<ul class="l {css}">' + "".join(f"<li>{v}</li>" for v in values) + "</ul>" if values else ""


def _line(*parts: str) -> str:
    shown = [p for p in parts if p]
    return f'<div class="line">{" ".join(shown)}</div>' if shown else ""


def _issues(m: Mapping[str, Any]) -> list[tuple[int, str, str]]:
    """What needs a person's eyes on a machine, most urgent first: (rank, label, tone)."""
    patch, health, guest = _map(m.get("patch")), _map(m.get("health")), _map(m.get("guest"))
    status, rollback = _s(patch.get("status")).strip().lower(), bool(health.get("rollback_candidate"))
    found = (
        (status == "failed", 0, "patch failed", BAD),
        (status in _UNREPORTED, 1, "not reported", NONE),
        (status == "inprogress", 1, "still in progress", WARN),
        (_tone(m.get("pre_outcome")) == BAD, 2, "start failed" if m.get("pre_action") == "start" else "pre failed",
         BAD),
        (_tone(m.get("restore_outcome")) == BAD, 2, "restore failed", BAD),
        (rollback, 3, "rollback candidate", BAD),
        (not rollback and health.get("passed") is False, 4, "unhealthy", WARN),
        (any(_tone(_map(s).get("outcome")) == BAD for s in _list(m.get("snapshots"))), 5, "snapshot failed", WARN),
        (any(_tone(_map(guest.get(p)).get("outcome")) == BAD for p in ("pre", "post")), 5, "in-guest failed", WARN),
        (bool(_list(m.get("check_failures"))), 5, "check failed", WARN),
        (bool(patch.get("window_exceeded")), 5, "window exceeded", WARN),
        (status == "completedwithwarnings", 6, "patch warnings", WARN),
        (_s(patch.get("reboot_status")).lower() in ("required", "failed"), 6, "needs a reboot", WARN),
    )
    return sorted((rank, label, tone) for hit, rank, label, tone in found if hit) or [(7, "ok", OK)]


def _header(run: Mapping[str, Any], counts: Mapping[str, Any]) -> str:
    states = "".join(f"<div>{label} {_badge(run.get(key))}</div>" for label, key in (
        ("Verdict", "verdict"), ("Cancel", "cancel_outcome"), ("Run status", "run_status"),
        ("Pre phase", "pre_ended"), ("Post phase", "post_ended")))
    figures = []
    for key, label, tone in _FIGURES:
        value = counts.get(key)
        number = value if isinstance(value, int) and not isinstance(value, bool) else None
        if key in _ONLY_WHEN_ANY and not number:
            continue  # only when something is wrong: the figures a person scans stay few
        figures.append(f'<div class="fig {tone if number else NONE}"><span class="n">{_e(_s(number) or "—")}'
                       f'</span> <span class="l">{_e(label)}</span></div>')
    name, dry = run.get("configuration") or "(unnamed configuration)", f" {_DRY_FLAG}" if run.get("dry_run") else ""
    return (f'<header class="top"><h1>Maintenance run <span class="cfg">{_e(name)}</span>{dry}</h1>'
            f'<p class="meta">Run <b>{_e(run.get("run_id") or "—")}</b> · window <b>{_time(run.get("window_start"))}'
            f'</b> to <b>{_time(run.get("window_end"))}</b> · cutoff {_time(run.get("cutoff"))}</p>'
            f'<div class="states">{states}</div><div class="figs">{"".join(figures)}</div></header>')


def _banners(run: Mapping[str, Any]) -> str:
    out = []
    if run.get("dry_run"):
        out.append('<section class="banner dry"><strong>Dry run.</strong> The toolkit changed nothing: what it '
                   'would have done is shown as <em>planned</em>.</section>')
    if errors := _map(run.get("step_errors")):
        rows = [f"<strong>{_e(step)}</strong>: {_long(error) or 'failed'}" for step, error in errors.items()]
        out.append(f'<section class="banner bad"><h2>Steps that failed ({len(rows)})</h2>{_items(rows)}'
                   "<p>The report is written even when earlier steps failed: what those steps record may be "
                   "missing below.</p></section>")
    if reasons := [_long(r) for r in _list(run.get("failing_reasons")) if _s(r).strip()]:
        out.append(f'<section class="banner warn"><h2>Why the run was judged failing</h2>{_items(reasons)}</section>')
    if findings := [_long(f) for f in _list(_map(run.get("health")).get("run_findings")) if _s(f).strip()]:
        out.append(f'<section class="banner bad"><h2>Unhealthy after patching</h2>{_items(findings)}</section>')
    return "".join(out)


def _machine_cell(m: Mapping[str, Any], issues: list[tuple[int, str, str]]) -> str:
    name, wave, sub = m.get("name") or name_of(_s(m.get("id"))) or "(unnamed)", m.get("wave"), m.get("subscription")
    facts = (_KINDS.get(_s(m.get("kind")), _s(m.get("kind")) or "machine"), f"sub {_s(sub)[:8]}" if sub else "",
             f"wave {wave}" if wave is not None else "")
    where = " · ".join(_s(v) for v in (m.get("resource_group"), m.get("location")) if v)
    return (f'<div class="name">{_e(name)}</div><div class="sub">{_e(" · ".join(f for f in facts if f))}</div>'
            f'<div class="sub">{_e(where)}</div>' + _line(*(_badge(label, tone) for _, label, tone in issues)))


def _before_cell(m: Mapping[str, Any]) -> str:
    did, took = _s(m.get("pre_action")), _duration(m.get("start_seconds"))
    outcome = _badge(m.get("pre_outcome")) if m.get("pre_outcome") not in _QUIET else ""
    checks = [_long(c, CELL_CHARS) for c in _list(m.get("check_failures"))]
    return (_line('<span class="lbl">was</span>', f"<strong>{_e(m.get('before') or '—')}</strong>")
            + _line(_e(_PRE_ACTIONS.get(did, did)), outcome, f"in {took}" if took else "") + _long(m.get("pre_detail"))
            + (f'<div class="line lbl">checks failed:</div>{_items(checks, "fail")}' if checks else ""))


def _snapshots_cell(m: Mapping[str, Any]) -> str:
    rows = []
    for snap in map(_map, _list(m.get("snapshots"))):
        name = snap.get("name") or name_of(_s(snap.get("snapshot_id"))) or f"(of {name_of(_s(snap.get('disk')))})"
        role = f' <span class="lbl">{_e(snap.get("role"))} disk</span>' if snap.get("role") else ""
        rows.append(f'{_badge(snap.get("outcome"))}{role}<div class="snap" title="{_e(snap.get("snapshot_id"))}">'
                    f"{_e(name)}</div>{_long(snap.get('detail'), CELL_CHARS)}")
    return _items(rows, "bare") or '<span class="lbl">none</span>'


def _guest_cell(m: Mapping[str, Any]) -> str:
    guest = _map(m.get("guest"))
    steps = [(phase, _map(guest.get(phase))) for phase in ("pre", "post")]
    return "".join(_line(f'<span class="lbl">{phase}:</span>', _e(step.get("what")), _badge(step.get("outcome")))
                   + _long(step.get("detail"), CELL_CHARS) for phase, step in steps if step
                   ) or '<span class="lbl">none</span>'


def _patch_cell(m: Mapping[str, Any]) -> str:
    patch = _map(m.get("patch"))
    status, took = _s(patch.get("status")), _duration(patch.get("duration_seconds"))
    status = "not reported" if status.lower() in _UNREPORTED else status
    counts = " · ".join(f"{_e(patch.get(k) or 0)} {k}" for k in ("installed", "failed", "pending"))
    reboot = patch.get("reboot_status")
    updates = []
    for update in map(_map, _list(patch.get("failed_updates"))):
        ref = f"KB{update.get('kb_id')}" if update.get("kb_id") else _s(update.get("version"))
        extra = " · ".join(v for v in (ref, ", ".join(map(_s, _list(update.get("classifications"))))) if v)
        updates.append(f"<strong>{_e(update.get('name') or '(unnamed update)')}</strong>"
                       + (f' <span class="lbl">{_e(extra)}</span>' if extra else ""))
    return (_line(_badge(status)) + (_line(counts) if _tone(status) != NONE else "")
            + (_line('<span class="lbl">reboot</span>', _badge(reboot)) if reboot else "")
            + _line(_badge("window exceeded") if patch.get("window_exceeded") else "", f"took {took}" if took else "")
            + _long(patch.get("error"))
            + (f'<div class="line fail">failed updates:</div>{_items(updates, "fail")}' if updates else ""))


def _after_cell(m: Mapping[str, Any]) -> str:
    action, outcome = m.get("restore_action"), m.get("restore_outcome")
    did = _line(_e(action) if action not in _QUIET else "no restore", _badge(outcome) if outcome not in _QUIET else "")
    return (did + _long(m.get("restore_detail"), CELL_CHARS)
            + _line('<span class="lbl">now</span>', f"<strong>{_e(m.get('after') or '—')}</strong>"))


def _health_cell(m: Mapping[str, Any]) -> str:
    health = _map(m.get("health"))
    if not health:
        return _badge("not checked", NONE)
    passed = health.get("passed")
    out = (_badge("passed" if passed else "failed" if passed is False else "unknown")
           + _items([_long(r, CELL_CHARS) for r in _list(health.get("reasons"))]))
    if health.get("rollback_candidate"):
        names = "".join(f'<div class="snap">{_e(name_of(_s(s)))}</div>' for s in _list(health.get("snapshot_ids")))
        out += f'<div class="line rb">rollback candidate: snapshots {names or "none recorded"}</div>'
    return out


def _table(machines: list[Mapping[str, Any]]) -> str:
    if not machines:
        return '<p class="banner warn">No machines were in this run.</p>'
    rows = []
    for issues, m in sorted(((_issues(m), m) for m in machines), key=lambda row: (
            row[0][0][0], row[1].get("wave") if isinstance(row[1].get("wave"), int) else 0,
            _s(row[1].get("name")).lower())):
        cells = (_machine_cell(m, issues), _before_cell(m), _snapshots_cell(m), _guest_cell(m), _patch_cell(m),
                 _after_cell(m), _health_cell(m))
        rows.append(f'<tr class="r-{issues[0][2]}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    cols = "".join(f'<col style="width:{w}%">' for _, w in _COLUMNS)
    head = "".join(f"<th>{_e(name)}</th>" for name, _ in _COLUMNS)
    return f"<table><colgroup>{cols}</colgroup><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def render_html(report: Mapping[str, Any]) -> str:
    """The run report (the dict the app writes as JSON) as one self-contained HTML5 page."""
    report = _map(report)
    run, counts = _map(report.get("run")), _map(report.get("counts"))
    machines = [_map(m) for m in _list(report.get("machines"))]
    title = f"Maintenance run {_s(run.get('configuration'))} {_s(run.get('run_id'))}".strip()
    dry = f" · {_DRY_FLAG}" if run.get("dry_run") else ""
    footer = (f"<footer>Generated {_time(report.get('generated_at'))} by {TOOLKIT}{dry}"
              f"<br>Correlation id: <code>{_e(run.get('correlation_id') or '—')}</code>"
              + (f"<div>Report schema: {_e(report.get('schema'))}</div>" if report.get("schema") else "") + "</footer>")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{_e(title)}</title>'
            f"<style>{_CSS}</style></head><body>{_header(run, counts)}<main>{_banners(run)}"
            f"{_table(machines)}</main>{footer}</body></html>\n")
