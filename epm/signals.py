"""Signals the job system (and the error handlers) send, for metrics and logs to listen to without the
senders knowing them. At the bottom of the imports: anything may send, anything may listen."""

from blinker import Namespace

_signals = Namespace()

#: sent with the Job when its runner starts it
job_started = _signals.signal("job-started")
#: sent with the Job after each state written to Redis (``status_change`` says if the status moved)
job_saved = _signals.signal("job-saved")
#: sent with the Job once it reached a terminal state
job_finished = _signals.signal("job-finished")
#: sent with the Job when this process's runner let go of it, however it ended (also when a reaper ended it)
job_stopped = _signals.signal("job-stopped")
#: sent with the Job when the reaper marked it interrupted
job_reaped = _signals.signal("job-reaped")
#: sent with the hub when an event stream opens or closes (``delta`` is +1 or -1)
stream_changed = _signals.signal("stream-changed")
#: sent with a live ``sse.Message`` when the hub fans it out (once per event and process, not per stream)
event_delivered = _signals.signal("event-delivered")
#: sent with an exception when Redis or the database failed (``backend`` is "redis" or "database")
backend_error = _signals.signal("backend-error")
#: sent with the Job when the reaper resumed it in this process (a new attempt, same id)
job_resumed = _signals.signal("job-resumed")
