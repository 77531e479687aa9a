"""The check of each type, one module each, behind `checks.base.run_check`.

``tcp`` (a connect) and ``dialogue`` (its send/expect conversation, TLS, STARTTLS), ``http``
(over ``httpclient``, directord's own HTTP/1.1 client), ``dns``, ``udp``, ``ping`` (over
``icmp``), ``radius`` and ``sip`` (over ``datagram``), ``sql`` (mysql, pgsql, oracle over ``tns``), ``ldap``,
``ftp``, ``external`` (a command); ``agent`` (HAProxy's agent-check answers) and ``tls`` (the
client contexts the TLS checks share).  Each takes a `checks.base.CheckTarget` and answers
``(ok, reason)``, raising for a failed check; none of them schedules, counts or times itself
out: that is the engine's and `checks.base.run_check`'s work.
"""
