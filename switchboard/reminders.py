"""Task reminders: delivered in the widget, and by e-mail through ``[mail]``.

Every ``[tasks] reminder_interval`` seconds the service claims the reminders whose
time has come (``TaskRepository.claim_reminders``: each is claimed once, also with
several daemons on one store). A claimed reminder is what the widget shows: it
polls ``GET /api/reminders`` at the same interval until the agent dismisses it.
When ``[mail]`` has a host and the assignee has an e-mail address, the reminder is
also mailed. A reminder more than a day late (the daemon was down) is marked but
neither shown as new mail nor sent.

The clock is injected, so that tests move time forward instead of waiting.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from zoneinfo import ZoneInfo

import structlog

from config import MailConfig
from crm_store import Store, StoreError, Task

__all__ = ["Mailer", "ReminderService", "reminder_message"]

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Mailer:
    """Sends one message through the SMTP server of ``[mail]`` (a connection per
    message, in a thread: reminders are few)."""

    def __init__(self, config: MailConfig, *, context: ssl.SSLContext | None = None) -> None:
        if config.host is None:
            raise ValueError("[mail] has no host")
        self.config = config
        self.context = context or ssl.create_default_context()

    async def send(self, message: EmailMessage) -> None:
        """Send ``message``; raises ``smtplib.SMTPException`` or ``OSError``."""
        await asyncio.to_thread(self._send, message)

    def _send(self, message: EmailMessage) -> None:
        cfg = self.config
        assert cfg.host is not None
        port = cfg.effective_port
        smtp: smtplib.SMTP
        if cfg.security == "tls":
            smtp = smtplib.SMTP_SSL(cfg.host, port, timeout=cfg.timeout, context=self.context)
        else:
            smtp = smtplib.SMTP(cfg.host, port, timeout=cfg.timeout)
        with smtp:
            smtp.ehlo()
            if cfg.security == "starttls":
                # Refused rather than sent in clear when the server offers no STARTTLS.
                smtp.starttls(context=self.context)
                smtp.ehlo()
            if cfg.user is not None and cfg.password is not None:
                smtp.login(cfg.user, cfg.password.reveal())
            smtp.send_message(message)


def reminder_message(
    task: Task, *, to: str, sender: str, contact: str | None, tz: str | None
) -> EmailMessage:
    """The e-mail reminding of ``task`` (plain text, English: addresses have no
    language in the store)."""
    zone = ZoneInfo(tz) if tz else UTC
    due = task.due_at.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z") if task.due_at else "—"
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = f"Reminder: {task.title} at {due}"
    message["Date"] = format_datetime(_utcnow())
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2])
    lines = [f"{task.kind.value.capitalize()}: {task.title}", f"Due: {due}"]
    if task.duration_minutes:
        lines.append(f"Duration: {task.duration_minutes} min")
    if contact:
        lines.append(f"With: {contact}")
    if task.note:
        lines += ["", task.note]
    message.set_content("\n".join(lines) + "\n")
    return message


class ReminderService:
    """Claims due reminders and mails them; :meth:`run` in the daemon, :meth:`tick`
    once (tests)."""

    def __init__(
        self,
        store: Store,
        *,
        interval: float,
        mail: MailConfig,
        timezone: str | None = None,
        clock: Clock = _utcnow,
        mailer: Mailer | None = None,
    ) -> None:
        self.store = store
        self.interval = interval
        self.mail = mail
        self.timezone = timezone
        self.clock = clock
        self.mailer = mailer if mailer is not None else (Mailer(mail) if mail.enabled else None)
        #: Reminders mailed and failed since the start (for tests and the log).
        self.sent = 0
        self.failed = 0

    async def run(self) -> None:
        """Tick every ``interval`` seconds until cancelled; a store that does not
        answer is logged and tried again at the next tick."""
        while True:
            try:
                await self.tick()
            except StoreError as exc:
                log.warning("reminders.store_unavailable", error=str(exc))
            await asyncio.sleep(self.interval)

    async def tick(self) -> list[Task]:
        """Deliver the reminders due now; returns the tasks reminded of."""
        claimed = await self.store.tasks.claim_reminders(self.clock())
        delivered = []
        for task, fresh in claimed:
            if not fresh:
                log.info("reminders.too_late", task_id=str(task.id))
                continue
            delivered.append(task)
            log.info("reminders.delivered", task_id=str(task.id))
            await self._mail(task)
        return delivered

    async def _mail(self, task: Task) -> None:
        if self.mailer is None or task.assignee_user_id is None:
            return
        to = await self.store.users.email_of(task.assignee_user_id)
        if to is None:
            return
        contact = None
        if task.client_id is not None:
            contact = (await self.store.clients.display_names([task.client_id])).get(task.client_id)
        elif task.lead_id is not None:
            contact = (await self.store.leads.get(task.lead_id)).display_name
        assert self.mail.from_address is not None
        message = reminder_message(
            task, to=to, sender=self.mail.from_address, contact=contact, tz=self.timezone
        )
        try:
            await self.mailer.send(message)
        except (smtplib.SMTPException, OSError) as exc:
            # The widget still shows it; a mail server down does not stop the service.
            self.failed += 1
            log.warning("reminders.mail_failed", task_id=str(task.id), error=str(exc))
            return
        self.sent += 1
        log.info("reminders.mailed", task_id=str(task.id))
