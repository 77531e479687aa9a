"""ldirectord's virtual services in directord's terms (pure: `LdConfig` in, service mappings out).

Each ldirectord virtual becomes one ``virtual_services`` entry of
``etc/directord.yaml``.  What ldirectord does with a directive is taken from
its code (``ld_setup``, ``_check_real``, ``check_http``, ``check_connect``,
``check_external``, ``_remove_service``, ``fallback_find`` in
``/usr/sbin/ldirectord`` 4.12):

* checks run every ``checkinterval`` seconds (global; a virtual's own value
  only counts with ``fork=yes``), bring a real server up after one success
  (``rise: 1``) and down after ``failurecount`` failures (``fall``), each
  ``checkinterval`` apart (so with ``fall`` above 1 the converted check sets
  ``retry_interval`` to the interval: directord's shorter default would
  confirm a failure sooner than ldirectord does);
* ``checktimeout`` bounds connect and external checks, ``negotiatetimeout``
  the negotiate (HTTP/HTTPS) checks; each defaults to the other, then to 5 s
  and 30 s;
* the HTTP(S) check (LWP) counts any 2xx answer as success (``is_success``)
  with the ``receive`` regular expression searched in the body and sends
  ``Host: virtualhost`` (default the real server's address); for HTTPS it
  verifies the certificate chain but not the name (its user agent sets
  ``verify_hostname => 0``, which leaves IO::Socket::SSL's ``SSL_verify_mode``
  at ``SSL_VERIFY_PEER``: a self-signed backend fails with "certificate verify
  failed"), which is ``verify_tls: chain``;
* every other negotiate check becomes its directord counterpart
  (`_Translator.negotiate`): dns, radius, sip, mysql, pgsql and oracle checks of their
  own type, ldap/ldaps an ``ldap`` check (bind and base search), ftp with a receive pattern
  an ``ftp`` check (login and download), smtp/submission/ftp/pop/pops/imap/imaps/nntp a ``tcp``
  check with the dialogue of ldirectord's Perl client (`checks.protocols.dialogue.ldirectord_dialogue`,
  also simpletcp's request and receive pattern and sip over TCP); ``checktype=ping``, and
  ``connect`` on a UDP service (which ldirectord runs as ``check_ping``), an ICMP echo.  What
  directord cannot check as ldirectord does (http_proxy's fetch, a receive
  pattern RE2 cannot compile) becomes a weaker check, listed as such (`Issues.weaker`);
* a real server found down is deleted from the table unless ``quiescent`` is
  ``yes`` (then weight 0): the code's default is ``no``, the manual's ``yes``;
  a fallback server is always deleted when a real server comes back;
* a fallback server has weight 1; the global ``fallback`` applies to tcp and
  udp virtuals without their own (its port defaults to the virtual's) and
  never to fwmark virtuals (``fallback_find`` looks it up by protocol);
* with ``gate`` and ``ipip`` the kernel keeps the virtual port (ipvsadm sets
  the destination port to it), while the check still goes to the port
  written on the ``real`` line (``ld_checkport``).
"""

from __future__ import annotations

import ipaddress
import socket
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from checks.protocols.dialogue import LDIRECTORD_IMPLICIT_TLS, SettingError, ldirectord_dialogue
from checks.protocols.sql import oracle_database_problem
from director.config import quote, re2_problem
from director.config.builder import CHECK_TYPES_BY_PROTOCOL
from director.convert.issues import Issues
from director.convert.ldirectord import (
    FORWARD_NAMES,
    SERVICE_PORTS,
    LdConfig,
    LdFallback,
    LdReal,
    LdVirtual,
    port_to_service,
)
from director.model import SCHEDULERS

__all__ = ["DEFAULTS", "EMAIL_ALERT", "HTTP_SUCCESS", "ServiceOut", "translate_services"]

#: Why ldirectord's e-mail alert directives are not converted, and what to use instead.
EMAIL_ALERT = (
    "directord sends no e-mail itself; a notify hook can: see the example hook etc/hooks/email-alert "
    "and README.md, Migrating from ldirectord + heartbeat"
)

#: ldirectord's defaults (``set_defaults``; timeouts in seconds).
DEFAULTS = {
    "checkinterval": 10,
    "checktimeout": 5,  # $DEFAULT_CHECKTIMEOUT
    "negotiatetimeout": 30,  # $DEFAULT_NEGOTIATETIMEOUT
    "failurecount": 1,
    "quiescent": "no",
    "readdquiescent": "no",
    "cleanstop": "yes",
    "fork": "no",
    "scheduler": "wrr",
}

#: The 2xx status codes registered with IANA (RFC 9110 section 15.3, RFC 4918, RFC 5842, RFC 3229):
#: LWP's ``is_success`` accepts any 2xx, directord lists the codes it accepts.
HTTP_SUCCESS = [200, 201, 202, 203, 204, 205, 206, 207, 208, 226]


