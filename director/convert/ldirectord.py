"""Reading ldirectord.cf as ldirectord 4.12 reads it (pure: text in, `LdConfig` and issues out).

The rules follow ldirectord's own parser (``read_config``,
``add_real_server``, ``parse_fallback``, ``ld_setup`` in the Perl script
``/usr/sbin/ldirectord`` of the Debian package ``ldirectord`` 4.12), not its
manual where the two disagree:

* global directives start in column 0; ``virtual=``/``virtual6=`` opens a
  block whose lines are indented by at least 4 spaces (a tab counts as 4);
  the first line that is neither indented nor a comment ends the block (so a
  blank line ends it too).  In a block, ``#`` starts a comment anywhere on
  the line; in global lines it does not.
* an unknown directive, a bad value, and the deprecated ``timeout`` and
  ``connecttimeout`` are errors, as they are for ldirectord.
* defaults (``set_defaults`` and the per-virtual defaults): checkinterval 10 s,
  checktimeout and negotiatetimeout unset (each defaults to the other, then 5 s
  for checktimeout and 30 s for negotiatetimeout), failurecount 1,
  quiescent **no** (the manual says yes), readdquiescent no, cleanstop yes,
  fork no, scheduler wrr, checktype negotiate, protocol tcp (udp for port 53),
  service from the virtual port (80 http, 443 https, ...; ``none`` otherwise
  and for fwmark services), request ``/``, httpmethod GET, real weight 1,
  forwarding of a fallback ``gate``.
* host and service names are resolved through a `Resolver`, so that the
  parsing itself does no I/O.

Why this module is over 800 lines: `_Parser` follows ldirectord's ``read_config`` directive by
directive (about 50 global and virtual directives, each with its own syntax, default and
error), so that each rule can be checked against the Perl source side by side; split, a
directive's syntax and its rule would sit in different files.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass, field
from typing import Protocol

from director.config import quote
from director.convert.issues import Issues

__all__ = [
    "MAX_REAL_RANGE",
    "MAX_REALS",
    "FORWARD_NAMES",
    "SERVICE_PORTS",
    "LdConfig",
    "LdFallback",
    "LdReal",
    "LdVirtual",
    "Resolver",
    "StaticResolver",
    "SystemResolver",
    "parse_ldirectord",
    "port_to_service",
]

#: ldirectord's service name -> port table (``ld_service_to_port``); the reverse is
#: ``ld_port_to_service``, used when ``service`` is not given.
SERVICE_PORTS: dict[str, int] = {
    "ftp": 21,
    "smtp": 25,
    "dns": 53,
    "http": 80,
    "pop": 110,
    "nntp": 119,
    "imap": 143,
    "ldap": 389,
    "https": 443,
    "submission": 587,
    "ldaps": 636,
    "imaps": 993,
    "pops": 995,
    "oracle": 1521,
    "radius": 1812,
    "http_proxy": 3128,
    "mysql": 3306,
    "sip": 5060,
    "pgsql": 5432,
}
_PORT_SERVICES = {port: name for name, port in SERVICE_PORTS.items()}

#: Most addresses one ``real=A->B:PORT`` range may expand to (ldirectord expands any range).
MAX_REAL_RANGE = 4096
#: Most real servers converted from one file, ranges expanded.
MAX_REALS = 100_000

#: Every value of ``service=`` ldirectord accepts.
SERVICES = frozenset(SERVICE_PORTS) | {"none", "simpletcp"}
#: Every value of ``checktype=`` ldirectord accepts besides a number.
CHECKTYPES = ("connect", "negotiate", "ping", "off", "on", "external", "external-perl")
#: ldirectord forwarding keyword -> directord forwarding method.
FORWARD_NAMES = {"gate": "dr", "masq": "nat", "ipip": "tun"}

#: Port names of /etc/services that ldirectord files commonly use (IANA service names).
_WELL_KNOWN_PORTS: dict[str, int] = {
    "ftp": 21,
    "ssh": 22,
    "telnet": 23,
    "smtp": 25,
    "domain": 53,
    "http": 80,
    "www": 80,
    "pop3": 110,
    "nntp": 119,
    "imap2": 143,
    "imap": 143,
    "ldap": 389,
    "https": 443,
    "submission": 587,
    "ldaps": 636,
    "imaps": 993,
    "pop3s": 995,
    "mysql": 3306,
    "postgresql": 5432,
    "sip": 5060,
    "radius": 1812,
    "http-alt": 8080,
    "webcache": 8080,
}


def port_to_service(port: int) -> str:
    """ldirectord's ``ld_port_to_service``: the service checked by default on ``port`` (``none`` if unknown)."""
    return _PORT_SERVICES.get(port, "none")


