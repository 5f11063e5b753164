"""What a setting changes, declared in its dataclass field's metadata (`field(metadata=SPEED)`).

A setting without a role changes results and is part of a run's identity; `speed` (batching,
memory), `storage` (what is kept on disk) and `presentation` (what the report keeps to draw)
settings are recorded in config.json but not hashed. See docs/results-format.md.
"""

SPEED = {"role": "speed"}
STORAGE = {"role": "storage"}
PRESENTATION = {"role": "presentation"}
