"""``fieldwatch rules …``: rules as code (apply, list, show, export) and the backtest workbench."""

from __future__ import annotations

import getpass
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

app = typer.Typer(help="Rules: apply rules files, list, show, backtest on history.", no_args_is_help=True)
out = Console()
err = Console(stderr=True)


@app.callback()
def _group() -> None:
    """Rules: apply rules files, list, show, backtest on history."""


@contextmanager
def _conn() -> Iterator[Any]:
    import psycopg

    from fwcore.settings import SettingsError, load_settings

    try:
        url = load_settings().database_url
    except SettingsError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    try:
        conn = psycopg.connect(url, autocommit=True)
    except psycopg.OperationalError as exc:
        err.print(f"[red]cannot connect to the database: {exc}[/]\nCheck FIELDWATCH_DATABASE_URL.")
        raise typer.Exit(2) from None
    with conn:
        yield conn


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]{escape(message)}[/]", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _load_file(path: Path) -> list[Any]:
    from rules.rulesfile import RulesFileError, load_rules_file

    try:
        text = path.read_text()
    except OSError as exc:
        raise _fail(f"cannot read {path}: {exc}", 2) from None
    try:
        return load_rules_file(text, str(path))
    except RulesFileError as exc:
        raise _fail(f"{len(exc.problems)} problem(s); nothing applied:\n" + "\n".join(exc.problems), 2) from None


def _show_plan(changes: list[Any]) -> None:
    marks = {
        "create": "[green]+ create[/]",
        "update": "[yellow]~ update[/]",
        "unchanged": "[dim]= unchanged[/]",
        "only_live": "[dim]? only live (not in the file; left as is)[/]",
    }
    for ch in changes:
        version = f" (live v{ch.live_version})" if ch.live_version else ""
        out.print(f"{marks[ch.action]} {escape(ch.name)}{version}", highlight=False)
        for path, (old, new) in ch.fields.items():
            line = f"    {path}: [red]{escape(repr(old))}[/] → [green]{escape(repr(new))}[/]"
            out.print(line, highlight=False, soft_wrap=True)