class Resolver(Protocol):
    """Name resolution used while reading a file (ldirectord resolves at start-up)."""

    def host(self, name: str, family: int) -> str | None:
        """Canonical address of host ``name`` in ``family`` (``socket.AF_INET``/``AF_INET6``), or ``None``."""

    def port(self, name: str, protocol: str) -> int | None:
        """Port of service ``name`` for ``protocol`` (``tcp``/``udp``/``""``), or ``None``."""


class StaticResolver:
    """Resolves address literals and the common service names only; does no I/O."""

    def host(self, name: str, family: int) -> str | None:
        try:
            address = ipaddress.ip_address(name)
        except ValueError:
            return None
        if (address.version == 6) != (family == socket.AF_INET6):
            return None
        return str(address)

    def port(self, name: str, protocol: str) -> int | None:
        return _WELL_KNOWN_PORTS.get(name)


class SystemResolver(StaticResolver):
    """`StaticResolver`, then the system's resolver (``getaddrinfo``, ``getservbyname``) for other names."""

    def host(self, name: str, family: int) -> str | None:
        found = super().host(name, family)
        if found is not None:
            return found
        try:
            infos = socket.getaddrinfo(name, None, family, socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            return None
        return str(ipaddress.ip_address(infos[0][4][0])) if infos else None

    def port(self, name: str, protocol: str) -> int | None:
        try:
            return socket.getservbyname(name, protocol) if protocol else socket.getservbyname(name)
        except OSError:
            return super().port(name, protocol)


@dataclass
class LdReal:
    """One real server (a ``real=`` line; a range gives one per address).

    ``port`` is 0 when the line gives none (ldirectord passes port 0 to
    ipvsadm).  ``request``/``receive`` are the per-real check overrides
    (``None`` when not given).  Thresholds are connection counts, 0 = none.
    """

    address: str
    port: int
    forward: str  # gate, masq or ipip
    weight: int
    line: int
    request: str | None = None
    receive: str | None = None
    l_threshold: int = 0
    u_threshold: int = 0
    name: str = ""  # the host name as written, when it was one


@dataclass
class LdFallback:
    """A ``fallback=`` server: address, port (``None``: the virtual's port), forwarding keyword, line."""

    address: str
    port: int | None
    forward: str
    line: int
    name: str = ""


@dataclass
class LdVirtual:
    """One ``virtual=``/``virtual6=`` block.

    Attributes:
        line: line of the ``virtual`` directive.
        family: ``socket.AF_INET`` or ``socket.AF_INET6``.
        address, port: resolved VIP and port (``None``/0 for fwmark services).
        fwmark: the firewall mark, or ``None``.
        protocol: ``tcp``, ``udp`` or ``fwm``.
        options: every other directive of the block as ``name -> (value, line)``
            (value already checked and normalised as ldirectord does).
        reals: the real servers, in file order, ranges expanded.
        fallback: the block's own fallback server, or ``None``.
        comments: ``comment=`` texts.
    """

    line: int
    family: int
    address: str | None
    port: int
    fwmark: int | None
    protocol: str
    header: str
    options: dict[str, tuple[str, int]] = field(default_factory=dict)
    reals: list[LdReal] = field(default_factory=list)
    fallback: LdFallback | None = None
    comments: list[str] = field(default_factory=list)
    host_name: str = ""

    def opt(self, name: str) -> str | None:
        """The value of directive ``name`` in this block, or ``None``."""
        found = self.options.get(name)
        return found[0] if found else None

    def opt_line(self, name: str) -> int:
        """The line of directive ``name`` in this block (the ``virtual`` line when absent)."""
        found = self.options.get(name)
        return found[1] if found else self.line


@dataclass
class LdConfig:
    """A whole ldirectord.cf: global directives (``name -> (value, line)``), virtuals, global fallbacks."""

    globals: dict[str, tuple[str, int]] = field(default_factory=dict)
    virtuals: list[LdVirtual] = field(default_factory=list)
    #: address family -> protocol (``tcp``, ``udp``) -> the global ``fallback=``/``fallback6=``
    #: server, resolved for that protocol as ldirectord does.
    global_fallback: dict[int, dict[str, LdFallback]] = field(default_factory=dict)

    def opt(self, name: str) -> str | None:
        """The value of global directive ``name`` as written, or ``None`` when absent."""
        found = self.globals.get(name)
        return found[0] if found else None

    def opt_line(self, name: str) -> int:
        """The line of global directive ``name``, or 0 when absent."""
        found = self.globals.get(name)
        return found[1] if found else 0


# --- the parser ------------------------------------------------------------------------------

_YES_NO = ("yes", "no")
# Directives whose value is stored as written (after the checks ldirectord makes).
_V_QUOTED = {
    "request": "no request string specified",
    "receive": "invalid receive string",
    "login": "invalid login string",
    "passwd": "invalid password",
    "database": "invalid database",
    "secret": "invalid secret",
}
_V_POSITIVE = {
    "checktimeout": "invalid check timeout",
    "negotiatetimeout": "invalid negotiate timeout",
    "checkcount": "invalid check count",
    "failurecount": "invalid failure count",
    "checkinterval": "invalid checkinterval",
}
_G_POSITIVE = {
    "checktimeout": "invalid check timeout value",
    "negotiatetimeout": "invalid negotiate timeout value",
    "checkinterval": "invalid check interval value",
    "checkcount": "invalid check count value",
    "failurecount": "invalid failure count value",
}
_G_YES_NO = ("autoreload", "fork", "quiescent", "readdquiescent", "cleanstop")
_EMAIL_STATUS = ("all", "none", "starting", "running", "stopping", "reloading")

_REAL = re.compile(
    r"(\d+\.\d+\.\d+\.\d+|[A-Za-z0-9.-]+|\[[0-9A-fa-f:]+\])"
    r"(->(\d+\.\d+\.\d+\.\d+|[A-Za-z0-9.-]+|\[[0-9A-fa-f:]+\]))?"
    r"(:(\d+|[A-Za-z0-9-_]+))?\s+(.*)"
)


def _positive(text: str) -> int | None:
    """ldirectord's ``$1 =~ /(\\d+)/ && $1``: the first digits of ``text`` if they are not 0."""
    m = re.search(r"(\d+)", text)
    if m is None or int(m.group(1)) == 0:
        return None
    return int(m.group(1))


class _Parser:
    def __init__(self, text: str, issues: Issues, resolver: Resolver) -> None:
        self.lines = text.splitlines()
        self.issues = issues
        self.resolver = resolver
        self.config = LdConfig()
        self.reals = 0  # real servers read so far, ranges expanded (at most MAX_REALS)

    def error(self, line: int, directive: str, message: str) -> None:
        self.issues.error(line, directive, message)

    # -- driver

    def parse(self) -> LdConfig:
        i, n = 0, len(self.lines)
        seen: dict[tuple, int] = {}
        while i < n:
            raw = self.lines[i].rstrip("\r\n")
            lineno = i + 1
            m = re.match(r"virtual(6)?\s*=\s*(.*)", raw)
            if m:
                i += 1
                virtual, i = self.virtual_block(m, lineno, i)
                if virtual is not None:
                    ident = (
                        virtual.protocol,
                        virtual.family if virtual.fwmark else 0,
                        virtual.address,
                        virtual.port,
                        virtual.fwmark,
                    )
                    if ident in seen:
                        self.error(lineno, "virtual", f"duplicate virtual server (first defined on line {seen[ident]})")
                    else:
                        seen[ident] = lineno
                        self.config.virtuals.append(virtual)
                continue
            i += 1
            if re.match(r"\s*$", raw) or re.match(r"\s*#", raw):
                continue
            self.global_line(raw.rstrip(), lineno)
        return self.config

    # -- global directives

    def global_line(self, text: str, line: int) -> None:
        g = self.config.globals
        m = re.match(r"([a-z0-9]+)", text)
        name = m.group(1) if m else text.split("=")[0].strip()
        value_m = re.match(r"[a-z0-9]+\s*=\s*(.*)", text)
        value = value_m.group(1) if value_m else None
        if name in ("timeout", "connecttimeout"):
            self.error(
                line,
                name,
                f"{name} is deprecated in favour of checktimeout and negotiatetimeout (ldirectord refuses it)",
            )
            return
        if name == "supervised" and value is None and re.fullmatch(r"supervised\s*", text):
            g["supervised"] = ("yes", line)
            return
        if value is None:
            self.error(line, name, f"unknown command {quote(text)}")
            return
        if name in _G_POSITIVE:
            number = _positive(value)
            if number is None:
                self.error(line, name, _G_POSITIVE[name])
                return
            g[name] = (str(number), line)
        elif name in ("fallback", "fallback6"):
            family = socket.AF_INET6 if name == "fallback6" else socket.AF_INET
            tcp = self.fallback(value, line, None, family, "tcp")
            udp = self.fallback(value, line, None, family, "udp") if tcp is not None else None
            if tcp is not None and udp is not None:
                self.config.global_fallback[family] = {"tcp": tcp, "udp": udp}
                g[name] = (value, line)
        elif name in ("fallbackcommand", "emailalertfrom", "maintenancedir"):
            if not value:
                self.error(line, name, "no value given")
                return
            g[name] = (value, line)
        elif name in _G_YES_NO or name == "supervised":
            if value not in _YES_NO:
                self.error(line, name, f"{name} must be 'yes' or 'no'")
                return
            g[name] = (value, line)
        elif name in ("callback", "logfile"):
            q = re.fullmatch(r'"(.*)"', value)
            if q is None:
                self.error(line, name, f"unknown command {quote(text)} (the value must be in double quotes)")
                return
            g[name] = (q.group(1), line)
        elif name == "execute":
            g.setdefault("execute", ("", line))
            g[f"execute:{line}"] = (value, line)
        elif name == "emailalert":
            self.email(value, line, g)
        elif name == "emailalertfreq":
            if not re.match(r"\d+", value):
                self.error(line, name, "invalid email alert frequency")
                return
            g[name] = (re.match(r"\d+", value).group(0), line)
        elif name == "emailalertstatus":
            if self.email_status(value, line):
                g[name] = (value, line)
        elif name == "smtp":
            if not re.match(r"[0-9A-Za-z._+-]+", value):
                self.error(line, name, "invalid SMTP server address")
                return
            g[name] = (value, line)
        else:
            self.error(line, name, f"unknown command {quote(text)}")

    def email(self, value: str, line: int, store: dict) -> None:
        addr = re.sub(r'^"([^"]*)"$', r"\1", value)
        if not addr:
            self.error(line, "emailalert", "no email address specified")
            return
        store["emailalert"] = (addr, line)

    def email_status(self, value: str, line: int) -> bool:
        words = re.split(r"\s*,\s*", value)
        for word in words:
            if word not in _EMAIL_STATUS:
                self.error(line, "emailalertstatus", f"invalid email alert status at: {quote(word)}")
                return False
        if "none" in words and len(words) > 1:
            self.error(line, "emailalertstatus", '"none" cannot be combined with another status')
            return False
        return True

    # -- virtual blocks

    def virtual_block(self, m: re.Match, line: int, i: int) -> tuple[LdVirtual | None, int]:
        family = socket.AF_INET6 if m.group(1) else socket.AF_INET
        vattr = m.group(2)
        ip_port: tuple[str, str] | None = None
        fwmark: int | None = None
        ok = True
        if (mm := re.match(r"(\d+\.\d+\.\d+\.\d+):([0-9A-Za-z-_]+)", vattr)) and family == socket.AF_INET:
            ip_port = (mm.group(1), mm.group(2))
        elif mm := re.match(r"([0-9A-Za-z._+-]+):([0-9A-Za-z-_]+)", vattr):
            ip_port = (mm.group(1), mm.group(2))
        elif mm := re.match(r"(\d+)", vattr):
            fwmark = int(mm.group(1))
        elif (mm := re.match(r"\[([0-9A-Fa-f:]+)\]:([0-9A-Za-z-_]+)", vattr)) and family == socket.AF_INET:
            self.error(line, "virtual", 'cannot specify an IPv6 address here; use "virtual6" instead')
            ok = False
        elif mm := re.match(r"\[([0-9A-Fa-f:]+)\]:([0-9A-Za-z-_]+)", vattr):
            ip_port = (mm.group(1), mm.group(2))
        else:
            self.error(line, "virtual", f"invalid address for virtual server: {quote(vattr)}")
            ok = False
        protocol = "fwm" if fwmark is not None else "tcp"
        if ip_port is not None and ip_port[1] in ("53", "domain"):
            protocol = "udp"
        v = LdVirtual(
            line=line,
            family=family,
            address=None,
            port=0,
            fwmark=fwmark,
            protocol=protocol,
            header=self.lines[line - 1].strip(),
        )
        real_todo: list[tuple[str, int]] = []
        fallback_todo: tuple[str, int] | None = None
        n = len(self.lines)
        while i < n:
            raw = self.lines[i].rstrip("\r\n")
            if re.match(r"\s*#", raw):
                i += 1
                continue
            body = re.sub(r"#.*", "", raw).replace("\t", "    ")
            bm = re.match(r" {4,}(.+)", body)
            if bm is None:
                break
            i += 1
            cmd = bm.group(1).rstrip()
            lineno = i
            rm = re.match(r"(real(6)?)\s*=\s*(.*)", cmd)
            if rm:
                if (family == socket.AF_INET) == bool(rm.group(2)):
                    want = "real" if family == socket.AF_INET else "real6"
                    self.error(lineno, rm.group(1), f'cannot specify "{rm.group(1)}" here; use "{want}" instead')
                    continue
                real_todo.append((rm.group(3), lineno))
                continue
            fm = re.match(r"(fallback(6)?)\s*=\s*(.*)", cmd)
            if fm:
                if (family == socket.AF_INET) == bool(fm.group(2)):
                    want = "fallback" if family == socket.AF_INET else "fallback6"
                    self.error(lineno, fm.group(1), f'cannot specify "{fm.group(1)}" here; use "{want}" instead')
                    continue
                fallback_todo = (fm.group(3), lineno)
                continue
            self.virtual_option(v, cmd, lineno)
        if not ok:
            return None, i
        # ldirectord resolves names once the whole block (and so the protocol) is known.
        if ip_port is not None:
            self.resolve_virtual(v, ip_port)
        if fallback_todo is not None:
            v.fallback = self.fallback(fallback_todo[0], fallback_todo[1], v, family, v.protocol)
        for text, lineno in real_todo:
            self.real(v, text, lineno)
        return v, i

    def resolve_virtual(self, v: LdVirtual, ip_port: tuple[str, str]) -> None:
        host, port_text = ip_port
        address = self.resolver.host(host, v.family)
        if address is None:
            self.error(v.line, "virtual", f"invalid address for virtual service: cannot resolve {quote(host)}")
            return
        if address != host.strip("[]"):
            v.host_name = host
        port = self.port(port_text, v.protocol)
        if port is None or not 1 <= port <= 65535:
            self.error(v.line, "virtual", f"invalid port for virtual service: {quote(port_text)}")
            return
        v.address, v.port = address, port

    def port(self, text: str, protocol: str) -> int | None:
        """ldirectord's ``ld_getservbyname``: digits 0..65535 as they are, else a service name."""
        if text.isdigit():
            return int(text) if int(text) < 65536 else None
        return self.resolver.port(text, protocol if protocol in ("tcp", "udp") else "")

    def virtual_option(self, v: LdVirtual, cmd: str, line: int) -> None:
        m = re.match(r"([a-z0-9_-]+)\s*=\s*(.*)", cmd)
        if m is None:
            self.error(line, cmd.split("=")[0].strip(), f"unknown command {quote(cmd)}")
            return
        name, value = m.group(1), m.group(2)
        opts = v.options

        def store(val: str) -> None:
            opts[name] = (val, line)

        if name in _V_QUOTED:
            q = re.match(r'"(.*)"', value)
            if q is None:
                self.error(line, name, f"unknown command {quote(cmd)} (the value must be in double quotes)")
            elif not q.group(1):
                self.error(line, name, _V_QUOTED[name])
            elif name == "request" and not q.group(1).startswith("/"):
                store("/" + q.group(1))
            else:
                store(q.group(1))
        elif name == "checktype":
            dm = re.search(r"(\d+)", value)
            wm = re.match(r"([\w-]+)", value)
            if dm:
                store(dm.group(1))
            elif wm and wm.group(1) in CHECKTYPES:
                store(wm.group(1))
            else:
                self.error(
                    line,
                    name,
                    'checktype must be "connect", "negotiate", "on", "off", "ping", "external", '
                    '"external-perl" or a positive number',
                )
        elif name in ("checkcommand", "fallbackcommand"):
            q = re.match(r'"(.*)"', value)
            text = q.group(1) if q else value
            if not text:
                self.error(line, name, f"invalid {name}")
            else:
                store(text)
        elif name == "connecttimeout":
            self.error(line, name, "connecttimeout is deprecated in favour of negotiatetimeout (ldirectord refuses it)")
        elif name in _V_POSITIVE:
            number = _positive(value)
            if number is None:
                self.error(line, name, _V_POSITIVE[name])
            else:
                store(str(number))
        elif name == "checkport":
            dm = re.search(r"(\d+)", value)
            if dm is None:
                self.error(line, name, "invalid port")
            elif not 0 < int(dm.group(1)) < 65536:
                self.error(line, name, "checkport must be in range 1..65535")
            else:
                store(dm.group(1))
        elif name == "load":
            q = re.match(r'"(.*)"', value)
            if q is None or not re.search(r"\w+", q.group(1)):
                self.error(line, name, "invalid string for load testing")
            else:
                store(q.group(1))
        elif name == "scheduler":
            sm = re.search(r"([a-z]+)", value)
            if sm is None:
                self.error(line, name, "invalid scheduler, should be only lowercase letters (a-z)")
            else:
                store(sm.group(1))
        elif name == "persistent":
            dm = re.search(r"(\d+)", value)
            if dm is None:
                self.error(line, name, "invalid persistent timeout")
            else:
                store(dm.group(1))
        elif name == "schedflags":
            sm = re.search(r"(\S+)", value)
            if sm is None:
                self.error(line, name, "invalid sched-flags")
            else:
                store(sm.group(1))
        elif name == "netmask":
            if v.family == socket.AF_INET6:
                if not re.fullmatch(r"\d+", value) or not 1 <= int(value) <= 128:
                    self.error(line, name, "invalid netmask: a prefix length between 1 and 128 is required")
                    return
            elif not re.fullmatch(r"\d+\.\d+\.\d+\.\d+", value):
                self.error(line, name, "invalid netmask: dotted quad notation is required")
                return
            store(value)
        elif name == "protocol":
            wm = re.search(r"(\w+)", value)
            if wm is None:
                self.error(line, name, "invalid protocol")
            elif v.protocol == "fwm":
                if wm.group(1) != "fwm":
                    self.error(line, name, "protocol must be fwm if the virtual service is a fwmark (a number)")
            elif wm.group(1) in ("tcp", "udp"):
                v.protocol = wm.group(1)
                store(wm.group(1))
            else:
                self.error(line, name, "protocol must be tcp or udp if the virtual service is an address and port")
        elif name in ("ops", "quiescent", "cleanstop"):
            if value not in _YES_NO:
                self.error(line, name, f"{name} must be 'yes' or 'no'")
            else:
                store(value)
        elif name == "service":
            wm = re.search(r"(\w+)", value)
            if wm is None or wm.group(1) not in SERVICES:
                self.error(line, name, f"service must be one of {', '.join(sorted(SERVICES))}")
            else:
                store(wm.group(1))
        elif name == "httpmethod":
            wm = re.search(r"(\w+)", value)
            if wm is None or wm.group(1).upper() not in ("GET", "HEAD"):
                self.error(line, name, "httpmethod must be GET or HEAD")
            else:
                store(wm.group(1).upper())
        elif name == "virtualhost":
            store(re.match(r'"?([^"]*)"?', value).group(1))
        elif name == "emailalert":
            self.email(value, line, opts)
        elif name == "emailalertfreq":
            if not re.match(r"\d+", value):
                self.error(line, name, "invalid email alert frequency")
            else:
                store(re.match(r"\d+", value).group(0))
        elif name == "emailalertstatus":
            if self.email_status(value, line):
                store(value)
        elif name == "monitorfile":
            q = re.match(r'"(.*)"', value)
            store(q.group(1) if q else value)
        elif name == "smtp":
            if not re.match(r"[0-9A-Za-z._+-]+", value):
                self.error(line, name, "invalid SMTP server address")
            else:
                store(value)
        elif name == "servicename":
            store(value)
        elif name == "comment":
            v.comments.append(value)
            store(value)
        else:
            self.error(line, name, f"unknown command {quote(cmd)}")

    # -- real and fallback servers

    def host(self, text: str, family: int, line: int, directive: str, what: str) -> str | None:
        name = text[1:-1] if text.startswith("[") and text.endswith("]") else text
        address = self.resolver.host(name, family)
        if address is None:
            fam = "IPv6" if family == socket.AF_INET6 else "IPv4"
            self.error(line, directive, f"invalid {fam} address or unresolvable host name for {what}: {quote(text)}")
        return address

    def fallback(self, text: str, line: int, v: LdVirtual | None, family: int, protocol: str) -> LdFallback | None:
        """ldirectord's ``parse_fallback`` and ``_ld_read_config_fallback_resolve``."""
        directive = "fallback6" if family == socket.AF_INET6 else "fallback"
        parse_line, fwd = text, None
        m = re.search(r"(\S+)(\s+(\S+))?\s*$", parse_line)
        if m:
            fwd, parse_line = m.group(3), m.group(1)
        pm = re.search(r"(:(\d+|[A-Za-z0-9-_]+))?$", parse_line)
        port_text = pm.group(2) if pm else None
        server = parse_line[: pm.start()] if pm else parse_line
        if not server:
            self.error(line, directive, f"invalid fallback server: {quote(text)}")
            return None
        if fwd and fwd not in FORWARD_NAMES:
            self.error(line, directive, "forward method must be gate, masq or ipip")
            return None
        address = self.host(server, family, line, directive, "the fallback server")
        if address is None:
            return None
        port: int | None
        if port_text is None:
            port = v.port if v is not None else None
        else:
            port = self.port(port_text, protocol)
            if port is None:
                self.error(line, directive, f"invalid port for fallback server: {quote(port_text)}")
                return None
        return LdFallback(
            address=address,
            port=port,
            forward=fwd or "gate",
            line=line,
            name=server if address != server.strip("[]") else "",
        )

    def real(self, v: LdVirtual, text: str, line: int) -> None:
        """ldirectord's ``_ld_read_config_real_resolve``, ``add_real_server_range`` and ``add_real_server``."""
        directive = "real6" if v.family == socket.AF_INET6 else "real"
        m = _REAL.search(text)
        if m is None:
            self.error(line, directive, "invalid address for real server (wrong format)")
            return
        first, last, port_text, flags = m.group(1), m.group(3), m.group(5) or "0", m.group(6)
        ip1 = self.host(first, v.family, line, directive, "the real server")
        if ip1 is None:
            return
        port = self.port(port_text, "")
        if port is None:
            self.error(line, directive, f"invalid port ({port_text}) for real server (could not resolve port)")
            return
        parsed = self.real_flags(flags, line, directive)
        if parsed is None:
            return
        addresses = [ip1]
        if last is not None:
            ip2 = self.host(last, v.family, line, directive, "the end of the real server range")
            if ip2 is None:
                return
            if v.family == socket.AF_INET6:
                self.error(line, directive, "address ranges are not supported for IPv6 (ldirectord refuses them)")
                return
            a, b = int(ipaddress.IPv4Address(ip1)), int(ipaddress.IPv4Address(ip2))
            if a > b:
                self.error(line, directive, f"invalid range {ip1}->{ip2}: the first address must not be above the last")
                return
            if b - a + 1 > MAX_REAL_RANGE:
                self.error(
                    line,
                    directive,
                    f"range {ip1}->{ip2} has {b - a + 1} addresses; at most "
                    f"{MAX_REAL_RANGE} are converted (list larger sets as several ranges)",
                )
                return
            addresses = [str(ipaddress.IPv4Address(x)) for x in range(a, b + 1)]
        if self.reals + len(addresses) > MAX_REALS:
            self.error(line, directive, f"more than {MAX_REALS} real servers in the file: not converted")
            return
        self.reals += len(addresses)
        for address in addresses:
            forward, weight, request, receive, low, high = parsed
            v.reals.append(
                LdReal(
                    address=address,
                    port=port,
                    forward=forward,
                    weight=weight,
                    line=line,
                    request=request,
                    receive=receive,
                    l_threshold=low,
                    u_threshold=high,
                    name=first if last is None and address != first.strip("[]") else "",
                )
            )

    def real_flags(self, flags: str, line: int, directive: str):
        """``gate|masq|ipip [WEIGHT] ["REQUEST", "RECEIVE"] [l:N] [u:N]`` as ``add_real_server`` reads it."""
        fm = re.search(r"(\w+)(.*)", flags)
        if fm is None or fm.group(1) not in FORWARD_NAMES:
            self.error(line, directive, "forward method must be gate, masq or ipip")
            return None
        forward, rest = fm.group(1), fm.group(2)
        weight = 1
        if wm := re.search(r"\s+(\d+)(.*)", rest):
            weight, rest = int(wm.group(1)), wm.group(2)
        request = receive = None
        if qm := re.search(r'\s+"(.*)"[, ]\s*"(.*)"(.*)', rest):
            request, receive, rest = qm.group(1), qm.group(2), qm.group(3)
            if not request.startswith("/"):
                request = "/" + request
        low = high = 0
        if lm := re.search(r"\s+l:(\d+)(.*)", rest):
            low, rest = int(lm.group(1)), lm.group(2)
        if um := re.search(r"\s+u:(\d+)(.*)", rest):
            high, rest = int(um.group(1)), um.group(2)
        if re.search(r"\S", rest):
            self.error(line, directive, f"invalid real server line, around {quote(rest.strip())}")
            return None
        return forward, weight, request, receive, low, high


def parse_ldirectord(text: str, issues: Issues, resolver: Resolver | None = None) -> LdConfig:
    """Read ldirectord.cf ``text`` as ldirectord 4.12 does.

    Args:
        text: the file's content.
        issues: collector (its ``file`` names the input in messages); every
            error ldirectord would stop on is added to it (parsing goes on, so
            that all of them are reported at once).
        resolver: host and service name resolution; default `StaticResolver`
            (address literals and common service names only).

    Returns:
        the parsed `LdConfig` (meaningful only when no error was added).
    """
    return _Parser(text, issues, resolver or StaticResolver()).parse()
