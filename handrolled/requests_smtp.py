"""The SMTP part of the input contract: ``MailRequest`` and ``MailSessionRequest``.

Import them from ``handrolled.requests`` like the rest of the contract; they live here so that
ping and traceroute, which never need them, do not create them at start-up (see
handrolled/results.py's note).  Validated once, in ``__post_init__``, by the same rules and
wording as the other requests.  Pure (tests/test_boundaries.py).
"""

from __future__ import annotations

from handrolled.errors import UsageError
from handrolled.record import KW_ONLY, Record, field
from handrolled.requests import _SMTP_NAMES, check_host, check_int, check_seconds

# the names handrolled.requests serves on first use: listed once, there
__all__ = sorted(_SMTP_NAMES)

SMTP_DEFAULT_HELO = "wiretwin.invalid"  # RFC 2606 §2: a name that can never be anyone's


def _text(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise UsageError(f"{name} {value!r}: must be text")
    return value


def _shown(value: str) -> str:
    """``value`` for a one-line error: repr, long values cut."""
    return repr(value) if len(value) <= 60 else f"{value[:40]!r}... ({len(value)} characters)"


class MailRequest(Record):
    """One delivery attempt: ``message`` from ``mail_from`` to ``recipients`` via ``server``.

    ``mail_from`` "" is the null reverse-path (``MAIL FROM:<>``, RFC 5321 §4.5.5).
    ``message`` is the RFC 5322 message before dot-stuffing.  ``ehlo`` False: HELO and plain
    RFC 821 commands only (the seed).  ``starttls`` (RFC 3207) and ``tls`` (implicit, RFC 8314)
    exclude each other; ``auth`` (user, password) needs one of them unless
    ``allow_plain_auth``.  ``insecure``: do not verify the server's certificate; ``cafile``:
    trust these CA certificates instead of the system's.  ``timeout``: seconds for each step.

    Every rule is checked here, before anything connects: the path limits (256 octets,
    RFC 5321 §4.5.3.1.3) and the domain limit (255, §4.5.3.1.2) keep every command line this
    request makes within the 512 octets of §4.5.3.1.4.
    """

    server: str
    port: int = 25
    _: KW_ONLY
    mail_from: str
    recipients: tuple[str, ...]
    message: bytes
    helo_name: str = SMTP_DEFAULT_HELO
    ehlo: bool = True
    starttls: bool = False
    tls: bool = False
    auth: tuple[str, str] | None = field(default=None, repr=False)  # secrets stay out of logs
    allow_plain_auth: bool = False
    insecure: bool = False
    cafile: str | None = None
    timeout: float = 30.0
    pipelining: bool = True

    def __post_init__(self) -> None:
        # SMTP's rules load with the first MailRequest: ping and traceroute never pay for them
        from handrolled.smtp_protocol import domain_problem, forbidden_char, message_problem

        check_host("server", self.server)
        check_int("port", self.port, 1, 65535)  # TCP ports (RFC 9293 §3.1); 0 is no port
        self._check_envelope()
        problem = domain_problem(_text("HELO name", self.helo_name))
        if problem:
            raise UsageError(f"HELO name {_shown(self.helo_name)} {problem}")
        if not isinstance(self.message, bytes):
            raise UsageError(f"message {type(self.message).__name__}: must be bytes")
        problem = message_problem(self.message)
        if problem:
            raise UsageError(f"message {problem}")
        check_seconds("timeout", self.timeout)
        if self.starttls and self.tls:
            raise UsageError("starttls and tls: choose one of STARTTLS and implicit TLS")
        if self.auth is not None:
            self._check_auth()
        if self.cafile is not None and (
            not _text("cafile", self.cafile) or forbidden_char(self.cafile)
        ):
            raise UsageError(f"cafile {self.cafile!r}: must be a file name")

    def _check_envelope(self) -> None:
        from handrolled.smtp_protocol import address_problem

        recipients = self.recipients
        if isinstance(recipients, str | bytes) or not isinstance(recipients, tuple | list):
            raise UsageError(f"recipients {recipients!r}: must be a list of addresses")
        object.__setattr__(self, "recipients", tuple(recipients))  # frozen: set once, here
        if not self.recipients:
            raise UsageError("recipients: at least one is needed")
        sender = _text("sender", self.mail_from)
        problem = address_problem(sender) if sender else None  # "": the null reverse-path
        if problem:
            raise UsageError(f"sender {_shown(sender)} {problem}")
        for address in self.recipients:
            if not _text("recipient", address):
                # RFC 5321 §4.1.1.3: RCPT names a forward-path; only MAIL's may be empty
                raise UsageError("recipient '': an empty address is not a forward-path")
            problem = address_problem(address)
            if problem:
                raise UsageError(f"recipient {_shown(address)} {problem}")

    def _check_auth(self) -> None:
        from handrolled.smtp_protocol import MAX_AUTH_LINE, forbidden_char

        auth = self.auth
        if not (isinstance(auth, tuple) and len(auth) == 2):
            raise UsageError("auth: must be (user name, password)")
        for what, value in zip(("user name", "password"), auth, strict=True):
            # RFC 4616 §2: authcid and passwd are 1*SAFE (no NUL); no line breaks either
            if not _text(what, value):
                raise UsageError(f"auth: the {what} must not be empty")
            bad = forbidden_char(value)
            if bad:
                raise UsageError(f"auth: the {what} contains {bad}")
        # AUTH PLAIN's initial response, base64 of NUL user NUL password (RFC 4616), is the
        # longest line we send; RFC 4954 §4 allows 12288 octets.
        token = len(f"\0{auth[0]}\0{auth[1]}".encode())
        line = len("AUTH PLAIN \r\n") + 4 * -(-token // 3)
        if line > MAX_AUTH_LINE:
            raise UsageError(
                f"auth: the AUTH line would be {line} octets; the limit is {MAX_AUTH_LINE} "
                "(RFC 4954 §4)"
            )
        if not (self.starttls or self.tls) and not self.allow_plain_auth:
            raise UsageError(
                "auth: refusing AUTH over an unencrypted connection: use STARTTLS or TLS "
                "(or allow_plain_auth / --allow-plain-auth if you really mean it)"
            )


SMTP_MAX_SESSION_MESSAGES = 1_000_000  # our bound on one session (smtp-source -m has none)


class MailSessionRequest(Record):
    """``count`` copies of ``mail.message`` over one connection: mail transactions back to
    back without RSET (RFC 5321 §3.3), pipelined across transactions where the server offers
    PIPELINING and ``mail.pipelining`` allows it (RFC 2920 §3.1)."""

    mail: MailRequest
    count: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.mail, MailRequest):
            raise UsageError(f"mail {type(self.mail).__name__}: must be a MailRequest")
        check_int("count", self.count, 1, SMTP_MAX_SESSION_MESSAGES)