#: The check directives each ldirectord negotiate check reads (``check_*`` in ``/usr/sbin/ldirectord``).
_LD_USES: dict[str, frozenset[str]] = {
    "http": frozenset({"request", "receive", "httpmethod", "virtualhost"}),
    "https": frozenset({"request", "receive", "httpmethod", "virtualhost"}),
    "http_proxy": frozenset({"request", "receive", "httpmethod"}),
    "dns": frozenset({"request", "receive"}),
    "simpletcp": frozenset({"request", "receive"}),
    "ftp": frozenset({"request", "receive", "login", "passwd"}),
    "ldap": frozenset({"request", "receive", "login", "passwd"}),
    "ldaps": frozenset({"request", "receive", "login", "passwd"}),
    "pop": frozenset({"login", "passwd"}),
    "pops": frozenset({"login", "passwd"}),
    "imap": frozenset({"login", "passwd"}),
    "imaps": frozenset({"login", "passwd"}),
    "radius": frozenset({"login", "passwd", "secret"}),
    "sip": frozenset({"login"}),
    "mysql": frozenset({"request", "login", "passwd", "database"}),
    "pgsql": frozenset({"request", "login", "passwd", "database"}),
    "oracle": frozenset({"request", "login", "passwd", "database"}),
}
#: The directives of `_LD_USES` the converted check carries (a receive pattern RE2 cannot take
#: is named by the weaker-check warning instead).
_CONVERTED: dict[str, frozenset[str]] = {
    **{name: uses for name, uses in _LD_USES.items() if name != "http_proxy"},
}


def _yaml_steps(steps: tuple[tuple[str, str], ...]) -> list[dict[str, str]]:
    """Dialogue steps as the YAML ``dialogue`` list writes them: one mapping of one key each."""
    return [{kind: text} for kind, text in steps]


@dataclass
class ServiceOut:
    """One converted virtual service: YAML comments to put above it, and its mapping.

    ``credentials``: the check carries a password or a RADIUS secret (the output file is then
    written readable by its owner only).
    """

    comments: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    credentials: bool = False


def _family_of(address: str) -> int:
    return socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET


