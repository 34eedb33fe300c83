"""`vaebench perf`, a diagnostic beside the commands: what it measures (`measure`) and the
training-speed part of it (`training`)."""
