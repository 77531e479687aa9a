"""`directord convert`: an ldirectord (+ heartbeat) site as a directord configuration.

Usage::

    directord convert --ldirectord /etc/ha.d/ldirectord.cf \\
        [--ha-cf /etc/ha.d/ha.cf --haresources /etc/ha.d/haresources --authkeys /etc/ha.d/authkeys] \\
        [--node NAME] [--strict] [-o /etc/directord/directord.yaml]

Layers:

* `convert_text` takes file texts and gives a `Conversion` (YAML text,
  issues), or `ConvertError` with every error; it reads no file and writes
  nothing (host names are resolved through the resolver it is given; the
  only file system access is the ``stat`` of haresources' scripts in the
  directories of its `ResourceLookup`, which tests point elsewhere);
* `convert_files` reads the inputs, converts, then loads the result with
  the configuration loader (`director.config.parse_config`, which also
  checks the authkeys file) and only then returns it: output that directord
  would refuse is an error, never a written file;
* `write_atomic` writes the output through a temporary file in the same
  directory and ``rename(2)``, so a reader sees the old file or the whole new
  one;
* `cmd_convert` is the command: errors, warnings and notes go to stderr as
  ``FILE:LINE: DIRECTIVE: message``; exit status 0 when written (warnings
  allowed), 1 on errors (nothing written).  With ``--strict`` a weaker check
  (a virtual service whose real servers directord would check less than
  ldirectord does: `Conversion.weaker`) is an error too.  Its arguments are
  registered by `director.convert.cli`, which imports this module only when
  the command runs.

The ldirectord semantics (defaults, quiescent) are those of ldirectord 4.12's
code: see `director.convert.ldirectord` and `director.convert.services`;
heartbeat's in `director.convert.heartbeat`; the ``notify:`` hooks (heartbeat's
resource scripts, ldirectord's fallbackcommand) in `director.convert.notify`.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from typing import Any

import yaml

from director.config import ConfigError, parse_config
from director.config.builder import MAX_HOOKS
from director.convert.heartbeat import convert_ha
from director.convert.issues import ConvertError, Issue, Issues
from director.convert.ldirectord import (
    LdConfig,
    Resolver,
    StaticResolver,
    SystemResolver,
    parse_ldirectord,
)
from director.convert.notify import HOST_LOOKUP, HookOut, ResourceLookup, fallback_hooks, resource_hooks
from director.convert.services import DEFAULTS, EMAIL_ALERT, ServiceOut, translate_services
from ha.durable import write_file_atomic
from ha.readfile import ReadFileError, read_regular_file

__all__ = [
    "MAX_INPUT_BYTES",
    "QUIESCENT_NOTE",
    "Conversion",
    "ConvertError",
    "Issue",
    "cmd_convert",
    "convert_files",
    "convert_text",
    "write_atomic",
]

#: Written at the top of every converted file.
QUIESCENT_NOTE = (
    "quiescent: ldirectord's manual gives 'yes' as the default, its code (set_defaults) uses 'no'. "
    "This conversion follows the code: a real server found down is removed (on_failure: remove) "
    "unless quiescent=yes is written, globally or in the virtual (on_failure: quiescent, weight 0)."
)


@dataclass
class Conversion:
    """The result of a conversion.

    Attributes:
        text: the directord YAML configuration.
        issues: warnings and notes, in input order per file (ldirectord.cf,
            ha.cf, haresources).
        private: the text holds a check's password or RADIUS secret (copied
            from ldirectord.cf): write it readable by its owner only.
    """

    text: str
    issues: list[Issue] = field(default_factory=list)
    private: bool = False

    @property
    def weaker(self) -> list[Issue]:
        """The weaker-check warnings (`Issue.weaker`): one per virtual service and shortfall,
        each at the ``virtual=`` line, naming what ldirectord checks and what directord will."""
        return [i for i in self.issues if i.weaker]

    @property
    def warnings(self) -> list[Issue]:
        """The issues of severity ``warning`` (meaning lost), in order."""
        return [i for i in self.issues if i.severity == "warning"]

    @property
    def notes(self) -> list[Issue]:
        """The issues of severity ``note`` (carried over differently), in order."""
        return [i for i in self.issues if i.severity == "note"]


# --- global ldirectord directives ------------------------------------------------------------


def _global_directives(cfg: LdConfig, issues: Issues) -> list[str]:
    """Report the global directives with no per-service effect; return header comment lines."""
    lines: list[str] = []
    unsupported = {
        "callback": "directord runs no command after reloading its configuration",
        "emailalert": EMAIL_ALERT,
        "emailalertfreq": EMAIL_ALERT,
        "emailalertstatus": EMAIL_ALERT,
        "emailalertfrom": EMAIL_ALERT,
        "smtp": EMAIL_ALERT,
        "maintenancedir": "directord has no maintenance directory; take a real server out by setting its "
        "weight to 0 or removing it from the configuration, then reload",
    }
    for name, what in unsupported.items():
        if cfg.opt(name) is not None:
            issues.warn(cfg.opt_line(name), name, f"not converted: {what}")
    if cfg.opt("fallbackcommand") is not None and all(v.opt("fallbackcommand") is not None for v in cfg.virtuals):
        issues.note(
            cfg.opt_line("fallbackcommand"),
            "fallbackcommand",
            "every virtual has its own fallbackcommand (or there is none): the global one is never run; not converted",
        )
    if cfg.opt("autoreload") == "yes":
        issues.warn(
            cfg.opt_line("autoreload"),
            "autoreload",
            "directord does not watch its file: reload it with SIGHUP (systemctl reload directord)",
        )
    elif cfg.opt("autoreload") is not None:
        issues.note(cfg.opt_line("autoreload"), "autoreload", "directord reloads on SIGHUP only, as autoreload=no")
    if cfg.opt("logfile") is not None:
        issues.note(cfg.opt_line("logfile"), "logfile", "directord logs to stderr (the journal under systemd)")
    for key, (value, line) in cfg.globals.items():
        if key.startswith("execute:"):
            issues.warn(
                line,
                "execute",
                f"another ldirectord instance ({value}): convert its file separately "
                "(directord runs one configuration per process)",
            )
    if cfg.opt("fork") is not None:
        issues.note(cfg.opt_line("fork"), "fork", "directord checks every real server concurrently (as fork=yes)")
    if cfg.opt("supervised") is not None:
        issues.note(cfg.opt_line("supervised"), "supervised", "directord run always stays in the foreground")
    if cfg.opt("readdquiescent") is not None:
        issues.note(
            cfg.opt_line("readdquiescent"),
            "readdquiescent",
            "directord repairs its table on every reconcile: a quiescent real server missing from the "
            "table is added back at weight 0 (as readdquiescent=yes)",
        )
    if cfg.opt("checkcount") is not None:
        issues.note(
            cfg.opt_line("checkcount"),
            "checkcount",
            "deprecated; ldirectord 4.12 stores it but never uses it; not converted",
        )
    cleanstop = cfg.opt("cleanstop")
    if cleanstop == "yes":
        issues.warn(
            cfg.opt_line("cleanstop"),
            "cleanstop",
            "directord leaves the IPVS table in place when it stops (cleanstop=no behaviour)",
        )
    elif cleanstop == "no":
        issues.note(
            cfg.opt_line("cleanstop"),
            "cleanstop",
            "directord leaves the IPVS table in place when it stops, as cleanstop=no",
        )
    settings = []
    for name in ("checkinterval", "checktimeout", "negotiatetimeout", "failurecount", "quiescent"):
        value = cfg.opt(name)
        shown = value if value is not None else (f"{DEFAULTS[name]} (default)" if name in DEFAULTS else "unset")
        if name in ("checktimeout", "negotiatetimeout") and value is None:
            shown = "unset (defaults: the other timeout, then 5 s / 30 s)"
        settings.append(f"{name}={shown}")
    lines.append("ldirectord globals applied to every service: " + ", ".join(settings))
    lines.append(
        "stop: directord leaves the IPVS table in place when it stops (ldirectord's cleanstop=yes, "
        "its default, removed it)"
    )
    return lines


# --- YAML output -----------------------------------------------------------------------------


def _yaml_printable(text: str) -> str:
    """``text`` with every character YAML may not carry (YAML 1.1 "printable": control
    characters but tab and line breaks, surrogates, U+FFFE/U+FFFF) written as ``\\xNN`` /
    ``\\uNNNN``: input text copied into a comment must not make the output unreadable."""
    out = []
    for ch in text:
        c = ord(ch)
        if (
            c in (0x9, 0xA, 0xD, 0x85)
            or 0x20 <= c <= 0x7E
            or 0xA0 <= c <= 0xD7FF
            or 0xE000 <= c <= 0xFFFD
            or c >= 0x10000
        ):
            out.append(ch)
        else:
            out.append(f"\\x{c:02x}" if c <= 0xFF else f"\\u{c:04x}")
    return "".join(out)


def _comment(text: str, indent: str = "") -> str:
    """``text`` as YAML comment lines, wrapped at about 100 columns; characters YAML may not
    carry are escaped (`_yaml_printable`)."""
    words, lines, current = _yaml_printable(text).split(), [], ""
    for word in words:
        if current and len(indent) + 2 + len(current) + 1 + len(word) > 100:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    if current:
        lines.append(current)
    return "".join(f"{indent}# {line}\n" for line in lines)


def _dump(data: Any, indent: str) -> str:
    text = yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=110, allow_unicode=True)
    return "".join(f"{indent}{line}\n" if line else "\n" for line in text.splitlines())


def _render(
    sources: list[str],
    header: list[str],
    services: list[ServiceOut],
    ha: dict[str, Any] | None,
    hooks: list[HookOut],
    issues: list[Issue],
) -> str:
    out = ["# directord configuration converted by `directord convert` from:\n"]
    out += [f"#   {_yaml_printable(src).splitlines()[0] if src else src}\n" for src in sources]
    out.append("#\n")
    out.append(_comment(QUIESCENT_NOTE))
    for line in header:
        out.append(_comment(line))
    shown = [i for i in issues if i.severity in ("warning", "note")]
    if shown:
        out.append("#\n# What did not convert one to one (warnings: meaning lost; notes: carried over differently):\n")
        for issue in shown:
            out.append(_comment(f"{issue.severity}: {issue}"))
    out.append("\nvirtual_services:")
    if not services:
        out.append(" []\n")
    else:
        out.append("\n")
        for service in services:
            out.append("\n")
            for text in service.comments:
                out.append(_comment(text, "  "))
            out.append(_dump([service.data], "  "))
    if ha is not None:
        out.append(
            "\n# heartbeat's ha.cf and haresources (compat heartbeat: heartbeat's timers, units and defaults;\n"
            "# a directord node and a heartbeat node can run as a pair during the migration).\n"
        )
        if "node" not in ha:
            out.append("# node: not set: each director finds itself by its host name (uname -n), as heartbeat does.\n")
        out.append(_dump({"ha": ha}, ""))
    if hooks:
        out.append(
            "\n# Hooks: heartbeat's resource scripts and ldirectord's fallbackcommand (each comment names its\n"
            "# source). Hooks matching one event run one after another in this order; the ha.* hooks run one at\n"
            "# a time, in event order (a stop never overtakes the start before it). No shell unless written.\n"
            "notify:\n  hooks:\n"
        )
        for hook in hooks:
            out.append("\n")
            for text in hook.comments:
                out.append(_comment(text, "    "))
            out.append(_dump([hook.data], "    "))
    return "".join(out)


# --- pure conversion ---------------------------------------------------------------------------


def convert_text(
    ldirectord: str,
    ldirectord_path: str = "ldirectord.cf",
    *,
    ha_cf: str | None = None,
    ha_cf_path: str = "ha.cf",
    haresources: str | None = None,
    haresources_path: str = "haresources",
    authkeys: str = "/etc/ha.d/authkeys",
    node: str | None = None,
    resolver: Resolver | None = None,
    lookup: ResourceLookup = HOST_LOOKUP,
) -> Conversion:
    """Convert file texts to a directord configuration (no file is read or written; the only
    file system access is the ``stat`` of haresources' scripts in ``lookup``).

    Args:
        ldirectord: ldirectord.cf's text; ``ldirectord_path`` names it in messages.
        ha_cf: heartbeat's ha.cf text, or ``None`` for no ``ha:`` section.
        haresources: heartbeat's haresources text (only with ``ha_cf``).
        authkeys: path of heartbeat's authkeys file, referenced in ``ha.authkeys``.
        node: our node name for ``ha.node``; ``None`` leaves it out (host name).
        resolver: host/service name resolution (default `StaticResolver`:
            literals only, no I/O).
        lookup: where haresources' resource scripts and systemd units are
            looked for (`director.convert.notify.ResourceLookup`; default the
            host's ``/etc/ha.d/resource.d``, ``/etc/init.d``, systemd's unit
            directories).

    Returns:
        a `Conversion` (YAML text with comments, warnings and notes).

    Raises:
        ConvertError: with every error (``FILE:LINE``) of every input.
    """
    ld_issues = Issues(ldirectord_path)
    cfg = parse_ldirectord(ldirectord, ld_issues, resolver or StaticResolver())
    services: list[ServiceOut] = []
    header: list[str] = []
    hooks: list[HookOut] = []
    if not ld_issues.has_errors:
        header = _global_directives(cfg, ld_issues)
        services = translate_services(cfg, ld_issues)
        fallback = fallback_hooks(cfg, services, ldirectord_path, ld_issues)
    else:
        fallback = []
    all_issues = sorted(ld_issues.items, key=lambda issue: issue.line)
    ha = None
    sources = [ldirectord_path]
    if ha_cf is not None:
        ha_issues = Issues(ha_cf_path)
        res_issues = Issues(haresources_path)
        ha, scripts = convert_ha(
            ha_cf, ha_issues, haresources=haresources, haresources_issues=res_issues, authkeys=authkeys, node=node
        )
        if not res_issues.has_errors:
            hooks += resource_hooks(scripts, haresources_path, res_issues, lookup)
        all_issues += sorted(ha_issues.items, key=lambda i: i.line) + sorted(res_issues.items, key=lambda i: i.line)
        sources.append(ha_cf_path)
        if haresources is not None:
            sources.append(haresources_path)
        sources.append(f"{authkeys} (referenced, not copied)")
    elif haresources is not None:
        all_issues.append(Issue("error", haresources_path, 0, "", "haresources needs ha.cf (--ha-cf)"))
    hooks += fallback
    if len(hooks) > MAX_HOOKS:
        all_issues.append(
            Issue(
                "error",
                ldirectord_path,
                0,
                "notify",
                f"{len(hooks)} hooks would be needed (two per resource script, two per virtual service "
                f"with a fallbackcommand); directord takes at most {MAX_HOOKS}",
            )
        )
    if any(i.severity == "error" for i in all_issues):
        errors = [i for i in all_issues if i.severity == "error"]
        raise ConvertError(errors + [i for i in all_issues if i.severity != "error"])
    kept = [i for i in all_issues if i.severity != "error"]
    private = any(s.credentials for s in services)
    return Conversion(text=_render(sources, header, services, ha, hooks, kept), issues=kept, private=private)


# --- files -----------------------------------------------------------------------------------


#: Largest ldirectord.cf, ha.cf or haresources accepted, in bytes.
MAX_INPUT_BYTES = 1024 * 1024


def _read(path: str, what: str) -> str:
    """The text of one input file: a regular file of at most `MAX_INPUT_BYTES` bytes, UTF-8.

    Raises:
        ConvertError: one error naming ``path``: it cannot be read, is not a
            regular file (a FIFO is refused, not waited on), is too large, or
            is not UTF-8 (with the line).
    """
    try:
        raw = read_regular_file(path, MAX_INPUT_BYTES)
    except ReadFileError as err:
        raise ConvertError([Issue("error", path, 0, "", f"cannot use the {what}: {err.reason}")]) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ConvertError(
            [Issue("error", path, line, "", f"the {what} is not valid UTF-8 (byte 0x{raw[err.start]:02x})")]
        ) from None


def convert_files(
    ldirectord: str,
    *,
    ha_cf: str | None = None,
    haresources: str | None = None,
    authkeys: str | None = None,
    node: str | None = None,
    output: str | None = None,
    resolver: Resolver | None = None,
    lookup: ResourceLookup = HOST_LOOKUP,
) -> Conversion:
    """Read the input files, convert them and check the result with directord's loader.

    ``lookup`` says where haresources' scripts are looked for (default: this
    host's directories, `director.convert.notify.HOST_LOOKUP`).

    ``authkeys`` defaults to ``authkeys`` next to ha.cf; it is written as an
    absolute path.  ``output`` (the future file's path) is only used in the
    loader's messages.  The result is loaded with
    `director.config.parse_config` (with ``ha.node`` set to the first node
    when ``node`` is not given, so the check does not depend on this host's
    name); every problem the loader finds is an error.

    Raises:
        ConvertError: unreadable input, conversion errors, or a result
            directord would refuse.
    """
    ld_text = _read(ldirectord, "ldirectord configuration")
    ha_text = _read(ha_cf, "heartbeat ha.cf") if ha_cf is not None else None
    res_text = _read(haresources, "heartbeat haresources") if haresources is not None else None
    if ha_cf is not None and authkeys is None:
        authkeys = os.path.join(os.path.dirname(os.path.abspath(ha_cf)), "authkeys")
    authkeys_abs = os.path.abspath(authkeys) if authkeys is not None else "/etc/ha.d/authkeys"
    kwargs = dict(
        ha_cf=ha_text,
        ha_cf_path=ha_cf or "ha.cf",
        haresources=res_text,
        haresources_path=haresources or "haresources",
        authkeys=authkeys_abs,
        resolver=resolver or SystemResolver(),
        lookup=lookup,
    )
    result = convert_text(ld_text, ldirectord, node=node, **kwargs)
    check_text = result.text
    if ha_text is not None and node is None:
        nodes = yaml.safe_load(result.text).get("ha", {}).get("nodes") or []
        if nodes:
            check_text = convert_text(ld_text, ldirectord, node=nodes[0], **kwargs).text
    target = output or "<output>"
    try:
        parse_config(check_text, target)
    except ConfigError as err:
        raise ConvertError(
            [
                Issue(
                    "error",
                    issue.file,
                    issue.line,
                    issue.field,
                    f"the converted configuration is refused by directord: {issue.message}",
                )
                for issue in err.issues
            ]
            + result.issues
        ) from None
    return result


def write_atomic(path: str, text: str, mode: int = 0o644) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically and durably (`ha.durable.write_file_atomic`).

    The file gets ``mode`` (default 0644).  On any error ``path`` is left as it was.

    Raises:
        OSError: the directory is not writable, the disk is full, a symlink,
            directory or FIFO is at ``path``, ...
    """
    write_file_atomic(path, text.encode("utf-8"), mode)


# --- command ---------------------------------------------------------------------------------


def cmd_convert(args: argparse.Namespace) -> int:
    """Run ``directord convert``; returns the exit status (0 written, 1 errors: nothing written).

    With ``args.strict``, each weaker check (`Conversion.weaker`) is printed as an error and
    the status is 1 (nothing written); without it they are warnings like the others, counted
    in a last line.  A file holding a check's password or secret is written with mode 0600.
    """
    if (args.haresources or args.authkeys) and not args.ha_cf:
        print("error: --haresources and --authkeys need --ha-cf", file=sys.stderr)
        return 1
    try:
        result = convert_files(
            args.ldirectord,
            ha_cf=args.ha_cf,
            haresources=args.haresources,
            authkeys=args.authkeys,
            node=args.node,
            output=args.output,
        )
    except ConvertError as err:
        for issue in err.issues:
            print(f"{issue.severity}: {issue}", file=sys.stderr)
        count = len(err.errors)
        print(f"{count} error{'s' if count != 1 else ''}; nothing written", file=sys.stderr)
        return 1
    strict = getattr(args, "strict", False)
    for issue in result.issues:
        if issue.weaker and strict:
            print(f"error: {issue}", file=sys.stderr)
        elif issue.severity == "warning" or args.verbose:
            print(f"{issue.severity}: {issue}", file=sys.stderr)
    weaker = len(result.weaker)
    if weaker and strict:
        print(
            f"{weaker} weaker check{'s' if weaker != 1 else ''} than ldirectord's (--strict); nothing written",
            file=sys.stderr,
        )
        return 1
    if weaker:
        print(
            f"{weaker} weaker check{'s' if weaker != 1 else ''} than ldirectord's (listed above; "
            "--strict refuses them)",
            file=sys.stderr,
        )
    if args.output:
        try:
            write_atomic(args.output, result.text, 0o600 if result.private else 0o644)
        except OSError as err:
            print(f"error: {args.output}: cannot write: {err.strerror or err}", file=sys.stderr)
            return 1
        warnings = len(result.warnings)
        print(
            f"wrote {args.output} ({warnings} warning{'s' if warnings != 1 else ''}, "
            f"{len(result.notes)} notes in its header)",
            file=sys.stderr,
        )
    else:
        sys.stdout.write(result.text)
    return 0
