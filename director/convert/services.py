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
  with the ``receive`` regular expression searched in the body, sends
  ``Host: virtualhost`` (default the real server's address) and does not
  verify certificates;
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

from director.config import quote, re2_problem
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

#: Services whose negotiate check directord has no counterpart for.
_NO_COUNTERPART = sorted(set(SERVICE_PORTS) - {"http", "https"} | {"simpletcp"})


@dataclass
class ServiceOut:
    """One converted virtual service: YAML comments to put above it, and its mapping."""

    comments: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)


def _family_of(address: str) -> int:
    return socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET


class _Translator:
    def __init__(self, cfg: LdConfig, issues: Issues) -> None:
        self.cfg = cfg
        self.issues = issues
        self.names: set[str] = set()
        self.service_name = "none"

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

    def receive_usable(self, receive: str, line: int, directive: str) -> bool:
        """Whether ldirectord's ``receive`` pattern (a Perl regular expression) can be the ``expect_body``.

        directord's checker matches with RE2 (`director.config.re2_problem`);
        a pattern RE2 cannot compile (backreferences, lookaround...) is left
        out with a warning: the check then tests the status only.
        """
        problem = re2_problem(receive)
        if problem is None:
            return True
        self.issues.warn(
            line,
            directive,
            f"the receive pattern {quote(receive)} {problem}; left out: the HTTP check tests the status only",
        )
        return False

    def check(self, v: LdVirtual, out: ServiceOut) -> tuple[dict[str, Any], bool]:
        """The service's ``check`` mapping; second value: whether per-real request/receive apply (HTTP)."""
        checktype = v.opt("checktype") or "negotiate"
        ct_line = v.opt_line("checktype")
        explicit_service = v.opt("service")
        if explicit_service is not None:
            service, svc_line = explicit_service, v.opt_line("service")
        elif v.fwmark is not None:
            service, svc_line = "none", v.line
        else:
            service, svc_line = port_to_service(v.port), v.line
        self.service_name = service
        checktimeout, negotiatetimeout = self.timeouts(v)
        udp = v.protocol == "udp"
        fall = int(v.opt("failurecount") or self.g("failurecount"))
        check: dict[str, Any] = {}
        http = False

        def tcp_instead(line: int, directive: str, what: str, timeout: int) -> None:
            if udp:
                check["type"] = "none"
                self.issues.warn(
                    line,
                    directive,
                    f"{what} has no directord counterpart for UDP yet; the real "
                    "servers are not checked (check type none)",
                )
            else:
                check["type"] = "tcp"
                check["timeout"] = timeout
                self.issues.warn(
                    line, directive, f"{what} has no directord counterpart yet; converted to a TCP connect check"
                )

        if checktype.isdigit():
            self.issues.warn(
                ct_line,
                "checktype",
                f"checktype={checktype} (connect checks with a negotiate check "
                "every N times): directord runs the negotiate check every time",
            )
            checktype = "negotiate"
        if checktype == "negotiate":
            if service in ("http", "https"):
                http = True
                check["type"] = service
                check["timeout"] = negotiatetimeout
                check["method"] = v.opt("httpmethod") or "GET"
                check["path"] = v.opt("request") or "/"
                host = v.opt("virtualhost")
                if host:
                    check["host"] = host
                check["expect_status"] = HTTP_SUCCESS
                receive = v.opt("receive")
                if receive and self.receive_usable(receive, v.opt_line("receive"), "receive"):
                    check["expect_body"] = receive
                if service == "https":
                    check["verify_tls"] = False
                out.comments.append(
                    f"{service} check: any 2xx answer counts, as for ldirectord (LWP); "
                    "ldirectord's LWP also follows redirects, directord does not"
                )
            elif service == "none":
                check["type"] = "none"
                out.comments.append("service none: ldirectord's negotiate check always succeeds (check_none)")
            else:
                how = "explicit" if explicit_service else f"from port {v.port}" if v.fwmark is None else ""
                tcp_instead(
                    svc_line, "service", f"the {service} negotiate check ({how})".replace(" ()", ""), negotiatetimeout
                )
        elif checktype == "connect":
            if udp:
                tcp_instead(ct_line, "checktype", "checktype=connect on UDP (an ICMP ping in ldirectord)", checktimeout)
            else:
                check["type"] = "tcp"
                check["timeout"] = checktimeout
        elif checktype == "ping":
            tcp_instead(ct_line, "checktype", "checktype=ping (ICMP echo)", checktimeout)
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
        if not http:
            for name in ("request", "receive", "httpmethod", "virtualhost"):
                if v.opt(name) is not None:
                    self.issues.warn(
                        v.opt_line(name),
                        name,
                        "only used by checks directord does not run for this service; not converted",
                    )
        for name in ("login", "passwd", "database", "secret"):
            if v.opt(name) is not None:
                self.issues.warn(
                    v.opt_line(name),
                    name,
                    f"only used by ldirectord's {service} check, which directord does not have; not converted",
                )
        port = v.opt("checkport")
        if port is not None and check["type"] != "none":
            check["port"] = int(port)
        elif v.fwmark is not None and check["type"] not in ("none",):
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
            "verify_tls",
            "command",
        )
        return {k: check[k] for k in order if k in check}, http

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
        self, v: LdVirtual, forwarding: str, http: bool, check: dict[str, Any], fallback: dict[str, Any] | None
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
            if checked and "port" not in check and check["type"] not in ("none", "external") and checked != port:
                own["port"] = checked
            known = SERVICE_PORTS.get(self.service_name)
            if (
                not r.port
                and v.fwmark is None
                and "port" not in check
                and known
                and known != port
                and check["type"] not in ("none", "external")
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
                and check["type"] != "none"
            ):
                own["port"] = checked
            if r.request is not None or r.receive is not None:
                if http:
                    request = r.request or "/"
                    if "://" in request:
                        path = "/" + request.split("://", 1)[1].partition("/")[2]
                        self.issues.warn(
                            r.line,
                            directive,
                            f"the request {quote(request)} is a whole URL; directord "
                            f"checks the real server itself with path {quote(path)}",
                        )
                        request = path
                    own["path"] = request
                    usable = r.receive and self.receive_usable(r.receive, r.line, directive)
                    own["expect_body"] = r.receive if usable else None
                else:
                    self.issues.warn(
                        r.line,
                        directive,
                        "the per-real request/receive pair is only used by checks "
                        "directord does not run for this service; not converted",
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