class _Translator:
    def __init__(self, cfg: LdConfig, issues: Issues) -> None:
        self.cfg = cfg
        self.issues = issues
        self.names: set[str] = set()
        self.service_name = "none"
        self.base_fields: dict[str, Any] = {}  # the virtual's request_fields, which a real's pair overrides
        self.negotiated = True  # the virtual's checktype is negotiate (or N: negotiate every time)

    def g(self, name: str) -> str:
        value = self.cfg.opt(name)
        return str(DEFAULTS[name]) if value is None else value

    # -- whole file

    def run(self) -> list[ServiceOut]:
        return [self.service(v) for v in self.cfg.virtuals]

    # -- one virtual

    def service(self, v: LdVirtual) -> ServiceOut:
        out = ServiceOut()
        out.comments.append(f"line {v.line}: {v.header}")
        out.comments.extend(v.comments)
        d = out.data
        name = v.opt("servicename")
        if name is not None and name.strip():
            name = name.strip()
            if name in self.names:
                self.issues.note(
                    v.opt_line("servicename"),
                    "servicename",
                    f"name {quote(name)} is already used by another virtual; the service gets a numbered name",
                )
                k = 2
                while f"{name} ({k})" in self.names:
                    k += 1
                name = f"{name} ({k})"
            self.names.add(name)
            d["name"] = name
        if v.fwmark is not None:
            d["fwmark"] = v.fwmark
            d["family"] = "inet6" if v.family == socket.AF_INET6 else "inet"
        else:
            d["address"] = v.address
            d["port"] = v.port
            d["protocol"] = v.protocol
            if v.host_name:
                self.issues.note(
                    v.line,
                    "virtual",
                    f"host name {quote(v.host_name)} resolved now to {v.address} "
                    "(ldirectord resolves it at each start)",
                )
        scheduler = v.opt("scheduler") or DEFAULTS["scheduler"]
        if scheduler not in SCHEDULERS:
            self.issues.error(
                v.opt_line("scheduler"),
                "scheduler",
                f"unknown scheduler {quote(scheduler)} (ipvsadm would refuse it); "
                f"known: {', '.join(sorted(SCHEDULERS))}",
            )
        d["scheduler"] = scheduler
        flags = self.sched_flags(v, scheduler)
        if flags:
            d["scheduler_flags"] = flags
        forwards = Counter(FORWARD_NAMES[r.forward] for r in v.reals)
        forwarding = (
            forwards.most_common(1)[0][0] if forwards else (FORWARD_NAMES[v.fallback.forward] if v.fallback else "dr")
        )
        d["forwarding"] = forwarding
        persistence = self.persistence(v)
        if persistence is not None:
            d["persistence"] = persistence
        quiescent = v.opt("quiescent") or self.g("quiescent")
        d["on_failure"] = "quiescent" if quiescent == "yes" else "remove"
        if v.opt("ops") == "yes":
            self.issues.warn(
                v.opt_line("ops"),
                "ops",
                "one-packet scheduling is not supported by directord yet; the service is converted without it",
            )
        self.virtual_only_directives(v)
        check, per_real = self.check(v, out)
        d["check"] = check
        fallback = self.fallback(v, forwarding)
        if fallback is not None:
            d["fallback"] = fallback
        d["real_servers"] = self.reals(v, forwarding, per_real, check, fallback)
        return out

    def sched_flags(self, v: LdVirtual, scheduler: str) -> list[str]:
        text = v.opt("schedflags")
        if text is None:
            return []
        line = v.opt_line("schedflags")
        flags: list[str] = []
        for word in text.split(","):
            word = word.strip()
            generic = {"flag-1": "fallback", "flag-2": "port"}
            if word in generic and scheduler in ("sh", "mh"):
                word = f"{scheduler}-{generic[word]}"
            if word in ("sh-fallback", "sh-port", "mh-fallback", "mh-port") and word.startswith(scheduler + "-"):
                flags.append(word)
            else:
                self.issues.warn(
                    line,
                    "schedflags",
                    f"scheduler flag {quote(word)} with scheduler {scheduler} is not supported by directord; left out",
                )
        return flags

    def persistence(self, v: LdVirtual) -> dict[str, Any] | None:
        timeout = v.opt("persistent")
        netmask = v.opt("netmask")
        if timeout is None:
            if netmask is not None:
                self.issues.note(
                    v.opt_line("netmask"),
                    "netmask",
                    "netmask without persistent has no effect in ldirectord; not converted",
                )
            return None
        if int(timeout) == 0:
            self.issues.error(
                v.opt_line("persistent"),
                "persistent",
                "persistent=0: ipvsadm refuses a persistence timeout of 0 seconds",
            )
            return None
        out: dict[str, Any] = {"timeout": int(timeout)}
        if netmask is not None:
            out["netmask"] = int(netmask) if v.family == socket.AF_INET6 else netmask
        return out

    def virtual_only_directives(self, v: LdVirtual) -> None:
        for name, what in (
            ("emailalert", EMAIL_ALERT),
            ("emailalertfreq", EMAIL_ALERT),
            ("emailalertstatus", EMAIL_ALERT),
            ("smtp", EMAIL_ALERT),
            ("monitorfile", "directord logs check transitions to its log (stderr/journal), not to a monitor file"),
        ):
            if v.opt(name) is not None:
                self.issues.warn(v.opt_line(name), name, f"not converted: {what}")
        if v.opt("cleanstop") is not None:
            self.cleanstop_issue(v.opt_line("cleanstop"), v.opt("cleanstop"))
        if v.opt("load") is not None:
            self.issues.note(
                v.opt_line("load"), "load", "ldirectord 4.12 stores this value but never uses it; not converted"
            )
        if v.opt("checkcount") is not None:
            self.issues.note(
                v.opt_line("checkcount"),
                "checkcount",
                "deprecated; ldirectord 4.12 stores it but never uses it; not converted "
                "(failurecount is converted to check.fall)",
            )

    def cleanstop_issue(self, line: int, value: str | None) -> None:
        if value == "yes":
            self.issues.warn(
                line,
                "cleanstop",
                "directord leaves the IPVS table in place when it stops "
                "(cleanstop=no behaviour); cleanstop=yes is not converted",
            )
        else:
            self.issues.note(
                line, "cleanstop", "directord leaves the IPVS table in place when it stops, as cleanstop=no does"
            )

    # -- health check

    def timeouts(self, v: LdVirtual) -> tuple[int, int]:
        """(checktimeout, negotiatetimeout) in seconds, as ``ld_setup`` settles them."""

        def first(*values):
            for value in values:
                if value is not None:
                    return int(value)
            return None

        checktimeout = (
            first(
                v.opt("checktimeout"),
                v.opt("negotiatetimeout"),
                self.cfg.opt("checktimeout"),
                self.cfg.opt("negotiatetimeout"),
            )
            or DEFAULTS["checktimeout"]
        )
        negotiate = (
            first(
                v.opt("negotiatetimeout"),
                v.opt("checktimeout"),
                self.cfg.opt("negotiatetimeout"),
                self.cfg.opt("checktimeout"),
            )
            or DEFAULTS["negotiatetimeout"]
        )
        return checktimeout, negotiate

    def interval(self, v: LdVirtual) -> int:
        own = v.opt("checkinterval")
        if own is not None:
            if self.g("fork") == "yes":
                return int(own)
            self.issues.note(
                v.opt_line("checkinterval"),
                "checkinterval",
                "ldirectord ignores a virtual's checkinterval when fork=no; the global "
                f"checkinterval ({self.g('checkinterval')} s) is used, as ldirectord does",
            )
        return int(self.g("checkinterval"))

    # -- health check: what ldirectord's check of each service type becomes

    def label(self, v: LdVirtual) -> str:
        """How the weaker-check list names a virtual: ``servicename (VIP:PORT/PROTO)``, its
        address alone, or ``fwmark N``; then the ldirectord service type."""
        if v.fwmark is not None:
            where = f"fwmark {v.fwmark}"
        elif v.family == socket.AF_INET6:
            where = f"[{v.address}]:{v.port}/{v.protocol}"
        else:
            where = f"{v.address}:{v.port}/{v.protocol}"
        name = (v.opt("servicename") or "").strip()
        where = f"{name} ({where})" if name else where
        return f"{where}, service {self.service_name}"

    def weaker(self, v: LdVirtual, ldirectord: str, directord: str) -> None:
        """Record that directord checks ``v``'s real servers less than ldirectord (see `Issues.weaker`)."""
        self.issues.weaker(v.line, self.label(v), ldirectord, directord)

    def receive_usable(self, v: LdVirtual, receive: str, line: int, what: str, instead: str) -> bool:
        """Whether ldirectord's ``receive`` pattern (a Perl regular expression) can be matched by directord.

        directord's checker matches with RE2 (`director.config.re2_problem`);
        a pattern RE2 cannot compile (backreferences, lookaround...) is left
        out and the virtual is listed as checked less than by ldirectord
        (``what``: where ldirectord matches it; ``instead``: what directord
        then checks).
        """
        problem = re2_problem(receive)
        if problem is None:
            return True
        self.weaker(
            v,
            f"matches the receive pattern {quote(receive)} (line {line}) on {what}",
            f"{instead}: the pattern {problem}",
        )
        return False

    def request_fields(
        self, v: LdVirtual, service: str, request: str, receive: str, line: int, directive: str
    ) -> dict[str, Any]:
        """The check fields that ldirectord's ``request``/``receive`` pair decides for ``service``.

        ``request`` is as stored by the parser (with its leading ``/``),
        ``receive`` ``""`` when unset; ``line``/``directive`` say where the
        pair was written (the virtual's ``request`` or a ``real`` line, whose
        pair overrides the virtual's, as in ``ld_setup``).  Keys with ``None``
        are left out of the check.  Services whose ldirectord check does not
        use the pair (or whose use directord cannot express) give ``{}``.
        """
        if service in ("http", "https"):
            if "://" in request:
                path = "/" + request.split("://", 1)[1].partition("/")[2]
                self.issues.warn(
                    line,
                    directive,
                    f"the request {quote(request)} is a whole URL; directord "
                    f"checks the real server itself with path {quote(path)}",
                )
                request = path
            usable = bool(receive) and self.receive_usable(v, receive, line, "the body", "checks the status only")
            return {"path": request, "expect_body": receive if usable else None}
        if service == "dns":
            return self.dns_fields(v, request, receive, line, directive)
        if service == "simpletcp":
            if receive and not self.receive_usable(v, receive, line, "each line of the reply", "accepts any reply"):
                receive = ""  # an empty receive matches any line
            try:
                steps = ldirectord_dialogue(service, "", "", request, receive) or ()
            except SettingError as err:
                self.issues.error(line, directive, str(err))
                return {}
            if v.protocol == "udp":  # the same datagram and pattern, without a connection
                return {"send": "".join(text for kind, text in steps if kind == "send"), "expect": steps[-1][1]}
            return {"dialogue": _yaml_steps(steps)}
        if service in ("mysql", "pgsql", "oracle"):
            return {"query": request[1:] if request.startswith("/") else request}
        if service == "ftp" and receive:
            usable = self.receive_usable(v, receive, line, "the downloaded file", "downloads it only")
            return {"query": request, "expect": receive if usable else None}
        if service in ("ldap", "ldaps"):
            usable = bool(receive) and self.receive_usable(v, receive, line, "the entry's DN", "finds the entry only")
            return {"query": request[1:], "expect": receive if usable else None}
        return {}

    def dns_fields(self, v: LdVirtual, request: str, receive: str, line: int, directive: str) -> dict[str, Any]:
        """``check_dns``: Net::DNS's ``search(request)`` (type A; a PTR query when the request
        is an address; the root when empty), up when an A record's address or a PTR record's
        name matches ``receive``.  directord's ``expect`` is searched in the answer section as
        zone-file text (``NAME TTL CLASS TYPE DATA`` per record), where the data is last on its
        line: a receive anchored with ``^``/``$`` is anchored to the data's start/its line's end."""
        name = request[1:] if request.startswith("/") else request
        fields: dict[str, Any] = {"query_name": name or ".", "query_type": "A", "expect": None}
        try:
            address = ipaddress.ip_address(name)
        except ValueError:
            pass
        else:
            fields["query_name"], fields["query_type"] = address.reverse_pointer + ".", "PTR"
        if not receive:
            self.issues.warn(
                line,
                directive,
                "no receive pattern: ldirectord's dns check then never succeeds (it needs an A or PTR "
                "record matching it); directord accepts any answer with rcode NOERROR",
            )
            return fields
        if self.receive_usable(v, receive, line, "the answer's A addresses and PTR names", "accepts any answer"):
            pattern = receive
            anchored_end = pattern.endswith("$") and not pattern.endswith("\\$")
            if pattern.startswith("^"):
                pattern = r"\s(?:" + pattern[1 : -1 if anchored_end else None] + ")"
            elif anchored_end:
                pattern = "(?:" + pattern[:-1] + ")"
            if anchored_end:
                pattern = "(?m)" + pattern + r"\.?$"
            fields["expect"] = pattern
        return fields

    def check(self, v: LdVirtual, out: ServiceOut) -> tuple[dict[str, Any], bool]:
        """The service's ``check`` mapping; second value: whether a real server's own
        request/receive pair changes its check (``ld_setup``: the pair overrides the virtual's)."""
        checktype = v.opt("checktype") or "negotiate"
        ct_line = v.opt_line("checktype")
        explicit_service = v.opt("service")
        if explicit_service is not None:
            service = explicit_service
        elif v.fwmark is not None:
            service = "none"
        else:
            service = port_to_service(v.port)
        self.service_name = service
        checktimeout, negotiatetimeout = self.timeouts(v)
        fall = int(v.opt("failurecount") or self.g("failurecount"))
        check: dict[str, Any] = {}
        per_real = False
        self.base_fields = {}

        if checktype.isdigit():
            self.issues.warn(
                ct_line,
                "checktype",
                f"checktype={checktype} (connect checks with a negotiate check "
                "every N times): directord runs the negotiate check every time",
            )
            checktype = "negotiate"
        self.negotiated = checktype == "negotiate"
        comments = len(out.comments)
        if checktype == "negotiate":
            per_real = self.negotiate(v, service, check, out, checktimeout, negotiatetimeout)
        elif checktype == "connect":
            if v.protocol == "udp":
                check["type"] = "ping"
                check["timeout"] = checktimeout
                self.issues.note(
                    ct_line,
                    "checktype",
                    "checktype=connect on a UDP service: ldirectord pings the real server "
                    "(check_ping), so the check is an ICMP echo (check type ping)",
                )
                self.ping_note(v)
            else:
                check["type"] = "tcp"
                check["timeout"] = checktimeout
        elif checktype == "ping":
            check["type"] = "ping"
            check["timeout"] = checktimeout
            self.ping_note(v)
        elif checktype == "external":
            command = v.opt("checkcommand") or "/bin/true"
            check["type"] = "external"
            check["command"] = [command]
            check["timeout"] = checktimeout
            if any(c.isspace() for c in command):
                self.issues.warn(
                    v.opt_line("checkcommand"),
                    "checkcommand",
                    "ldirectord executes the whole value as one program name (no shell, no "
                    "arguments); kept as one program name",
                )
            out.comments.append(
                "external check: directord passes VIP, virtual port, real server and checked "
                "port, ldirectord the real server's own port as the fourth argument"
            )
        elif checktype == "external-perl":
            command = v.opt("checkcommand") or "/bin/true"
            check["type"] = "external"
            check["command"] = ["/usr/bin/perl", command]
            check["timeout"] = checktimeout
            self.issues.warn(
                ct_line,
                "checktype",
                f"external-perl runs inside ldirectord; converted to an external check running /usr/bin/perl {command}",
            )
        elif checktype == "on":
            check["type"] = "none"
        elif checktype == "off":
            check["type"] = "external"
            check["command"] = ["/bin/false"]
            check["timeout"] = checktimeout
            out.comments.append(
                "checktype=off: ldirectord never brings a real server up (the fallback server "
                "serves); an always failing check does the same"
            )
        allowed = CHECK_TYPES_BY_PROTOCOL.get(v.protocol)
        if allowed is not None and check["type"] not in allowed:
            # ldirectord's stream-socket checks (Net::SMTP, DBI...) on a UDP virtual, or its
            # UDP RADIUS check on a TCP one: directord runs a check on the service's own protocol.
            self.weaker(
                v,
                f"runs its {service} check over {'TCP' if v.protocol == 'udp' else 'UDP'}",
                f"pings the real server (ICMP echo): a {v.protocol.upper()} virtual service takes "
                f"check types {', '.join(allowed)}",
            )
            check.clear()
            del out.comments[comments:]  # they described the check that is not kept
            check["type"] = "ping"
            check["timeout"] = checktimeout
            per_real = False
        self.unused_directives(v, service, checktype)
        port = v.opt("checkport")
        if port is not None and check["type"] not in ("none", "ping"):
            check["port"] = int(port)
        elif v.fwmark is not None and check["type"] not in ("none", "ping"):
            known = SERVICE_PORTS.get(service)
            real_ports = {r.port for r in v.reals}
            if len(real_ports) == 1 and 0 not in real_ports:
                check["port"] = real_ports.pop()
            elif 0 not in real_ports and real_ports:
                check["port"] = min(real_ports)  # each real overrides it with its own port
            elif known is not None:
                check["port"] = known
            else:
                self.issues.error(
                    v.line,
                    "checkport",
                    "fwmark virtual with real servers without port and no checkport: "
                    "say which port to check with checkport=",
                )
        check["interval"] = self.interval(v)
        check["rise"] = 1
        check["fall"] = fall
        if fall > 1:
            check["retry_interval"] = check["interval"]
        order = (
            "type",
            "port",
            "interval",
            "retry_interval",
            "timeout",
            "rise",
            "fall",
            "method",
            "path",
            "host",
            "expect_status",
            "expect_body",
            "tls",
            "verify_tls",
            "dialogue",
            "send",
            "expect",
            "query_name",
            "query_type",
            "transport",
            "login",
            "password",
            "secret",
            "database",
            "query",
            "command",
        )
        return {k: check[k] for k in order if k in check}, per_real

    def ping_note(self, v: LdVirtual) -> None:
        """``check_ping`` sends up to ``checkcount`` echoes, each waiting ``checktimeout``."""
        count = v.opt("checkcount") or self.cfg.opt("checkcount")
        if count is not None and int(count) > 1:
            line = v.opt_line("checkcount") if v.opt("checkcount") is not None else self.cfg.opt_line("checkcount")
            self.issues.note(
                line,
                "checkcount",
                f"ldirectord's ping check sends up to {count} echoes, each waiting checktimeout; "
                "directord sends one per check and counts failed checks with fall",
            )

    def negotiate(
        self,
        v: LdVirtual,
        service: str,
        check: dict[str, Any],
        out: ServiceOut,
        checktimeout: int,
        negotiatetimeout: int,
    ) -> bool:
        """Fill ``check`` with the counterpart of ldirectord's negotiate check of ``service``
        (``_check_real``'s dispatch); return whether a real server's own request/receive pair
        changes it.  Timeouts are the ones each ldirectord check uses (``negotiatetimeout``,
        ``checktimeout`` for the RADIUS alarm)."""
        request = v.opt("request") or "/"
        receive = v.opt("receive") or ""
        where = (v.opt_line("request") if v.opt("request") is not None else v.opt_line("receive"), "request")
        login = v.opt("login") or ""
        passwd = v.opt("passwd") or ""
        check["timeout"] = negotiatetimeout
        stream = v.protocol != "udp"  # ld_open_socket: a stream socket unless the virtual is UDP
        per_real = service in ("http", "https", "dns", "simpletcp", "mysql", "pgsql", "oracle", "ftp", "ldap", "ldaps")
        if service in ("http", "https"):
            check["type"] = service
            check["method"] = v.opt("httpmethod") or "GET"
            host = v.opt("virtualhost")
            if host:
                check["host"] = host
            check["expect_status"] = HTTP_SUCCESS
            if service == "https":
                check["verify_tls"] = "chain"
                out.comments.append(
                    "https check: the certificate must chain to a trusted CA, its name is not compared, "
                    "as ldirectord's LWP check does (verify_hostname => 0)"
                )
            out.comments.append(
                f"{service} check: any 2xx answer counts, as for ldirectord (LWP); "
                "ldirectord's LWP also follows redirects, directord does not"
            )
        elif service == "none":
            check["type"] = "none"
            check.pop("timeout")
            out.comments.append("service none: ldirectord's negotiate check always succeeds (check_none)")
        elif service == "dns":
            check["type"] = "dns"
            check["transport"] = "tcp" if v.protocol == "tcp" else "udp"  # check_dns: usevc for tcp only
        elif service == "radius":
            secret = v.opt("secret")
            if not secret:
                self.issues.error(
                    v.line,
                    "secret",
                    "a radius check without secret: ldirectord signs its Access-Request with an empty "
                    "secret, which a RADIUS server drops, so its check never succeeds; write the "
                    "server's shared secret with secret=",
                )
            check["type"] = "radius"
            check["timeout"] = checktimeout  # check_radius: alarm checktimeout around the request
            check["login"], check["password"], check["secret"] = login, passwd, secret or ""
            out.credentials = True
        elif service == "sip":
            if stream:
                check["type"] = "tcp"
                check["dialogue"] = self.dialogue(v, "sip", login, passwd, request, receive)
            else:
                check["type"] = "sip"
                if login:
                    check["login"] = login
                check["expect"] = r"^SIP/2\.0 200 OK"
            if not login:
                self.issues.note(
                    v.line,
                    "login",
                    "sip without login: ldirectord asks for sip:ldirectord@HOSTNAME when service=sip is "
                    "written (sip: with nothing otherwise); directord asks for its own default URI",
                )
        elif service in ("mysql", "pgsql", "oracle"):
            if not login or request in ("", "/"):
                self.issues.error(
                    v.line,
                    "login" if not login else "request",
                    f"{'an' if service == 'oracle' else 'a'} {service} check needs login= and request= (the "
                    "query): without them "
                    "ldirectord's check never succeeds (check_sql: 'Must specify a login and request "
                    "string'); write both",
                )
            check["type"] = service
            check["login"] = login
            if passwd:
                check["password"] = passwd
                out.credentials = True
            database = v.opt("database")
            if database:
                check["database"] = database
            if service == "oracle":
                # check_oracle: dbi:Oracle:sid=DATABASE (an empty SID when unset, which no listener serves)
                problem = oracle_database_problem(database)
                if not database:
                    problem = (
                        "an oracle check needs database=: ldirectord connects with sid=DATABASE, and no listener "
                        "serves an empty SID; write the instance's SID"
                    )
                if problem is not None:
                    self.issues.error(v.opt_line("database") if database else v.line, "database", problem)
            out.comments.append(
                f"{service} check: ldirectord counts a real server up when the query returns at least one row"
            )
        elif service == "simpletcp":
            check["type"] = "tcp" if stream else "udp"
            if stream:
                out.comments.append(
                    "simpletcp check: ldirectord also half-closes the connection after sending the "
                    "request (shutdown SHUT_WR); directord keeps it open until the reply matches"
                )
        elif service == "ftp" and receive:
            # check_ftp: Net::FTP logs in, fetches the request in passive mode and matches receive
            # on what arrived; the ftp check does that on its own data connection
            check["type"] = "ftp"
            check["login"] = login or "anonymous"
            if passwd:
                check["password"] = passwd
                out.credentials = True
            out.comments.append(
                "ftp check: log in, download the request (first 64 KiB) and match receive on it, as "
                "ldirectord's check_ftp; a failed login fails the check (ldirectord only looks at the download)"
            )
        elif service in ("smtp", "submission", "ftp", "pop", "pops", "imap", "imaps", "nntp"):
            check["type"] = "tcp"
            if service in LDIRECTORD_IMPLICIT_TLS:
                check["tls"] = True
                check["verify_tls"] = "full"
                out.comments.append(
                    f"{service}: TLS from the first byte; the certificate must chain to a trusted CA and "
                    "name the real server's address, as IO::Socket::SSL's defaults (ldirectord) require"
                )
            check["dialogue"] = self.dialogue(v, service, login, passwd, request, receive)
            if v.opt("passwd"):
                out.credentials = True
        elif service in ("ldap", "ldaps"):
            # check_ldap: Net::LDAP binds (as login when login and passwd are both set, else
            # anonymously), reads the entry named by the request (base scope) and matches its DN
            check["type"] = "ldap"
            if login and passwd:
                check["login"], check["password"] = login, passwd
                out.credentials = True
            if service == "ldaps":
                check["tls"] = True
                check["verify_tls"] = "none"
                out.comments.append("ldaps: TLS from the first byte, its certificate not verified (Net::LDAP)")
        else:  # http_proxy
            check["type"] = "tcp"
            self.weaker(
                v,
                f"fetches {quote(request[1:])} through the real server as an HTTP proxy",
                "connects only",
            )
        if per_real:
            base = self.request_fields(v, service, request, receive, *where)
            self.base_fields = base
            check.update({k: value for k, value in base.items() if value is not None})
        return per_real

    def dialogue(
        self, v: LdVirtual, service: str, login: str, passwd: str, request: str, receive: str
    ) -> list[dict[str, str]]:
        """The YAML ``dialogue`` of ldirectord's negotiate check of ``service``
        (`checks.protocols.dialogue.ldirectord_dialogue`); a setting it cannot carry (a login with a line
        break or NUL, text that is not Latin-1) is an error at that directive's line."""
        try:
            steps = ldirectord_dialogue(service, login, passwd, request, receive)
        except SettingError as err:
            self.issues.error(v.opt_line(err.setting), err.setting, str(err))
            return []
        assert steps is not None, service
        return _yaml_steps(steps)

    def unused_directives(self, v: LdVirtual, service: str, checktype: str) -> None:
        """Report the check directives the converted check does not carry (``_LD_USES``)."""
        negotiated = checktype == "negotiate"
        used = _LD_USES.get(service, frozenset()) if negotiated else frozenset()
        converted = _CONVERTED.get(service, frozenset()) if negotiated else frozenset()
        for name in ("request", "receive", "httpmethod", "virtualhost", "login", "passwd", "database", "secret"):
            if v.opt(name) is None or name in converted:
                continue
            line = v.opt_line(name)
            if name in used:
                self.issues.warn(
                    line,
                    name,
                    f"used by ldirectord's {service} check, which directord runs differently "
                    f"(see the weaker-check warning of line {v.line}); not converted",
                )
            else:
                what = f"{service} negotiate check" if negotiated else f"checktype={checktype}"
                self.issues.note(line, name, f"not used by ldirectord's {what} either; not converted")

    # -- fallback and real servers

    def fallback(self, v: LdVirtual, forwarding: str) -> dict[str, Any] | None:
        fb: LdFallback | None = v.fallback
        if fb is None:
            found = self.cfg.global_fallback.get(v.family)
            if found is None:
                return None
            if v.fwmark is not None:
                line = self.cfg.opt_line("fallback6" if v.family == socket.AF_INET6 else "fallback")
                self.issues.warn(
                    line,
                    "fallback",
                    f"ldirectord does not apply the global fallback to the fwmark "
                    f"virtual of line {v.line} (its lookup is per protocol tcp/udp); "
                    "not converted for it",
                )
                return None
            fb = found[v.protocol]
        port = fb.port if fb.port is not None else v.port
        method = FORWARD_NAMES[fb.forward]
        if fb.name:
            self.issues.note(fb.line, "fallback", f"host name {quote(fb.name)} resolved now to {fb.address}")
        if v.fwmark is None and method in ("dr", "tun") and port != v.port:
            self.issues.note(
                fb.line,
                "fallback",
                f"with {fb.forward} the kernel keeps the virtual port {v.port} "
                f"(ipvsadm replaces {port}); converted to port {v.port}",
            )
            port = v.port
        if any(r.address == fb.address and self.real_port(v, r) == port for r in v.reals):
            self.issues.warn(
                fb.line,
                "fallback",
                f"the fallback server {fb.address}:{port} is also a real server "
                "of this virtual; directord treats it as the real server only",
            )
            return None
        out: dict[str, Any] = {"address": fb.address}
        if port or v.fwmark is None:
            out["port"] = port
        out["weight"] = 1
        if method != forwarding:
            out["forwarding"] = method
        return out

    def real_port(self, v: LdVirtual, r: LdReal) -> int:
        """The destination port the kernel gets for ``r`` (ipvsadm's rules)."""
        if v.fwmark is not None:
            return r.port
        if FORWARD_NAMES[r.forward] in ("dr", "tun") or r.port == 0:
            return v.port
        return r.port

    def reals(
        self, v: LdVirtual, forwarding: str, per_real: bool, check: dict[str, Any], fallback: dict[str, Any] | None
    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        seen: dict[tuple[str, int], int] = {}
        directive = "real6" if v.family == socket.AF_INET6 else "real"
        for r in v.reals:
            port = self.real_port(v, r)
            if (r.address, port) in seen:
                self.issues.warn(
                    r.line,
                    directive,
                    f"real server {r.address}:{port} is already defined on line "
                    f"{seen[(r.address, port)]}; ldirectord's second ipvsadm -a "
                    "fails, so it is left out",
                )
                continue
            seen[(r.address, port)] = r.line
            if r.name:
                self.issues.note(r.line, directive, f"host name {quote(r.name)} resolved now to {r.address}")
            if v.fwmark is None and not r.port and r.forward == "masq":
                self.issues.warn(
                    r.line,
                    directive,
                    "no port with masq: ldirectord passes port 0 to ipvsadm, "
                    "which keeps it for masquerading (ipvsadm only copies the "
                    f"virtual port when none is written); converted to port {v.port}",
                )
            item: dict[str, Any] = {"address": r.address}
            if v.fwmark is None or port:
                item["port"] = port
            item["weight"] = r.weight
            method = FORWARD_NAMES[r.forward]
            if method != forwarding:
                item["forwarding"] = method
            if r.u_threshold or r.l_threshold:
                if r.l_threshold > r.u_threshold:
                    self.issues.error(
                        r.line,
                        directive,
                        f"l:{r.l_threshold} is above u:{r.u_threshold} "
                        "(the kernel refuses a lower threshold above the upper)",
                    )
                item["upper_threshold"] = r.u_threshold
                item["lower_threshold"] = r.l_threshold
            own: dict[str, Any] = {}
            checked = r.port if r.port else None
            if v.fwmark is None and r.port and port != r.port:
                self.issues.note(
                    r.line,
                    directive,
                    f"with {r.forward} the kernel keeps the virtual port {v.port}; "
                    f"the check still goes to port {r.port}, as ldirectord's does",
                )
            unported = ("none", "external", "ping")
            if checked and "port" not in check and check["type"] not in unported and checked != port:
                own["port"] = checked
            known = SERVICE_PORTS.get(self.service_name)
            if (
                not r.port
                and v.fwmark is None
                and "port" not in check
                and known
                and known != port
                and check["type"] not in unported
            ):
                self.issues.note(
                    r.line,
                    directive,
                    "no port on the real line: ldirectord checks the "
                    f"{self.service_name} port {known} (ld_checkport); "
                    "so does the conversion",
                )
                own["port"] = known
            if (
                v.fwmark is not None
                and checked
                and check.get("port") not in (None, checked)
                and v.opt("checkport") is None
                and check["type"] not in ("none", "ping")
            ):
                own["port"] = checked
            if r.request is not None or r.receive is not None:
                if per_real:
                    base = self.base_fields
                    fields = self.request_fields(
                        v, self.service_name, r.request or "/", r.receive or "", r.line, directive
                    )
                    for key in [*base, *(k for k in fields if k not in base)]:
                        if fields.get(key) != base.get(key):
                            own[key] = fields.get(key)
                elif "request" in _LD_USES.get(self.service_name, ()) and self.negotiated:
                    self.issues.warn(
                        r.line,
                        directive,
                        f"the per-real request/receive pair is used by ldirectord's {self.service_name} "
                        f"check, which directord runs differently (see the weaker-check warning of line "
                        f"{v.line}); not converted",
                    )
                else:
                    self.issues.note(
                        r.line,
                        directive,
                        "the per-real request/receive pair is not used by this service's ldirectord "
                        "check either; not converted",
                    )
            if own:
                item["check"] = own
            out.append(item)
        if not out:
            self.issues.note(
                v.line, "virtual", "no real server: the virtual service is created empty, as ldirectord does"
            )
        return out


def translate_services(cfg: LdConfig, issues: Issues) -> list[ServiceOut]:
    """directord ``virtual_services`` entries for every virtual of ``cfg``, in file order.

    Warnings, notes and errors (things directord refuses, such as an unknown
    scheduler) are added to ``issues``; the global directives are not looked
    at here except for their effect on services (see `director.convert.driver`).
    """
    return _Translator(cfg, issues).run()
