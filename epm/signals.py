"""Signals the job system (and the error handlers) send, for metrics and logs to listen to without the
senders knowing them. At the bottom of the imports: anything may send, anything may listen."""

from typing import Any

from blinker import ANY, NamedSignal, Namespace

_signals = Namespace()


class HotSignal(NamedSignal):
    """A signal sent on a hot path (each progress write, each event fanned out): its receivers are resolved
    when one connects or disconnects, not at every send as blinker does (a set copied and every receiver
    checked for a coroutine: about 3% of a worker's CPU at 10,000 events a second). Receivers connect for
    any sender, as every listener of epm's signals does."""

    def __init__(self, name: str, doc: str | None = None) -> None:
        super().__init__(name, doc)
        self._resolved: tuple | None = None

    def connect(self, receiver: Any, sender: Any = ANY, weak: bool = True) -> Any:
        if sender is not ANY:
            raise ValueError(f"{self.name}: receivers of a hot signal connect for any sender")
        self._resolved = None
        return super().connect(receiver, sender, weak)

    def disconnect(self, receiver: Any, sender: Any = ANY) -> None:
        self._resolved = None
        super().disconnect(receiver, sender)

    def send(self, sender: Any = None, /, **kwargs: Any) -> list[tuple[Any, Any]]:  # type: ignore[override]
        receivers = self._resolved
        if receivers is None:
            receivers = self._resolved = tuple(self.receivers_for(ANY))
        return [(receiver, receiver(sender, **kwargs)) for receiver in receivers]


def _hot(name: str) -> HotSignal:
    signal = _signals[name] = HotSignal(name)
    return signal

#: sent with the Job when its runner starts it
job_started = _signals.signal("job-started")
#: sent with the Job after each state written to Redis (``status_change`` says if the status moved)
job_saved = _hot("job-saved")
#: sent with the Job once it reached a terminal state
job_finished = _signals.signal("job-finished")
#: sent with the Job when this process's runner let go of it, however it ended (also when a reaper ended it)
job_stopped = _signals.signal("job-stopped")
#: sent with the Job when the reaper marked it interrupted
job_reaped = _signals.signal("job-reaped")
#: sent with the hub when an event stream opens or closes (``delta`` is +1 or -1)
stream_changed = _signals.signal("stream-changed")
#: sent with a live ``sse.Message`` when the hub fans it out (once per event and process, not per stream)
event_delivered = _hot("event-delivered")
#: sent with an exception when Redis or the database failed (``backend`` is "redis" or "database")
backend_error = _signals.signal("backend-error")
#: sent with the Job when the reaper resumed it in this process (a new attempt, same id)
job_resumed = _signals.signal("job-resumed")
