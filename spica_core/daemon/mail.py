"""The Teraop mail: what the daemon (a failed stack) and the monitor (a node down or back to
life) send to the operators over SMTP.

Sent from a thread of its own, so a slow or dead SMTP server never holds a stack or a slot;
a failure to send is logged, never fatal (the problem row in dbspica is the durable record).
"""

from __future__ import annotations

import logging
import queue
import smtplib
import ssl
import threading
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Protocol

from spica_core.config import SmtpConfig

log = logging.getLogger("spica.daemon")


class OperatorMail(Protocol):
    """What the mail thread sends: a subject, a body, ``X-Spica-*`` headers and the name the
    log lines give it."""

    @property
    def subject(self) -> str: ...

    @property
    def label(self) -> str: ...

    def headers(self) -> dict[str, str]: ...

    def body(self) -> str: ...


@dataclass(frozen=True)
class FailureReport:
    """What the operators need to act on a failed stack."""

    stack: str
    node: str
    line: int | None
    exit_code: int | None
    command: str | None
    message: str
    log_tail: str | None
    root: str

    @property
    def subject(self) -> str:
        where = f"line {self.line}" if self.line is not None else "before its first line"
        code = f" (exit code {self.exit_code})" if self.exit_code is not None else ""
        return f"[SPICA] stack {self.stack} failed on {self.node} at {where}{code}"

    @property
    def label(self) -> str:
        return self.stack

    def headers(self) -> dict[str, str]:
        return {"X-Spica-Stack": self.stack, "X-Spica-Node": self.node}

    def body(self) -> str:
        lines = [
            f"Stack:     {self.stack}",
            f"Node:      {self.node}",
            f"Line:      {self.line if self.line is not None else '-'}",
            f"Exit code: {self.exit_code if self.exit_code is not None else '-'}",
            f"Command:   {self.command or '-'}",
            "",
            self.message,
        ]
        if self.log_tail:
            lines += ["", f"Last lines of logs/{self.line:03d}.log:" if self.line else "Log:", ""]
            lines += [f"  {ln}" for ln in self.log_tail.rstrip("\n").splitlines()]
        lines += [
            "",
            "To resume from the failed line once the cause is fixed:",
            f"  spica requeue {self.stack}",
            f"(or by hand on {self.node}: mv {self.root}/queue/{self.stack}.error "
            f"{self.root}/queue/{self.stack}.spica)",
        ]
        return "\n".join(lines) + "\n"


def compose(smtp: SmtpConfig, report: OperatorMail) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = report.subject
    msg["From"] = smtp.sender
    msg["To"] = ", ".join(smtp.operators)
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain=smtp.sender.rpartition("@")[2] or None)
    for name, value in report.headers().items():
        msg[name] = value
    msg.set_content(report.body())
    return msg


def send(smtp: SmtpConfig, msg: EmailMessage) -> None:
    """Deliver one message to the configured SMTP server; raises on failure."""
    with smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout) as client:
        if smtp.starttls:
            client.starttls(context=ssl.create_default_context())
        if smtp.username:
            password = smtp.password.get_secret_value() if smtp.password else ""
            client.login(smtp.username, password)
        client.send_message(msg)


class Mailer:
    """A queue of operator mails and the one thread that sends them, in order."""

    def __init__(self, smtp: SmtpConfig) -> None:
        self.smtp = smtp
        self._queue: queue.Queue[OperatorMail | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="spica-mail", daemon=True)
        self._thread.start()
        self.sent = 0
        self.failed = 0

    def submit(self, report: OperatorMail) -> None:
        """Queue the mail; returns at once."""
        if not self.smtp.operators:
            log.info("%s: no [smtp].operators configured, no mail sent", report.label)
            return
        self._queue.put(report)

    def close(self, timeout: float | None = None) -> None:
        """Send what is queued (for up to ``timeout`` seconds), then stop."""
        self._queue.put(None)
        self._thread.join(timeout=self.smtp.timeout * 2 if timeout is None else timeout)

    def _run(self) -> None:
        while (report := self._queue.get()) is not None:
            try:
                send(self.smtp, compose(self.smtp, report))
                self.sent += 1
                to = ", ".join(self.smtp.operators)
                log.info("%s: mail sent to %s", report.label, to)
            except (OSError, smtplib.SMTPException) as exc:
                self.failed += 1
                log.error(
                    "%s: mail not sent (SMTP %s:%d): %s",
                    report.label,
                    self.smtp.host,
                    self.smtp.port,
                    exc,
                )
