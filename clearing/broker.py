"""The embedded stack's Celery broker: kombu's ``filesystem://`` transport, made safe to read.

kombu's own transport writes a message straight into its final file name in the shared folder
while a consumer may already list that folder: a worker could read a half-written file and die of
"Unrecoverable error: JSONDecodeError" (seen once in ~6,000 tasks, docs/operations.md). Here:

* a producer writes the message to a hidden temporary file in the same folder and renames it into
  place (``os.replace``, atomic within one file system): a consumer only ever sees whole messages;
* a consumer claims a file by renaming it to a hidden name in the same folder (atomic: two workers
  never get the same file, and no cross-device copy to ``/tmp`` as kombu's ``shutil.move`` does),
  and a file that does not hold a whole message — written in place by some other producer that has
  not finished — is renamed back and read again at a later poll, so the worker carries on. One
  that is still not whole ``INCOMPLETE_GRACE_SECONDS`` after it was last written is moved to
  ``rejected/`` beside the messages, with an error in the log, instead of being retried for ever.

Hidden names start with a dot: kombu's listing (``_get``, ``_size``, ``_purge``) matches
``<stamp>_<uuid>.<queue>.msg`` by what follows the first dot, so they never match a queue.
``settings.CELERY_BROKER_TRANSPORT`` selects this transport for ``filesystem://``.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import uuid
from contextlib import suppress
from queue import Empty

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

log = logging.getLogger(__name__)

# A message file that does not parse and has not been written to for this long is not being
# written any more: it is set aside rather than retried at every poll.
INCOMPLETE_GRACE_SECONDS = 60.0
REJECTED_FOLDER = "rejected"


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        """Put ``payload`` onto ``queue``: written in full under a hidden name, then renamed."""
        name = f"{round(time.monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        fd, partial = tempfile.mkstemp(dir=self.data_folder_out, prefix=".", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(str_to_bytes(dumps(payload)))
            os.replace(partial, os.path.join(self.data_folder_out, name))
        except OSError as error:
            with suppress(OSError):
                os.remove(partial)
            raise ChannelError(f"Cannot add file {name!r} to directory") from error

    def _get(self, queue):
        """The oldest whole message of ``queue``; ``Empty`` when there is none."""
        wanted = f"{queue}.msg"
        folder = self.data_folder_in
        for name in sorted(os.listdir(folder)):
            if name.partition(".")[2] != wanted:
                continue
            path = os.path.join(folder, name)
            claimed = os.path.join(folder, f".{name}.{uuid.uuid4().hex}.claimed")
            try:
                os.rename(path, claimed)
            except OSError:
                continue  # another worker claimed it first
            try:
                with open(claimed, "rb") as file:
                    message = loads(bytes_to_str(file.read()))
            except (OSError, ValueError):
                self._incomplete(claimed, path, name)
                continue
            if self.store_processed:
                shutil.move(claimed, os.path.join(self.processed_folder, name))
            else:
                os.remove(claimed)
            return message
        raise Empty()

    def _incomplete(self, claimed: str, path: str, name: str) -> None:
        """Give back a file that holds no whole message yet, or set it aside once it is stale."""
        try:
            idle = time.time() - os.stat(claimed).st_mtime
        except OSError:
            return
        if idle < INCOMPLETE_GRACE_SECONDS:
            log.warning("broker message %s is not complete yet; read again at a later poll", name)
            with suppress(OSError):
                os.rename(claimed, path)
            return
        rejected = os.path.join(self.data_folder_in, REJECTED_FOLDER)
        os.makedirs(rejected, exist_ok=True)
        log.error("broker message %s is not a whole message after %.0f s; moved to %s", name, idle, rejected)
        with suppress(OSError):
            os.rename(claimed, os.path.join(rejected, name))


class Transport(filesystem.Transport):
    """kombu's filesystem transport with atomic writes and tolerant reads (module docstring)."""

    Channel = Channel