@app.command("apply")
def apply(
    file: Annotated[Path, typer.Argument(help="rules file (YAML)")],
    author: Annotated[str | None, typer.Option(help="recorded with each new version (default: your user name)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="validate and show the diff; change nothing")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="apply without asking")] = False,
) -> None:
    """Validate FILE, show what would change against the live rules, and apply it as new versions."""
    from rules.rulesfile import apply_plan, plan

    specs = _load_file(file)
    with _conn() as conn:
        changes = plan(conn, specs)
        _show_plan(changes)
        todo = [c for c in changes if c.action in ("create", "update")]
        if not todo:
            out.print("Nothing to apply: the live rules already match the file.")
            return
        if dry_run:
            out.print(f"Dry run: {len(todo)} rule(s) would change.")
            return
        if not yes and not typer.confirm(f"Apply {len(todo)} change(s)?"):
            raise typer.Exit(1)
        from rules.store import RuleError

        try:
            written = apply_plan(conn, changes, author=author or getpass.getuser())
        except RuleError as exc:
            raise _fail(f"{exc}; nothing applied", 1) from None
        for name, version in written:
            out.print(f"applied {name} v{version}", highlight=False)
        from rules.rulesfile import retrain_changed

        for name, report in retrain_changed(conn, changes, author=author or getpass.getuser()).items():
            for m in report.trained:  # the old models were marked stale by apply: these score from now on
                out.print(
                    f"trained {name} {m.subject}: model v{m.version} ({m.kind}) for rule v{m.rule_version}",
                    highlight=False,
                )
            for subject, why in report.failed.items():
                out.print(
                    f"[yellow]not trained {name} {subject}: {why}; the rule scores nothing there until "
                    f"`fieldwatch rules train {name!r}` succeeds[/yellow]"
                )


@app.command("list")
def list_(as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False) -> None:
    """Every rule with its version, condition and scope."""
    from rules.store import list_rules

    with _conn() as conn:
        rules = list_rules(conn)
    if as_json:
        items = [{"id": r.id, "version": r.version, **r.spec.model_dump(mode="json")} for r in rules]
        out.print_json(json.dumps(items))
        return
    table = Table("id", "name", "v", "on", "condition", "severity", "scope", "by")
    for r in rules:
        scope = ", ".join(f"{k}={','.join(v)}" for k, v in r.spec.scope.model_dump().items() if v) or "all devices"
        table.add_row(
            str(r.id),
            r.name,
            str(r.version),
            "yes" if r.enabled else "no",
            r.spec.describe(),
            r.spec.severity,
            scope,
            r.updated_by,
        )
    out.print(table)


@app.command("show")
def show(rule: Annotated[str, typer.Argument(help="rule id or name")]) -> None:
    """One rule as YAML, and its version history (who and when)."""
    from rules.rulesfile import dump_rules
    from rules.store import UnknownRule, find_rule, rule_versions

    with _conn() as conn:
        try:
            r = find_rule(conn, rule)
        except UnknownRule as exc:
            raise _fail(str(exc)) from None
        versions = rule_versions(conn, r.id)
    out.print(f"# rule {r.id}, version {r.version}", highlight=False)
    out.print(dump_rules([r.spec]), highlight=False, markup=False)
    table = Table("version", "author", "when")
    for v in versions:
        table.add_row(str(v.version), v.author, v.created_at.isoformat(timespec="seconds"))
    out.print(table)


@app.command("export")
def export() -> None:
    """Write every live rule as a rules file to stdout (a starting point for rules as code)."""
    from rules.rulesfile import dump_rules
    from rules.store import list_rules

    with _conn() as conn:
        sys.stdout.write(dump_rules([r.spec for r in list_rules(conn)]))


@app.command("train")
def train_cmd(
    rule: Annotated[str, typer.Argument(help="anomaly rule id or name")],
    device: Annotated[
        list[str] | None, typer.Option(help="train only the subject of this device (id, key or SITE/key); repeatable")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Train an anomaly rule now on its known-good data; every subject (or --device's) gets a new model version."""
    from rules.anomaly import AnomalyTrainingError
    from rules.anomaly_rules import subject_of, train_rule
    from rules.devices import UnknownDevice, resolve_device
    from rules.model import Anomaly
    from rules.store import UnknownRule, find_rule

    with _conn() as conn:
        try:
            r = find_rule(conn, rule)
            subjects = None
            if device:
                if not isinstance(r.spec.condition, Anomaly):
                    raise AnomalyTrainingError(f"rule {r.name!r} is not an anomaly rule")
                subjects = [subject_of(r.spec.condition, resolve_device(conn, d)) for d in device]
            with out.status(f"training {r.name} …"):
                report = train_rule(conn, r, author=getpass.getuser(), subjects=subjects)
        except (UnknownRule, UnknownDevice, AnomalyTrainingError) as exc:
            raise _fail(str(exc)) from None
    if as_json:
        out.print_json(json.dumps({"trained": [m.public() for m in report.trained], "failed": report.failed}))
    else:
        _print_models([m.public() for m in report.trained])
        for subject, why in report.failed.items():
            err.print(f"[yellow]{escape(subject)}: {escape(why)}[/]", highlight=False)
    if not report.trained:
        raise typer.Exit(1)


def _print_models(models: list[dict[str, Any]], *, cards: bool = True) -> None:
    """A table of model versions, then each one's card: what it is, how it was calibrated and chosen."""
    table = Table("subject", "v", "rule v", "kind", "threshold", "target", "held-out FAR", "rows", "stale")
    for m in models:
        card = m.get("metrics") or {}
        table.add_row(
            m["subject"],
            str(m["version"]),
            str(m.get("rule_version", "")),
            m["kind"],
            f"{m['threshold']:.4g}",
            _pct(card.get("target_far"), 2),
            _pct(card.get("holdout_far"), 2),
            str(card.get("training_rows", card.get("train_rows", ""))),
            "yes" if m.get("stale_at") else "",
        )
    out.print(table)
    if not cards:
        return
    for m in models:
        if m.get("stale_at"):
            continue
        card = m.get("metrics") or {}
        out.print(f"[bold]{escape(m['subject'])} v{m['version']}[/] — {escape(m['kind'])}", highlight=False)
        lines = [
            ("features", ", ".join(card.get("features", [])) or "—"),
            ("window", f"{card.get('window_s', 0):g} s" if card.get("window_s") else "none (readings only)"),
            ("components", str(card.get("components") if card.get("components") is not None else "—")),
            ("training / calibration rows", f"{card.get('training_rows', '—')} / {card.get('calibration_rows', '—')}"),
            ("warming up (not scored)", str(card.get("warming_up_rows", 0))),
            ("threshold", f"{m['threshold']:.6g}"),
            (
                "false-alarm rate",
                f"target {_pct(card.get('target_far'), 2)}, calibration {_pct(card.get('calibration_far'), 2)}, "
                f"held-out {_pct(card.get('holdout_far'), 2)}",
            ),
            ("detection rate", f"{_pct(card.get('detection_rate'), 2)} on {card.get('detection_on', '—')}"),
        ]
        for name, c in (card.get("selection") or {}).get("candidates", {}).items():
            verdict = "ok" if c.get("qualified") else f"not usable: {c.get('reason')}"
            lines.append(
                (
                    f"candidate {name}",
                    f"held-out FAR {_pct(c.get('holdout_far'), 2)}, "
                    f"detection {_pct(c.get('detection_rate'), 2)} — {verdict}",
                )
            )
        for dev, w in (card.get("windows") or {}).items():
            lines.append(
                (f"window {dev}", f"{w['start']} – {w['end']}: {w['rows']} rows, {w['excluded_rows']} left out")
            )
            lines.extend(("  left out", f"{e['start']} – {e['end']}: {e['why']}") for e in w.get("excluded", []))
        lines.extend(
            (
                "likely contamination",
                f"{c['device']} {c['start']} – {c['end']} ({c['rows']} rows: {', '.join(c['features'])})",
            )
            for c in card.get("contamination", [])
        )
        lines.extend(("[yellow]warning[/]", w) for w in card.get("warnings", []))
        for name, value in lines:
            out.print(f"  {name}: {escape(str(value))}", highlight=False, soft_wrap=True)


@app.command("models")
def models_cmd(
    rule: Annotated[str, typer.Argument(help="anomaly rule id or name")],
    all_: Annotated[bool, typer.Option("--all", help="every version, stale ones too")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """The model cards of an anomaly rule: features, components, rows, threshold, achieved false-alarm rate."""
    from rules.anomaly_rules import model_history
    from rules.store import UnknownRule, find_rule

    with _conn() as conn:
        try:
            r = find_rule(conn, rule)
        except UnknownRule as exc:
            raise _fail(str(exc)) from None
        history = model_history(conn, r.id)
    if not all_:
        newest: dict[str, dict[str, Any]] = {}
        for m in history:
            if m["stale_at"] is None and m["subject"] not in newest:
                newest[m["subject"]] = m
        history = list(newest.values())
    if as_json:
        print(json.dumps(history, default=str))
        return
    if not history:
        out.print(f"{r.name}: no trained model yet: `fieldwatch rules train {r.name!r}`", highlight=False)
        return
    status = "validated" if r.spec.auto_dispatch else "NOT validated: alarms are not dispatched on their own"
    out.print(f"[bold]{escape(r.name)}[/] — {status}", highlight=False)
    _print_models(history, cards=not all_)


@app.command("validate")
def validate_cmd(
    rule: Annotated[str, typer.Argument(help="rule id or name")],
    revoke: Annotated[bool, typer.Option("--revoke", help="stop its alarms dispatching on their own again")] = False,
    author: Annotated[str | None, typer.Option(help="recorded with the new version (default: your user name)")] = None,
) -> None:
    """Mark a rule validated: its alarms dispatch technicians on their own (a new version, in its history)."""
    from rules.store import UnknownRule, find_rule, set_rule_validated

    with _conn() as conn:
        try:
            r = find_rule(conn, rule)
            new, changed = set_rule_validated(conn, r.id, not revoke, author=author or getpass.getuser())
        except UnknownRule as exc:
            raise _fail(str(exc)) from None
    state = "validated: its alarms dispatch on their own" if not revoke else "not validated: its alarms are held"
    if changed:
        out.print(f"{new.name} v{new.version}: {state}", highlight=False)
    else:
        out.print(f"{new.name} is already {state.split(':')[0]} (v{new.version}); nothing changed", highlight=False)


@app.command("backtest")
def backtest(
    rule: Annotated[str, typer.Argument(help="rule id or name (with --file: the rule's name in the draft file)")],
    device: Annotated[
        list[str],
        typer.Option(help="device id, key or SITE/key; repeat for several devices in one run (scores are pooled)"),
    ],
    from_: Annotated[str, typer.Option("--from", help="start (ISO-8601 or epoch ms)")],
    to: Annotated[str, typer.Option(help="end (ISO-8601 or epoch ms)")],
    file: Annotated[Path | None, typer.Option(help="backtest a draft from this rules file, not the live rule")] = None,
    version: Annotated[int | None, typer.Option(help="backtest this stored version instead of the live one")] = None,
    compare: Annotated[int | None, typer.Option(help="also run this stored version, side by side")] = None,
    labels: Annotated[
        list[Path] | None,
        typer.Option(
            help="known incidents: CSV of windows (start,end[,device,label]) or per-row labels (time,label); "
            "one file for every device (its device column picks the rows), or one per --device, in order"
        ),
    ] = None,
    tickets: Annotated[
        bool, typer.Option("--tickets", help="closed tickets with the rule's problem code count as incidents")
    ] = False,
    output: Annotated[Path | None, typer.Option(help="write time,value,score,state,severity per reading")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Replay stored history through the live state machine; never touches live alarms."""
    from rules.backtest import BacktestError, load_labels, parse_time, write_rows_csv
    from rules.store import RuleError
    from rules.workbench import run_backtest

    draft = None
    if file is not None:
        drafts = {s.name: s for s in _load_file(file)}
        if rule not in drafts:
            raise _fail(f"{file} has no rule named {rule!r}; it has: {', '.join(drafts) or 'none'}", 2)
        draft = drafts[rule]
    if len(device) > 1 and (compare is not None or output is not None):
        raise _fail("--compare and --output work on one --device at a time", 2)
    if labels and len(labels) not in (1, len(device)):
        raise _fail(f"give one --labels file, or one per --device ({len(device)}), not {len(labels)}", 2)
    try:
        start, end = parse_time(from_), parse_time(to)
        runs = []
        with _conn() as conn, _backtest_progress(len(device)) as advance:
            for i, dev in enumerate(device):
                advance(dev)
                incidents = load_labels(labels[i if len(labels) > 1 else 0], dev) if labels else None
                runs.append(
                    run_backtest(
                        conn,
                        rule,
                        dev,
                        start,
                        end,
                        version=version,
                        draft=draft,
                        incidents=incidents,
                        tickets_as_labels=tickets,
                    )
                )
                if compare is not None:
                    runs.append(
                        run_backtest(
                            conn,
                            runs[0].rule if draft else rule,
                            dev,
                            start,
                            end,
                            version=compare,
                            incidents=incidents,
                            tickets_as_labels=tickets,
                        )
                    )
    except (BacktestError, RuleError) as exc:
        raise _fail(str(exc), 2) from None
    if output is not None:
        with output.open("w", newline="") as fh:
            write_rows_csv(runs[0].rows, fh)
    if len(device) > 1:
        _devices(runs, as_json)
        return
    if as_json:
        print(json.dumps([r.as_dict() for r in runs] if compare is not None else runs[0].as_dict()))
        return
    _print_runs(runs)
    if output is not None:
        out.print(f"wrote {len(runs[0].rows)} rows to {output}", highlight=False)


@contextmanager
def _backtest_progress(total: int) -> Iterator[Callable[[str], None]]:
    """A progress bar on stderr over the devices being replayed (only on a terminal; cleared after)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    ) as bar:
        task = bar.add_task("replaying", total=total)
        started = False

        def advance(device: str) -> None:
            nonlocal started
            if started:
                bar.advance(task)
            started = True
            bar.update(task, description=f"replaying {device}")

        yield advance


def _devices(runs: list[Any], as_json: bool) -> None:
    """Several devices: each one's headline, then everything pooled."""
    from dataclasses import asdict
    from types import SimpleNamespace

    from rules.backtest import pool_summaries
    from rules.scoring import pool

    scores = [r.score for r in runs if r.score is not None]
    pooled = SimpleNamespace(
        version="pooled",
        summary=pool_summaries([(r.summary, r.end_ms - r.start_ms) for r in runs]),
        score=pool(scores) if len(scores) == len(runs) else None,
    )
    if as_json:
        body = {
            "devices": [r.as_dict() for r in runs],
            "pooled": {
                "summary": asdict(pooled.summary),
                "score": None if pooled.score is None else asdict(pooled.score),
            },
        }
        print(json.dumps(body))
        return
    first = runs[0]
    out.print(f"[bold]{first.rule}[/] v{first.version} on {len(runs)} devices", highlight=False)
    table = Table()
    table.add_column("device", no_wrap=True)
    for name in ("readings", "episodes", "alerts / week", "F1", "false-alarm rate", "detected", "delay (s)"):
        table.add_column(name)
    for r in runs:
        sc = r.score
        table.add_row(
            f"{r.device.site}/{r.device.key}",
            str(r.readings),
            str(r.summary.episodes),
            _fmt(r.summary.alerts_per_week),
            _fmt(_get(r, "score.points.f1")),
            _pct(_get(r, "score.points.false_alarm_rate")),
            "—" if sc is None else f"{sc.detected}/{sc.incidents}",
            _fmt(_get(r, "score.mean_detection_delay_s")),
        )
    out.print(table)
    _print_metrics([pooled])


def _fmt(x: Any) -> str:
    if x is None:
        return "—"
    return f"{x:.3g}" if isinstance(x, float) else str(x)


def _pct(x: Any, digits: int = 1) -> str:
    """A rate as a percentage (``—`` when there is none); false-alarm rates want two decimals."""
    return "—" if x is None else f"{100 * float(x):.{digits}f} %"


def _get(run: Any, path: str) -> Any:
    obj = run
    for part in path.split("."):
        obj = getattr(obj, part, None) if obj is not None else None
    return obj


#: The metrics table: (section, label, attribute path on a BacktestResult, formatter).
_METRICS: list[tuple[str, str, str, Any]] = [
    ("alarms", "episodes", "summary.episodes", _fmt),
    ("alarms", "alerts / week", "summary.alerts_per_week", _fmt),
    ("alarms", "time in alarm (s)", "summary.time_in_alarm_s", _fmt),
    ("alarms", "tickets it would open", "summary.tickets", _fmt),
    ("per reading", "readings judged", "score.points.readings", _fmt),
    ("per reading", "readings in an incident", "score.points.anomalous", _fmt),
    ("per reading", "precision", "score.points.precision", _fmt),
    ("per reading", "recall", "score.points.recall", _fmt),
    ("per reading", "F1", "score.points.f1", _fmt),
    ("per reading", "false-alarm rate", "score.points.false_alarm_rate", _pct),
    ("per reading", "missed-alarm rate", "score.points.missed_alarm_rate", _pct),
    ("per incident", "incidents", "score.incidents", _fmt),
    ("per incident", "detected", "score.detected", _fmt),
    ("per incident", "recall", "score.recall", _fmt),
    ("per incident", "mean detection delay (s)", "score.mean_detection_delay_s", _fmt),
    ("per incident", "median detection delay (s)", "score.median_detection_delay_s", _fmt),
    ("per incident", "max detection delay (s)", "score.max_detection_delay_s", _fmt),
    ("per incident", "episode precision", "score.precision", _fmt),
    ("per incident", "false alarms (episodes)", "score.false_episodes", _fmt),
    ("per incident", "false alarms / week", "score.false_alarms_per_week", _fmt),
    ("per incident", "incident-free time in alarm", "score.false_alarm_rate", _pct),
]


def _print_runs(runs: list[Any]) -> None:
    from rules.backtest import iso

    first = runs[0]
    out.print(
        f"[bold]{first.rule}[/] on {first.device.site}/{first.device.key}, {first.readings} readings", highlight=False
    )
    for r in runs:
        table = Table("#", "start", "end", "peak severity", "peak", title=f"episodes — version {r.version}")
        for i, e in enumerate(r.episodes, 1):
            table.add_row(str(i), iso(e.start_ms), iso(e.end_ms) or "(still active)", e.peak_severity, _fmt(e.peak))
        out.print(table)
    _print_metrics(runs)


def _column(run: Any) -> str:
    return "pooled" if run.version == "pooled" else f"v{run.version}"


def _print_metrics(runs: list[Any]) -> None:
    """The metrics table (one column per run) and, when incidents carry labels, the per-label table."""
    table = Table("", "metric", *[_column(r) for r in runs])
    shown = ""
    for section, label, path, fmt in _METRICS:
        if path.startswith("score.") and all(_get(r, path.rsplit(".", 1)[0]) is None for r in runs):
            continue  # no labels given (or no per-reading view)
        table.add_row(section if section != shown else "", label, *[fmt(_get(r, path)) for r in runs])
        shown = section
    out.print(table)
    labels = sorted({k for r in runs if r.score is not None for k in r.score.by_label})
    if labels and labels != [""]:
        table = Table("label", *[f"{_column(r)} {c}" for r in runs for c in ("detected", "mean delay (s)")])
        for label in labels:
            cells = []
            for r in runs:
                ls = r.score.by_label.get(label) if r.score is not None else None
                cells += (
                    ["—", "—"] if ls is None else [f"{ls.detected}/{ls.incidents}", _fmt(ls.mean_detection_delay_s)]
                )
            table.add_row(label or "(unlabelled)", *cells)
        out.print(table)


# --- silences and maintenance windows ------------------------------------------------------------

silence_app = typer.Typer(
    help="Silences and maintenance windows (suppress alarms, not evaluation).", no_args_is_help=True
)
app.add_typer(silence_app, name="silence")

_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def _duration_s(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``2h``, ``1d`` → seconds."""
    import re

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d)?\s*", text)
    if m is None or float(m.group(1)) <= 0:
        raise _fail(f"--for {text!r}: write a positive duration such as 90s, 15m, 2h or 1d", 2)
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


def _print_silences(rows: list[dict[str, Any]]) -> None:
    table = Table("id", "kind", "device", "site", "rule", "from", "until", "by", "reason")
    for r in rows:
        table.add_row(
            str(r["id"]),
            r["kind"],
            r["device"] or "",
            r["site"] or "",
            r["rule"] or "",
            r["starts_at"].isoformat(timespec="minutes"),
            r["ends_at"].isoformat(timespec="minutes"),
            r["created_by"],
            r["reason"],
        )
    out.print(table)


@silence_app.command("add")
def silence_add(
    for_: Annotated[str, typer.Option("--for", help="how long: 90s, 15m, 2h, 1d")],
    device: Annotated[str | None, typer.Option(help="device id, key or SITE/key")] = None,
    site: Annotated[str | None, typer.Option(help="site slug")] = None,
    rule: Annotated[str | None, typer.Option(help="rule id or name")] = None,
    maintenance: Annotated[bool, typer.Option("--maintenance", help="a maintenance window, not a silence")] = False,
    reason: Annotated[str, typer.Option(help="why (shown with suppressed alarms)")] = "",
    author: Annotated[str | None, typer.Option(help="recorded as its creator (default: your user name)")] = None,
) -> None:
    """Suppress alarms of a device, site or rule (all given must match) from now for --for."""
    from datetime import UTC, datetime, timedelta

    from rules.lifecycle import LifecycleError, create_silence, resolve_targets, silence_rows

    seconds = _duration_s(for_)
    with _conn() as conn:
        try:
            device_id, site_id, rule_id = resolve_targets(conn, device=device, site=site, rule=rule)
            now = datetime.now(UTC)
            s = create_silence(
                conn,
                created_by=author or getpass.getuser(),
                starts_at=now,
                ends_at=now + timedelta(seconds=seconds),
                kind="maintenance" if maintenance else "silence",
                device_id=device_id,
                site_id=site_id,
                rule_id=rule_id,
                reason=reason,
            )
        except LifecycleError as exc:
            raise _fail(str(exc), 2) from None
        _print_silences(silence_rows(conn, [s]))


@silence_app.command("list")
def silence_list(all_: Annotated[bool, typer.Option("--all", help="include ended windows")] = False) -> None:
    """Silences and maintenance windows (active ones unless --all)."""
    from rules.lifecycle import list_silences, silence_rows

    with _conn() as conn:
        _print_silences(silence_rows(conn, list_silences(conn, active_only=not all_)))


@silence_app.command("end")
def silence_end(
    silence_id: Annotated[int, typer.Argument(help="the id `silence list` shows")],
    author: Annotated[str | None, typer.Option(help="recorded as who ended it")] = None,
) -> None:
    """End a window now; open alarms it held become visible (and ticketed)."""
    from rules.lifecycle import UnknownSilence, end_silence

    with _conn() as conn:
        try:
            _, released = end_silence(conn, silence_id, by=author or getpass.getuser())
        except UnknownSilence as exc:
            raise _fail(str(exc)) from None
    out.print(f"ended silence {silence_id}; released alarms: {', '.join(map(str, released)) or 'none'}")
